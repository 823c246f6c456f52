//! `many_tenants`: ten thousand tenants on one node.
//!
//! Creates `--tenants` tenants, each with a policy file and one ingest key
//! (the functions behind `bulkhead tenant create` and `bulkhead key
//! create`), then starts the server as a child process of this benchmark,
//! so the memory read is the server's alone, and reads its resident memory
//! once it is ready and idle. Then the generator of `bulkhead-load` sends
//! the same records in rounds, alternately all to one tenant and spread over
//! `--active` tenants (request `i` to tenant `i mod active`), and the
//! throughput of the two is compared in the same run. Before the load, the
//! admin API is timed with every tenant in place: tenants created (with a
//! key), keys created and revoked, tenants removed, the whole list read a
//! page at a time. At the end the server
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
    /// `wal.compress = false`: the log's entries uncompressed (as until
    /// 2026-12-07).
    #[arg(long)]
    wal_uncompressed: bool,
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

/// The child: a server on loopback until its standard input closes. Its
/// admin key's id and hash come in `BENCH_ADMIN` (`id:sha256`).
async fn serve(dir: &Path) -> Result<(), String> {
    let mut config = bulkhead_benches::loopback_config(dir);
    config.wal.compress = std::env::var_os("BENCH_WAL_UNCOMPRESSED").is_none();
    if let Some((id, sha)) = std::env::var("BENCH_ADMIN")
        .ok()
        .as_deref()
        .and_then(|v| v.split_once(':'))
    {
        config.admin.push(bulkhead::admin::AdminGrant {
            name: "bench".into(),
            key_id: id.into(),
            key_sha256: sha.into(),
        });
    }
    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    println!("grpc {} api {}", server.grpc_addr, server.api_addr);
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
    api: String,
    out: BufReader<std::process::ChildStdout>,
}

fn spawn_server(
    dir: &Path,
    admin: &bulkhead_rules::ApiKey,
    wal_uncompressed: bool,
) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    if wal_uncompressed {
        command.env("BENCH_WAL_UNCOMPRESSED", "1");
    }
    let mut child = command
        .arg("--serve")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .env(
            "BENCH_ADMIN",
            format!("{}:{}", admin.id(), hex_of(&admin.digest())),
        )
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let (grpc, api) = line
        .trim()
        .strip_prefix("grpc ")
        .and_then(|l| l.split_once(" api "))
        .ok_or(format!("server did not start: {line:?}"))?;
    Ok(Server {
        grpc: grpc.to_string(),
        api: api.to_string(),
        child,
        out,
    })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Times the admin API with every tenant in place: `n` tenants created
/// with a key, `n` more keys created then revoked, the `n` tenants removed,
/// and the whole list read a page of 1,000 at a time.
async fn time_admin(api: &str, key: &str, n: usize) -> Result<(), String> {
    let http = reqwest::Client::new();
    let base = format!("http://{api}/api/v1/admin");
    let call = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let t = Instant::now();
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{status}: {body}"));
            }
            Ok::<_, String>((t.elapsed(), body))
        }
    };
    use reqwest::Method;
    let report = |what: &str, mut times: Vec<Duration>| {
        let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e3 / times.len() as f64;
        println!(
            "admin API, {what}: mean {mean:.2} ms, p99 {:.2} ms ({} calls)",
            bulkhead_benches::pct(&mut times, 0.99),
            times.len()
        );
    };
    let mut times = Vec::new();
    for i in 0..n {
        let body = serde_json::json!({"tenant": format!("admin-{i:04}"), "key_scopes": "ingest"});
        times.push(call(Method::POST, "/tenants".into(), Some(body)).await?.0);
    }
    report("create a tenant with a key", times);
    let (mut times, mut ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        let path = format!("/tenants/admin-{i:04}/keys");
        let (t, body) = call(
            Method::POST,
            path,
            Some(serde_json::json!({"scopes": "query"})),
        )
        .await?;
        times.push(t);
        ids.push(body["key_id"].as_str().unwrap_or_default().to_string());
    }
    report("create a key", times);
    let mut times = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        times.push(
            call(
                Method::DELETE,
                format!("/tenants/admin-{i:04}/keys/{id}"),
                None,
            )
            .await?
            .0,
        );
    }
    report("revoke a key", times);
    let mut times = Vec::new();
    for i in 0..n {
        times.push(
            call(Method::DELETE, format!("/tenants/admin-{i:04}"), None)
                .await?
                .0,
        );
    }
    report("remove a tenant", times);
    let listed = Instant::now();
    let (mut count, mut after) = (0usize, None::<String>);
    loop {
        let path = match &after {
            Some(a) => format!("/tenants?limit=1000&after={a}"),
            None => "/tenants?limit=1000".into(),
        };
        let (_, body) = call(Method::GET, path, None).await?;
        count += body["tenants"].as_array().map_or(0, Vec::len);
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    println!(
        "admin API, list all {count} tenants a page of 1,000 at a time: {:.1} ms",
        listed.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
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

    let admin = bulkhead_rules::ApiKey::from_random(rand::random(), rand::random());
    let started = Instant::now();
    let mut server = spawn_server(dir.path(), &admin, args.wal_uncompressed)?;
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

    time_admin(&server.api, &admin.expose(), 200).await?;

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
