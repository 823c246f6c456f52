//! Compliance with the real binary and its CLI.
//!
//! - An erasure job with the process stopped dead (abort) in the middle:
//!   between the copies and the manifest commit, and between the commit and
//!   the job's `done`. After the crash the table holds the old files or the
//!   new ones, never both and never neither (every row once, read offline
//!   through the tenant's keys); after a restart the job resumes and ends
//!   `done`, and the predicate matches nothing.
//! - `bulkhead erase create --wait` and `bulkhead tenant offboard`.
//! - `bulkhead extract create`, `public-key` and `verify`, which names a
//!   changed file.
//! - The audit head published to the store catches a cut log tail.
mod common;
use common::{start, start_with_env, wait_for_log};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bulkhead::jobs::{self, Status};
use bulkhead_collector::tenants;
use bulkhead_rules::{Scopes, SystemClock, TenantId};
use bulkhead_store::{FlushConfig, Signal, Store, TimeRange};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;

const RECORDS: usize = 400;

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Records `u<i % 4>-<i>`: a quarter of them belong to user u1.
fn records(first: usize, n: usize) -> Vec<u8> {
    let t = now_nanos();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (first..first + n)
                    .map(|i| LogRecord {
                        time_unix_nano: t + i as u64,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("u{}-{i}", i % 4))),
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

/// Every body of the tenant's committed logs, read offline with its keys.
fn stored_bodies(config: &Path) -> Vec<String> {
    use arrow::array::{Array, StringArray};
    let config = bulkhead::Config::load(config).unwrap();
    let keys = config.open_keys(|_| None).unwrap();
    let (store, _) = Store::open_with_keys(
        &config.storage_config(),
        "inspector",
        None,
        FlushConfig::default(),
        Arc::new(SystemClock),
        keys,
    )
    .unwrap();
    let t = TenantId::new("acme").unwrap();
    let snap = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    assert!(snap.buffered.is_empty());
    let mut out = Vec::new();
    for (path, _) in &snap.files {
        let bytes = store
            .read_object(path)
            .unwrap()
            .expect("a live file exists");
        let mut options = parquet::arrow::arrow_reader::ArrowReaderOptions::new();
        if let Some(d) = store.decryption(&t).unwrap() {
            options = options.with_file_decryption_properties(d);
        }
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
                bytes, options,
            )
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let bodies = b
                .column_by_name("body")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            out.extend((0..bodies.len()).map(|i| bodies.value(i).to_string()));
        }
    }
    out.sort();
    out
}

fn erasure_stopped_dead(abort_at: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[listen]
grpc = "127.0.0.1:0"
http = "127.0.0.1:0"
api = "127.0.0.1:0"
metrics = "127.0.0.1:0"
flight = "127.0.0.1:0"
[flush]
max_age = "200ms"
"#
        ),
    )
    .unwrap();
    let policies = data.join("policies");
    tenants::create_tenant(&policies, "acme").unwrap();
    let key = tenants::create_key(
        &policies,
        "acme",
        Scopes::parse_list("ingest,query,admin").unwrap(),
    )
    .unwrap()
    .expose();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();

    // 400 records, committed at the graceful stop
    let server = start(&config);
    for first in (0..RECORDS).step_by(100) {
        let r = rt
            .block_on(
                client
                    .post(format!("http://{}/v1/logs", server.http))
                    .bearer_auth(&key)
                    .header("content-type", "application/x-protobuf")
                    .body(records(first, 100))
                    .send(),
            )
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    common::stop(server);
    let before = stored_bodies(&config);
    assert_eq!(before.len(), RECORDS);
    let kept: Vec<String> = before
        .iter()
        .filter(|b| !b.starts_with("u1-"))
        .cloned()
        .collect();

    // the job stops the process dead at `abort_at`
    let env = [
        ("BULKHEAD_TEST_ABORT_ERASURE", abort_at.to_string()),
        ("RUST_LOG", "warn,bulkhead::jobs=info".to_string()),
    ];
    let mut server = start_with_env(&config, &env);
    let from = chrono::DateTime::from_timestamp_nanos(now_nanos() as i64 - 3_600_000_000_000);
    let to = chrono::DateTime::from_timestamp_nanos(now_nanos() as i64 + 3_600_000_000_000);
    // the answer may or may not leave before the process dies
    let _ = rt.block_on(
        client
            .post(format!("http://{}/api/v1/erasures", server.api))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "table": "logs",
                "from": from.to_rfc3339(),
                "to": to.to_rfc3339(),
                "where": "body LIKE 'u1-%'",
            }))
            .send(),
    );
    let status = server.child.wait().unwrap();
    assert!(!status.success(), "the process was to stop dead: {status}");

    let c = bulkhead::Config::load(&config).unwrap();
    let storage =
        bulkhead_store::objects::Storage::open_beside_server(&c.storage_config()).unwrap();
    let all = jobs::list(&storage).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, Status::Running, "{:?}", all[0]);
    // old files or new ones: every row once
    let after_crash = stored_bodies(&config);
    match abort_at {
        "before_commit" => assert_eq!(after_crash, before),
        _ => assert_eq!(after_crash, kept),
    }

    // restarted: the node resumes the job it was running
    let server = start_with_env(&config, &env[1..]);
    wait_for_log(&server, "job ended", Duration::from_secs(60));
    let job = jobs::get(&storage, &all[0].id).unwrap();
    assert_eq!(job.status, Status::Done, "{job:?}");
    assert_eq!(job.counts.get("resumed"), Some(&1), "{job:?}");
    let expected_removed = if abort_at == "before_commit" { 100 } else { 0 };
    assert_eq!(job.counts["rows_removed"], expected_removed, "{job:?}");
    // the predicate itself is not kept once the job ended
    assert!(!serde_json::to_string(&job).unwrap().contains("u1-"));
    common::stop(server);
    assert_eq!(stored_bodies(&config), kept);
}

