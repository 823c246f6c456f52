//! What the tests of the real binary share: starting `bulkhead serve` as a
//! child process, OTLP/HTTP load that records what was acknowledged, and
//! reading the rows back.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub const CLIENTS: usize = 4;
pub const RECORDS_PER_REQUEST: usize = 50;

pub struct Server {
    pub child: Child,
    pub http: String,
    pub api: String,
    /// The server's log lines (echoed to the test's stderr too); the
    /// channel disconnects when the process has exited.
    pub logs: std::sync::mpsc::Receiver<String>,
}

/// A failing assertion must not leave the child running (it would hold the
/// test's output open).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration file for a test server: `data_dir`, every
/// listener on a free loopback port, then `extra` (TOML, top-level keys
/// first).
pub fn write_config(path: &Path, data: &Path, extra: &str) {
    let (top, sections) = match extra.find('[') {
        Some(i) => extra.split_at(i),
        None => (extra, ""),
    };
    std::fs::write(
        path,
        format!(
            "data_dir = {data:?}\n{top}\n[listen]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nflight = \"127.0.0.1:0\"\n{sections}"
        ),
    )
    .unwrap();
}

/// Starts `bulkhead serve` and waits for its "ready" line.
pub fn start(config: &Path) -> Server {
    start_with_env(config, &[])
}

/// [`start`] with extra environment variables.
pub fn start_with_env(config: &Path, env: &[(&str, String)]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("BULKHEAD_DATA_DIR")
        .env_remove("BULKHEAD_POLICY_DIR")
        // warnings, and what the background tasks did
        .env(
            "RUST_LOG",
            "warn,bulkhead::server=debug,bulkhead_collector::anomaly=debug,bulkhead::jobs=info",
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bulkhead");
    let (tx, logs) = std::sync::mpsc::channel();
    // owned by a Server at once, so a failed wait below still kills it
    let mut server = Server {
        child,
        http: String::new(),
        api: String::new(),
        logs,
    };
    let stderr = server.child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
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

pub fn request(client: usize, first: u64, now_nanos: u64) -> Vec<u8> {
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
pub async fn load(
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

pub fn query_bodies(api: &str, key: &str) -> Vec<String> {
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

pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Stops the server with SIGTERM (a graceful shutdown: buffers are
/// committed) and waits for it to exit.
pub fn stop(mut server: Server) {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    // its log channel disconnects once the process has exited
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match server
            .logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(_) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no shutdown within 60 s"),
        }
    }
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown failed: {status}");
}

/// Waits, at most `bound`, for a log line of `server` containing `what`
/// (lines since its start count).
pub fn wait_for_log(server: &Server, what: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        match server
            .logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) if line.contains(what) => return,
            Ok(_) => continue,
            Err(e) => panic!("no log line with {what:?} within {bound:?}: {e}"),
        }
    }
}
