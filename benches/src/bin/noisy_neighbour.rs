//! `noisy_neighbour`: does one tenant at ten times its quota hurt another?
//!
//! Starts a real server in this process on loopback (temporary data
//! directory, write-ahead log on), with two tenants: `quiet`, unlimited, and
//! `noisy`, limited to `--noisy-limit` records/s. After `--warmup` seconds of
//! `quiet`'s load, not measured, `quiet` alone sends paced OTLP/gRPC
//! requests and its acknowledgement latency is measured; then the same
//! `quiet` load runs while `noisy` sends ten times its limit; then `quiet`
//! alone again. The baseline is both phases alone (before and after), so
//! neither warm-up nor drift in the machine favours one side. Reports both
//! latency distributions, how many of `noisy`'s requests were throttled and
//! whether each carried a retry hint.
//!
//! By default (`--split`) `noisy`'s load comes from a child process of this
//! binary at the lowest CPU priority (`nice -n 19`), standing in for clients
//! on other machines: its own HTTP/2 work then yields the cores to the server
//! and `quiet`'s client. `--split=false` generates it in this process.
//! `--honour-retry-info`: `noisy`'s clients wait the delay each refusal's
//! `RetryInfo` names before they send again, as OpenTelemetry exporters do;
//! without it they ignore the hints (a hostile or broken client).
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin noisy_neighbour
//! ```
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_benches::{authed, bearer, connect, pct, spawn_load_child};
use bulkhead_collector::tenants;
use bulkhead_rules::{Scopes, SystemClock};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Seconds each phase lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of quiet's load before anything is measured (connections,
    /// worker threads and allocator caches warm up).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// `quiet`'s requests per second (one client, paced).
    #[arg(long, default_value_t = 100)]
    quiet_rate: u64,
    /// Records per request, for both tenants.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// `noisy`'s limit in records/s; it sends ten times this.
    #[arg(long, default_value_t = 5_000)]
    noisy_limit: u64,
    /// Run without the write-ahead log (to tell fsync sharing from the rest).
    #[arg(long)]
    no_wal: bool,
    /// Generate `noisy`'s load in a child process at the lowest CPU priority.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    split: bool,
    /// `noisy`'s clients wait out each refusal's RetryInfo delay.
    #[arg(long)]
    honour_retry_info: bool,
    /// Internal: run as the noisy load generator against this gRPC address
    /// (the key is read from `NOISY_KEY`).
    #[arg(long, hide = true)]
    noisy_child: Option<String>,
}

fn request(batch: usize, tag: &str) -> ExportLogsServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..batch)
                    .map(|i| LogRecord {
                        time_unix_nano: now + i as u64,
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "{tag} request handled in {i} ms by worker {}",
                                i % 7
                            ))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends `rate` requests per second for `secs`; returns the latencies of
