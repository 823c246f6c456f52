//! Each tenant's data encrypted under its own key, with the server's
//! default configuration: the files and the write-ahead log hold no
//! plaintext, pyarrow and DuckDB cannot read a file, Bulkhead's SQL can;
//! a key rotation keeps every file readable without rewriting one; after a
//! shred nothing of the tenant can be read by anyone, Bulkhead included,
//! and the other tenant is untouched.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_e2e::{read_stored_file, TestServer};
use bulkhead_rules::TenantId;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::{json, Value};

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `n` log records whose bodies carry `marker`.
fn logs(marker: &str, n: usize) -> Vec<u8> {
    let t = now_nanos();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: t + i as u64,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("{marker} #{i}"))),
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

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files_under(dir, &mut all);
    all.retain(|p| p.extension().is_some_and(|x| x == "parquet"));
    all.sort();
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn flush(srv: &TestServer) {
    let store = srv.server().store().clone();
    tokio::task::spawn_blocking(move || store.flush_all())
        .await
        .unwrap()
        .unwrap();
}

/// The tenant's first audit event of `kind`, once the server has looked at
/// the keyring (it does every 2 s; here at once).
async fn audited(srv: &TestServer, key: &str, kind: &str) -> Value {
    srv.server().check_policies().await;
    let r = srv
        .query(
            key,
            &format!("SELECT kind, details FROM audit WHERE kind = '{kind}'"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.rows().is_empty(), "no {kind} on the audit trail");
    r.rows()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_data_is_unreadable_without_its_key_readable_after_rotation_and_gone_after_shred() {
    let mut srv = TestServer::builder()
        .tenant("acme", "ingest,query")
        .tenant("other", "ingest,query")
        .flush_max_age(Duration::from_secs(3600))
        .start()
        .await;
    let acme = srv.key("acme", "ingest,query");
    let other = srv.key("other", "ingest,query");
    srv.post_logs(&acme, logs("acme-secret-marker", 40)).await;
    srv.post_logs(&other, logs("other-tenant-marker", 7)).await;

    // the write-ahead log holds the records, sealed
    let mut wal = Vec::new();
    files_under(&srv.data_dir().join("wal"), &mut wal);
    assert!(!wal.is_empty());
    for f in &wal {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !contains(&bytes, "acme-secret-marker"),
            "plaintext in {}",
            f.display()
        );
        assert!(
            !contains(&bytes, "other-tenant-marker"),
            "plaintext in {}",
            f.display()
        );
    }

    flush(&srv).await;
    let store = srv.store_dir();
    let acme_files = parquet_files(&store.join("tenant=acme"));
    assert!(!acme_files.is_empty());
    for f in &acme_files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !contains(&bytes, "acme-secret-marker"),
            "plaintext in {}",
            f.display()
        );
    }
    // no key, no read: pyarrow and DuckDB
    let args: Vec<String> = acme_files.iter().map(|p| p.display().to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bulkhead_e2e::run_python(
        concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_without_key.py"),
        &args,
    )
    .await;
    let engines: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(engines["files"], json!(acme_files.len()), "{engines}");
    assert_eq!(engines["pyarrow_read"], json!(0), "{engines}");
    assert_eq!(engines["duckdb_read"], json!(0), "{engines}");
    // ... Bulkhead's SQL reads them, and the tenant's keys open them
    assert_eq!(
        srv.scalar(&acme, "SELECT count(*) FROM logs").await,
        json!(40)
    );
    assert_eq!(
        srv.scalar(
            &acme,
            "SELECT count(*) FROM logs WHERE body LIKE 'acme-secret-marker #1%'"
        )
        .await,
        json!(11)
    );
    let rows: usize = acme_files
        .iter()
        .flat_map(|f| read_stored_file(srv.server_config(), f))
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 40);

    // rotation, as `bulkhead tenant rotate-key` does it beside the server
    let config = srv.server_config().clone();
    let tenant = TenantId::new("acme").unwrap();
    let (keys, storage) = {
        let keys = config.open_keys(|_| None).unwrap().unwrap();
        let storage =
            bulkhead_store::objects::Storage::open_beside_server(&config.storage_config()).unwrap();
        (keys, Arc::new(storage))
    };
    let rotation = keys.rotate(&storage, &tenant).unwrap();
    assert_eq!(rotation.kek_version, 2);
    assert_eq!(rotation.data_keys_rewrapped, 1);
    assert_eq!(rotation.versions_retired, vec![1]);
    assert_eq!(keys.provider().versions(&tenant).unwrap(), vec![2]);
    let before: Vec<Vec<u8>> = acme_files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    // no file rewritten, every one still readable, by SQL and by the keys
    for (f, b) in acme_files.iter().zip(&before) {
        assert_eq!(&std::fs::read(f).unwrap(), b);
        assert!(!read_stored_file(&config, f).is_empty());
    }
    assert_eq!(
        srv.scalar(&acme, "SELECT count(*) FROM logs").await,
        json!(40)
    );
    // and new data after the rotation too
    srv.post_logs(&acme, logs("after-rotation", 5)).await;
    flush(&srv).await;
    assert_eq!(
        srv.scalar(&acme, "SELECT count(*) FROM logs").await,
        json!(45)
    );
    let rotated = audited(&srv, &acme, "key_rotated").await;
    assert_eq!(rotated["details"]["kek_version"], json!("2"), "{rotated}");

    // buffered, not yet in a file, when the shred comes
    srv.post_logs(&acme, logs("buffered-at-shred", 3)).await;
    assert_eq!(
        srv.scalar(&acme, "SELECT count(*) FROM logs").await,
        json!(48)
    );
    let deleted = keys
        .shred(&storage, &tenant, "2026-12-04T00:00:00Z")
        .unwrap();
    assert_eq!(deleted, 1, "one data key: this node's for today");
    // nothing of acme can be read: SQL ...
    let r = srv.query(&acme, "SELECT count(*) FROM logs").await;
    assert_ne!(r.status, 200, "{}", r.body);
    assert!(r.error().contains("shredded"), "{}", r.body);
    // ... nor with the keys, for any file, old or new
    let e = bulkhead_store::crypto::decryption_properties(keys.clone(), storage.clone(), &tenant)
        .unwrap_err();
    assert!(e.to_string().contains("shredded"), "{e}");
    assert!(storage
        .list(&bulkhead_store::crypto::keys_prefix(&tenant))
        .unwrap()
        .is_empty());
    // and acme may not write any more
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/logs", srv.http_endpoint()))
        .bearer_auth(&acme)
        .header("content-type", "application/x-protobuf")
        .body(logs("after-shred", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "{:?}", resp.text().await);
    // the other tenant is untouched
    assert_eq!(
        srv.scalar(&other, "SELECT count(*) FROM logs").await,
        json!(7)
    );
    srv.post_logs(&other, logs("other-later", 2)).await;
    assert_eq!(
        srv.scalar(&other, "SELECT count(*) FROM logs").await,
        json!(9)
    );
    // the shred is on the audit trail
    let shredded = audited(&srv, &acme, "tenant_shredded").await;
    assert_eq!(
        shredded["details"]["at"],
        json!("2026-12-04T00:00:00Z"),
        "{shredded}"
    );

    // a restart reads nothing of acme back, and all of the other tenant
    let data = srv.data_dir().to_path_buf();
    srv.shutdown().await;
    let srv = TestServer::builder()
        .data_dir(&data)
        .tenant("other", "query")
        .start()
        .await;
    let other = srv.key("other", "query");
    assert_eq!(
        srv.scalar(&other, "SELECT count(*) FROM logs").await,
        json!(9)
    );
    let r = srv.query(&acme, "SELECT count(*) FROM logs").await;
    assert_ne!(r.status, 200, "{}", r.body);
}
