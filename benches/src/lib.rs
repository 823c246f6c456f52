//! What the benchmarks share.
use std::net::SocketAddr;
use std::path::Path;

use bulkhead::Config;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The default configuration with its data in `data_dir` and every listener
/// on an ephemeral loopback port, so a benchmark never collides with a
/// server already running on the machine.
/// (`BENCH_ENCRYPTION=off` turns tenant encryption off, for comparison.)
pub fn loopback_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.grpc = any;
    config.listen.http = any;
    config.listen.api = any;
    config.listen.metrics = any;
    config.listen.flight = any;
    // BENCH_ENCRYPTION=off: new data in the clear, to price encryption
    config.encryption.enabled = std::env::var("BENCH_ENCRYPTION").as_deref() != Ok("off");
    // BENCH_THP=on: let the kernel give the server transparent huge pages
    config.transparent_huge_pages = std::env::var("BENCH_THP").as_deref() == Ok("on");
    config
}

/// An OTLP string attribute.
pub fn kv(k: &str, v: String) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

/// The 24 hours (nanoseconds since the epoch, start and end) that end at
/// the start of the hour before the current one: whole hours, all past.
pub fn day_ending_an_hour_ago() -> Result<(u64, u64), String> {
    const HOUR: u64 = 3_600_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos() as u64;
    let end = (now / HOUR - 1) * HOUR;
    Ok((end - 24 * HOUR, end))
}

/// A field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`) in MiB.
pub fn status_mib(pid: u32, field: &str) -> Result<f64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or(format!("no {field} in /proc/{pid}/status"))?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("bad {line}"))?;
    Ok(kib / 1024.0)
}

/// Parquet files below `dir` and their bytes.
pub fn parquet_files(dir: &Path) -> (u64, u64) {
    let mut out = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            let (f, b) = parquet_files(&path);
            out = (out.0 + f, out.1 + b);
        } else if path.extension().is_some_and(|x| x == "parquet") {
            out = (
                out.0 + 1,
                out.1 + e.metadata().map(|m| m.len()).unwrap_or(0),
            );
        }
    }
    out
}

/// How much load the OTLP load generator sends, and how.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// Log records to send (per round, where there are rounds).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Records per export request.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent gRPC clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
}

/// A SQL timestamp literal for nanoseconds since the epoch.
pub fn sql_timestamp(nanos: u64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// A request shaped like a typical service's logs: a resource with a few
/// attributes, records with a ~120-byte message, four attributes, trace ids.
pub fn request(
    client: usize,
    seq: usize,
    batch: usize,
    base_nanos: u64,
) -> ExportLogsServiceRequest {
    let records = (0..batch)
        .map(|i| {
            let n = seq * batch + i;
            LogRecord {
                time_unix_nano: base_nanos + n as u64 * 1_000_000,
                observed_time_unix_nano: base_nanos + n as u64 * 1_000_000 + 5_000,
                severity_number: if n.is_multiple_of(50) { 17 } else { 9 },
                severity_text: if n.is_multiple_of(50) { "ERROR".into() } else { "INFO".into() },
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "GET /api/v1/orders/{} completed with status {} in {} ms for user u-{} from region eu-west-1",
                        n % 10_000,
                        if n.is_multiple_of(50) { 500 } else { 200 },
                        n % 997,
                        n % 3_000
                    ))),
                }),
                attributes: vec![
                    kv("http.method", "GET".into()),
                    kv("http.route", "/api/v1/orders/{id}".into()),
                    kv("http.status_code", if n.is_multiple_of(50) { "500" } else { "200" }.into()),
                    kv("user.id", format!("u-{}", n % 3_000)),
                ],
                trace_id: (n as u128 * 7919 + 1).to_be_bytes().to_vec(),
                span_id: (n as u64 * 31 + 1).to_be_bytes().to_vec(),
                flags: 1,
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", format!("orders-{client}")),
                    kv("host.name", format!("node-{client}")),
                    kv("deployment.environment", "production".into()),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "orders.http".into(),
                    version: "1.4.2".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A gRPC channel to `addr` (host:port, plain HTTP/2).
pub async fn connect(addr: &str) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// The `authorization` metadata value for `key`.
pub fn bearer(key: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    format!("Bearer {key}")
        .parse()
        .map_err(|e: tonic::metadata::errors::InvalidMetadataValue| e.to_string())
}

/// `msg` as a request carrying `auth`.
pub fn authed<T>(
    msg: T,
    auth: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}

/// The `p` quantile (0..=1) of `l` in milliseconds (sorts `l`).
pub fn pct(l: &mut [std::time::Duration], p: f64) -> f64 {
    l.sort();
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1e3
}

/// Runs this benchmark's own binary again as a load generator at the lowest
/// CPU priority (`nice -n 19`), standing in for clients on other machines:
/// `args` are its arguments, `env` one variable (a key). The child prints
/// `ready` once connected, then one line of whitespace-separated counts when
/// done; the handle resolves to those counts.
pub async fn spawn_load_child(
    args: &[String],
    env: (&str, &str),
) -> Result<tokio::task::JoinHandle<Result<Vec<u64>, String>>, String> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(exe)
        .args(args)
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the load process: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    match lines.next_line().await.map_err(|e| e.to_string())? {
        Some(l) if l == "ready" => {}
        other => return Err(format!("load process did not start: {other:?}")),
    }
    Ok(tokio::spawn(async move {
        let line = lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("load process printed no counts")?;
        let _ = child.wait().await;
        line.split_whitespace()
            .map(|w| {
                w.parse()
                    .map_err(|_| format!("unexpected counts from the load process: {line}"))
            })
            .collect()
    }))
}
