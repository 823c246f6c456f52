//! `compaction_queries`: query times on a tenant's day of 30-second flushes,
//! before and after compaction, against DuckDB on the same files.
//!
//! Starts a real server in this process on an injected clock, sends a day
//! of logs (10 million rows by default, eight services) over OTLP/gRPC in
//! 2,880 slots of 30 seconds, committing each slot as its own files (what
//! 30-second flushes leave), then times two queries through `/api/v1/query`:
//! a count by service over one hour, and a trace-id lookup over the day.
//! The same queries run in DuckDB (Python, `read_parquet` over the tenant's
//! tree with Hive partitioning) on the same files in the same run. Then the
//! day is compacted (each hour merged, sorted, with a bloom filter on
//! `trace_id`), the replaced files deleted, and everything is timed again.
//! Each query: one cold run, then five warm; the median of the warm runs is
//! reported. Needs the Python with DuckDB of `tests/python/requirements.txt`
//! (`BULKHEAD_TEST_PYTHON`, or the venv `.ci/run` makes).
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin compaction_queries
//! ```
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_collector::tenants;
use bulkhead_rules::{ManualClock, Scopes, TenantId};
use bulkhead_store::{CompactionConfig, Signal};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

#[derive(Parser)]
struct Args {
    /// Log rows in the tenant's day.
    #[arg(long, default_value_t = 10_000_000)]
    logs: u64,
    /// Warm runs per query.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `query.metadata_cache` in MiB (default: the server's default).
    #[arg(long)]
    metadata_cache_mib: Option<u64>,
}

const DAY: u64 = 86_400_000_000_000;
const SLOT: u64 = 30_000_000_000;
const SLOTS: u64 = DAY / SLOT;
const SERVICES: u64 = 8;

use bulkhead_benches::kv;

