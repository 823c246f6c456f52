//! Start-up wiring: the one place the store, tenants, pipeline, receivers,
//! query API and background flusher are put together.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use bulkhead_query::http::{ApiState, QueryFaultHook};
use bulkhead_query::{EngineLimits, QueryEngine};
use bulkhead_rules::{Authenticator, Clock};
use bulkhead_store::wal::{WalConfig, WriteFaults};
use bulkhead_store::{FlushConfig, FlushStats, ReplayReport, Store};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use bulkhead_collector::anomaly::AnomalyEngine;
use bulkhead_collector::pipeline::{FaultHook, Pipeline};
use bulkhead_collector::telemetry::Telemetry;
use bulkhead_collector::tenants::{ReloadOutcome, TenantDirectory};
use bulkhead_store::audit::{AuditLog, EventKind, NewEvent};

/// A started server. Drop does not stop it: call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    store: Arc<Store>,
    tenants: Arc<TenantDirectory>,
    anomalies: Arc<AnomalyEngine>,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<Result<(), String>>>,
    flusher: JoinHandle<()>,
    compactor: JoinHandle<()>,
    watcher: JoinHandle<()>,
    job_runner: JoinHandle<()>,
    jobs: Arc<crate::jobs::JobRunner>,
    node: String,
    clock: Arc<dyn Clock>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    replay: ReplayReport,
    audit: Arc<AuditLog>,
    policies: PolicyWatch,
}

/// Hooks for tests: fault injection into the WAL and the ingest path.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Makes WAL writes fail while switched on (a full disk).
    pub wal_faults: Option<Arc<WriteFaults>>,
    /// Runs at the start of every ingest.
    pub fault_hook: Option<FaultHook>,
    /// Runs for every authenticated query.
    pub query_fault_hook: Option<QueryFaultHook>,
    /// While set, housekeeping does nothing (no flush, no policy check):
    /// tests hold the store's state still.
    pub pause_housekeeping: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("wal_faults", &self.wal_faults.is_some())
            .field("fault_hook", &self.fault_hook.is_some())
            .field("query_fault_hook", &self.query_fault_hook.is_some())
            .field("pause_housekeeping", &self.pause_housekeeping)
            .finish()
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// Starts every listener and background task of `config`.
pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<RunningServer, String> {
    start_with(config, clock, StartOptions::default()).await
}

/// Sets whether the kernel may back this process's memory with transparent
/// huge pages (`transparent_huge_pages` in the configuration; the flag is
/// the process's, so the last server started in a process decides).
fn allow_huge_pages(allow: bool) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(!allow) {
        tracing::warn!(error = %e, allow, "could not set the process's transparent huge pages flag");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allow;
}

