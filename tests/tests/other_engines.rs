//! Other engines read a tenant's data straight from the store: DuckDB and
//! pyarrow, Hive partitioning on, get the answers Bulkhead's SQL gives, on
//! flushed files and again after compaction (tests/python/read_tree.py).
use std::sync::Arc;

use bulkhead_e2e::{run_python, TestServer};
use bulkhead_rules::ManualClock;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};

// 2024-03-05T07:10:00Z
const T1: u64 = 1_709_622_600_000_000_000;
const TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn logs(service: &str, n: usize, with_trace: bool) -> Vec<u8> {
    let trace = hex_bytes(TRACE);
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: T1 + i as u64 * 1_000_000,
                        trace_id: if with_trace && i == 0 {
                            trace.clone()
                        } else {
                            vec![]
                        },
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("{service} {i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Bulkhead's own answers, in the shape read_tree.py prints them.
async fn bulkhead_answers(srv: &TestServer, key: &str) -> Value {
    let by_service: Vec<Value> = srv
        .query(
            key,
            "SELECT coalesce(service_name, '') AS s, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1",
        )
        .await
        .rows()
        .iter()
        .map(|r| json!([r["s"], r["n"]]))
        .collect();
    let trace = srv
        .scalar(
            key,
            &format!("SELECT count(*) FROM logs WHERE trace_id = '{TRACE}'"),
        )
        .await;
    json!({
        "count": srv.scalar(key, "SELECT count(*) FROM logs").await,
        "by_service": by_service,
        "trace": trace,
    })
}

async fn other_engines(srv: &TestServer, tenant: &str) -> Value {
    let store = srv.store_dir();
    let out = run_python(
        concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_tree.py"),
        &[store.to_str().unwrap(), tenant, TRACE],
    )
    .await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn assert_same(engines: &Value, ours: &Value) {
    for engine in ["duckdb", "pyarrow"] {
        assert_eq!(
            engines[format!("{engine}_count")],
            ours["count"],
            "{engine}: {engines}"
        );
        assert_eq!(
            engines[format!("{engine}_root_count")],
            ours["count"],
            "{engine}: {engines}"
        );
        assert_eq!(
            engines[format!("{engine}_by_service")],
            ours["by_service"],
            "{engine}: {engines}"
        );
        assert_eq!(
            engines[format!("{engine}_trace")],
            ours["trace"],
            "{engine}: {engines}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_and_pyarrow_read_a_tenants_tree_and_agree_with_bulkhead() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let clock = Arc::new(ManualClock::new(now));
    // a deployment with encryption off: its files are open to any engine
    // (with it on, none can read them: tests/encryption.rs)
    let srv = TestServer::builder()
        .clock(clock.clone())
        .encryption(false)
        .tenant("acme", "ingest,query")
        .tenant("other", "ingest,query")
        .start()
        .await;
    let key = srv.key("acme", "ingest,query");
    let other = srv.key("other", "ingest,query");
    // several flushes: several small files per hour
    for (service, n) in [("checkout", 5), ("cart", 3), ("checkout", 4)] {
        srv.post_logs(&key, logs(service, n, service == "cart"))
            .await;
        let store = srv.server().store().clone();
        tokio::task::spawn_blocking(move || store.flush_all().unwrap())
            .await
            .unwrap();
    }
    srv.post_logs(&other, logs("checkout", 7, true)).await;
    let store = srv.server().store().clone();
    tokio::task::spawn_blocking(move || store.flush_all().unwrap())
        .await
        .unwrap();

    let ours = bulkhead_answers(&srv, &key).await;
    assert_eq!(ours["count"], json!(12));
    assert_eq!(ours["trace"], json!(1));
    let engines = other_engines(&srv, "acme").await;
    assert_same(&engines, &ours);
    assert_eq!(engines["files"], json!(3));
    assert_eq!(engines["pyarrow_single_file_rows"], json!(5));

    // compaction: one sorted file; the removed inputs leave the tree once
    // their grace period passed, and the answers stay the same
    let store = srv.server().store().clone();
    let acme = bulkhead_rules::TenantId::new("acme").unwrap();
    let stats = tokio::task::spawn_blocking(move || {
        let config = bulkhead_store::CompactionConfig {
            min_files: 2,
            ..Default::default()
        };
        store
            .compact(&acme, bulkhead_store::Signal::Logs, &config)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!((stats.merged, stats.inputs), (1, 3));
    assert_eq!(bulkhead_answers(&srv, &key).await, ours);
    clock.advance(srv.server_config().storage.removal_grace.0);
    // (the server's own upkeep may delete them first, on the same clock)
    let store = srv.server().store().clone();
    tokio::task::spawn_blocking(move || store.delete_expired_all().unwrap())
        .await
        .unwrap();
    let engines = other_engines(&srv, "acme").await;
    assert_same(&engines, &ours);
    assert_eq!(engines["files"], json!(1));
    assert_eq!(engines["pyarrow_single_file_rows"], json!(12));
}
