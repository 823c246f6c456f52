//! `many_tenants`: ten thousand tenants on one node.
//!
//! Creates `--tenants` tenants, each with a policy file and one ingest key
//! (the functions behind `bulkhead tenant create` and `bulkhead key
//! create`), then starts the server as a child process of this benchmark,
//! so the memory read is the server's alone, and reads its resident memory
//! once it is ready and idle. Then the generator of `bulkhead-load` sends
//! the same records in rounds, alternately all to one tenant and spread over
//! `--active` tenants (request `i` to tenant `i mod active`), and the
//! throughput of the two is compared in the same run. At the end the server
//! is stopped (committing every buffer) and its Parquet files counted:
//! files per GB of Parquet.
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin many_tenants
//! ```
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_benches::request;
use bulkhead_collector::tenants;
use bulkhead_rules::{Scopes, SystemClock};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use tonic::codec::CompressionEncoding;

#[derive(Parser)]
struct Args {
    /// Tenants to create.
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Tenants the spread load goes to.
    #[arg(long, default_value_t = 1_000)]
    active: usize,
    #[command(flatten)]
    load: bulkhead_benches::LoadArgs,
    /// Rounds of each shape (one tenant, spread), alternated.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Internal: be the server, with its data in this directory.
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    match &args.serve {
        Some(dir) => rt.block_on(serve(dir)),
        None => rt.block_on(run(&args)),
    }
}

/// The child: a server on loopback until its standard input closes.
async fn serve(dir: &Path) -> Result<(), String> {
    let config = bulkhead_benches::loopback_config(dir);
    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    println!("grpc {}", server.grpc_addr);
    tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let stats = server.shutdown().await?;
    println!("final flush {} files {} rows", stats.files, stats.rows);
    Ok(())
}

struct Server {
    child: Child,
    grpc: String,
    out: BufReader<std::process::ChildStdout>,
}

fn spawn_server(dir: &Path) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--serve")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let grpc = line
        .strip_prefix("grpc ")
        .ok_or(format!("server did not start: {line:?}"))?
        .trim()
        .to_string();
    Ok(Server { child, grpc, out })
}

/// Sends `work` (per client, its requests with their tenant's key) and
/// returns records per second and how many requests were refused for a
/// while. A refused request is sent again after the delay its `RetryInfo`
/// names, as OpenTelemetry exporters do.
async fn send(
    endpoint: &str,
    work: Vec<Vec<(ExportLogsServiceRequest, String)>>,
) -> Result<(f64, usize), String> {
    let records: usize = work
        .iter()
        .flatten()
        .map(|(r, _)| r.resource_logs[0].scope_logs[0].log_records.len())
        .sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for reqs in work {
        let endpoint = endpoint.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = LogsServiceClient::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?
                .send_compressed(CompressionEncoding::Gzip);
            let mut retried = 0;
            for (r, key) in reqs {
                let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {key}")
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                loop {
                    let mut req = tonic::Request::new(r.clone());
                    req.metadata_mut().insert("authorization", auth.clone());
                    match client.export(req).await {
                        Ok(resp) if resp.get_ref().partial_success.is_some() => {
                            return Err("records were rejected".to_string())
                        }
                        Ok(_) => break,
                        Err(s)
                            if matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                            ) && retried < 10_000 =>
                        {
                            retried += 1;
                            let delay = tonic_types::StatusExt::get_details_retry_info(&s)
                                .and_then(|h| h.retry_delay)
                                .unwrap_or(Duration::from_millis(100));
                            tokio::time::sleep(delay).await;
                        }
                        Err(s) => return Err(s.to_string()),
                    }
                }
            }
            Ok::<_, String>(retried)
        }));
    }
    let mut retried = 0;
    for t in tasks {
        retried += t.await.map_err(|e| e.to_string())??;
    }
    Ok((records as f64 / started.elapsed().as_secs_f64(), retried))
}

async fn run(args: &Args) -> Result<(), String> {
    if args.active == 0 || args.active > args.tenants {
        return Err("--active must be between 1 and --tenants".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = bulkhead_benches::loopback_config(dir.path());
    let policies = config.policy_dir();
    let created = Instant::now();
    let mut keys = Vec::with_capacity(args.tenants);
    for i in 0..args.tenants {
        let name = format!("t{i:05}");
        tenants::create_tenant(&policies, &name)?;
        keys.push(tenants::create_key(&policies, &name, Scopes::parse_list("ingest")?)?.expose());
    }
    let creation = created.elapsed();
    println!(
        "created {} tenants with a key each in {:.1} s",
        args.tenants,
        creation.as_secs_f64()
    );
    let listed = Instant::now();
    let all = tenants::list_tenants(&policies)?;
    println!(
        "listed {} tenants (policy files parsed and validated) in {:.2} s",
        all.len(),
        listed.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut server = spawn_server(dir.path())?;
    let pid = server.child.id();
    println!(
        "server ready in {:.2} s; resident {:.1} MiB",
        started.elapsed().as_secs_f64(),
        bulkhead_benches::status_mib(pid, "VmRSS:")?
    );
    // a few housekeeping rounds of an idle server
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = bulkhead_benches::status_mib(pid, "VmRSS:")?;
    println!(
        "idle with {} tenants: {idle:.1} MiB resident ({:.1} KiB per tenant)",
        args.tenants,
        idle * 1024.0 / args.tenants as f64
    );

    let endpoint = format!("http://{}", server.grpc);
    let requests = args.load.records.div_ceil(args.load.batch);
    let per_client = requests.div_ceil(args.load.clients);
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos() as u64
        - 600_000_000_000;
    let build = |spread: bool| -> Vec<Vec<(ExportLogsServiceRequest, String)>> {
        (0..args.load.clients)
            .map(|c| {
                (0..per_client)
                    .map(|s| c * per_client + s)
                    .filter(|s| *s < requests)
                    .map(|s| {
                        let tenant = if spread { s % args.active } else { 0 };
                        (request(c, s, args.load.batch, base), keys[tenant].clone())
                    })
                    .collect()
            })
            .collect()
    };
    let mut rates = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for spread in [false, true] {
            let work = build(spread);
            let (rate, retried) = send(&endpoint, work).await?;
            println!(
                "round {} {}: {rate:.0} records/s, {retried} requests refused for a while and sent again",
                round + 1,
                if spread {
                    format!("spread over {} tenants", args.active)
                } else {
                    "one tenant".to_string()
                }
            );
            if spread {
                rates.1.push(rate);
            } else {
                rates.0.push(rate);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "throughput spread / one tenant: {:.2} (means {:.0} / {:.0} records/s)",
        mean(&rates.1) / mean(&rates.0),
        mean(&rates.1),
        mean(&rates.0)
    );
    println!(
        "server peak resident: {:.1} MiB",
        bulkhead_benches::status_mib(pid, "VmHWM:")?
    );

    // stop: every buffer is committed
    let stopped = Instant::now();
    drop(server.child.stdin.take());
    let mut line = String::new();
    server.out.read_line(&mut line).map_err(|e| e.to_string())?;
    server.child.wait().map_err(|e| e.to_string())?;
    print!("{line}");
    let (files, bytes) = bulkhead_benches::parquet_files(&config.store_dir());
    let total = (args.load.records * args.rounds * 2) as f64;
    println!(
        "stopped in {:.1} s; {files} Parquet files, {bytes} bytes ({:.1} bytes/record): {:.0} files per GB",
        stopped.elapsed().as_secs_f64(),
        bytes as f64 / total,
        files as f64 / (bytes as f64 / 1e9)
    );
    std::io::stdout().flush().map_err(|e| e.to_string())
}