/// acknowledged requests.
async fn quiet(
    ch: Channel,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    rate: u64,
    secs: u64,
    batch: usize,
) -> Result<Vec<Duration>, String> {
    let mut client = LogsServiceClient::new(ch);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    for _ in 0..rate * secs {
        tick.tick().await;
        let req = authed(request(batch, "quiet"), &auth);
        let t = Instant::now();
        client
            .export(req)
            .await
            .map_err(|e| format!("quiet was refused: {e}"))?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Sends `rate` records/s (in requests of `batch`) from four clients until
/// `until`; returns (accepted, throttled, throttled with RetryInfo).
async fn noisy(
    ch: Channel,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    rate: u64,
    batch: usize,
    until: Instant,
    honour_hints: bool,
) -> (u64, u64, u64) {
    const CLIENTS: u64 = 4;
    let per_client = (rate / batch as u64 / CLIENTS).max(1);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (ch, auth) = (ch.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = LogsServiceClient::new(ch);
            // built once: the load generator shares the cores with the server
            let template = request(batch, "noisy");
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_client as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut ok, mut throttled, mut hinted) = (0u64, 0u64, 0u64);
            while Instant::now() < until {
                tick.tick().await;
                match client.export(authed(template.clone(), &auth)).await {
                    Ok(_) => ok += 1,
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        throttled += 1;
                        if let Some(hint) = tonic_types::StatusExt::get_details_retry_info(&s) {
                            hinted += 1;
                            if let Some(delay) = hint.retry_delay.filter(|_| honour_hints) {
                                // the pacing restarts after the wait
                                tokio::time::sleep(delay.min(until - Instant::now())).await;
                                tick.reset();
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
            (ok, throttled, hinted)
        }));
    }
    let mut sum = (0, 0, 0);
    for t in tasks {
        if let Ok((a, b, c)) = t.await {
            sum = (sum.0 + a, sum.1 + b, sum.2 + c);
        }
    }
    sum
}

/// The child process: connects, says `ready`, sends `noisy`'s load for
/// `seconds`, prints its counts as one line and exits.
async fn noisy_child(addr: &str, args: &Args) -> Result<(), String> {
    let key = std::env::var("NOISY_KEY").map_err(|_| "NOISY_KEY is not set".to_string())?;
    let auth = bearer(&key)?;
    let ch = connect(addr).await?;
    println!("ready");
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let (ok, throttled, hinted) = noisy(
        ch,
        auth,
        args.noisy_limit * 10,
        args.batch,
        until,
        args.honour_retry_info,
    )
    .await;
    println!("{ok} {throttled} {hinted}");
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match &args.noisy_child {
        Some(addr) => rt.block_on(noisy_child(addr, &args)),
        None => rt.block_on(run(&args)),
    }
}

/// The benchmark.
async fn run(args: &Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = bulkhead_benches::loopback_config(dir.path());
    config.wal.enabled = !args.no_wal;
    let policies = config.policy_dir();
    let mut keys = Vec::new();
    for name in ["quiet", "noisy"] {
        tenants::create_tenant(&policies, name)?;
        keys.push(tenants::create_key(
            &policies,
            name,
            Scopes::parse_list("ingest")?,
        )?);
    }
    let noisy_policy = policies.join("noisy.toml");
    let mut text = std::fs::read_to_string(&noisy_policy).map_err(|e| e.to_string())?;
    text.push_str(&format!(
        "\n[limits]\nrecords_per_second = {}\n",
        args.noisy_limit
    ));
    std::fs::write(&noisy_policy, text).map_err(|e| e.to_string())?;

    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    let grpc = server.grpc_addr.to_string();
    let ch = connect(&grpc).await?;
    let (quiet_auth, noisy_auth) = (bearer(&keys[0].expose())?, bearer(&keys[1].expose())?);

    // quiet's paced load for `secs` seconds: its latencies
    let quiet_for = |secs: u64| {
        quiet(
            ch.clone(),
            quiet_auth.clone(),
            args.quiet_rate,
            secs,
            args.batch,
        )
    };
    if args.warmup > 0 {
        quiet_for(args.warmup).await?;
    }
    let mut base = quiet_for(args.seconds).await?;

    let noise = if args.split {
        let mut child_args = vec![
            "--noisy-child".to_string(),
            grpc.clone(),
            "--seconds".into(),
            args.seconds.to_string(),
            "--batch".into(),
            args.batch.to_string(),
            "--noisy-limit".into(),
            args.noisy_limit.to_string(),
        ];
        if args.honour_retry_info {
            child_args.push("--honour-retry-info".into());
        }
        let child = spawn_load_child(&child_args, ("NOISY_KEY", &keys[1].expose())).await?;
        tokio::spawn(async move {
            match child.await.map_err(|e| e.to_string())??[..] {
                [a, b, c] => Ok((a, b, c)),
                ref other => Err(format!(
                    "unexpected counts from the noisy process: {other:?}"
                )),
            }
        })
    } else {
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let (ch, rate, batch) = (ch.clone(), args.noisy_limit * 10, args.batch);
        let honour = args.honour_retry_info;
        tokio::spawn(async move { Ok(noisy(ch, noisy_auth, rate, batch, until, honour).await) })
    };
    let mut loaded = quiet_for(args.seconds).await?;
    let (ok, throttled, hinted) = noise.await.map_err(|e| e.to_string())??;
    // alone again: the baseline is both quiet phases, before and after
    let mut after = quiet_for(args.seconds).await?;
    let after99 = pct(&mut after, 0.99);
    base.append(&mut after);
    server.shutdown().await?;

    println!(
        "noisy's load {}; its clients {} RetryInfo",
        if args.split {
            "from a process at nice 19"
        } else {
            "from this process"
        },
        if args.honour_retry_info {
            "honour"
        } else {
            "ignore"
        }
    );
    println!(
        "quiet: {} requests/s of {} records; noisy: limit {} records/s, sending {} records/s",
        args.quiet_rate,
        args.batch,
        args.noisy_limit,
        args.noisy_limit * 10
    );
    let (b50, b99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    let (l50, l99) = (pct(&mut loaded, 0.5), pct(&mut loaded, 0.99));
    println!(
        "quiet alone:      p50 {b50:.2} ms, p99 {b99:.2} ms ({} requests, before and after; p99 after alone {after99:.2} ms)",
        base.len()
    );
    println!(
        "quiet with noisy: p50 {l50:.2} ms, p99 {l99:.2} ms ({} requests)",
        loaded.len()
    );
    println!("quiet p99 with noisy / alone: {:.2}", l99 / b99);
    println!(
        "noisy: {ok} requests accepted ({} records/s), {throttled} throttled, {hinted} of them with RetryInfo",
        ok * args.batch as u64 / args.seconds
    );
    Ok(())
}
