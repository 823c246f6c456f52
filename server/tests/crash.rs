//! Crash safety of the real binary: a `bulkhead serve` child process under
//! continuous OTLP/HTTP load from several clients is killed with SIGKILL at
//! random moments, cycle after cycle. After every restart each acknowledged
//! record is queryable exactly once, no record is there twice, every Parquet
//! file reads back and no temporary file the crash left survives the restart.
//!
//! The cycle count is kept small for CI; `BULKHEAD_CRASH_CYCLES` runs more
//! (e.g. 100 for a soak run), `BULKHEAD_CRASH_SEED` replays one schedule.
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_collector::tenants;
use bulkhead_rules::Scopes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 4;
const RECORDS_PER_REQUEST: usize = 50;

struct Server {
    child: Child,
    http: String,
    api: String,
}

/// A failing assertion must not leave the child running (it would hold the
/// test's output open).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bulkhead serve` and waits for its "ready" line.
fn start(config: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("BULKHEAD_DATA_DIR")
        .env_remove("BULKHEAD_POLICY_DIR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start bulkhead");
    // owned by a Server at once, so a failed wait below still kills it
    let mut server = Server {
        child,
        http: String::new(),
        api: String::new(),
    };
    let stdout = server.child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "bulkhead did not get ready");
        let line = lines
            .next()
            .expect("bulkhead exited before it was ready")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("bulkhead ready: ") {
            // "OTLP gRPC a, OTLP HTTP b, API c"
            let addr = |label: &str| {
                rest.split(", ")
                    .find_map(|p| p.strip_prefix(label))
                    .expect("address in ready line")
                    .to_string()
            };
            (server.http, server.api) = (addr("OTLP HTTP "), addr("API "));
            // keep draining stdout so the child never blocks on a full pipe
            std::thread::spawn(move || for _ in lines {});
            return server;
        }
    }
}

fn request(client: usize, first: u64, now_nanos: u64) -> Vec<u8> {
    let records = (0..RECORDS_PER_REQUEST as u64)
        .map(|i| LogRecord {
            time_unix_nano: now_nanos,
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "c{client}-{}",
                    first + i
                ))),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("crash-test".into())),
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

/// Sends requests until the server stops answering; returns the ids of the
/// records whose request was acknowledged (200 without partial rejection)
/// and of those sent but not acknowledged.
async fn load(
    http: String,
    key: String,
    client: usize,
    next: Arc<Mutex<HashMap<usize, u64>>>,
    progress: std::sync::mpsc::Sender<()>,
) -> (Vec<String>, Vec<String>) {
    let c = reqwest::Client::new();
    let (mut acked, mut unacked) = (Vec::new(), Vec::new());
    loop {
        let first = {
            let mut n = next.lock().unwrap();
            let v = n.entry(client).or_insert(0);
            let first = *v;
            *v += RECORDS_PER_REQUEST as u64;
            first
        };
        let ids: Vec<String> = (first..first + RECORDS_PER_REQUEST as u64)
            .map(|i| format!("c{client}-{i}"))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let resp = c
            .post(format!("http://{http}/v1/logs"))
            .bearer_auth(&key)
            .header("content-type", "application/x-protobuf")
            .body(request(client, first, now))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(b) => {
                    let resp = ExportLogsServiceResponse::decode(b).expect("an OTLP response");
                    assert!(resp.partial_success.is_none(), "{resp:?}");
                    acked.extend(ids);
                    let _ = progress.send(());
                }
                // the answer was cut off: it may or may not be in
                Err(_) => unacked.extend(ids),
            },
            Ok(r) if r.status() == 503 || r.status() == 429 => unacked.extend(ids),
            Ok(r) => panic!("unexpected status {} from a healthy request", r.status()),
            Err(_) => {
                // the server is gone (killed): this request may or may not be in
                unacked.extend(ids);
                return (acked, unacked);
            }
        }
    }
}

fn query_bodies(api: &str, key: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://{api}/api/v1/query"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "sql": "SELECT body FROM logs" }))
            .send()
            .await
            .expect("query");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let rows: Vec<serde_json::Value> = r.json().await.expect("rows");
        rows.into_iter()
            .map(|row| row["body"].as_str().expect("body").to_string())
            .collect()
    })
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

/// Whether any manifest commit under `store` added a merged file.
fn compacted(store: &Path) -> bool {
    let mut files = Vec::new();
    files_under(store, &mut files);
    files.iter().any(|f| {
        f.to_string_lossy().contains("_manifest")
            && std::fs::read_to_string(f).is_ok_and(|t| t.contains("\"level\":1"))
    })
}