/// [`start`] with test hooks.
pub async fn start_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    options: StartOptions,
) -> Result<RunningServer, String> {
    allow_huge_pages(config.transparent_huge_pages);
    let flush = FlushConfig {
        max_buffer_bytes: config.flush.max_buffer_size.as_usize(),
        max_age: config.flush.max_age.0,
        max_total_bytes: config.flush.max_total_buffer.as_usize(),
        removal_grace: config.storage.removal_grace.0,
        max_wal_bytes: config.wal.max_size.0,
    };
    let storage = config.storage_config();
    let wal = WalConfig {
        dir: config.wal_dir(),
        segment_bytes: config.wal.segment_size.0,
        side_zero_fill_bytes: WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES,
        compress: config.wal.compress,
        faults: options.wal_faults.clone(),
    };
    // Replays the write-ahead log before any listener opens: nothing is
    // served, and /readyz is not ready, until every acknowledged record is
    // back in the buffers.
    let (store, replay) = {
        let (storage, flush, clock) = (storage.clone(), flush.clone(), clock.clone());
        let node = config.node_name.clone();
        let wal = config.wal.enabled.then_some(wal);
        if wal.is_none() {
            tracing::warn!("the write-ahead log is off: a crash loses buffered data");
        }
        let keys = config.open_keys(|k| std::env::var(k).ok())?;
        tokio::task::spawn_blocking(move || {
            Store::open_with_keys(&storage, &node, wal, flush, clock, keys)
        })
        .await
        .map_err(|e| format!("opening the store: {e}"))?
        .map_err(|e| format!("opening the store: {e}"))?
    };
    let store = Arc::new(store);
    let tenants = Arc::new(TenantDirectory::open(&config.policy_dir())?.with_clock(clock.clone()));
    let audit = Arc::new(
        AuditLog::open(&config.audit_dir(), clock.clone())
            .map_err(|e| format!("audit log: {e}"))?,
    );
    let flush_wanted = Arc::new(Notify::new());
    let telemetry = Arc::new(Telemetry::default());
    let anomalies = Arc::new(if config.anomaly.shared(&config.storage) {
        tracing::info!("anomaly detection shared by every node of the storage");
        AnomalyEngine::shared(store.clone(), clock.clone(), telemetry.clone())
    } else {
        AnomalyEngine::new(
            config.data_dir.join("anomaly"),
            clock.clone(),
            telemetry.clone(),
        )
    });
    let pipeline = Arc::new(
        Pipeline::new(
            store.clone(),
            tenants.clone(),
            config.node_name.clone(),
            clock.clone(),
            flush_wanted.clone(),
            telemetry.clone(),
            anomalies.clone(),
        )
        .with_audit(audit.clone())
        .with_tenant_keys(&config.ingest.tenant_attribute_keys)
        .with_event_window(
            config.ingest.max_event_age.map(|d| d.0),
            config.ingest.max_event_future.0,
        )
        .with_workers({
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            if config.ingest.workers > 4 * cores {
                tracing::warn!(
                    workers = config.ingest.workers,
                    cores,
                    "ingest.workers is far above the number of cores: requests then wait in the operating system's run queue, where turns are not fair across tenants; leave it unset (one per core, and one more)"
                );
            }
            config.ingest.workers
        })
        .with_max_in_flight(config.ingest.max_in_flight.0)
        .with_fault_hook_opt(options.fault_hook.clone())
        .with_backlog_nice(config.ingest.backlog_nice)
        .map_err(|e| format!("ingest.backlog_nice: could not start its threads: {e}"))?,
    );
    telemetry.add(
        "bulkhead_wal_replayed_entries_total",
        &[],
        replay.entries_replayed as u64,
    );
    telemetry.add(
        "bulkhead_wal_truncations_total",
        &[],
        replay.wal.truncated.len() as u64,
    );
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let engine = Arc::new(
        QueryEngine::new(
            store.clone(),
            EngineLimits {
                timeout: config.query.timeout.0,
                max_rows: config.query.max_rows,
                memory_bytes: config.query.memory_limit.as_usize(),
                max_spill_bytes: config.query.max_spill.0,
                metadata_cache_bytes: config.query.metadata_cache.as_usize(),
            },
        )
        .map_err(|e| e.to_string())?
        .with_audit(audit.clone())
        .with_policy_limits({
            let tenants = tenants.clone();
            Arc::new(move |t| {
                tenants
                    .policy(t)
                    .map(|p| p.query.clone())
                    .unwrap_or_default()
            })
        }),
    );

    // a tenant's flushes and merges wait their turn with its requests
    let gate = pipeline.gate().clone();
    store.share_cpu_with(Arc::new(move |t: &bulkhead_rules::TenantId| {
        Box::new(gate.background_turn_blocking(t)) as Box<dyn std::any::Any>
    }));

    let grpc_listener = bind(config.listen.grpc, "OTLP/gRPC").await?;
    let http_listener = bind(config.listen.http, "OTLP/HTTP").await?;
    let api_listener = bind(config.listen.api, "the query API").await?;
    let metrics_listener = bind(config.listen.metrics, "metrics").await?;
    let flight_listener = bind(config.listen.flight, "Arrow Flight SQL").await?;
    let addr = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
    let (grpc_addr, http_addr, api_addr, metrics_addr, flight_addr) = (
        addr(&grpc_listener)?,
        addr(&http_listener)?,
        addr(&api_listener)?,
        addr(&metrics_listener)?,
        addr(&flight_listener)?,
    );

    let shutdown = CancellationToken::new();
    let max_body = config.ingest.max_body_size.as_usize();
    let mut servers = Vec::new();

    let (logs, traces, metrics) =
        bulkhead_collector::receiver::grpc::services(pipeline.clone(), max_body);
    let token = shutdown.clone();
    servers.push(tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(logs)
            .add_service(traces)
            .add_service(metrics)
            .serve_with_incoming_shutdown(
                // without TCP_NODELAY small responses wait for delayed ACKs (~40 ms)
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                token.cancelled_owned(),
            )
            .await
            .map_err(|e| format!("OTLP/gRPC server: {e}"))
    }));

    let http = bulkhead_collector::receiver::http::router(pipeline.clone(), max_body);
    servers.push(serve_axum(
        http_listener,
        http,
        shutdown.clone(),
        "OTLP/HTTP",
    ));

    let flight = bulkhead_query::flight::FlightSql::new(
        engine.clone(),
        tenants.clone() as Arc<dyn Authenticator>,
        pipeline.refusals().clone(),
    )
    .map_err(|e| e.to_string())?
    .into_server();
    let token = shutdown.clone();
    servers.push(tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(flight)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(flight_listener)
                    .with_nodelay(Some(true)),
                token.cancelled_owned(),
            )
            .await
            .map_err(|e| format!("Arrow Flight SQL server: {e}"))
    }));

    let admin_state = crate::admin::AdminState {
        keys: Arc::new(crate::admin::AdminKeys::new(&config.admin)?),
        tenants: tenants.clone(),
        policy_dir: config.policy_dir(),
        refusals: pipeline.refusals().clone(),
        writes: Arc::default(),
        store: store.clone(),
    };
    let jobs_wanted = Arc::new(Notify::new());
    let signer = Arc::new(crate::extract::Signer::load_or_create(
        &config.signing_key_path(),
    )?);
    // extracts a crash left half made
    let _ = std::fs::remove_dir_all(config.data_dir.join("tmp").join("extracts"));
    let jobs = Arc::new(crate::jobs::JobRunner {
        store: store.clone(),
        tenants: tenants.clone(),
        audit: audit.clone(),
        clock: clock.clone(),
        node: config.node_name.clone(),
        policy_dir: config.policy_dir(),
        policy_writes: admin_state.writes.clone(),
        abort_at: crate::jobs::AbortAt::from_env(),
        settle: match config.storage.backend {
            crate::config::Backend::Local => Duration::ZERO,
            crate::config::Backend::S3 => config.flush.max_age.0 + Duration::from_secs(5),
        },
        running: parking_lot::Mutex::new(()),
        started_at: clock.now_nanos(),
        seen_offboards: Default::default(),
        paused: Default::default(),
    });
    let api = bulkhead_query::http::router(ApiState {
        engine: engine.clone(),
        auth: tenants.clone() as Arc<dyn Authenticator>,
        refusals: pipeline.refusals().clone(),
        on_panic: {
            let telemetry = telemetry.clone();
            Arc::new(move || telemetry.add("bulkhead_request_panics_total", &[], 1))
        },
        fault_hook: options.query_fault_hook.clone(),
        federation: Arc::new(bulkhead_query::federation::Federation::new(
            &config.federation,
        )?),
    })
    .merge(crate::admin::router(admin_state.clone()))
    .merge(crate::compliance::router(
        crate::compliance::ComplianceState {
            store: store.clone(),
            tenants: tenants.clone(),
            audit: audit.clone(),
            refusals: pipeline.refusals().clone(),
            clock: clock.clone(),
            jobs_wanted: jobs_wanted.clone(),
            admin: admin_state.clone(),
            engine: engine.clone(),
            signer: signer.clone(),
            scratch: config.data_dir.join("tmp").join("extracts"),
            extract_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        },
    ))
    .route("/healthz", get(|| async { "ok\n" }))
    .route(
        "/readyz",
        get({
            let ready = ready.clone();
            move || async move {
                if ready.load(std::sync::atomic::Ordering::Acquire) {
                    (axum::http::StatusCode::OK, "ready\n")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
        }),
    );
    servers.push(serve_axum(api_listener, api, shutdown.clone(), "query API"));

    // Self-metrics name tenants and their figures: their own listener,
    // loopback by default, never the API port.
    let metrics = axum::Router::new()
        .route(
            "/metrics",
            get({
                let (telemetry, store, pipeline) =
                    (telemetry.clone(), store.clone(), pipeline.clone());
                move || async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        telemetry.render(&store, pipeline.in_flight(), pipeline.gate().load()),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    servers.push(serve_axum(
        metrics_listener,
        metrics,
        shutdown.clone(),
        "metrics",
    ));

    let policies = PolicyWatch {
        tenants: tenants.clone(),
        telemetry: telemetry.clone(),
        audit: audit.clone(),
        keys: KeyWatch::new(store.clone()),
    };
    let compactor = tokio::spawn(run_compaction(Compactor {
        store: store.clone(),
        config: config.compaction.clone(),
        orphan_age: config.storage.orphan_age.0,
        shutdown: shutdown.clone(),
        telemetry: telemetry.clone(),
        clock: clock.clone(),
        paused: options.pause_housekeeping.clone(),
    }));
    let flusher = tokio::spawn(run_housekeeping(Housekeeping {
        store: store.clone(),
        max_age: flush.max_age,
        wanted: flush_wanted,
        shutdown: shutdown.clone(),
        pipeline: pipeline.clone(),
        anomalies: anomalies.clone(),
        policies: policies.clone(),
        telemetry: telemetry.clone(),
        clock: clock.clone(),
        paused: options.pause_housekeeping.clone(),
        compaction: config.compaction.store_config(),
        node: config.node_name.clone(),
    }));
    // Registered before start returns, so a SIGHUP from now on is ours.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup = None;
    let watcher = tokio::spawn(watch_hangups(policies.clone(), shutdown.clone(), hup));
    let job_runner = tokio::spawn(run_jobs(
        jobs.clone(),
        jobs_wanted,
        shutdown.clone(),
        clock.clone(),
        options.pause_housekeeping.clone(),
    ));
    ready.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(%grpc_addr, %http_addr, %api_addr, %metrics_addr, %flight_addr, store = %store.location(), "bulkhead started");
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        api_addr,
        metrics_addr,
        flight_addr,
        store,
        tenants,
        anomalies,
        pipeline,
        shutdown,
        servers,
        flusher,
        compactor,
        watcher,
        job_runner,
        jobs,
        node: config.node_name.clone(),
        clock: clock.clone(),
        policies,
        ready,
        replay,
        audit,
    })
}

/// How often, on the injected clock, the job runner looks for jobs made by
/// the CLI or another node (the API wakes it at once).
const JOB_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs compliance jobs (erasures, offboarding) as they come: at start-up
/// (a job this node was running when it stopped is resumed), when the API
/// makes one, and every [`JOB_CHECK_EVERY`] of the clock.
async fn run_jobs(
    jobs: Arc<crate::jobs::JobRunner>,
    wanted: Arc<Notify>,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
    paused: Option<Arc<std::sync::atomic::AtomicBool>>,
) {
    let every = i64::try_from(JOB_CHECK_EVERY.as_nanos()).unwrap_or(i64::MAX);
    let mut last: Option<i64> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => false,
            _ = wanted.notified() => true,
        };
        if paused
            .as_ref()
            .is_some_and(|p| p.load(std::sync::atomic::Ordering::Acquire))
            || jobs.paused.load(std::sync::atomic::Ordering::Acquire) > 0
        {
            continue;
        }
        let now = clock.now_nanos();
        if !woken && last.is_some_and(|l| now.saturating_sub(l) < every) {
            continue;
        }
        last = Some(now);
        let j = jobs.clone();
        match tokio::task::spawn_blocking(move || j.run_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "job runner: will retry"),
            Err(e) => tracing::error!(error = %e, "job runner panicked"),
        }
    }
}

