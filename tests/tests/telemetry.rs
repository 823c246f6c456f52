//! `/metrics` counts what each tenant sent and what was refused.
use bulkhead_e2e::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_accepted_rejected_and_refused() {
    let srv = TestServer::builder().tenant("acme", "ingest").start().await;
    let http = reqwest::Client::new();
    let post = |key: Option<String>, body: &'static str| {
        let mut req = http
            .post(format!("{}/v1/traces", srv.http_endpoint()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    // two spans, one with a 5-byte trace id: one accepted, one rejected
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"ok","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000000001"},
        {"traceId":"0102030405","spanId":"0102030405060708","name":"bad","startTimeUnixNano":"1700000000000000000"}]}]}]}"#;
    let resp = post(Some(srv.key("acme", "ingest")), body).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(post(None, body).await.unwrap().status(), 401);

    let text = srv.metrics_text().await;
    // not on the API port: it names tenants and their figures
    let api = http
        .get(format!("{}/metrics", srv.api_endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    for gauge in [
        "bulkhead_wal_bytes ",
        "bulkhead_wal_fsync_seconds ",
        "bulkhead_store_buffered_bytes ",
        "bulkhead_ingest_in_flight_bytes ",
    ] {
        assert!(text.contains(gauge), "missing {gauge} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("bulkhead_wal_appends ") && l != "bulkhead_wal_appends 0.0"),
        "the accepted request went through the WAL:\n{text}"
    );
    for line in [
        "bulkhead_records_accepted_total{tenant=\"acme\",signal=\"spans\"} 1",
        "bulkhead_records_rejected_total{tenant=\"acme\",signal=\"spans\"} 1",
        "bulkhead_requests_refused_total{reason=\"unauthenticated\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