/// The temporary files under `store` (commits in progress, or a crash's leftovers).
fn temp_files(store: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(store, &mut files);
    files.retain(|f| {
        bulkhead_store::objects::is_staging_name(&f.file_name().unwrap().to_string_lossy())
    });
    files
}

/// Every committed file reads back, and none of the temporary files the
/// crash left (`leftovers`, listed before the restart) is there any more;
/// new ones may be commits of the restarted server in progress.
fn check_store(store: &Path, leftovers: &[PathBuf]) {
    for f in leftovers {
        assert!(!f.exists(), "temporary file left: {}", f.display());
    }
    let mut files = Vec::new();
    files_under(store, &mut files);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&f).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{} is unreadable: {e}", f.display()))
            .build()
            .unwrap();
            for b in reader {
                b.unwrap_or_else(|e| panic!("{} is unreadable: {e}", f.display()));
            }
        }
    }
}

#[test]
fn sigkill_under_load_loses_and_duplicates_nothing_acknowledged() {
    let cycles: usize = std::env::var("BULKHEAD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("BULKHEAD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("crash test: {cycles} cycles, seed {seed} (BULKHEAD_CRASH_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

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
# commits (and WAL segment deletions) happen all through the load
max_age = "200ms"
[wal]
segment_size = "64KiB"
[compaction]
# merges (and their commits) happen all through the load too
interval = "100ms"
min_files = 2
[query]
max_rows = 10000000
"#
        ),
    )
    .unwrap();
    let policies = data.join("policies");
    tenants::create_tenant(&policies, "crash").unwrap();
    let key = tenants::create_key(
        &policies,
        "crash",
        Scopes::parse_list("ingest,query").unwrap(),
    )
    .unwrap()
    .expose();

    let next = Arc::new(Mutex::new(HashMap::new()));
    let mut acked: HashSet<String> = HashSet::new();
    let mut maybe: HashSet<String> = HashSet::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for cycle in 0..=cycles {
        let leftovers = temp_files(&data.join("store"));
        let mut server = start(&config);
        // after a restart: everything acknowledged so far is there, once
        check_store(&data.join("store"), &leftovers);
        let bodies = query_bodies(&server.api, &key);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for b in &bodies {
            *seen.entry(b.as_str()).or_default() += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(
            dups.is_empty(),
            "cycle {cycle}: records stored twice: {dups:?}"
        );
        let lost: Vec<_> = acked
            .iter()
            .filter(|id| !seen.contains_key(id.as_str()))
            .take(5)
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} of {} acknowledged records lost, e.g. {lost:?}",
            acked
                .iter()
                .filter(|id| !seen.contains_key(id.as_str()))
                .count(),
            acked.len()
        );
        let unknown: Vec<_> = seen
            .keys()
            .filter(|id| !acked.contains(**id) && !maybe.contains(**id))
            .take(5)
            .collect();
        assert!(unknown.is_empty(), "records never sent: {unknown:?}");
        if cycle == cycles {
            // the files the cycles left are merged (compaction commits ran
            // through the load as well), and the rows are still there once
            let merged = Instant::now();
            while !compacted(&data.join("store")) {
                assert!(
                    merged.elapsed() < Duration::from_secs(30),
                    "no compaction within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let after = query_bodies(&server.api, &key);
            assert_eq!(after.len(), bodies.len(), "rows changed in compaction");
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            break;
        }

        // load from several clients, then SIGKILL at a random moment: after
        // a random number of acknowledged requests, while the others are in
        // flight
        let (tx, rx) = std::sync::mpsc::channel();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                rt.spawn(load(
                    server.http.clone(),
                    key.clone(),
                    c + cycle * CLIENTS,
                    next.clone(),
                    tx.clone(),
                ))
            })
            .collect();
        drop(tx);
        let after: usize = rng.random_range(1..120);
        for _ in 0..after {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("acknowledgements stopped coming");
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().unwrap();
        for c in clients {
            let (a, u) = rt.block_on(c).unwrap();
            acked.extend(a);
            maybe.extend(u);
        }
        eprintln!(
            "cycle {cycle}: killed after {after} acknowledged requests; {} records acknowledged so far",
            acked.len()
        );
    }
    assert!(
        acked.len() >= cycles * RECORDS_PER_REQUEST,
        "the load barely ran: {} records acknowledged",
        acked.len()
    );
}