/// How often, on the injected clock, the policy directory is looked at for
/// changes (SIGHUP looks at once).
const POLICY_CHECK_EVERY: Duration = Duration::from_secs(2);

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// Looks at the policy directory on SIGHUP (the periodic look is part of
/// housekeeping).
async fn watch_hangups(
    policies: PolicyWatch,
    shutdown: CancellationToken,
    mut hup: Option<Hangup>,
) {
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = {
            let _ = &mut hup;
            std::future::pending::<Option<()>>()
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hangup => tracing::info!("SIGHUP: looking at the policy directory"),
        }
        policies.check().await;
    }
}

/// Takes policy changes into force; a broken change is refused (counted and
/// audited), the previous policies stay.
#[derive(Clone)]
struct PolicyWatch {
    tenants: Arc<TenantDirectory>,
    telemetry: Arc<Telemetry>,
    audit: Arc<AuditLog>,
    keys: Option<KeyWatch>,
}

/// Notices key changes other processes (`bulkhead tenant shred`,
/// `bulkhead tenant rotate-key`) made in the keyring: a shredded tenant's
/// buffered data is dropped at once, and each change is audited (the CLI
/// cannot write the audit trail while the server holds it).
#[derive(Clone)]
struct KeyWatch {
    store: Arc<Store>,
    seen: Arc<parking_lot::Mutex<bulkhead_store::crypto::KeyState>>,
}

