//! The ingest pipeline: an authenticated export request becomes that
//! tenant's Arrow batch, stamped with tenant and lineage, buffered in the store.
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::{Clock, Principal, Scope};
use bulkhead_store::{Signal, Store};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::Notify;

use crate::anomaly::{self, AnomalyEngine};
use crate::convert::{self, EventWindow, Stamp};
use crate::error::ReceiveError;
use crate::redact;
use crate::telemetry::Telemetry;
use crate::tenants::TenantDirectory;
use bulkhead_rules::redact::Report;

/// Requests in the CPU stage at once by default: one per core and one
/// more, so that requests queue where turns are fair (see [`crate::fair`]),
/// not in the operating system's run queue. One tenant holds at most one
/// fewer than all: alone it uses every core, and a request of another
/// tenant's always finds a slot instead of waiting for its work to end.
pub fn default_ingest_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// The CPU stage's gate of `n` slots: one tenant holds at most `n - 1`,
/// and `n - 2` while other tenants send; `n - 1` spare slots more are for
/// tenants holding none (see [`crate::fair`]).
fn gate_of(n: usize) -> Arc<crate::fair::FairGate> {
    let rest = n.saturating_sub(1);
    crate::fair::FairGate::with_limits(
        crate::fair::GateLimits {
            slots: n,
            per_tenant: rest,
            per_tenant_beside_others: n.saturating_sub(2),
            spare: rest,
        },
        Arc::new(crate::fair::MonotonicClock::new()),
    )
}

/// Bytes counted as in flight (in all, and for their tenant) until dropped.
#[derive(Debug)]
pub struct InFlight {
    counter: Arc<std::sync::atomic::AtomicU64>,
    per_tenant: Arc<parking_lot::Mutex<std::collections::HashMap<bulkhead_rules::TenantId, u64>>>,
    tenant: bulkhead_rules::TenantId,
    bytes: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
        let mut per_tenant = self.per_tenant.lock();
        if let Some(held) = per_tenant.get_mut(&self.tenant) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                per_tenant.remove(&self.tenant);
            }
        }
    }
}

/// The share of `ingest.max_in_flight` one tenant's requests may hold, so
/// that a tenant whose requests queue for the CPU stage cannot take all of
/// it and shut the others out before they reach their queue.
const TENANT_SHARE_OF_IN_FLIGHT: u64 = 4;

/// Called at the start of every ingest (fault injection in tests).
pub type FaultHook = Arc<dyn Fn(&Principal) + Send + Sync>;

/// How long a tenant over its storage quota is asked to wait (retention runs
/// every minute).
const QUOTA_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long a client is asked to wait when the store is saturated.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One decoded OTLP export request.
#[derive(Debug)]
pub enum Export {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// The outcome of an accepted request: full or partial success.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: u64,
    /// Records refused as invalid; 0 means full success.
    pub rejected: u64,
    pub error_message: String,
}

/// Everything a receiver hands its requests to.
pub struct Pipeline {
    store: Arc<Store>,
    tenants: Arc<TenantDirectory>,
    node: String,
    clock: Arc<dyn Clock>,
    flush_wanted: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    anomalies: Arc<AnomalyEngine>,
    audit: Option<Arc<bulkhead_store::audit::AuditLog>>,
    tenant_keys: Vec<String>,
    limiter: crate::limits::RateLimiter,
    refusals: Arc<bulkhead_store::audit::RefusalAudit>,
    series: crate::cardinality::SeriesLimiter,
    /// Bytes of requests being worked on, and the most allowed.
    in_flight: Arc<std::sync::atomic::AtomicU64>,
    /// The same per tenant (only tenants with requests in flight).
    in_flight_by_tenant:
        Arc<parking_lot::Mutex<std::collections::HashMap<bulkhead_rules::TenantId, u64>>>,
    max_in_flight: u64,
    /// Turns at the CPU stage (decompress, decode, convert, redact), fair
    /// across tenants; the WAL's fsync is waited for outside it.
    workers: Arc<crate::fair::FairGate>,
    /// Threads at a lower priority for backlogged tenants' CPU work.
    backlog: Option<Arc<crate::backlog::Backlog>>,
    /// Fault injection for tests: runs at the start of every ingest.
    fault_hook: Option<FaultHook>,
    /// Oldest event accepted; `None`: the tenant's longest retention.
    max_event_age: Option<Duration>,
    /// Latest event accepted, ahead of the clock.
    max_event_future: Duration,
}

