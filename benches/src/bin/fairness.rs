//! `fairness`: can one tenant sending as fast as it can starve a hundred
//! small ones?
//!
//! Starts a real server in this process on loopback (temporary data
//! directory, write-ahead log on) with `--small` small tenants and one
//! `flood` tenant, none of them rate-limited (the per-tenant limits are not
//! what is measured here). Each small tenant sends `--small-rate` paced
//! OTLP/gRPC requests a second of `--small-batch` records, and each
//! request's acknowledgement latency is recorded per tenant. Phases: small
//! tenants alone twice (after `--warmup` seconds not measured), then beside
//! `flood`, whose `--flood-clients` clients send requests of
//! `--flood-batch` records back to back from a child process at the lowest
//! CPU priority (clients on other machines), then alone again. The normal
//! band is the small tenants' p99 in the first phase alone (after the
//! flood, its buffers are still being flushed: that phase is reported on
//! its own, as the flood's aftermath). A second phase alone before the
//! flood is the control: each small tenant's p99 in it against the band
//! shows how far a tenant's p99 of a phase's requests strays with no
//! flood at all. The report gives each small tenant's p99 in the
//! control and beside the flood against the band, and the flood's
//! throughput. The flood phase is also judged against the stricter band,
//! the lower of the two phases' p99 alone, so a stall in the first phase
//! cannot make the flood look harmless. Last, what the store did in each
//! phase: files committed (the small tenants' among them), buffers
//! committed early for memory, rounds forced by the log's size, and the
//! log on disk.
//!
//! The small tenants' clients run on a thread of their own (a runtime of
//! one worker), not on the server's async runtime: services on other
//! machines do not wait for the server's threads to get round to their
//! responses. `--shared-runtime` puts them back on the server's runtime
//! (how this benchmark measured before 2026-12-06).
//!
//! `--workers N` sets `ingest.workers` (default: one per core, the fair
//! gate's design); a large N lets the operating system's scheduler, not the
//! gate, share the CPU, for comparison.
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin fairness
//! ```
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_benches::{authed, bearer, connect, pct, spawn_load_child};
use bulkhead_collector::tenants;
use bulkhead_rules::{Scopes, SystemClock};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;