impl KeyWatch {
    fn new(store: Arc<Store>) -> Option<Self> {
        let state = store.keys()?.provider().state();
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading the keyring");
                Default::default()
            }
        };
        Some(Self {
            store,
            seen: Arc::new(parking_lot::Mutex::new(state)),
        })
    }

    /// The changes since the last look, as audit events.
    fn changes(&self) -> Vec<NewEvent> {
        let Some(keys) = self.store.keys() else {
            return Vec::new();
        };
        let now = match keys.provider().state() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading the keyring");
                return Vec::new();
            }
        };
        let mut seen = self.seen.lock();
        let mut events = Vec::new();
        for (tenant, at) in &now.shredded {
            if seen.shredded.contains_key(tenant) {
                continue;
            }
            let Ok(t) = bulkhead_rules::TenantId::new(tenant) else {
                continue;
            };
            self.store.forget_shredded(&t);
            tracing::warn!(%tenant, %at, "tenant shredded: its data can no longer be read");
            events.push(
                NewEvent::new(EventKind::TenantShredded)
                    .tenant(&t)
                    .detail("at", at)
                    .detail("by", "keyring"),
            );
        }
        for (tenant, version) in &now.current {
            let before = seen.current.get(tenant).copied().unwrap_or(1);
            if *version <= before {
                continue;
            }
            let Ok(t) = bulkhead_rules::TenantId::new(tenant) else {
                continue;
            };
            events.push(
                NewEvent::new(EventKind::KeyRotated)
                    .tenant(&t)
                    .detail("kek_version", version)
                    .detail("by", "keyring"),
            );
        }
        *seen = now;
        events
    }
}

