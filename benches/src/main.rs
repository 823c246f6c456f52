//! `bulkhead-load`: the end-to-end ingest benchmark.
//!
//! Starts a real server in this process on loopback (its own temporary data
//! directory), creates a tenant and key, then sends OTLP logs over gRPC
//! (gzip) from concurrent clients, measures acknowledged records per second,
//! shuts the server down (committing every buffer) and reports the Parquet
//! bytes on disk per record. Run it in release:
//!
//! ```text
//! cargo run --release -p bulkhead-benches -- --records 1000000
//! ```
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_collector::tenants;
use bulkhead_rules::{Scopes, SystemClock};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use tonic::codec::CompressionEncoding;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    load: bulkhead_benches::LoadArgs,
    /// Run without the write-ahead log (for a before/after comparison).
    #[arg(long)]
    no_wal: bool,
}

use bulkhead_benches::request;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = bulkhead_benches::loopback_config(dir.path());
    config.wal.enabled = !args.no_wal;
    tenants::create_tenant(&config.policy_dir(), "bench")?;
    let key = tenants::create_key(&config.policy_dir(), "bench", Scopes::parse_list("ingest")?)?;
    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    let endpoint = format!("http://{}", server.grpc_addr);

    let requests = args.load.records.div_ceil(args.load.batch);
    let per_client = requests.div_ceil(args.load.clients);
    // Requests are built before the clock starts: the client's cost is not measured.
    let base = 1_764_000_000_000_000_000u64;
    let mut work = Vec::new();
    for c in 0..args.load.clients {
        let reqs: Vec<_> = (0..per_client)
            .map(|s| c * per_client + s)
            .filter(|s| *s < requests)
            .map(|s| request(c, s, args.load.batch, base))
            .collect();
        work.push(reqs);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for reqs in work {
        let endpoint = endpoint.clone();
        let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {}", key.expose())
            .parse()
            .map_err(|e| format!("{e}"))?;
        tasks.push(tokio::spawn(async move {
            let mut client = LogsServiceClient::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(64 << 20);
            let mut latencies = Vec::with_capacity(reqs.len());
            for r in reqs {
                let mut req = tonic::Request::new(r);
                req.metadata_mut().insert("authorization", auth.clone());
                let t = Instant::now();
                let resp = client.export(req).await.map_err(|e| e.to_string())?;
                latencies.push(t.elapsed());
                if resp.into_inner().partial_success.is_some() {
                    return Err("records were rejected".to_string());
                }
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    let sent = requests * args.load.batch;
    let store = config.store_dir();
    let flush_started = Instant::now();
    let store_handle = server.store().clone();
    let stats = server.shutdown().await?;
    let committed = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let total_rows = committed(&store_handle.stats().rows_committed);
    let total_files = committed(&store_handle.stats().files_committed);
    if total_rows != sent as u64 {
        return Err(format!(
            "{sent} records acknowledged but {total_rows} committed"
        ));
    }
    let flush_elapsed = flush_started.elapsed();
    let (_, bytes) = bulkhead_benches::parquet_files(&store);
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "logs over OTLP/gRPC (gzip), {} clients, {} records per request, write-ahead log {}",
        args.load.clients,
        args.load.batch,
        if args.no_wal { "off" } else { "on" }
    );
    println!(
        "records acknowledged: {sent} in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} records/s",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!(
        "request latency: p50 {:.1} ms, p99 {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!(
        "final flush: {} files, {} rows in {:.2} s",
        stats.files,
        stats.rows,
        flush_elapsed.as_secs_f64()
    );
    println!("committed in all: {total_files} files, {total_rows} rows");
    println!(
        "parquet on disk: {bytes} bytes, {:.1} bytes/record",
        bytes as f64 / sent as f64
    );
    if let Ok(rss) = bulkhead_benches::status_mib(std::process::id(), "VmHWM:") {
        println!("peak RSS (server and clients): {rss:.0} MiB");
    }
    Ok(())
}