#[test]
fn an_erasure_stopped_before_its_commit_leaves_the_old_files_and_finishes_after_restart() {
    erasure_stopped_dead("before_commit");
}

#[test]
fn an_erasure_stopped_after_its_commit_leaves_the_new_files_and_finishes_after_restart() {
    erasure_stopped_dead("after_commit");
}

/// The CLI's way: `bulkhead erase create --wait` stores the job, the
/// running server takes it, the command follows it to `done`; `erase list`
/// shows it; `tenant offboard` wants `--yes`, then removes everything.
#[test]
fn the_cli_asks_for_an_erasure_and_an_offboarding_and_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[listen]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nflight = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let policies = data.join("policies");
    tenants::create_tenant(&policies, "acme").unwrap();
    let key = tenants::create_key(
        &policies,
        "acme",
        Scopes::parse_list("ingest,query").unwrap(),
    )
    .unwrap()
    .expose();
    let server = start(&config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(
            reqwest::Client::new()
                .post(format!("http://{}/v1/logs", server.http))
                .bearer_auth(&key)
                .header("content-type", "application/x-protobuf")
                .body(records(0, 40))
                .send(),
        )
        .unwrap();
    assert_eq!(r.status(), 200);
    let bulkhead = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let from =
        chrono::DateTime::from_timestamp_nanos(now_nanos() as i64 - 3_600_000_000_000).to_rfc3339();
    let to =
        chrono::DateTime::from_timestamp_nanos(now_nanos() as i64 + 3_600_000_000_000).to_rfc3339();
    let bad = bulkhead(&[
        "erase", "create", "--tenant", "acme", "--table", "logs", "--from", &from, "--to", &from,
        "--where", "true",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("empty"));
    let out = bulkhead(&[
        "erase",
        "create",
        "--tenant",
        "acme",
        "--table",
        "logs",
        "--from",
        &from,
        "--to",
        &to,
        "--where",
        "body LIKE 'u1-%'",
        "--wait",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(" done "), "{stderr}");
    assert!(stderr.contains("rows_removed=10"), "{stderr}");
    let list = bulkhead(&["erase", "list", "--tenant", "acme"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("erasure tenant=acme done"));

    let refused = bulkhead(&["tenant", "offboard", "acme"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    // a name with neither a policy nor data (a typo) is refused, not marked
    // shredded for good
    let typo = bulkhead(&["tenant", "offboard", "acmee", "--yes"]);
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("no tenant acmee to offboard"),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );
    let out = bulkhead(&["tenant", "offboard", "acme", "--yes", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::stop(server);
    let mut files = Vec::new();
    common::files_under(&data.join("store"), &mut files);
    assert!(
        !files
            .iter()
            .any(|f| f.to_string_lossy().contains("tenant=acme")),
        "{files:?}"
    );
    assert!(!policies.join("acme.toml").exists());
}

fn config_file(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    let config = dir.join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[listen]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nflight = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    (config, data)
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn post(url: String, key: &str, body: Vec<u8>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send(),
        )
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn the_cli_makes_an_extract_and_verify_names_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = config_file(dir.path());
    let policies = data.join("policies");
    tenants::create_tenant(&policies, "acme").unwrap();
    let key = tenants::create_key(
        &policies,
        "acme",
        Scopes::parse_list("ingest,extract").unwrap(),
    )
    .unwrap()
    .expose();
    let server = start(&config);
    post(
        format!("http://{}/v1/logs", server.http),
        &key,
        records(0, 50),
    );
    let from =
        chrono::DateTime::from_timestamp_nanos(now_nanos() as i64 - 3_600_000_000_000).to_rfc3339();
    let to =
        chrono::DateTime::from_timestamp_nanos(now_nanos() as i64 + 3_600_000_000_000).to_rfc3339();
    let bundle = dir.path().join("out").join("acme.tar");
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "extract", "create", "--tables", "logs", "--from", &from, "--to", &to,
        ])
        .args(["--where", "body LIKE 'u1-%'", "--out"])
        .arg(&bundle)
        .args(["--url", &format!("http://{}", server.api)])
        .env("BULKHEAD_API_KEY", &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": 13 rows"), "{stdout}");
    let pk = cli(&config, &["extract", "public-key"]);
    assert!(pk.status.success());
    let pk = String::from_utf8_lossy(&pk.stdout).trim().to_string();
    assert_eq!(pk.len(), 64);
    let verify = |bundle: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["extract", "verify"])
            .arg(bundle)
            .args(["--public-key", &pk])
            .output()
            .unwrap()
    };
    let ok = verify(&bundle);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK"));
    // one byte of the data file changed
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let at = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_string_lossy().ends_with(".parquet"))
        .map(|e| e.raw_file_position() as usize)
        .unwrap();
    bytes[at + 100] ^= 0x80;
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let out = verify(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data/logs/part-00000.parquet: content does not match"),
        "{stderr}"
    );
    // a key without the extract scope is refused with the reason
    let ingest_only = tenants::create_key(&policies, "acme", Scopes::parse_list("ingest").unwrap())
        .unwrap()
        .expose();
    common::stop(server);
    let server = start(&config);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["extract", "create", "--from", &from, "--to", &to, "--out"])
        .arg(dir.path().join("no.tar"))
        .args(["--url", &format!("http://{}", server.api)])
        .env("BULKHEAD_API_KEY", &ingest_only)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    assert!(!dir.path().join("no.tar").exists());
    common::stop(server);
}