impl std::fmt::Debug for PolicyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyWatch")
    }
}

impl PolicyWatch {
    async fn check(&self) {
        if let Some(k) = self.keys.clone() {
            let audit = self.audit.clone();
            let looked = tokio::task::spawn_blocking(move || {
                let events = k.changes();
                if !events.is_empty() {
                    if let Err(e) = audit.append_all(events) {
                        tracing::error!(error = %e, "audit of key changes failed");
                    }
                }
            })
            .await;
            if let Err(e) = looked {
                tracing::error!(error = %e, "keyring look panicked");
            }
        }
        let t = self.tenants.clone();
        self.telemetry.add("bulkhead_policy_checks_total", &[], 1);
        match tokio::task::spawn_blocking(move || t.reload_if_changed()).await {
            Ok(ReloadOutcome::Reloaded(_)) => {
                self.telemetry.add("bulkhead_policy_reloads_total", &[], 1);
            }
            Ok(ReloadOutcome::Refused(reason)) => {
                self.telemetry
                    .add("bulkhead_policy_reload_errors_total", &[], 1);
                bulkhead_collector::audit::record_later(
                    &self.audit,
                    bulkhead_collector::audit::policy_rejected(&reason),
                );
            }
            Ok(ReloadOutcome::Unchanged) => {}
            Err(e) => tracing::error!(error = %e, "policy check panicked"),
        }
        // changes taken in by this reload or by any other since (a key used
        // seconds after its creation reloads on the spot): audited once, in
        // one append (a default policy changes thousands of tenants at
        // once; a task and an fsync each would flood the blocking pool)
        let events = bulkhead_collector::audit::unaudited_policy_events(&self.tenants);
        if events.is_empty() {
            return;
        }
        let log = self.audit.clone();
        match tokio::task::spawn_blocking(move || log.append_all(events)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit append failed"),
            Err(e) => tracing::error!(error = %e, "audit append panicked"),
        }
    }
}

fn serve_axum(
    listener: TcpListener,
    router: axum::Router,
    token: CancellationToken,
    what: &'static str,
) -> JoinHandle<Result<(), String>> {
    use axum::serve::ListenerExt;
    // without TCP_NODELAY small responses wait for delayed ACKs (~40 ms)
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .map_err(|e| format!("{what} server: {e}"))
    })
}