/// How far ahead of the clock an event may be by default.
pub const DEFAULT_MAX_EVENT_FUTURE: Duration = Duration::from_secs(3_600);

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(
        store: Arc<Store>,
        tenants: Arc<TenantDirectory>,
        node: String,
        clock: Arc<dyn Clock>,
        flush_wanted: Arc<Notify>,
        telemetry: Arc<Telemetry>,
        anomalies: Arc<AnomalyEngine>,
    ) -> Self {
        Self {
            store,
            tenants,
            node,
            clock,
            flush_wanted,
            telemetry,
            anomalies,
            audit: None,
            tenant_keys: redact::TENANT_KEYS.iter().map(|k| k.to_string()).collect(),
            limiter: Default::default(),
            refusals: Default::default(),
            series: Default::default(),
            in_flight: Default::default(),
            in_flight_by_tenant: Default::default(),
            max_in_flight: u64::MAX,
            workers: gate_of(default_ingest_workers()),
            backlog: None,
            fault_hook: None,
            max_event_age: None,
            max_event_future: DEFAULT_MAX_EVENT_FUTURE,
        }
    }

    /// Bytes of requests worked on at once; above it new requests are
    /// refused as transient (the Collector's memory limiter is the model).
    pub fn with_max_in_flight(mut self, bytes: u64) -> Self {
        self.max_in_flight = bytes;
        self
    }

    /// Bytes of requests being worked on now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refuses new work while the requests in flight hold the limit.
    pub fn check_in_flight(&self) -> Result<(), ReceiveError> {
        let now = self.in_flight();
        if now >= self.max_in_flight {
            return Err(ReceiveError::Unavailable {
                message: format!(
                    "the server is working on {now} bytes of requests, its limit ({} bytes); retry later",
                    self.max_in_flight
                ),
                retry_after: RETRY_AFTER,
            });
        }
        Ok(())
    }

    /// Counts `bytes` of `tenant`'s request as in flight until the guard is
    /// dropped; refused when they would take the total past the limit, or
    /// the tenant's own past a quarter of it.
    pub fn charge(
        &self,
        tenant: &bulkhead_rules::TenantId,
        bytes: u64,
    ) -> Result<InFlight, ReceiveError> {
        self.charge_for(tenant, bytes, 0)
    }

    /// Counts `extra` more bytes of the request `held` already counts
    /// (what decompression added): the request is still one request, so a
    /// tenant with nothing else in flight is let through whatever its size.
    pub fn charge_more(&self, held: &InFlight, extra: u64) -> Result<InFlight, ReceiveError> {
        self.charge_for(&held.tenant, extra, held.bytes)
    }

    /// `bytes` of `tenant`'s request, of which `already` are counted.
    fn charge_for(
        &self,
        tenant: &bulkhead_rules::TenantId,
        bytes: u64,
        already: u64,
    ) -> Result<InFlight, ReceiveError> {
        use std::sync::atomic::Ordering;
        let tenant_before = {
            let mut per_tenant = self.in_flight_by_tenant.lock();
            let held = per_tenant.entry(tenant.clone()).or_default();
            let before = *held;
            *held = held.saturating_add(bytes);
            before
        };
        let before = self.in_flight.fetch_add(bytes, Ordering::Relaxed);
        let guard = InFlight {
            counter: self.in_flight.clone(),
            per_tenant: self.in_flight_by_tenant.clone(),
            tenant: tenant.clone(),
            bytes,
        };
        // one request alone is always let through (it is bounded by the body
        // limit), so a large request cannot be refused forever
        if before > already && before.saturating_add(bytes) > self.max_in_flight {
            drop(guard);
            return Err(ReceiveError::Unavailable {
                message: format!(
                    "the server is working on {before} bytes of requests; this one ({bytes} bytes) would pass its limit ({} bytes); retry later",
                    self.max_in_flight
                ),
                retry_after: RETRY_AFTER,
            });
        }
        let share = self.max_in_flight / TENANT_SHARE_OF_IN_FLIGHT;
        if tenant_before > already && tenant_before.saturating_add(bytes) > share {
            drop(guard);
            return Err(ReceiveError::Unavailable {
                message: format!(
                    "tenant {tenant} has {tenant_before} bytes of requests in flight; this one ({bytes} bytes) would pass its share ({share} bytes, a quarter of the server's limit); retry later"
                ),
                retry_after: RETRY_AFTER,
            });
        }
        Ok(guard)
    }

    /// How many requests may be decompressed, decoded, converted and
    /// redacted at once; more wait in their tenant's queue (without holding
    /// a thread) and are let in round-robin across tenants.
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = gate_of(n);
        self
    }

    /// Runs the CPU work of requests whose tenant had more requests queued
    /// for a turn ([`crate::fair::Turn::backlogged`]: a tenant sending
    /// faster than its share is worked off) on threads `nice` steps below
    /// the server's operating-system priority (1 to 19; 0: on the blocking
    /// pool with everything else). The gate still decides when such work
    /// runs; the priority decides who gets a core first when work of other
    /// tenants (their turns, their write-ahead log syncs, their responses)
    /// is ready at the same time, which the gate cannot order. Linux only:
    /// elsewhere the threads run at the server's priority.
    pub fn with_backlog_nice(mut self, nice: u8) -> std::io::Result<Self> {
        self.backlog = match nice {
            0 => None,
            n => Some(Arc::new(crate::backlog::Backlog::new(i32::from(n))?)),
        };
        Ok(self)
    }

    /// The gate in front of the CPU stage (its load is a self-metric).
    pub fn gate(&self) -> &Arc<crate::fair::FairGate> {
        &self.workers
    }

    /// Fault injection for tests: `hook` runs at the start of every ingest
    /// with the caller; a panic in it must stay within that one request.
    pub fn with_fault_hook(mut self, hook: FaultHook) -> Self {
        self.fault_hook = Some(hook);
        self
    }

    /// [`Pipeline::with_fault_hook`] when there is one.
    pub fn with_fault_hook_opt(self, hook: Option<FaultHook>) -> Self {
        match hook {
            Some(h) => self.with_fault_hook(h),
            None => self,
        }
    }

    /// Runs a request's CPU-heavy and blocking work (decompression, decode,
    /// conversion, redaction, the WAL's fsync) on the blocking pool once
    /// `tenant` has a turn at the CPU stage ([`crate::fair`]): at most
    /// [`Pipeline::with_workers`] at once, round-robin across tenants. The
    /// work gets the turn and gives it back before it waits for the WAL
    /// ([`Pipeline::ingest`] does). A panic becomes an internal error of
    /// this request alone, counted in `bulkhead_request_panics_total`.
    pub async fn offload<T: Send + 'static>(
        &self,
        tenant: &bulkhead_rules::TenantId,
        work: impl FnOnce(crate::fair::Turn) -> Result<T, ReceiveError> + Send + 'static,
    ) -> Result<T, ReceiveError> {
        let turn = self.workers.turn(tenant).await;
        let span = tracing::Span::current();
        if turn.backlogged() && self.backlog.is_some() {
            self.telemetry
                .add("bulkhead_ingest_backlogged_requests_total", &[], 1);
        }
        let joined = crate::backlog::run(self.backlog.as_deref(), turn, move |turn| {
            span.in_scope(|| work(turn))
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => {
                self.telemetry.add("bulkhead_request_panics_total", &[], 1);
                let what = if e.is_panic() {
                    match e.into_panic().downcast::<String>() {
                        Ok(s) => *s,
                        Err(p) => p
                            .downcast::<&'static str>()
                            .map(|s| (*s).to_string())
                            .unwrap_or_else(|_| "panic".into()),
                    }
                } else {
                    "cancelled".into()
                };
                Err(ReceiveError::Internal(format!(
                    "request handler failed: {what}"
                )))
            }
        }
    }

    /// Sets the accepted event-time window: records older than `max_age`
    /// (default: the tenant's longest retention) or more than `max_future`
    /// ahead of the clock are rejected one by one.
    pub fn with_event_window(mut self, max_age: Option<Duration>, max_future: Duration) -> Self {
        self.max_event_age = max_age;
        self.max_event_future = max_future;
        self
    }

    /// The attribute keys that name a tenant (see `ingest.tenant_attribute_keys`).
    pub fn with_tenant_keys(mut self, keys: &[String]) -> Self {
        self.tenant_keys = keys.to_vec();
        self
    }

    /// Puts refused credentials on the audit trail.
    pub fn with_audit(mut self, log: Arc<bulkhead_store::audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Counts and audits a refused credential; `presented` is the token sent.
    pub fn refused_auth(
        &self,
        err: &bulkhead_rules::AuthError,
        presented: Option<&str>,
        interface: &str,
    ) {
        if self.audit.is_some() {
            self.refusals
                .record(bulkhead_store::audit::NewEvent::refused_credential(
                    err, presented, interface,
                ));
        }
    }

    /// Admission before the body is read or decoded: a tenant whose ingest
    /// bucket is empty is refused at once (429 / RESOURCE_EXHAUSTED with a
    /// retry hint), at the cost of one lookup.
    pub fn admit(&self, principal: &Principal) -> Result<(), ReceiveError> {
        let Some(policy) = self.tenants.policy(&principal.tenant) else {
            return Ok(());
        };
        if let (Some(quota), Some(used)) = (
            policy.limits.storage_quota,
            self.store.committed_bytes_known(&principal.tenant),
        ) {
            self.check_quota(&principal.tenant, quota.0, used)?;
        }
        self.limiter
            .check(&principal.tenant, &policy.limits, self.clock.now_nanos())
            .map_err(|(over, wait)| match over {
                crate::limits::Over::Records => self.throttled(
                    &principal.tenant,
                    format!("{} records/s", policy.limits.records_per_second),
                    wait,
                ),
                crate::limits::Over::Bytes => self.throttled(
                    &principal.tenant,
                    format!("{} bytes/s", policy.limits.bytes_per_second),
                    wait,
                ),
            })
    }

    fn check_quota(
        &self,
        tenant: &bulkhead_rules::TenantId,
        quota: u64,
        used: u64,
    ) -> Result<(), ReceiveError> {
        if used < quota {
            return Ok(());
        }
        Err(ReceiveError::Throttled {
            message: format!(
                "tenant {tenant} holds {used} bytes, at or over its storage quota of {quota} bytes; retry once retention or an operator has made room"
            ),
            retry_after: QUOTA_RETRY_AFTER,
        })
    }

    /// Charges a request's bytes as received (before decompression and
    /// decoding) to the tenant's byte limit.
    pub fn charge_bytes(&self, principal: &Principal, bytes: u64) -> Result<(), ReceiveError> {
        let Some(policy) = self.tenants.policy(&principal.tenant) else {
            return Ok(());
        };
        self.limiter
            .take_bytes(
                &principal.tenant,
                &policy.limits,
                bytes,
                self.clock.now_nanos(),
            )
            .map_err(|wait| {
                self.throttled(
                    &principal.tenant,
                    format!("{} bytes/s", policy.limits.bytes_per_second),
                    wait,
                )
            })
    }

    fn throttled(
        &self,
        tenant: &bulkhead_rules::TenantId,
        limit: String,
        wait: Duration,
    ) -> ReceiveError {
        ReceiveError::Throttled {
            message: format!(
                "tenant {tenant} is over its ingest limit of {limit}; retry after {} ms",
                wait.as_millis()
            ),
            retry_after: wait,
        }
    }

    /// Where refused credentials are summed up until [`Pipeline::flush_refusals`];
    /// other interfaces (the query API) record theirs here too.
    pub fn refusals(&self) -> &Arc<bulkhead_store::audit::RefusalAudit> {
        &self.refusals
    }

    /// Writes the refused credentials summed up since the last call to the
    /// audit trail (blocking; the flusher calls it every tick).
    pub fn flush_refusals(&self) {
        if let Some(log) = &self.audit {
            self.refusals.flush(log);
        }
    }

    /// Applies the tenant's governance to a converted batch: fields naming a
    /// tenant are pinned to the caller, then its redaction rules (and the
    /// secure defaults) run. None when every record was dropped by a rule.
    fn govern(
        &self,
        tenant: &bulkhead_rules::TenantId,
        signal: Signal,
        batch: arrow::record_batch::RecordBatch,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, ReceiveError> {
        let internal = |e: arrow::error::ArrowError| {
            ReceiveError::Internal(format!("tenant {tenant}: redaction: {e}"))
        };
        let (batch, pinned) = redact::enforce_tenant_fields(
            &batch,
            tenant.as_str(),
            &self
                .tenant_keys
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .map_err(internal)?;
        self.telemetry.add(
            "bulkhead_tenant_fields_overwritten_total",
            &[("tenant", tenant.as_str())],
            pinned,
        );
        let mut report = Report::default();
        let redactor = self.tenants.redactor(tenant);
        let out = redact::redact_batch(signal, &batch, &redactor, &mut report).map_err(internal)?;
        for (rule, c) in &report.rules {
            for (action, n) in [
                ("masked", c.values_masked),
                ("hashed", c.values_hashed),
                ("attribute_dropped", c.attributes_dropped),
                ("record_dropped", c.records_dropped),
            ] {
                self.telemetry.add(
                    "bulkhead_redactions_total",
                    &[
                        ("tenant", tenant.as_str()),
                        ("rule", rule),
                        ("action", action),
                    ],
                    n,
                );
            }
        }
        Ok(out)
    }

    /// Forgets per-tenant state an idle tenant would get back unchanged:
    /// rate-limit buckets that are full again. Returns how many went.
    pub fn evict_idle(&self) -> usize {
        let now = self.clock.now_nanos();
        self.limiter
            .evict_idle(now, |t| self.tenants.policy(t).map(|p| p.limits.clone()))
    }

    /// Deletes every tenant's data past its retention period (per table),
    /// except for tenants under legal hold; on the injected clock. Each
    /// deletion is counted and put on the audit trail. Returns files deleted.
    pub fn enforce_retention(&self) -> Result<usize, String> {
        let now = self.clock.now_nanos();
        let mut total = 0;
        for tenant in self.tenants.tenants() {
            let Some(policy) = self.tenants.policy(&tenant) else {
                continue;
            };
            if policy.retention.legal_hold {
                continue;
            }
            for signal in Signal::ALL {
                let Some(period) = policy.retention.period(signal.name()) else {
                    continue;
                };
                let cutoff =
                    now.saturating_sub(i64::try_from(period.as_nanos()).unwrap_or(i64::MAX));
                let files = self
                    .store
                    .delete_before(&tenant, signal, cutoff)
                    .map_err(|e| format!("retention of {tenant}/{signal}: {e}"))?;
                if files == 0 {
                    continue;
                }
                total += files;
                tracing::info!(%tenant, %signal, files, "retention: deleted data past its period");
                self.telemetry.add(
                    "bulkhead_retention_files_deleted_total",
                    &[("tenant", tenant.as_str()), ("signal", signal.name())],
                    files as u64,
                );
                if let Some(log) = &self.audit {
                    let before = chrono::DateTime::from_timestamp_nanos(cutoff).to_rfc3339();
                    let event = bulkhead_store::audit::NewEvent::new(
                        bulkhead_store::audit::EventKind::RetentionApplied,
                    )
                    .tenant(&tenant)
                    .detail("signal", signal.name())
                    .detail("before", before)
                    .detail("files", files);
                    if let Err(e) = log.append(event) {
                        tracing::error!(error = %e, "audit append failed");
                    }
                }
            }
        }
        Ok(total)
    }

    /// Stores anomaly findings in the tenant's `anomalies` table.
    pub fn record_anomalies(
        &self,
        tenant: &bulkhead_rules::TenantId,
        findings: &[anomaly::Finding],
    ) {
        if findings.is_empty() {
            return;
        }
        let version = self.tenants.policy_version(tenant);
        let batch = anomaly::to_batch(
            tenant,
            findings,
            &version,
            &self.node,
            self.clock.now_nanos(),
        );
        match batch.map(|b| self.store.append(tenant, Signal::Anomalies, &version, b)) {
            Ok(Ok(_)) => tracing::info!(%tenant, count = findings.len(), "anomalies detected"),
            Ok(Err(e)) => tracing::error!(%tenant, error = %e, "anomalies not stored"),
            Err(e) => tracing::error!(%tenant, error = %e, "anomalies not stored"),
        }
    }

    /// Counts a request refused as a whole.
    pub fn refused(&self, err: &ReceiveError) {
        self.telemetry.add(
            "bulkhead_requests_refused_total",
            &[("reason", err.reason())],
            1,
        );
    }

    pub fn tenants(&self) -> &Arc<TenantDirectory> {
        &self.tenants
    }

    /// Converts and buffers one request for the caller's tenant. The tenant
    /// comes from the principal only; nothing in the request can choose it.
    /// `turn` (the request's slot at the CPU stage) is given back before the
    /// write-ahead log is waited for.
    pub fn ingest(
        &self,
        principal: &Principal,
        export: &mut Export,
        mut turn: crate::fair::Turn,
    ) -> Result<Outcome, ReceiveError> {
        principal.require(Scope::Ingest)?;
        if let Some(hook) = &self.fault_hook {
            hook(principal);
        }
        let version = self.tenants.policy_version(&principal.tenant);
        let policy = self.tenants.policy(&principal.tenant);
        let limits = policy
            .as_ref()
            .map(|p| p.limits.clone())
            .unwrap_or_default();
        if let Some(quota) = limits.storage_quota {
            let used = match self.store.committed_bytes_known(&principal.tenant) {
                Some(used) => used,
                None => {
                    // measured from storage the first time (or after the
                    // tenant's state was evicted): I/O, not CPU, so the
                    // turn goes to someone else meanwhile
                    turn.release();
                    self.store.committed_bytes(&principal.tenant).map_err(|e| {
                        if e.is_transient() {
                            warn_storage_failing(&principal.tenant, &e);
                            ReceiveError::Unavailable {
                                message: format!(
                                    "measuring the tenant's stored data for its quota: {}",
                                    e.for_client()
                                ),
                                retry_after: RETRY_AFTER,
                            }
                        } else {
                            ReceiveError::Internal(format!(
                                "tenant {}: measuring its stored data: {e}",
                                principal.tenant
                            ))
                        }
                    })?
                }
            };
            self.check_quota(&principal.tenant, quota.0, used)?;
        }
        let applied = crate::attr_limits::apply(export, &limits);
        self.telemetry.add(
            "bulkhead_attributes_dropped_total",
            &[("tenant", principal.tenant.as_str())],
            applied.attributes_dropped,
        );
        self.telemetry.add(
            "bulkhead_attribute_values_truncated_total",
            &[("tenant", principal.tenant.as_str())],
            applied.values_truncated,
        );
        let now = self.clock.now_nanos();
        let max_age = self.max_event_age.or_else(|| {
            policy
                .as_ref()
                .and_then(|p| p.retention.longest_ingest_period())
        });
        let stamp = Stamp {
            tenant: principal.tenant.as_str(),
            policy_version: &version,
            node: &self.node,
            received_at_nanos: now,
            window: EventWindow::around(now, max_age, self.max_event_future),
        };
        let (mut converted, signal) = match &*export {
            Export::Logs(r) => (convert::logs(r, &stamp), Signal::Logs),
            Export::Traces(r) => (convert::spans(r, &stamp), Signal::Spans),
            Export::Metrics(r) => (convert::metrics(r, &stamp), Signal::Metrics),
        };
        if let Some(p) = &policy {
            if let Err(wait) =
                self.limiter
                    .take(&principal.tenant, &p.limits, converted.accepted, now)
            {
                return Err(self.throttled(
                    &principal.tenant,
                    format!("{} records/s", p.limits.records_per_second),
                    wait,
                ));
            }
        }
        if let (Signal::Metrics, Some(batch)) = (signal, &converted.batch) {
            let admitted = self
                .series
                .admit(&principal.tenant, limits.max_metric_series, batch.clone())
                .map_err(|e| {
                    ReceiveError::Internal(format!(
                        "tenant {}: series limit: {e}",
                        principal.tenant
                    ))
                })?;
            converted.batch = admitted.batch;
            if admitted.rejected > 0 {
                if let Some(p) = &policy {
                    self.limiter
                        .give_back(&principal.tenant, &p.limits, admitted.rejected);
                }
                converted.accepted -= admitted.rejected;
                converted.rejected += admitted.rejected;
                converted.errors.push(format!(
                    "{} data points start new series past the tenant's limit of {} metric series",
                    admitted.rejected, limits.max_metric_series
                ));
                self.telemetry.add(
                    "bulkhead_metric_series_rejected_total",
                    &[("tenant", principal.tenant.as_str())],
                    admitted.rejected,
                );
            }
        }
        let governed = converted
            .batch
            .map(|b| self.govern(&principal.tenant, signal, b))
            .transpose()?
            .flatten()
            // once every step that shares its arrays is done
            .map(|b| {
                shrink_to_fit(b).map_err(|e| {
                    ReceiveError::Internal(format!("tenant {}: {e}", principal.tenant))
                })
            })
            .transpose()?;
        if let Some(batch) = governed {
            // the turn is given back once the batch is encoded for the
            // log: the wait for its fsync needs no CPU
            match self
                .store
                .append_then(&principal.tenant, signal, &version, batch.clone(), || {
                    turn.release()
                }) {
                Ok(true) => self.flush_wanted.notify_one(),
                Ok(false) => {}
                Err(e) if e.is_transient() => {
                    warn_storage_failing(&principal.tenant, &e);
                    return Err(ReceiveError::Unavailable {
                        message: e.for_client(),
                        retry_after: RETRY_AFTER,
                    });
                }
                Err(
                    e @ bulkhead_store::Error::Key(bulkhead_store::crypto::KeyError::Shredded {
                        ..
                    }),
                ) => return Err(ReceiveError::Refused(e.to_string())),
                Err(e) => {
                    return Err(ReceiveError::Internal(format!(
                        "tenant {}: {e}",
                        principal.tenant
                    )))
                }
            }
            if let Some(policy) = &policy {
                let findings =
                    self.anomalies
                        .observe(&principal.tenant, &policy.anomaly, signal, &batch);
                self.record_anomalies(&principal.tenant, &findings);
            }
        }
        let labels = [
            ("tenant", principal.tenant.as_str()),
            ("signal", signal.name()),
        ];
        self.telemetry.add(
            "bulkhead_records_accepted_total",
            &labels,
            converted.accepted,
        );
        self.telemetry.add(
            "bulkhead_records_rejected_total",
            &labels,
            converted.rejected,
        );
        if converted.rejected > 0 {
            tracing::debug!(tenant = %principal.tenant, %signal, rejected = converted.rejected, "partial success");
        }
        Ok(Outcome {
            accepted: converted.accepted,
            rejected: converted.rejected,
            error_message: converted.errors.join("; "),
        })
    }
}

/// `batch` with each array's buffers cut down to what they hold. The
/// converter's Arrow builders reserve room for 1,024 rows, so a request of
/// 50 log records held about 2 KB a row where its data takes about 0.6 KB
/// (docs/performance.md); the store buffers batches until a flush and counts
/// them against its memory budget by what they hold allocated. Buffers
/// shared with another array are left as they are.
pub fn shrink_to_fit(
    batch: arrow::record_batch::RecordBatch,
) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::Array;
    let (schema, mut columns, rows) = batch.into_parts();
    for c in &mut columns {
        c.shrink_to_fit();
    }
    arrow::record_batch::RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

/// Logs a storage failure that a client was told to retry: the first, then
/// at most one every ten seconds with how many were not logged (a full disk
/// fails every request, and the log is often on that disk).
fn warn_storage_failing(tenant: &bulkhead_rules::TenantId, e: &bulkhead_store::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last.saturating_add(10)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let not_logged = QUIET.swap(0, Ordering::Relaxed);
        tracing::warn!(%tenant, error = %e, not_logged, "a request could not be stored; the client is told to retry");
    } else {
        QUIET.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn kv(k: &str, v: String) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v)),
            }),
            key_strindex: 0,
        }
    }

    #[test]
    fn a_small_batch_holds_about_what_its_data_takes() {
        let records = (0..50u64)
            .map(|n| LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000 + n,
                severity_number: 9,
                severity_text: "INFO".into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(format!(
                        "GET /api/v1/orders/{n} completed with status 200 in {n} ms for user u-{n}"
                    ))),
                }),
                attributes: vec![
                    kv("http.method", "GET".into()),
                    kv("user.id", format!("u-{n}")),
                ],
                trace_id: vec![7; 16],
                span_id: vec![9; 8],
                ..Default::default()
            })
            .collect();
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let stamp = Stamp {
            tenant: "t1",
            policy_version: "p1",
            node: "n1",
            received_at_nanos: 1_700_000_000_000_000_000,
            window: EventWindow::ANY,
        };
        let batch = convert::logs(&req, &stamp).batch.unwrap();
        let before = batch.get_array_memory_size();
        let all = arrow::array::UInt32Array::from_iter_values(0..50);
        let copy = arrow::compute::take_record_batch(&batch, &all).unwrap();
        let exact = copy.get_array_memory_size();
        let shrunk = shrink_to_fit(batch).unwrap();
        let after = shrunk.get_array_memory_size();
        assert_eq!(shrunk, copy, "the same rows");
        assert!(
            before > 2 * exact,
            "the builders reserve more than the data: {before} against {exact}"
        );
        assert!(
            after <= exact + exact / 10,
            "shrunk to about the data: {after} against {exact} (was {before})"
        );

        // a buffer shared with another array is left alone
        let batch = convert::logs(&req, &stamp).batch.unwrap();
        let kept = batch.column(0).clone();
        let shrunk = shrink_to_fit(batch).unwrap();
        assert!(std::sync::Arc::ptr_eq(&kept, shrunk.column(0)));
        assert_eq!(
            shrunk.column(0).get_array_memory_size(),
            kept.get_array_memory_size()
        );
    }
}
