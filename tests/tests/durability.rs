//! What is acknowledged and buffered is committed as Parquet on graceful
//! shutdown, readable after a restart and by any Parquet reader, in the
//! hive-style partition tree of its tenant and event hour.
use std::fs::File;
use std::path::{Path, PathBuf};

use bulkhead_e2e::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use serde_json::json;

// 2024-03-05T07:10:00Z and 2024-03-05T08:20:00Z
const T1: u64 = 1_709_622_600_000_000_000;
const T2: u64 = 1_709_626_800_000_000_000;

fn logs(times: &[u64]) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: times
                    .iter()
                    .map(|t| LogRecord {
                        time_unix_nano: *t,
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
    .encode_to_vec()
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_buffers_and_a_restart_reads_them_back() {
    let data = tempfile::tempdir().unwrap();
    // encryption off: files any Parquet reader can read (with it on, see
    // tests/encryption.rs)
    let mut srv = TestServer::builder()
        .tenant("acme", "ingest,query")
        .flush_max_age(std::time::Duration::from_secs(3600))
        .encryption(false)
        .data_dir(data.path())
        .start()
        .await;
    let key = srv.key("acme", "ingest,query");
    srv.post_logs(&key, logs(&[T1, T1 + 1, T2])).await;
    // nothing is on disk yet: the buffers are young
    let store = srv.store_dir();
    assert!(parquet_files(&store).is_empty());
    let stats = srv.shutdown().await;
    assert_eq!((stats.files, stats.rows), (2, 3));

    let files = parquet_files(&store);
    let rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(&store)
                .unwrap()
                .parent()
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        rel,
        vec![
            "tenant=acme/signal=logs/date=2024-03-05/hour=07",
            "tenant=acme/signal=logs/date=2024-03-05/hour=08"
        ]
    );
    // any Parquet reader can read them
    let rows: usize = files
        .iter()
        .map(|f| {
            ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(rows, 3);

    // restart over the same directory: the same key and rows are there
    let srv = TestServer::builder()
        .encryption(false)
        .data_dir(data.path())
        .start()
        .await;
    let n = srv.scalar(&key, "SELECT count(*) FROM logs").await;
    assert_eq!(n, json!(3));
    // time pruning answers from the right partition
    let r = srv
        .query(
            &key,
            "SELECT body FROM logs WHERE timestamp >= '2024-03-05T08:00:00Z' AND timestamp < '2024-03-05T09:00:00Z'",
        )
        .await;
    assert_eq!(r.rows(), &vec![json!({"body": format!("at {T2}")})]);
    // ... and only that partition's file is in the plan
    let plan = srv
        .query(
            &key,
            "EXPLAIN SELECT body FROM logs WHERE timestamp >= '2024-03-05T08:00:00Z' AND timestamp < '2024-03-05T09:00:00Z'",
        )
        .await;
    let text = plan.body.to_string();
    assert!(text.contains("hour=08"), "{text}");
    assert!(!text.contains("hour=07"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_store_asks_clients_to_retry() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // flushes held still, or the first request's flush could make room
    // before the second arrives
    let paused = std::sync::Arc::new(AtomicBool::new(true));
    let srv = TestServer::builder()
        .tenant("acme", "ingest,query")
        .pause_housekeeping(paused.clone())
        .max_total_buffer(2048)
        .flush_max_age(std::time::Duration::from_secs(3600))
        .start()
        .await;
    let key = srv.key("acme", "ingest,query");
    // the first request fills the buffer past its limit; the next is refused
    srv.post_logs(&key, logs(&vec![T1; 200])).await;
    let one_more = || async {
        reqwest::Client::new()
            .post(format!("{}/v1/logs", srv.http_endpoint()))
            .bearer_auth(&key)
            .header("content-type", "application/x-protobuf")
            .body(logs(&[T1]))
            .send()
            .await
            .unwrap()
    };
    let resp = one_more().await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        srv.scalar(&key, "SELECT count(*) FROM logs").await,
        json!(200)
    );
    // once flushes make room, the retry is taken
    paused.store(false, Ordering::Release);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let resp = one_more().await;
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 503);
        assert!(std::time::Instant::now() < deadline, "never made room");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        srv.scalar(&key, "SELECT count(*) FROM logs").await,
        json!(201)
    );
}

/// A small request is buffered at about the size of its data, not at the
/// room the converter's builders reserved (1,024 rows a column): the
/// store's memory budget counts buffers by what they hold allocated, and
/// small tenants' buffers were committed early for memory three times as
/// often as their data needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_requests_are_buffered_at_the_size_of_their_data() {
    let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let srv = TestServer::builder()
        .tenant("acme", "ingest,query")
        .pause_housekeeping(paused)
        .flush_max_age(std::time::Duration::from_secs(3600))
        .start()
        .await;
    let key = srv.key("acme", "ingest,query");
    for request in 0..20u64 {
        let times: Vec<u64> = (0..50).map(|n| T1 + request * 50 + n).collect();
        srv.post_logs(&key, logs(&times)).await;
    }
    let text = srv.metrics_text().await;
    let buffered: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bulkhead_store_buffered_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no buffered bytes in\n{text}"));
    let per_record = buffered / 1000.0;
    // about 280 bytes a record here (times, ids, its body, the tenant's
    // and the server's columns); the builders' room came to about 1,700
    assert!(
        (100.0..800.0).contains(&per_record),
        "{per_record:.0} bytes buffered a record ({buffered} in all)"
    );
    assert_eq!(
        srv.scalar(&key, "SELECT count(*) FROM logs").await,
        json!(1000)
    );
}