/// What the compaction loop works on.
struct Compactor {
    store: Arc<Store>,
    config: crate::config::Compaction,
    orphan_age: Duration,
    shutdown: CancellationToken,
    telemetry: Arc<Telemetry>,
    clock: Arc<dyn Clock>,
    paused: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Storage upkeep, beside the housekeeping loop so a long merge never holds
/// up a flush: every `compaction.interval` on the injected clock it merges
/// the due tenant-hours (when compaction is on) and deletes the files whose
/// removal grace period has passed; every `storage.orphan_age` it deletes
/// the files a crash left uncommitted.
async fn run_compaction(c: Compactor) {
    let interval = i64::try_from(c.config.interval.0.as_nanos()).unwrap_or(i64::MAX);
    let sweep_every = i64::try_from(c.orphan_age.as_nanos()).unwrap_or(i64::MAX);
    let mut last = c.clock.now_nanos();
    // the first sweep comes with the first pass: a crash's leftovers go soon
    let mut last_sweep = i64::MIN;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = c.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let paused = c
            .paused
            .as_ref()
            .is_some_and(|p| p.load(std::sync::atomic::Ordering::Acquire));
        if paused || c.clock.now_nanos().saturating_sub(last) < interval {
            continue;
        }
        last = c.clock.now_nanos();
        let sweep = last.saturating_sub(last_sweep) >= sweep_every;
        if sweep {
            last_sweep = last;
        }
        let (store, config, orphan_age) = (c.store.clone(), c.config.clone(), c.orphan_age);
        let done = tokio::task::spawn_blocking(move || {
            if sweep {
                match store.sweep_orphans_all(orphan_age) {
                    Ok(n) if n > 0 => tracing::warn!(deleted = n, "deleted uncommitted files"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "orphan sweep failed"),
                }
            }
            let merged = config
                .enabled
                .then(|| store.compact_due(&config.store_config()));
            (merged, store.delete_expired_all())
        })
        .await;
        match done {
            Ok((merged, deleted)) => {
                match merged {
                    Some(Ok(s)) => {
                        c.telemetry
                            .add("bulkhead_compaction_merges_total", &[], s.merged as u64);
                        c.telemetry
                            .add("bulkhead_compaction_inputs_total", &[], s.inputs as u64);
                        c.telemetry.add(
                            "bulkhead_compaction_conflicts_total",
                            &[],
                            s.conflicts as u64,
                        );
                        if s.merged > 0 {
                            tracing::debug!(merged = s.merged, inputs = s.inputs, "compacted");
                        }
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "compaction failed; will retry"),
                    None => {}
                }
                match deleted {
                    Ok(n) => c
                        .telemetry
                        .add("bulkhead_removed_files_deleted_total", &[], n as u64),
                    Err(e) => tracing::error!(error = %e, "deleting removed files failed"),
                }
            }
            Err(e) => tracing::error!(error = %e, "compaction task panicked"),
        }
    }
}

/// What the housekeeping loop works on.
struct Housekeeping {
    store: Arc<Store>,
    max_age: Duration,
    wanted: Arc<Notify>,
    shutdown: CancellationToken,
    pipeline: Arc<Pipeline>,
    anomalies: Arc<AnomalyEngine>,
    policies: PolicyWatch,
    telemetry: Arc<Telemetry>,
    clock: Arc<dyn Clock>,
    paused: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// What compaction merges: a tenant's store shard is evicted only when
    /// nothing is left to merge.
    compaction: bulkhead_store::CompactionConfig,
    node: String,
}

/// How often, on the injected clock, the audit chain's head is published
/// to the store (when it moved).
const AUDIT_PUBLISH_EVERY: i64 = 60_000_000_000;

/// Publishes `audit`'s head to the store if it moved past `last`; returns
/// the head's seq as published (or `last`).
fn publish_audit_head(
    store: &Store,
    audit: &AuditLog,
    node: &str,
    now_nanos: i64,
    last: u64,
) -> u64 {
    let head = audit.head();
    if head.seq <= last {
        return last;
    }
    let at = chrono::DateTime::from_timestamp_nanos(now_nanos).to_rfc3339();
    match bulkhead_store::audit::publish_head(store.storage(), node, &head, &at) {
        Ok(path) => {
            tracing::debug!(seq = head.seq, %path, "audit head published");
            head.seq
        }
        Err(e) => {
            tracing::warn!(error = %e, "audit head not published; will retry");
            last
        }
    }
}

/// A tenant's store shard (manifests, locks) leaves memory once the tenant
/// has sent nothing for this long and has nothing left to flush or merge.
const SHARD_IDLE: Duration = Duration::from_secs(3_600);