#[test]
fn a_cut_audit_tail_is_caught_by_the_published_head() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = config_file(dir.path());
    let policies = data.join("policies");
    tenants::create_tenant(&policies, "acme").unwrap();
    let key = tenants::create_key(
        &policies,
        "acme",
        Scopes::parse_list("ingest,query").unwrap(),
    )
    .unwrap()
    .expose();
    let server = start(&config);
    // queries are audited
    for _ in 0..3 {
        common::query_bodies(&server.api, &key);
    }
    // the head is published at shutdown (and every minute)
    common::stop(server);
    let ok = cli(&config, &["audit", "verify", "--published"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // the last entry cut off: the chain alone still verifies, the
    // published head does not
    let log = data.join("audit").join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3);
    lines.pop();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let weak = cli(&config, &["audit", "verify"]);
    assert!(
        weak.status.success(),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );
    let strong = cli(&config, &["audit", "verify", "--published"]);
    assert!(!strong.status.success());
    let stderr = String::from_utf8_lossy(&strong.stderr);
    assert!(
        stderr.contains("anchor") || stderr.contains("missing"),
        "{stderr}"
    );
    // written on past the cut (a restart, more queries, a newer head
    // published): the older head still disagrees
    let server = start(&config);
    for _ in 0..3 {
        common::query_bodies(&server.api, &key);
    }
    common::stop(server);
    let strong = cli(&config, &["audit", "verify", "--published"]);
    assert!(
        !strong.status.success(),
        "{}",
        String::from_utf8_lossy(&strong.stdout)
    );
}