#[derive(Parser)]
struct Args {
    /// Seconds each phase lasts (20 until 2026-12-06: that ends before the
    /// flood's first compaction, whose harm it hid).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds of the small tenants' load before anything is measured: in
    /// the first half minute of a server's life their p99 is about twice
    /// what it is after (not explained; seen with 5 s here).
    #[arg(long, default_value_t = 25)]
    warmup: u64,
    /// Small tenants.
    #[arg(long, default_value_t = 100)]
    small: usize,
    /// Requests per second of each small tenant (paced).
    #[arg(long, default_value_t = 2)]
    small_rate: u64,
    /// Records per small tenant's request.
    #[arg(long, default_value_t = 50)]
    small_batch: usize,
    /// Records per flood request.
    #[arg(long, default_value_t = 1_000)]
    flood_batch: usize,
    /// Concurrent flood clients, each sending back to back.
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    /// Records per second the flood's clients send at most, together
    /// (each client paced to its share); 0: as fast as they can. For
    /// telling how the small tenants' tail depends on the flood's volume.
    #[arg(long, default_value_t = 0)]
    flood_rate: u64,
    /// `ingest.workers` (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// `ingest.backlog_nice` (default: the server's, off): e.g. 10 runs the
    /// flood's work (its tenant has requests queued for a turn) below the
    /// rest.
    #[arg(long)]
    backlog_nice: Option<u8>,
    /// `flush.max_buffer_size` and half of `flush.max_total_buffer`, in
    /// MiB (default: the server's): a large one keeps flushes out of the
    /// measured phases.
    #[arg(long)]
    buffer_mib: Option<u64>,
    /// `wal.max_size` in MiB (default: the server's): above it the oldest
    /// buffers, the small tenants' among them, are committed early.
    #[arg(long)]
    wal_max_mib: Option<u64>,
    /// `wal.compress = false`: write the log's entries uncompressed (how
    /// the log was written until 2026-12-07)
    #[arg(long)]
    wal_uncompressed: bool,
    /// Run the small tenants' clients on the server's async runtime
    /// instead of a thread of their own (how this benchmark measured before
    /// 2026-12-06: their responses then also wait for the server's work).
    #[arg(long)]
    shared_runtime: bool,
    /// Run without the write-ahead log (to tell its share from the rest).
    #[arg(long)]
    no_wal: bool,
    /// Put the write-ahead log in a new directory under this one, on
    /// another file system (`wal.path`): the log
    /// on a device of its own while the Parquet commits stay on the data
    /// directory's. On a tmpfs (`/dev/shm`) its syncs cost nothing: the
    /// bound of what a log device that does not wait for other writes
    /// gives.
    #[arg(long)]
    wal_dir: Option<std::path::PathBuf>,
    /// Run without compaction (to tell its share from the rest).
    #[arg(long)]
    no_compaction: bool,
    /// Also print the small tenants' latencies beside the flood window by
    /// window of this many seconds (by when each request was due).
    #[arg(long)]
    timeline: Option<u64>,
    /// Internal: run as the flood load generator against this gRPC address
    /// (the key is read from `FLOOD_KEY`).
    #[arg(long, hide = true)]
    flood_child: Option<String>,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The child process: `flood_clients` clients sending back to back for
/// `seconds`; prints `accepted refused` requests.
async fn flood_child(addr: &str, args: &Args) -> Result<(), String> {
    let key = std::env::var("FLOOD_KEY").map_err(|_| "FLOOD_KEY is not set".to_string())?;
    let auth = bearer(&key)?;
    let ch = connect(addr).await?;
    println!("ready");
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.flood_clients {
        let (ch, auth, batch) = (ch.clone(), auth.clone(), args.flood_batch);
        // each client's share of the rate: one request every `every`
        let every = (args.flood_rate > 0).then(|| {
            Duration::from_secs_f64((args.flood_clients * batch) as f64 / args.flood_rate as f64)
        });
        tasks.push(tokio::spawn(async move {
            let mut client = LogsServiceClient::new(ch);
            // built once: the generator shares the cores with the server
            let template = bulkhead_benches::request(c, 0, batch, now_nanos());
            let (mut ok, mut refused) = (0u64, 0u64);
            let mut pace = every.map(|d| {
                let mut i = tokio::time::interval(d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            while Instant::now() < until {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                match client.export(authed(template.clone(), &auth)).await {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        if let Ok((a, b)) = t.await {
            ok += a;
            refused += b;
        }
    }
    println!("{ok} {refused}");
    Ok(())
}

type Auth = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// Every small tenant's paced load for `secs`, run on `clients` (their
/// connections too): per tenant, the latencies of its acknowledged
/// requests, and how many were refused.
async fn small_load(
    clients: &tokio::runtime::Handle,
    addr: &str,
    auths: &[Auth],
    args: &Args,
    secs: u64,
) -> Result<(Vec<Vec<(u64, Duration)>>, u64), String> {
    let (addr, auths) = (addr.to_string(), auths.to_vec());
    let (rate, batch) = (args.small_rate, args.small_batch);
    clients
        .spawn(async move { paced(&addr, &auths, rate, batch, secs).await })
        .await
        .map_err(|e| e.to_string())?
}

async fn paced(
    addr: &str,
    auths: &[Auth],
    rate: u64,
    batch: usize,
    secs: u64,
) -> Result<(Vec<Vec<(u64, Duration)>>, u64), String> {
    // a few connections, as a hundred services' exporters would not share one
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(connect(addr).await?);
    }
    let mut tasks = Vec::new();
    for (i, auth) in auths.iter().enumerate() {
        let (ch, auth) = (channels[i % channels.len()].clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = LogsServiceClient::new(ch);
            let period = Duration::from_secs(1) / rate as u32;
            // spread the tenants over the period instead of all at once
            let offset = period.mul_f64(i as f64 / 100.0 % 1.0);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut lat, mut refused) = (Vec::new(), 0u64);
            for seq in 0..rate * secs {
                tick.tick().await;
                let req = bulkhead_benches::request(i, seq as usize, batch, now_nanos());
                let t = Instant::now();
                match client.export(authed(req, &auth)).await {
                    Ok(_) => lat.push((seq, t.elapsed())),
                    Err(_) => refused += 1,
                }
            }
            (lat, refused)
        }));
    }
    let mut out = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (l, r) = t.await.map_err(|e| e.to_string())?;
        out.push(l);
        refused += r;
    }
    Ok((out, refused))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match &args.flood_child {
        Some(addr) => rt.block_on(flood_child(addr, &args)),
        None if args.shared_runtime => rt.block_on(run(&args, rt.handle())),
        None => {
            // the small tenants' exporters on a thread of their own, as
            // services on other machines would not wait for the server's
            // async runtime to get round to their responses
            let clients = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("small-clients")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(run(&args, clients.handle()))
        }
    }
}

async fn run(args: &Args, clients: &tokio::runtime::Handle) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = bulkhead_benches::loopback_config(dir.path());
    if let Some(w) = args.workers {
        config.ingest.workers = w;
    }
    if let Some(n) = args.backlog_nice {
        config.ingest.backlog_nice = n;
    }
    if let Some(mib) = args.buffer_mib {
        config.flush.max_buffer_size = bulkhead::config::ByteSize(mib << 20);
        config.flush.max_total_buffer = bulkhead::config::ByteSize(mib << 21);
    }
    if args.wal_uncompressed {
        config.wal.compress = false;
    }
    if let Some(mib) = args.wal_max_mib {
        config.wal.max_size = bulkhead::config::ByteSize(mib << 20);
    }
    config.wal.enabled = !args.no_wal;
    config.compaction.enabled = !args.no_compaction;
    // held to the end of the run: dropping it removes the log
    let _wal_dir = match &args.wal_dir {
        Some(base) => {
            let wal = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
            config.wal.path = Some(wal.path().to_path_buf());
            Some(wal)
        }
        None => None,
    };
    let workers = config.ingest.workers;
    let policies = config.policy_dir();
    let scopes = Scopes::parse_list("ingest")?;
    let mut auths = Vec::new();
    for i in 0..args.small {
        let name = format!("small-{i:03}");
        tenants::create_tenant(&policies, &name)?;
        auths.push(bearer(
            &tenants::create_key(&policies, &name, scopes)?.expose(),
        )?);
    }
    tenants::create_tenant(&policies, "flood")?;
    let flood_key = tenants::create_key(&policies, "flood", scopes)?;

    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    let grpc = server.grpc_addr.to_string();
    if args.warmup > 0 {
        small_load(clients, &grpc, &auths, args, args.warmup).await?;
    }
    let mut watch = Watch {
        server: &server,
        data: config.data_dir.clone(),
        seen: Default::default(),
    };
    let mut activity = vec![("before", watch.now())];
    let (alone, r1) = small_load(clients, &grpc, &auths, args, args.seconds).await?;
    activity.push(("alone", watch.now()));
    let (control, r0) = small_load(clients, &grpc, &auths, args, args.seconds).await?;
    activity.push(("control", watch.now()));
    let child_args = [
        "--flood-child".to_string(),
        grpc.clone(),
        "--seconds".into(),
        args.seconds.to_string(),
        "--flood-batch".into(),
        args.flood_batch.to_string(),
        "--flood-clients".into(),
        args.flood_clients.to_string(),
        "--flood-rate".into(),
        args.flood_rate.to_string(),
    ];
    let flood = spawn_load_child(&child_args, ("FLOOD_KEY", &flood_key.expose())).await?;
    let (loaded_at, r2) = small_load(clients, &grpc, &auths, args, args.seconds).await?;
    let counts = flood.await.map_err(|e| e.to_string())??;
    activity.push(("with flood", watch.now()));
    let (after, r3) = small_load(clients, &grpc, &auths, args, args.seconds).await?;
    activity.push(("after flood", watch.now()));
    let (alone, after) = (latencies(&alone), latencies(&after));
    let (mut control, mut loaded) = (latencies(&control), latencies(&loaded_at));
    let mut pooled_after: Vec<Duration> = after.iter().flatten().copied().collect();
    server.shutdown().await?;

    let mut pooled_alone: Vec<Duration> = alone.iter().flatten().copied().collect();
    let mut pooled_loaded: Vec<Duration> = loaded.iter().flatten().copied().collect();
    let band = pct(&mut pooled_alone, 0.99);
    let mut pooled_control: Vec<Duration> = control.iter().flatten().copied().collect();
    let strict_band = band.min(pct(&mut pooled_control, 0.99));
    let ratios = |phase: &mut [Vec<Duration>], band: f64| -> Vec<f64> {
        let mut r: Vec<f64> = phase
            .iter_mut()
            .filter(|l| !l.is_empty())
            .map(|l| pct(l, 0.99) / band)
            .collect();
        r.sort_by(f64::total_cmp);
        r
    };
    let control_ratios = ratios(&mut control, band);
    let strict_ratios = ratios(&mut loaded, strict_band);
    let ratios = ratios(&mut loaded, band);
    let within = |r: &[f64], x: f64| r.iter().filter(|v| **v <= x).count();
    let (flood_ok, flood_refused) = match counts[..] {
        [a, b] => (a, b),
        _ => {
            return Err(format!(
                "unexpected counts from the flood process: {counts:?}"
            ))
        }
    };
    println!(
        "ingest.workers = {workers}, ingest.backlog_nice = {}; {} small tenants at {} requests/s of {} records; flood: {} clients back to back, {} records per request, from a process at nice 19",
        config.ingest.backlog_nice,
        args.small,
        args.small_rate,
        args.small_batch,
        args.flood_clients,
        args.flood_batch
    );
    println!(
        "small alone:      p50 {:.2} ms, p99 {band:.2} ms ({} requests, before the flood; {} refused)",
        pct(&mut pooled_alone, 0.5),
        pooled_alone.len(),
        r1
    );
    println!(
        "small after flood: p50 {:.2} ms, p99 {:.2} ms ({} requests, while the flood's buffers are flushed; {r3} refused)",
        pct(&mut pooled_after, 0.5),
        pct(&mut pooled_after, 0.99),
        pooled_after.len()
    );
    println!(
        "small with flood: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests; {r2} refused)",
        pct(&mut pooled_loaded, 0.5),
        pct(&mut pooled_loaded, 0.99),
        pct(&mut pooled_loaded, 1.0),
        pooled_loaded.len()
    );
    println!(
        "small alone again (control, no flood yet): p50 {:.2} ms, p99 {:.2} ms ({} requests; {r0} refused)",
        pct(&mut pooled_control, 0.5),
        pct(&mut pooled_control, 0.99),
        pooled_control.len()
    );
    let strict = format!("stricter band ({strict_band:.2} ms)");
    for (what, band_name, r) in [
        ("alone again (control)", "band", &control_ratios),
        ("with flood", "band", &ratios),
        ("with flood", strict.as_str(), &strict_ratios),
    ] {
        println!(
            "per small tenant, p99 {what} / {band_name}: median {:.2}, worst {:.2}; within 1x: {}, 2x: {}, 3x: {} of {}",
            r[r.len() / 2],
            r[r.len() - 1],
            within(r, 1.0),
            within(r, 2.0),
            within(r, 3.0),
            r.len()
        );
    }
    println!(
        "flood: {flood_ok} requests accepted ({} records/s), {flood_refused} refused",
        flood_ok * args.flood_batch as u64 / args.seconds
    );
    for pair in activity.windows(2) {
        let ((_, a), (phase, b)) = (&pair[0], &pair[1]);
        println!(
            "store, {phase}: {} files committed, {} of them small tenants' (small tenants' files on disk {} -> {}); {} buffers flushed early for memory, {} rounds for the log's size; log on disk {} -> {} MiB",
            b.files - a.files,
            b.small_commits - a.small_commits,
            a.small_files,
            b.small_files,
            b.pressure - a.pressure,
            b.wal_rounds - a.wal_rounds,
            a.wal_bytes >> 20,
            b.wal_bytes >> 20
        );
    }
    if let Some(window) = args.timeline.filter(|w| *w > 0) {
        let per_window = window * args.small_rate;
        let mut windows: Vec<Vec<Duration>> = Vec::new();
        for (seq, d) in loaded_at.iter().flatten() {
            let w = (seq / per_window) as usize;
            if windows.len() <= w {
                windows.resize(w + 1, Vec::new());
            }
            windows[w].push(*d);
        }
        for (w, l) in windows.iter_mut().enumerate() {
            if l.is_empty() {
                continue;
            }
            println!(
                "with flood, {:>3}-{:<3} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
                w as u64 * window,
                (w as u64 + 1) * window,
                pct(l, 0.5),
                pct(l, 0.99),
                pct(l, 1.0),
                l.len()
            );
        }
    }
    Ok(())
}

/// The store's counters at a moment, to tell what it did in each phase.
struct Activity {
    files: u64,
    pressure: u64,
    wal_rounds: u64,
    wal_bytes: u64,
    /// The small tenants' Parquet files on disk (merges take some away).
    small_files: u64,
    /// The small tenants' files seen on disk so far, merged away or not.
    small_commits: u64,
}

/// Takes [`Activity`] readings of one server and its data directory,
/// remembering every small tenant's file it has seen.
struct Watch<'a> {
    server: &'a bulkhead::RunningServer,
    data: std::path::PathBuf,
    seen: std::collections::HashSet<std::path::PathBuf>,
}

impl Watch<'_> {
    fn now(&mut self) -> Activity {
        use std::sync::atomic::Ordering::Relaxed;
        let store = self.server.store();
        let stats = store.stats();
        let on_disk = parquet_paths(&self.data, "tenant=small-");
        let small_files = on_disk.len() as u64;
        self.seen.extend(on_disk);
        Activity {
            files: stats.files_committed.load(Relaxed),
            pressure: stats.pressure_flushes.load(Relaxed),
            wal_rounds: stats.wal_pressure_flushes.load(Relaxed),
            wal_bytes: store
                .wal()
                .map_or(0, |w| w.stats().bytes_on_disk.load(Relaxed)),
            small_files,
            small_commits: self.seen.len() as u64,
        }
    }
}

/// Parquet files under `dir` whose path contains `containing`.
fn parquet_paths(dir: &std::path::Path, containing: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet")
                && path.to_string_lossy().contains(containing)
            {
                found.push(path);
            }
        }
    }
    found
}

/// Per tenant, the latencies alone (without when each request was due).
fn latencies(phase: &[Vec<(u64, Duration)>]) -> Vec<Vec<Duration>> {
    phase
        .iter()
        .map(|l| l.iter().map(|(_, d)| *d).collect())
        .collect()
}
