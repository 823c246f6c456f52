//! Per-tenant baselines end to end: a burst in one tenant's per-minute log
//! volume, sent over OTLP with historical timestamps, becomes a row of that
//! tenant's `anomalies` table and of no other tenant's.
use bulkhead_e2e::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::json;

// 2025-06-02T00:00:00Z, a Monday
const START_SECS: u64 = 1_748_822_400;
const MINUTES: u64 = 360;
const BURST_MINUTE: u64 = 300;

/// Records per minute: about 20 with deterministic noise; 200 in the burst
/// minute when `burst`.
fn per_minute(minute: u64, burst: bool) -> u64 {
    if burst && minute == BURST_MINUTE {
        return 200;
    }
    let h = minute.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    16 + h % 9
}

fn request(minutes: std::ops::Range<u64>, burst: bool) -> Vec<u8> {
    let mut records = Vec::new();
    for m in minutes {
        for i in 0..per_minute(m, burst) {
            records.push(LogRecord {
                time_unix_nano: (START_SECS + m * 60 + i % 60) * 1_000_000_000,
                severity_number: 9,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "order {m}-{i} placed"
                    ))),
                }),
                ..Default::default()
            });
        }
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn send_history(srv: &TestServer, tenant: &str, burst: bool) {
    let http = reqwest::Client::new();
    for chunk in (0..MINUTES).step_by(30) {
        let resp = http
            .post(format!("{}/v1/logs", srv.http_endpoint()))
            .bearer_auth(srv.key(tenant, "ingest,query"))
            .header("content-type", "application/x-protobuf")
            .body(request(chunk..chunk + 30, burst))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_burst_is_an_anomaly_of_its_tenant_only() {
    let srv = TestServer::builder()
        .tenant("noisy", "ingest,query")
        .tenant("calm", "ingest,query")
        .start()
        .await;
    send_history(&srv, "noisy", true).await;
    send_history(&srv, "calm", false).await;

    let noisy = srv.key("noisy", "ingest,query");
    let r = srv
        .query(
            &noisy,
            "SELECT tenant, timestamp, signal, kind, series, service_name, observed, expected, upper, score, severity, settings \
             FROM anomalies ORDER BY timestamp",
        )
        .await;
    let rows = r.rows();
    assert_eq!(rows.len(), 1, "one incident, one anomaly: {rows:?}");
    let a = &rows[0];
    assert_eq!(a["tenant"], json!("noisy"));
    assert_eq!(a["timestamp"], json!("2025-06-02T05:00:00Z"));
    assert_eq!(a["signal"], json!("logs"));
    assert_eq!(a["kind"], json!("volume"));
    assert_eq!(a["series"], json!("logs volume service=checkout"));
    assert_eq!(a["service_name"], json!("checkout"));
    assert_eq!(a["observed"], json!(200.0));
    let expected = a["expected"].as_f64().unwrap();
    assert!((15.0..26.0).contains(&expected), "{expected}");
    assert!(a["upper"].as_f64().unwrap() < 200.0);
    let score = a["score"].as_f64().unwrap();
    assert!(score > 0.5 && score <= 1.0, "{score}");
    assert_eq!(a["severity"], json!("high"));
    assert!(a["settings"]
        .as_str()
        .unwrap()
        .starts_with("robust-seasonal/"));

    // the same detector in SQL, ad hoc, over the per-minute counts
    let r = srv
        .query(
            &noisy,
            "SELECT minute, n, d['score'] AS score FROM ( \
               SELECT minute, n, anomaly_detect(minute, n) OVER (ORDER BY minute) AS d \
               FROM (SELECT date_trunc('minute', timestamp) AS minute, count(*) AS n FROM logs GROUP BY 1)) \
             WHERE d['anomaly'] ORDER BY minute",
        )
        .await;
    let rows = r.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["minute"], json!("2025-06-02T05:00:00Z"));
    assert_eq!(rows[0]["n"], json!(200));
    let scores = srv
        .query(
            &noisy,
            "SELECT min(s) AS lo, max(s) AS hi, count(s) AS n FROM ( \
               SELECT anomaly_score(minute, n, 0.5, 'daily') OVER (ORDER BY minute) AS s \
               FROM (SELECT date_trunc('minute', timestamp) AS minute, count(*) AS n FROM logs GROUP BY 1))",
        )
        .await;
    let s = &scores.rows()[0];
    assert!(
        s["lo"].as_f64().unwrap() >= 0.0 && s["hi"].as_f64().unwrap() <= 1.0,
        "{s}"
    );
    assert_eq!(s["n"], json!(MINUTES));
    let bad = srv
        .query(&noisy, "SELECT anomaly_score(timestamp, severity_number, 7) OVER (ORDER BY timestamp) FROM logs")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.error().contains("sensitivity"), "{}", bad.error());

    // the examples of docs/query.md run as written
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/query.md")).unwrap();
    let section = &doc
        [doc.find("## Anomaly detection in SQL").unwrap()..doc.find("## Time pruning").unwrap()];
    let sql_block = section
        .split("```sql")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut ran = 0;
    for stmt in sql_block
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let sql: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let r = srv.query(&noisy, &sql).await;
        assert_eq!(r.status, 200, "{sql}: {}", r.body);
        ran += 1;
    }
    assert_eq!(ran, 3);

    let calm = srv.key("calm", "ingest,query");
    assert_eq!(
        srv.scalar(&calm, "SELECT count(*) FROM anomalies").await,
        json!(0)
    );
    // and the counter says the same
    let metrics = srv.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "bulkhead_anomalies_total{tenant=\"noisy\",kind=\"volume\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("tenant=\"calm\",kind="), "{metrics}");
}