/// The rows of one slot, one resource per service.
fn slot(rows: std::ops::Range<u64>, start: u64, total: u64) -> ExportLogsServiceRequest {
    let mut by_service: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES as usize];
    for n in rows {
        by_service[(n % SERVICES) as usize].push(LogRecord {
            time_unix_nano: start + n * (DAY / total),
            severity_number: if n % 50 == 0 { 17 } else { 9 },
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "GET /api/items/{} 200 in {} ms",
                    n % 10_000,
                    n % 97
                ))),
            }),
            trace_id: (n as u128 + 1).to_be_bytes().to_vec(),
            span_id: (n + 1).to_be_bytes().to_vec(),
            ..Default::default()
        });
    }
    ExportLogsServiceRequest {
        resource_logs: by_service
            .into_iter()
            .enumerate()
            .map(|(s, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", format!("svc-{s}"))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

use bulkhead_benches::sql_timestamp as timestamp;

/// Times `queries` in DuckDB over the tenant's tree: (cold, warm median) ms.
fn duckdb(tree: &str, queries: &[(&str, String)], runs: usize) -> Result<Vec<(f64, f64)>, String> {
    const SCRIPT: &str = r#"
import json, sys, time, duckdb
tree, runs, queries = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
con = duckdb.connect()
con.sql(f"CREATE VIEW logs AS SELECT * FROM read_parquet('{tree}/**/*.parquet', hive_partitioning = true)")
out = []
for q in queries:
    times = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        con.sql(q).fetch_arrow_table()
        times.append((time.perf_counter() - t) * 1e3)
    warm = sorted(times[1:])
    out.append([times[0], warm[len(warm) // 2]])
print(json.dumps(out))
"#;
    let sql: Vec<&String> = queries.iter().map(|(_, q)| q).collect();
    let python = bulkhead_testkit::python();
    let out = std::process::Command::new(&python)
        .args(["-c", SCRIPT, tree, &runs.to_string()])
        .arg(serde_json::to_string(&sql).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Times `queries` through Bulkhead's query API: (cold, warm median) ms.
async fn bulkhead(
    url: &str,
    key: &str,
    queries: &[(&str, String)],
    runs: usize,
) -> Result<Vec<(f64, f64)>, String> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for (name, sql) in queries {
        let mut times = Vec::new();
        for _ in 0..=runs {
            let t = Instant::now();
            let resp = http
                .post(url)
                .bearer_auth(key)
                .json(&serde_json::json!({ "sql": sql }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if !status.is_success() {
                return Err(format!("{name}: {status} {body}"));
            }
        }
        let mut warm = times[1..].to_vec();
        warm.sort_by(f64::total_cmp);
        out.push((times[0], warm[warm.len() / 2]));
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = bulkhead_benches::loopback_config(dir.path());
    // this benchmark decides when files are committed and merged
    config.compaction.enabled = false;
    config.flush.max_age = bulkhead::config::HumanDuration(Duration::from_secs(86_400));
    if let Some(mib) = args.metadata_cache_mib {
        config.query.metadata_cache = bulkhead::config::ByteSize(mib << 20);
    }
    tenants::create_tenant(&config.policy_dir(), "bench")?;
    let key = tenants::create_key(
        &config.policy_dir(),
        "bench",
        Scopes::parse_list("ingest,query")?,
    )?
    .expose();
    let (start, end) = bulkhead_benches::day_ending_an_hour_ago()?;
    let clock = Arc::new(ManualClock::new(start as i64));
    let server = bulkhead::start(&config, clock.clone()).await?;
    let mut client = LogsServiceClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .map_err(|e| e.to_string())?;
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {key}")
        .parse()
        .map_err(|e| format!("{e}"))?;

    let loaded = Instant::now();
    let per_slot = args.logs.div_ceil(SLOTS);
    for s in 0..SLOTS {
        let rows = (s * per_slot).min(args.logs)..((s + 1) * per_slot).min(args.logs);
        clock.set((start + (s + 1) * SLOT) as i64);
        for chunk in rows.clone().step_by(2_000) {
            let mut req =
                tonic::Request::new(slot(chunk..(chunk + 2_000).min(rows.end), start, args.logs));
            req.metadata_mut().insert("authorization", auth.clone());
            client.export(req).await.map_err(|e| e.to_string())?;
        }
        // what a 30-second flush does at the end of the slot
        let store = server.store().clone();
        tokio::task::spawn_blocking(move || store.flush_all())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let store = server.store().clone();
    let tenant = TenantId::new("bench")?;
    let files = |store: &bulkhead_store::Store| -> Result<usize, String> {
        Ok(store
            .files(&tenant, Signal::Logs)
            .map_err(|e| e.to_string())?
            .len())
    };
    println!(
        "loaded {} log rows in {} slots of 30 s in {:.1} s: {} files",
        args.logs,
        SLOTS,
        loaded.elapsed().as_secs_f64(),
        files(&store)?
    );

    let hour = start + 12 * 3_600_000_000_000;
    let trace = format!("{:032x}", args.logs as u128 / 3 + 1);
    let queries = [
        (
            "count by service, 1 h",
            format!(
                "SELECT service_name, count(*) FROM logs WHERE timestamp >= {} AND timestamp < {} GROUP BY service_name ORDER BY service_name",
                timestamp(hour),
                timestamp(hour + 3_600_000_000_000)
            ),
        ),
        (
            "trace lookup, day",
            format!("SELECT timestamp, service_name, body FROM logs WHERE trace_id = '{trace}'"),
        ),
    ];
    let url = format!("http://{}/api/v1/query", server.api_addr);
    let tree = server
        .store()
        .local_root()
        .ok_or("the benchmark runs on local disk")?
        .join("tenant=bench/signal=logs")
        .display()
        .to_string();

    let before_ours = bulkhead(&url, &key, &queries, args.runs).await?;
    let before_duck = duckdb(&tree, &queries, args.runs)?;

    // the day is over: every hour is settled and merged whole
    clock.set((end + 3_600_000_000_000) as i64);
    let compacted = Instant::now();
    let s = store.clone();
    let stats = tokio::task::spawn_blocking(move || {
        s.compact_due(&CompactionConfig {
            settle: Duration::from_secs(600),
            ..Default::default()
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let compaction_secs = compacted.elapsed().as_secs_f64();
    // past the removal grace: the replaced files leave the tree
    clock.advance(config.storage.removal_grace.0);
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.delete_expired_all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!(
        "compacted {} files into {} in {compaction_secs:.1} s ({} -> {} bytes): {} files",
        stats.inputs,
        stats.merged,
        stats.bytes_in,
        stats.bytes_out,
        files(&store)?
    );
    let after_ours = bulkhead(&url, &key, &queries, args.runs).await?;
    let after_duck = duckdb(&tree, &queries, args.runs)?;

    println!("query                   files     bulkhead cold / warm ms   duckdb cold / warm ms   warm ratio");
    for (when, ours, duck) in [
        ("flushed", &before_ours, &before_duck),
        ("compacted", &after_ours, &after_duck),
    ] {
        for (i, (name, _)) in queries.iter().enumerate() {
            println!(
                "{name:<22} {when:<10} {:>8.1} / {:>8.1}       {:>8.1} / {:>8.1}      {:.2}",
                ours[i].0,
                ours[i].1,
                duck[i].0,
                duck[i].1,
                ours[i].1 / duck[i].1
            );
        }
    }
    server.shutdown().await?;
    Ok(())
}
