//! Arrow Flight SQL with a real client (the ADBC Flight SQL driver from
//! PyPI): the caller's tables only, under the HTTP API's sandbox, with the
//! same keys (bearer, or basic auth with the key as password).
use crate::common;

use bulkhead_e2e::TestServer;
use common::{kv, log, logs_request, post_pb};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_reads_its_own_tenant_and_nothing_else() {
    let mut srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .tenant("a", "ingest")
        .start()
        .await;
    let (a, b, a_ingest) = (
        srv.key("a", "ingest,query"),
        srv.key("b", "ingest,query"),
        srv.key("a", "ingest"),
    );
    for (key, bodies, service) in [
        (&a, vec!["a-1", "a-2", "a-3"], "checkout"),
        (&b, vec!["b-secret"], "billing"),
    ] {
        let records = bodies
            .iter()
            .enumerate()
            .map(|(i, t)| log(t, i as u64))
            .collect();
        let r = post_pb(
            &srv,
            "/v1/logs",
            key,
            &logs_request(records, vec![kv("service.name", service)]),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/flight_sql_client.py");
    let uri = srv.flight_endpoint();
    let out = bulkhead_e2e::run_python(script, &[&uri, &a, &b, &a_ingest]).await;
    let seen: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    assert_eq!(seen["count"], json!(3), "{seen}");
    assert_eq!(seen["bodies"], json!(["a-1", "a-2", "a-3"]), "{seen}");
    assert_eq!(
        seen["prepared"],
        json!([[["checkout", 3]], [["checkout", 3]]]),
        "{seen}"
    );
    assert_eq!(seen["catalogs"], json!(["tenant"]), "{seen}");
    assert_eq!(
        seen["tables"],
        json!(["anomalies", "audit", "logs", "metrics", "spans"]),
        "{seen}"
    );
    assert_eq!(
        seen["logs_columns"],
        json!(["tenant", "timestamp", "observed_timestamp"]),
        "{seen}"
    );
    assert_eq!(seen["table_types"], json!(["TABLE"]), "{seen}");
    assert_eq!(seen["vendor"], json!("Bulkhead"), "{seen}");
    assert!(
        seen["ddl"].as_str().unwrap().contains("only read queries"),
        "{seen}"
    );
    assert_ne!(seen["file"], json!("allowed"), "{seen}");
    assert_ne!(seen["other_tenant"], json!("allowed"), "{seen}");
    assert_eq!(seen["basic_count"], json!(3), "{seen}");
    assert_eq!(seen["other_count"], json!(1), "{seen}");
    assert!(
        seen["ingest_only"].as_str().unwrap().contains("query"),
        "{seen}"
    );
    assert!(
        seen["bad_key"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("unauthenticated")
            || seen["bad_key"].as_str().unwrap().contains("unknown key"),
        "{seen}"
    );

    // every query is on a's record, and the refusals are summed up
    let dir = srv.data_dir().join("audit");
    srv.shutdown().await;
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |tenant: &str, kind: &str| {
        events
            .iter()
            .filter(|e| e["tenant"] == tenant && e["kind"] == kind)
            .count()
    };
    assert!(of("a", "query") >= 5, "{text}");
    assert!(of("a", "query_refused") >= 2, "{text}");
    assert_eq!(of("b", "query"), 1, "{text}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "scope_refused" && e["details"]["interface"] == "flight_sql"),
        "{text}"
    );
}

/// The Rust `arrow-flight` Flight SQL client: basic-auth handshake, a
/// statement, a prepared statement, a refused key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_flight_sql_client() {
    use arrow::array::{Array, Int64Array};
    use arrow::record_batch::RecordBatch;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use arrow_flight::FlightInfo;
    use futures::TryStreamExt;

    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .start()
        .await;
    let (a, b) = (srv.key("a", "ingest,query"), srv.key("b", "ingest,query"));
    let records = (0..4).map(|i| log(&format!("r{i}"), i)).collect();
    let r = post_pb(&srv, "/v1/logs", &a, &logs_request(records, vec![])).await;
    assert_eq!(r.status, 200);

    let endpoint = srv.flight_endpoint().replace("grpc://", "http://");
    let channel = tonic::transport::Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    async fn fetch(
        client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
        info: FlightInfo,
    ) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.expect("ticket");
            let batches: Vec<RecordBatch> = client
                .do_get(ticket)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            out.extend(batches);
        }
        out
    }
    let count = |batches: &[RecordBatch]| -> i64 {
        let col = batches[0].column(0);
        let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(col.len(), 1);
        col.value(0)
    };

    // basic auth with the key as password; the handshake hands back a bearer token
    let mut client = FlightSqlServiceClient::new(channel.clone());
    client.handshake("someone", &a).await.unwrap();
    assert_eq!(client.token(), Some(&a));
    let info = client
        .execute("SELECT count(*) FROM logs".into(), None)
        .await
        .unwrap();
    assert_eq!(count(&fetch(&mut client, info).await), 4);

    let mut prepared = client
        .prepare("SELECT count(*) FROM logs WHERE body <> 'r0'".into(), None)
        .await
        .unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(count(&fetch(&mut client, info).await), 3);
    prepared.close().await.unwrap();

    // another tenant's key over the same channel sees its own (empty) table
    let mut other = FlightSqlServiceClient::new(channel.clone());
    other.set_token(b.clone());
    let info = other
        .execute("SELECT count(*) FROM logs".into(), None)
        .await
        .unwrap();
    assert_eq!(count(&fetch(&mut other, info).await), 0);

    // a ticket obtained by a is no use to b: the tenant comes from the call
    let info = client
        .execute("SELECT count(*) FROM logs".into(), None)
        .await
        .unwrap();
    assert_eq!(count(&fetch(&mut other, info).await), 0);

    let mut bad = FlightSqlServiceClient::new(channel);
    let err = bad.handshake("x", "not-a-key").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not have valid authentication credentials"),
        "{err}"
    );
    bad.set_token("bhk_0123456789abcdef_".to_string() + &"0".repeat(64));
    let err = bad.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not have valid authentication credentials"),
        "{err}"
    );
}