/// Every background duty of the server, in one loop: flushes, anomaly
/// minutes, retention, anomaly checkpoints, policy checks and the audit of
/// refused credentials. What is due is decided on the injected clock alone,
/// so tests advance time instead of waiting for it; the loop wakes often
/// (a quarter of the flush age, 10 ms to 1 s of real time) to look at that
/// clock, and at once when a buffer fills.
async fn run_housekeeping(h: Housekeeping) {
    let Housekeeping {
        store,
        max_age,
        wanted,
        shutdown,
        pipeline,
        anomalies,
        policies,
        telemetry,
        clock,
        paused,
        compaction,
        node,
    } = h;
    let mut last_publish = clock.now_nanos();
    let mut published = 0u64;
    const CHECKPOINT_EVERY: i64 = 60_000_000_000;
    const RETENTION_EVERY: i64 = 60_000_000_000;
    let policy_every = i64::try_from(POLICY_CHECK_EVERY.as_nanos()).unwrap_or(i64::MAX);
    let mut last_checkpoint = clock.now_nanos();
    let mut last_retention = clock.now_nanos();
    let mut last_policy_check = clock.now_nanos();
    let period = (max_age / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
            _ = wanted.notified() => {}
        }
        if paused
            .as_ref()
            .is_some_and(|p| p.load(std::sync::atomic::Ordering::Acquire))
        {
            continue;
        }
        telemetry.add("bulkhead_housekeeping_runs_total", &[], 1);
        if clock.now_nanos().saturating_sub(last_policy_check) >= policy_every {
            last_policy_check = clock.now_nanos();
            policies.check().await;
        }
        // the wall clock closes minutes of live tenants (a silent tenant is
        // a zero); findings go through the WAL, so off the runtime
        let (p, a) = (pipeline.clone(), anomalies.clone());
        let ticked = tokio::task::spawn_blocking(move || {
            let tenants = p.tenants().clone();
            a.tick(
                |t| tenants.policy(t).map(|p| p.anomaly.clone()),
                |t, findings| p.record_anomalies(t, findings),
            );
        })
        .await;
        if let Err(e) = ticked {
            tracing::error!(error = %e, "anomaly tick panicked");
        }
        if clock.now_nanos().saturating_sub(last_retention) >= RETENTION_EVERY {
            last_retention = clock.now_nanos();
            let p = pipeline.clone();
            match tokio::task::spawn_blocking(move || p.enforce_retention()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed; will retry"),
                Err(e) => tracing::error!(error = %e, "retention task panicked"),
                Ok(Ok(_)) => {}
            }
        }
        if clock.now_nanos().saturating_sub(last_checkpoint) >= CHECKPOINT_EVERY {
            last_checkpoint = clock.now_nanos();
            let a = anomalies.clone();
            // idle tenants' state leaves memory once written
            let (p, s, c) = (pipeline.clone(), store.clone(), compaction.clone());
            match tokio::task::spawn_blocking(move || {
                (
                    a.checkpoint_and_evict(),
                    p.evict_idle(),
                    s.evict_idle(SHARD_IDLE, &c),
                )
            })
            .await
            {
                Ok((Err(e), _, _)) => tracing::error!(error = %e, "anomaly checkpoint failed"),
                Err(e) => tracing::error!(error = %e, "anomaly checkpoint task panicked"),
                Ok((Ok(detectors), buckets, shards)) => {
                    if detectors + buckets + shards > 0 {
                        tracing::debug!(detectors, buckets, shards, "idle tenants' state evicted");
                    }
                }
            }
        }
        let p = pipeline.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || p.flush_refusals()).await {
            tracing::error!(error = %e, "audit of refused credentials panicked");
        }
        if clock.now_nanos().saturating_sub(last_publish) >= AUDIT_PUBLISH_EVERY {
            last_publish = clock.now_nanos();
            let (s, a, n, now) = (
                store.clone(),
                policies.audit.clone(),
                node.clone(),
                clock.now_nanos(),
            );
            if let Ok(p) =
                tokio::task::spawn_blocking(move || publish_audit_head(&s, &a, &n, now, published))
                    .await
            {
                published = p;
            }
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush_due()).await {
            Ok(Ok(stats)) if stats.files > 0 => {
                tracing::debug!(
                    files = stats.files,
                    rows = stats.rows,
                    bytes = stats.bytes,
                    "flushed"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "flush failed; will retry"),
            Err(e) => tracing::error!(error = %e, "flush task panicked"),
        }
    }
}

