//! Per-tenant ingest limits and retention, on an injected clock: a tenant
//! over its rate is told when to retry (429 / RESOURCE_EXHAUSTED with
//! RetryInfo) while others are unaffected; data past a tenant's retention
//! period is deleted unless the tenant is under legal hold.
use std::sync::Arc;
use std::time::Duration;

use bulkhead_e2e::TestServer;
use bulkhead_rules::ManualClock;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::json;
use tonic_types::StatusExt;

// 2025-06-02T00:00:00Z
const NOW: i64 = 1_748_822_400_000_000_000;
const DAY: i64 = 86_400_000_000_000;

fn logs(times: &[i64]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: times
                    .iter()
                    .map(|t| LogRecord {
                        time_unix_nano: *t as u64,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("at {t}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(srv: &TestServer, tenant: &str, req: &ExportLogsServiceRequest) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/logs", srv.http_endpoint()))
        .bearer_auth(srv.key(tenant, "ingest,query"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_is_told_when_to_retry_and_others_are_not() {
    let clock = Arc::new(ManualClock::new(NOW));
    let srv = TestServer::builder()
        .tenant("noisy", "ingest,query")
        .tenant("quiet", "ingest,query")
        .policy(
            "noisy",
            "[limits]\nrecords_per_second = 10\nburst_records = 10\n",
        )
        .clock(clock.clone())
        .start()
        .await;
    assert_eq!(post(&srv, "noisy", &logs(&[NOW; 10])).await.status(), 200);
    let resp = post(&srv, "noisy", &logs(&[NOW; 5])).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // over gRPC: RESOURCE_EXHAUSTED with RetryInfo
    let mut req = tonic::Request::new(logs(&[NOW; 5]));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", srv.key("noisy", "ingest,query"))
            .parse()
            .unwrap(),
    );
    let status = LogsServiceClient::connect(srv.grpc_endpoint())
        .await
        .unwrap()
        .export(req)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    // refused before the message was decoded: the hint is the wait for the
    // bucket's next record (0.1 s at 10 records/s), not for all five
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(100)));
    // the quiet tenant is not limited
    assert_eq!(post(&srv, "quiet", &logs(&[NOW; 100])).await.status(), 200);
    // half a second later, half the burst is back
    clock.advance(Duration::from_millis(500));
    assert_eq!(post(&srv, "noisy", &logs(&[NOW; 5])).await.status(), 200);
    let noisy = srv.key("noisy", "ingest,query");
    assert_eq!(
        srv.scalar(&noisy, "SELECT count(*) FROM logs").await,
        json!(15)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_past_retention_is_deleted_unless_on_legal_hold() {
    let clock = Arc::new(ManualClock::new(NOW));
    let mut srv = TestServer::builder()
        .tenant("short", "ingest,query")
        .tenant("held", "ingest,query")
        .policy("short", "[retention]\nlogs = \"1d\"\n")
        .policy("held", "[retention]\nlogs = \"1d\"\nlegal_hold = true\n")
        .clock(clock.clone())
        .start()
        .await;
    let old_and_new = logs(&[NOW - 3 * DAY, NOW - DAY / 24]);
    for t in ["short", "held"] {
        assert_eq!(post(&srv, t, &old_and_new).await.status(), 200);
    }
    // committed files and buffered rows alike
    srv.server().store().flush_all().unwrap();
    let deleted = srv.server().enforce_retention().await.unwrap();
    assert_eq!(deleted, 1);
    let short = srv.key("short", "ingest,query");
    let held = srv.key("held", "ingest,query");
    assert_eq!(
        srv.scalar(&short, "SELECT count(*) FROM logs").await,
        json!(1)
    );
    assert_eq!(
        srv.scalar(&held, "SELECT count(*) FROM logs").await,
        json!(2)
    );
    let r = srv
        .query(&short, "SELECT details['signal'] AS signal, details['files'] AS files FROM audit WHERE kind = 'retention_applied'")
        .await;
    assert_eq!(r.rows(), &vec![json!({"signal": "logs", "files": "1"})]);
    // nothing more to do until time moves on
    assert_eq!(srv.server().enforce_retention().await.unwrap(), 0);
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(srv.server().enforce_retention().await.unwrap(), 1);
    assert_eq!(
        srv.scalar(&short, "SELECT count(*) FROM logs").await,
        json!(0)
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_are_charged_before_decoding_for_that_tenant_only() {
    let clock = Arc::new(ManualClock::new(NOW));
    let srv = TestServer::builder()
        .tenant("big", "ingest,query")
        .tenant("small", "ingest,query")
        .policy(
            "big",
            "[limits]\nbytes_per_second = 1000\nburst_bytes = 1000\n",
        )
        .clock(clock.clone())
        .start()
        .await;
    let req = logs(&[NOW; 20]);
    let size = req.encoded_len();
    assert!(size > 500 && size < 1000, "{size}");
    let (endpoint, key) = (srv.http_endpoint(), srv.key("big", "ingest,query"));
    let garbage = |n: usize| {
        let (endpoint, key) = (endpoint.clone(), key.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{endpoint}/v1/logs"))
                .bearer_auth(key)
                .header("content-type", "application/x-protobuf")
                .body(vec![0xff; n])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post(&srv, "big", &req).await.status(), 200);
    // bytes are charged before decoding: an undecodable body uses up the rest
    assert_eq!(garbage(1000 - size).await, 400);
    let resp = post(&srv, "big", &req).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let text = resp.text().await.unwrap();
    assert!(text.contains("bytes/s"), "{text}");
    // with the bucket empty, nothing is read or decoded: 429, not 400
    assert_eq!(garbage(10).await, 429);
    // the other tenant is not limited
    for _ in 0..5 {
        assert_eq!(post(&srv, "small", &req).await.status(), 200);
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(post(&srv, "big", &req).await.status(), 200);
    let big = srv.key("big", "ingest,query");
    assert_eq!(
        srv.scalar(&big, "SELECT count(*) FROM logs").await,
        json!(40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_over_the_limits_are_dropped_or_cut_and_counted() {
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    let srv = TestServer::builder()
        .tenant("t", "ingest,query")
        .policy(
            "t",
            "[limits]\nmax_attributes_per_record = 3\nmax_attribute_value_length = 16\n",
        )
        .start()
        .await;
    let mut req = logs(&[NOW]);
    let attr = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let record = &mut req.resource_logs[0].scope_logs[0].log_records[0];
    record.time_unix_nano = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    record.attributes = vec![
        attr("long", "é".repeat(20)),
        attr("b", "2".into()),
        attr("c", "3".into()),
        attr("d", "4".into()),
        attr("e", "5".into()),
    ];
    record.dropped_attributes_count = 1;
    assert_eq!(post(&srv, "t", &req).await.status(), 200);
    let key = srv.key("t", "ingest,query");
    let r = srv
        .query(
            &key,
            "SELECT cardinality(attributes) AS n, attributes['long'] AS long, dropped_attributes_count AS dropped FROM logs",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![json!({"n": 3, "long": "é".repeat(8), "dropped": 3})]
    );
    let metrics = srv.metrics_text().await;
    assert!(
        metrics.contains("bulkhead_attributes_dropped_total{tenant=\"t\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("bulkhead_attribute_values_truncated_total{tenant=\"t\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_storage_quota_is_refused_alone() {
    let clock = Arc::new(ManualClock::new(NOW));
    let srv = TestServer::builder()
        .tenant("full", "ingest,query")
        .tenant("roomy", "ingest,query")
        .policy("full", "[limits]\nstorage_quota = \"2KiB\"\n")
        .clock(clock.clone())
        .start()
        .await;
    assert_eq!(post(&srv, "full", &logs(&[NOW; 3])).await.status(), 200);
    // still buffered: nothing committed yet
    assert_eq!(post(&srv, "full", &logs(&[NOW; 3])).await.status(), 200);
    let store = srv.server().store().clone();
    tokio::task::spawn_blocking(move || store.flush_all().unwrap())
        .await
        .unwrap();
    let full = bulkhead_rules::TenantId::new("full").unwrap();
    let used = srv.server().store().committed_bytes(&full).unwrap();
    assert!(used >= 2048, "one Parquet file is over 2 KiB: {used}");
    let resp = post(&srv, "full", &logs(&[NOW; 3])).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "60");
    let text = resp.text().await.unwrap();
    assert!(text.contains("storage quota of 2048 bytes"), "{text}");
    assert_eq!(post(&srv, "roomy", &logs(&[NOW; 3])).await.status(), 200);
    // what it holds stays readable
    let key = srv.key("full", "ingest,query");
    assert_eq!(
        srv.scalar(&key, "SELECT count(*) FROM logs").await,
        json!(6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_of_new_series_past_the_limit_are_rejected_alone() {
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let srv = TestServer::builder()
        .tenant("few", "ingest,query")
        .tenant("many", "ingest,query")
        .policy("few", "[limits]\nmax_metric_series = 2\n")
        .clock(clock.clone())
        .start()
        .await;
    // one point per host: each host is a series
    let gauge = |hosts: &[&str]| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "cpu".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: hosts
                            .iter()
                            .map(|h| NumberDataPoint {
                                time_unix_nano: NOW as u64,
                                attributes: vec![KeyValue {
                                    key: "host".into(),
                                    value: Some(AnyValue {
                                        value: Some(any_value::Value::StringValue(h.to_string())),
                                    }),
                                    ..Default::default()
                                }],
                                value: Some(number_data_point::Value::AsDouble(1.0)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let send = |tenant: &'static str, hosts: &'static [&'static str]| {
        let (endpoint, key) = (srv.http_endpoint(), srv.key(tenant, "ingest,query"));
        let body = gauge(hosts).encode_to_vec();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{endpoint}/v1/metrics"))
                .bearer_auth(key)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            ExportMetricsServiceResponse::decode(r.bytes().await.unwrap())
                .unwrap()
                .partial_success
        }
    };
    let p = send("few", &["a", "b", "c"])
        .await
        .expect("partial success");
    assert_eq!(p.rejected_data_points, 1);
    assert!(
        p.error_message.contains("limit of 2 metric series"),
        "{p:?}"
    );
    // known series keep flowing; a new one is refused
    assert_eq!(send("few", &["b", "a"]).await, None);
    assert_eq!(
        send("few", &["d"]).await.map(|p| p.rejected_data_points),
        Some(1)
    );
    assert_eq!(send("many", &["a", "b", "c", "d"]).await, None);
    let few = srv.key("few", "ingest,query");
    assert_eq!(
        srv.scalar(&few, "SELECT count(*) FROM metrics").await,
        json!(4)
    );
}
