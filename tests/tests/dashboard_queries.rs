//! The dashboard queries of `docs/queries.md`, read from that file and run
//! on seeded data; each answer is compared with the exact expected rows.
use crate::common;

use std::collections::HashMap;

use bulkhead_e2e::TestServer;
use common::{hex, id, kv};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{json, Value};

/// 2025-06-02T10:00:00Z
const BASE: u64 = 1_748_858_400_000_000_000;
const MINUTE: u64 = 60_000_000_000;
const MS: u64 = 1_000_000;

/// The queries of docs/queries.md by their `## name` (the dashboard's too).
fn documented_queries() -> HashMap<String, String> {
    bulkhead_query::dashboard::queries().into_iter().collect()
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service)],
        ..Default::default()
    })
}

fn logs(service: &str, records: &[(u64, i32, &str)]) -> ExportLogsServiceRequest {
    let log_records = records
        .iter()
        .enumerate()
        .map(|(i, (minute, severity, body))| LogRecord {
            time_unix_nano: BASE + minute * MINUTE + i as u64,
            severity_number: *severity,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body.to_string())),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// (trace seed, span seed, parent seed, name, minute, duration ms, status code)
type SpanSpec<'a> = (u8, u8, Option<u8>, &'a str, u64, u64, i32);

fn spans(service: &str, specs: &[SpanSpec<'_>]) -> ExportTraceServiceRequest {
    let spans = specs
        .iter()
        .map(|(trace, span, parent, name, minute, ms, code)| {
            let start = BASE + minute * MINUTE + u64::from(*span) * 1_000;
            Span {
                trace_id: id(16, *trace),
                span_id: id(8, *span),
                parent_span_id: parent.map(|p| id(8, p)).unwrap_or_default(),
                name: name.to_string(),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + ms * MS,
                status: Some(Status {
                    code: *code,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gauge(service: &str, minute: u64, values: &[f64]) -> ExportMetricsServiceRequest {
    let points = values
        .iter()
        .map(|v| NumberDataPoint {
            time_unix_nano: BASE + minute * MINUTE,
            value: Some(number_data_point::Value::AsDouble(*v)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn seed(srv: &TestServer, key: &str) {
    let (info, error) = (9, 17);
    let ok = status::StatusCode::Ok as i32;
    let err = status::StatusCode::Error as i32;
    let unset = status::StatusCode::Unset as i32;
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "/v1/logs",
            prost::Message::encode_to_vec(&logs(
                "checkout",
                &[
                    (0, info, "paid"),
                    (0, info, "paid"),
                    (0, info, "paid"),
                    (0, error, "payment failed"),
                    (0, error, "payment failed"),
                    (6, error, "payment failed"),
                    (6, error, "card declined"),
                ],
            )),
        ),
        (
            "/v1/logs",
            prost::Message::encode_to_vec(&logs(
                "search",
                &[(1, info, "hit"), (1, info, "hit"), (1, info, "miss")],
            )),
        ),
        (
            "/v1/traces",
            prost::Message::encode_to_vec(&spans(
                "checkout",
                &[
                    (1, 1, None, "POST /pay", 0, 40, err),
                    (1, 2, Some(1), "charge", 0, 30, ok),
                    (2, 3, None, "POST /pay", 6, 20, unset),
                    (2, 4, Some(3), "charge", 6, 10, unset),
                ],
            )),
        ),
        (
            "/v1/traces",
            prost::Message::encode_to_vec(&spans(
                "search",
                &[
                    (3, 5, None, "GET /search", 1, 5, unset),
                    (4, 6, None, "GET /search", 1, 15, unset),
                ],
            )),
        ),
        (
            "/v1/metrics",
            prost::Message::encode_to_vec(&gauge("checkout", 2, &[3.0, 4.0])),
        ),
    ];
    for (path, body) in requests {
        let a = common::post(srv, path, key, "application/x-protobuf", body).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
    }
}

/// A server with tenants `shop` and `other`, both seeded with the same data
/// (another tenant's data, in the same services and times, never counts);
/// with their keys.
async fn seeded() -> (TestServer, String, String) {
    let srv = TestServer::builder()
        .tenant("shop", "ingest,query")
        .tenant("other", "ingest,query")
        .start()
        .await;
    let (shop, other) = (
        srv.key("shop", "ingest,query"),
        srv.key("other", "ingest,query"),
    );
    seed(&srv, &shop).await;
    seed(&srv, &other).await;
    (srv, shop, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_dashboard_query_gives_its_exact_answer() {
    let (srv, shop, _other) = seeded().await;

    let queries = documented_queries();
    async fn answer(
        srv: &TestServer,
        key: &str,
        queries: &HashMap<String, String>,
        name: &str,
    ) -> Vec<Value> {
        let sql = queries
            .get(name)
            .unwrap_or_else(|| panic!("docs/queries.md has no query {name}"))
            .replace(":from", "TIMESTAMP '2025-06-02T10:00:00Z'")
            .replace(":to", "TIMESTAMP '2025-06-02T11:00:00Z'")
            .replace(":bucket", "INTERVAL '5 minutes'")
            .replace(":trace_id", &format!("'{}'", hex(&id(16, 1))));
        let r = srv.query(key, &sql).await;
        assert_eq!(r.status, 200, "{name}: {:?}", r.body);
        r.rows().clone()
    }
    let run = |name: &'static str| answer(&srv, &shop, &queries, name);

    let t0 = "2025-06-02T10:00:00Z";
    let t5 = "2025-06-02T10:05:00Z";
    assert_eq!(
        run("volume-by-service").await,
        vec![
            json!({"signal": "logs", "service_name": "checkout", "bucket": t0, "records": 5}),
            json!({"signal": "logs", "service_name": "search", "bucket": t0, "records": 3}),
            json!({"signal": "metrics", "service_name": "checkout", "bucket": t0, "records": 2}),
            json!({"signal": "spans", "service_name": "checkout", "bucket": t0, "records": 2}),
            json!({"signal": "spans", "service_name": "search", "bucket": t0, "records": 2}),
            json!({"signal": "logs", "service_name": "checkout", "bucket": t5, "records": 2}),
            json!({"signal": "spans", "service_name": "checkout", "bucket": t5, "records": 2}),
        ]
    );
    assert_eq!(
        run("error-ratio").await,
        vec![
            json!({"service_name": "checkout", "spans": 4, "errors": 1, "error_ratio": 0.25}),
            json!({"service_name": "search", "spans": 2, "errors": 0, "error_ratio": 0.0}),
        ]
    );
    // checkout: 10, 20, 30, 40 ms; search: 5, 15 ms
    assert_eq!(
        run("latency-percentiles").await,
        vec![
            json!({"service_name": "checkout", "spans": 4, "p50_ms": 25.0, "p95_ms": 38.5, "p99_ms": 39.7}),
            json!({"service_name": "search", "spans": 2, "p50_ms": 10.0, "p95_ms": 14.5, "p99_ms": 14.9}),
        ]
    );
    assert_eq!(
        run("top-errors").await,
        vec![
            json!({"service_name": "checkout", "body": "payment failed", "occurrences": 3}),
            json!({"service_name": "checkout", "body": "card declined", "occurrences": 1}),
        ]
    );
    // ten minutes of history is too little for a baseline: no anomaly
    assert_eq!(run("anomalies").await, Vec::<Value>::new());
    let trace = hex(&id(16, 1));
    assert_eq!(
        run("trace-lookup").await,
        vec![
            json!({"trace_id": trace, "span_id": hex(&id(8, 1)), "parent_span_id": null, "service_name": "checkout", "name": "POST /pay", "kind": "Server", "status_code": "Error", "duration_ms": 40}),
            json!({"trace_id": trace, "span_id": hex(&id(8, 2)), "parent_span_id": hex(&id(8, 1)), "service_name": "checkout", "name": "charge", "kind": "Server", "status_code": "Ok", "duration_ms": 30}),
        ]
    );
    assert_eq!(queries.len(), 6, "every documented query is checked here");
}

/// The built-in dashboard in a real headless browser (Debian's Chromium,
/// driven by Playwright from PyPI): a wrong key is refused, every panel
/// renders the seeded tenant's data, the SQL console answers and downloads
/// CSV, and another tenant's data never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let (srv, shop, other) = seeded().await;
    let secret = logs(
        "other-only-service",
        &[(3, 17, "other tenant's secret failure")],
    );
    let a = common::post(
        &srv,
        "/v1/logs",
        &other,
        "application/x-protobuf",
        prost::Message::encode_to_vec(&secret),
    )
    .await;
    assert_eq!(a.status, 200);

    let dir = tempfile::tempdir().unwrap();
    let shot = std::env::var("BULKHEAD_DASHBOARD_SCREENSHOT").unwrap_or_else(|_| {
        dir.path()
            .join("dashboard.png")
            .to_string_lossy()
            .into_owned()
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/dashboard_check.py");
    let url = format!("{}/dashboard", srv.api_endpoint());
    let out = bulkhead_e2e::run_python(
        script,
        &[&url, &shop, "2025-06-02T10:00", "2025-06-02T11:00", &shot],
    )
    .await;
    let seen: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let text = |k: &str| seen[k].as_str().unwrap_or_default().to_string();

    assert!(text("wrong_key").contains("key refused"), "{seen}");
    assert_eq!(seen["panels_hidden_after_wrong_key"], json!(true));
    assert_eq!(
        seen["states"],
        json!({"p-volume": "ready", "p-error-ratio": "ready", "p-latency": "ready", "p-top-errors": "ready", "p-anomalies": "empty"}),
        "{seen}"
    );
    assert_eq!(seen["rows"]["p-volume"], json!("7"), "{seen}");
    assert_eq!(seen["volume_lines"], json!(5), "{seen}");
    for part in [
        "logs · checkout: 7",
        "spans · search: 2",
        "metrics · checkout: 2",
    ] {
        assert!(text("volume_legend").contains(part), "{part}: {seen}");
    }
    assert!(text("error_ratio").contains("25.0 %"), "{seen}");
    assert!(text("latency").contains("38.500"), "{seen}");
    assert!(text("top_errors").contains("payment failed"), "{seen}");
    assert_eq!(seen["console_rows"], json!("4"), "{seen}");
    assert_eq!(
        text("csv").lines().collect::<Vec<_>>(),
        [
            "body",
            "card declined",
            "payment failed",
            "payment failed",
            "payment failed"
        ],
        "{seen}"
    );
    assert!(
        text("console_refusal").contains("only read queries"),
        "{seen}"
    );
    assert!(
        !text("page_text").contains("other tenant's secret"),
        "{seen}"
    );
    assert!(!text("page_text").contains("other-only-service"), "{seen}");
    assert_eq!(seen["script_errors"], json!([]), "{seen}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