impl RunningServer {
    /// Applies the tenants' retention periods now (the server also does so
    /// every minute). Returns the number of files deleted.
    pub async fn enforce_retention(&self) -> Result<usize, String> {
        let p = self.pipeline.clone();
        tokio::task::spawn_blocking(move || p.enforce_retention())
            .await
            .map_err(|e| e.to_string())?
    }

    /// Writes the refused credentials summed up so far to the audit trail
    /// now (housekeeping does so on every tick).
    pub async fn flush_refusals(&self) {
        let p = self.pipeline.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || p.flush_refusals()).await {
            tracing::error!(error = %e, "audit of refused credentials panicked");
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Looks at the policy directory and the keyring now (housekeeping does
    /// so every 2 s of the clock, SIGHUP at once): changes are taken in and
    /// audited before this returns.
    pub async fn check_policies(&self) {
        self.policies.check().await
    }

    /// Runs due compliance jobs now (the server also does so when the API
    /// makes one and every 2 s of the clock); returns how many ended.
    pub async fn run_jobs(&self) -> Result<usize, String> {
        let j = self.jobs.clone();
        tokio::task::spawn_blocking(move || j.run_due())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Keeps the background job passes from taking jobs while the guard
    /// lives (for tests of pending jobs); [`RunningServer::run_jobs`] still
    /// runs them.
    pub fn pause_jobs(&self) -> crate::jobs::JobsPaused {
        crate::jobs::JobsPaused::new(self.jobs.clone())
    }

    /// Publishes the audit chain's head to the store now (the server does
    /// so every minute of the clock when it moved, and at shutdown).
    pub async fn publish_audit_head(&self) -> Result<(), String> {
        let (s, a, n, now) = (
            self.store.clone(),
            self.audit.clone(),
            self.node.clone(),
            self.clock.now_nanos(),
        );
        tokio::task::spawn_blocking(move || publish_audit_head(&s, &a, &n, now, 0))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// What start-up recovered from the write-ahead log.
    pub fn replay_report(&self) -> &ReplayReport {
        &self.replay
    }

    pub fn tenants(&self) -> &Arc<TenantDirectory> {
        &self.tenants
    }

    /// A token that stops the server when cancelled (signal handlers use it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when the server has been asked to stop.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }

    /// Stops accepting, finishes requests in flight, then commits everything
    /// buffered. Returns what the final flush wrote.
    pub async fn shutdown(self) -> Result<FlushStats, String> {
        self.ready
            .store(false, std::sync::atomic::Ordering::Release);
        self.shutdown.cancel();
        let mut errors = Vec::new();
        for s in self.servers {
            match s.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let _ = self.flusher.await;
        let _ = self.compactor.await;
        let _ = self.watcher.await;
        let _ = self.job_runner.await;
        let p = self.pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || p.flush_refusals()).await;
        // policy changes taken in since the last look, and any on disk now,
        // are audited before the trail closes
        let (t, log) = (self.tenants.clone(), self.audit.clone());
        let _ = tokio::task::spawn_blocking(move || {
            t.reload_if_changed();
            let events = bulkhead_collector::audit::unaudited_policy_events(&t);
            if let Err(e) = log.append_all(events) {
                tracing::error!(error = %e, "audit append at shutdown failed");
            }
        })
        .await;
        // the trail's last entry, where a cut tail would show
        let (st, a, n, now) = (
            self.store.clone(),
            self.audit.clone(),
            self.node.clone(),
            self.clock.now_nanos(),
        );
        let _ = tokio::task::spawn_blocking(move || publish_audit_head(&st, &a, &n, now, 0)).await;
        let a = self.anomalies.clone();
        match tokio::task::spawn_blocking(move || a.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "anomaly checkpoint at shutdown failed"),
            Err(e) => tracing::error!(error = %e, "anomaly checkpoint at shutdown panicked"),
        }
        let store = self.store.clone();
        let stats = tokio::task::spawn_blocking(move || store.flush_all())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("final flush: {e}"))?;
        tracing::info!(
            files = stats.files,
            rows = stats.rows,
            "shut down; buffers flushed"
        );
        if errors.is_empty() {
            Ok(stats)
        } else {
            Err(errors.join("; "))
        }
    }
}
