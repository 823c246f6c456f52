//! `encryption_extract`: what tenant encryption costs, and how fast
//! forensic extracts are made and checked.
//!
//! Starts a real server in this process on loopback, sends logs over
//! OTLP/gRPC (gzip) from concurrent clients and measures acknowledged
//! records per second; commits everything, then times two queries through
//! `/api/v1/query` (a filtered count over one column, and a `LIKE` scan of
//! every message: both read and, with encryption, decrypt what they scan;
//! one cold run, then the median of the warm ones); then makes an extract
//! of every row over `/api/v1/extracts` (rows/s and MB/s of the bundle as
//! received) and verifies the bundle (MB/s). Run it twice to price
//! encryption, once as is and once with `BENCH_ENCRYPTION=off`:
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin encryption_extract
//! BENCH_ENCRYPTION=off cargo run --release -p bulkhead-benches --bin encryption_extract
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
    /// Warm runs per query.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = bulkhead_benches::loopback_config(dir.path());
    tenants::create_tenant(&config.policy_dir(), "bench")?;
    let key = tenants::create_key(
        &config.policy_dir(),
        "bench",
        Scopes::parse_list("ingest,query,extract")?,
    )?
    .expose();
    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    let endpoint = format!("http://{}", server.grpc_addr);
    let api = format!("http://{}", server.api_addr);

    // ingest
    let requests = args.load.records.div_ceil(args.load.batch);
    let per_client = requests.div_ceil(args.load.clients);
    let base = 1_764_000_000_000_000_000u64;
    let mut work = Vec::new();
    for c in 0..args.load.clients {
        let reqs: Vec<_> = (0..per_client)
            .map(|s| c * per_client + s)
            .filter(|s| *s < requests)
            .map(|s| bulkhead_benches::request(c, s, args.load.batch, base))
            .collect();
        work.push(reqs);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for reqs in work {
        let endpoint = endpoint.clone();
        let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {key}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        tasks.push(tokio::spawn(async move {
            let mut client = LogsServiceClient::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?
                .send_compressed(CompressionEncoding::Gzip);
            for r in reqs {
                let mut req = tonic::Request::new(r);
                req.metadata_mut().insert("authorization", auth.clone());
                let resp = client.export(req).await.map_err(|e| e.to_string())?;
                if resp.into_inner().partial_success.is_some() {
                    return Err("records were rejected".to_string());
                }
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let ingest = started.elapsed();
    let sent = requests * args.load.batch;
    let store = server.store().clone();
    tokio::task::spawn_blocking(move || store.flush_all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (_, stored_bytes) = bulkhead_benches::parquet_files(&config.store_dir());

    // queries
    let http = reqwest::Client::new();
    let query = |sql: &'static str| {
        let (http, api, key) = (http.clone(), api.clone(), key.clone());
        async move {
            let t = Instant::now();
            let r = http
                .post(format!("{api}/api/v1/query"))
                .bearer_auth(&key)
                .json(&serde_json::json!({ "sql": sql }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("{sql}: {}", r.text().await.unwrap_or_default()));
            }
            r.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(t.elapsed())
        }
    };
    let mut query_times = Vec::new();
    for sql in [
        "SELECT count(*) FROM logs WHERE severity_text = 'ERROR'",
        "SELECT count(*) FROM logs WHERE body LIKE '%user u-42 %'",
    ] {
        let cold = query(sql).await?;
        let mut warm = Vec::new();
        for _ in 0..args.runs {
            warm.push(query(sql).await?);
        }
        query_times.push((sql, cold, median(warm)));
    }

    // extract
    let t = Instant::now();
    let r = http
        .post(format!("{api}/api/v1/extracts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({
            "tables": ["logs"],
            "from": "2020-01-01T00:00:00Z",
            "to": "2030-01-01T00:00:00Z",
        }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("extract: {}", r.text().await.unwrap_or_default()));
    }
    let rows: u64 = r
        .headers()
        .get("x-bulkhead-extract-rows")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bundle = r.bytes().await.map_err(|e| e.to_string())?;
    let extract = t.elapsed();
    if rows != sent as u64 {
        return Err(format!("the extract holds {rows} rows, {sent} were sent"));
    }
    let path = dir.path().join("bundle.tar");
    std::fs::write(&path, &bundle).map_err(|e| e.to_string())?;
    let pk = bulkhead::extract::read_public_key(
        reqwest::get(format!("{api}/api/v1/extracts/public-key"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?
            .trim(),
    )?;
    let t = Instant::now();
    let verdict = bulkhead::extract::verify(&path, &pk)?;
    let verify = t.elapsed();
    if !verdict.ok() {
        return Err(format!(
            "the bundle does not verify: {:?}",
            verdict.problems()
        ));
    }
    server.shutdown().await?;

    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "encryption {}; {sent} log records, {} clients, {} per request",
        if config.encryption.enabled {
            "on"
        } else {
            "off"
        },
        args.load.clients,
        args.load.batch
    );
    println!(
        "ingest: {:.0} records/s ({:.2} s); parquet stored: {:.1} MB",
        sent as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64(),
        mb(stored_bytes as usize)
    );
    for (sql, cold, warm) in query_times {
        println!(
            "query {sql}: cold {:.0} ms, warm median {:.0} ms",
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3
        );
    }
    println!(
        "extract: {rows} rows, {:.1} MB in {:.2} s: {:.0} rows/s, {:.1} MB/s",
        mb(bundle.len()),
        extract.as_secs_f64(),
        rows as f64 / extract.as_secs_f64(),
        mb(bundle.len()) / extract.as_secs_f64()
    );
    println!(
        "verify: {:.1} MB in {:.2} s: {:.0} MB/s",
        mb(bundle.len()),
        verify.as_secs_f64(),
        mb(bundle.len()) / verify.as_secs_f64()
    );
    if let Ok(rss) = bulkhead_benches::status_mib(std::process::id(), "VmHWM:") {
        println!("peak RSS (server and clients): {rss:.0} MiB");
    }
    Ok(())
}
