//! Compliance jobs: erasure requests and tenant offboarding.
//!
//! A job is made by the API (`POST /api/v1/erasures` with a tenant key of
//! the `admin` scope, `POST /api/v1/admin/tenants/{tenant}/offboard` with an
//! operator's key) or the CLI (`bulkhead erase create`, `bulkhead tenant
//! offboard`), and stored in the tenants' storage as a series of states,
//! `_jobs/<id>/<version>.json`, each put only if absent: two nodes (or a
//! node and the CLI) never both move a job on from one state, and the
//! history of a job is kept. Every node's job runner takes pending jobs;
//! the node that moved a job to `running` owns it, and after a restart it
//! runs its running jobs again (an erasure is harmless to repeat: rows it
//! removed no longer match).
//!
//! Statuses: `pending` → `running` → `done` | `failed` (with the reason);
//! `pending` → `cancelled`. A running erasure is one atomic commit per
//! table and cannot be stopped half-way.
//!
//! The predicate of an erasure names personal data (a user id, say): it is
//! kept while the job may still run, and dropped from the state written
//! when the job ends; its SHA-256 stays, and is what the audit trail holds.
use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_collector::tenants::{self, TenantDirectory};
use bulkhead_query::predicate::RowPredicate;
use bulkhead_rules::{Clock, TenantId};
use bulkhead_store::audit::{AuditLog, EventKind, NewEvent};
use bulkhead_store::objects::Storage;
use bulkhead_store::{Signal, Store, TimeRange};
use bytes::Bytes;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A running job whose node has not finished it this long after it
/// started is taken over by another node.
pub const JOB_LEASE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Where job states live in the storage.
pub const JOBS_PREFIX: &str = "_jobs";

/// A job's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl Status {
    /// True once the job will not change any more.
    pub fn finished(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What a job does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Remove the rows of `table` whose event time is in `[from, to)` and
    /// that match `predicate`.
    Erasure {
        table: String,
        /// RFC 3339, inclusive.
        from: String,
        /// RFC 3339, exclusive.
        to: String,
        from_nanos: i64,
        to_nanos: i64,
        /// The SQL predicate; `None` once the job ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        predicate: Option<String>,
        predicate_sha256: String,
    },
    /// Remove everything of the tenant: its policy and keys, its stored
    /// objects, its encryption keys.
    Offboard,
}

/// One state of a job, as stored and as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// 1 for the request, one more for each change.
    pub version: u64,
    pub tenant: String,
    #[serde(flatten)]
    pub work: Work,
    pub status: Status,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who asked: a tenant key id, an operator's name, or `cli`.
    pub requested_by: String,
    /// `api`, `admin_api` or `cli`.
    pub interface: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The node running (or that ran) the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What the job did: rows_removed, files_rewritten, ... (erasure);
    /// objects_deleted, bytes_deleted, ... (offboarding).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

impl Job {
    /// Whether the job was made before `nanos` (one whose creation time
    /// does not parse counts as made before anything).
    pub fn made_before(&self, nanos: i64) -> bool {
        rfc3339_nanos(&self.created_at).is_none_or(|made| made < nanos)
    }

    /// The first state of an erasure `request` of `tenant`, checked: the
    /// table exists, the range is a range, the predicate compiles.
    pub fn erasure(
        tenant: &TenantId,
        request: &ErasureRequest,
        requested_by: &str,
        interface: &str,
        now_nanos: i64,
    ) -> Result<Job, String> {
        let ErasureRequest {
            table,
            from,
            to,
            predicate,
        } = request;
        let signal = erasable(table)?;
        let from_nanos = parse_time("from", from)?;
        let to_nanos = parse_time("to", to)?;
        if from_nanos >= to_nanos {
            return Err(format!(
                "the time range is empty: from ({from}) must come before to ({to})"
            ));
        }
        RowPredicate::compile(signal, predicate)?;
        let predicate = predicate.as_str();
        Ok(Job {
            id: uuid::Uuid::now_v7().to_string(),
            version: 1,
            tenant: tenant.to_string(),
            work: Work::Erasure {
                table: signal.name().to_string(),
                from: rfc3339(from_nanos),
                to: rfc3339(to_nanos),
                from_nanos,
                to_nanos,
                predicate: Some(predicate.to_string()),
                predicate_sha256: hex::encode(Sha256::digest(predicate.as_bytes())),
            },
            status: Status::Pending,
            reason: None,
            requested_by: requested_by.to_string(),
            interface: interface.to_string(),
            created_at: rfc3339(now_nanos),
            started_at: None,
            finished_at: None,
            node: None,
            counts: BTreeMap::new(),
        })
    }

    /// The first state of offboarding `tenant`.
    pub fn offboard(tenant: &TenantId, requested_by: &str, interface: &str, now_nanos: i64) -> Job {
        Job {
            id: uuid::Uuid::now_v7().to_string(),
            version: 1,
            tenant: tenant.to_string(),
            work: Work::Offboard,
            status: Status::Pending,
            reason: None,
            requested_by: requested_by.to_string(),
            interface: interface.to_string(),
            created_at: rfc3339(now_nanos),
            started_at: None,
            finished_at: None,
            node: None,
            counts: BTreeMap::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.work {
            Work::Erasure { .. } => "erasure",
            Work::Offboard => "offboard",
        }
    }

    /// The audit event of this job's state, with its details.
    fn event(&self, kind: EventKind) -> NewEvent {
        let mut e = NewEvent::new(kind)
            .detail("job", &self.id)
            .detail("requested_by", &self.requested_by)
            .detail("interface", &self.interface);
        if let Ok(t) = TenantId::new(&self.tenant) {
            e = e.tenant(&t);
        }
        if let Work::Erasure {
            table,
            from,
            to,
            predicate_sha256,
            ..
        } = &self.work
        {
            e = e
                .detail("table", table)
                .detail("from", from)
                .detail("to", to)
                .detail("predicate_sha256", predicate_sha256);
        }
        if let Some(r) = &self.reason {
            e = e.detail("reason", r);
        }
        for (k, v) in &self.counts {
            e = e.detail(k, v);
        }
        e
    }

    /// The audit event of a new request.
    pub fn requested_event(&self) -> NewEvent {
        self.event(EventKind::ErasureRequested)
            .detail("kind", self.kind())
    }
}

/// What an erasure request names (the API's JSON body).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// logs, spans, metrics or anomalies.
    pub table: String,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    /// SQL predicate over one row.
    #[serde(rename = "where")]
    pub predicate: String,
}

/// The tables an erasure may name.
fn erasable(table: &str) -> Result<Signal, String> {
    match Signal::from_name(table) {
        Some(s) => Ok(s),
        None => Err(format!(
            "no table {table:?}: erasure takes one of {}",
            Signal::ALL.map(|s| s.name()).join(", ")
        )),
    }
}

fn parse_time(what: &str, text: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        format!("{what}: {text:?} is not an RFC 3339 time such as 2026-01-31T00:00:00Z ({e})")
    })?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| format!("{what}: {text} is outside the years 1677 to 2262"))
}

/// Nanoseconds of a time as a job records it (RFC 3339); `None` when it
/// does not parse or lies outside what nanoseconds hold.
pub fn rfc3339_nanos(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn state_path(id: &str, version: u64) -> ObjPath {
    ObjPath::from(format!("{JOBS_PREFIX}/{id}/{version:010}.json"))
}

/// Why a job could not be stored or changed.
#[derive(Debug)]
pub enum JobError {
    NotFound(String),
    /// The job is not in a state that allows the change.
    Conflict(String),
    /// Too many jobs already (429).
    Busy(String),
    Storage(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::NotFound(m)
            | JobError::Conflict(m)
            | JobError::Busy(m)
            | JobError::Storage(m) => f.write_str(m),
        }
    }
}

fn storage_error(e: impl std::fmt::Display) -> JobError {
    JobError::Storage(format!("job storage: {e}"))
}

/// Writes the first state of `job`.
pub fn submit(storage: &Storage, job: &Job) -> Result<(), JobError> {
    let bytes = serde_json::to_vec_pretty(job).map_err(storage_error)?;
    if storage
        .put_if_absent(&state_path(&job.id, job.version), Bytes::from(bytes))
        .map_err(storage_error)?
    {
        Ok(())
    } else {
        Err(JobError::Conflict(format!("job {} exists already", job.id)))
    }
}

/// The latest state of job `id`.
pub fn get(storage: &Storage, id: &str) -> Result<Job, JobError> {
    // ids are UUIDs as written at submission: anything else names no job
    // (and a path too long for the file system would be a storage error)
    let canonical = uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id);
    if !canonical {
        return Err(JobError::NotFound(format!(
            "no job {:?}: a job id is a UUID as the request was answered with",
            id.chars().take(64).collect::<String>()
        )));
    }
    let states = storage
        .list(&ObjPath::from(format!("{JOBS_PREFIX}/{id}")))
        .map_err(storage_error)?;
    let latest = states
        .iter()
        .map(|o| o.location.clone())
        .max_by(|a, b| a.as_ref().cmp(b.as_ref()))
        .ok_or_else(|| JobError::NotFound(format!("no job {id}")))?;
    read(storage, &latest)
}

fn read(storage: &Storage, path: &ObjPath) -> Result<Job, JobError> {
    let bytes = storage
        .get(path)
        .map_err(storage_error)?
        .ok_or_else(|| JobError::NotFound(format!("{path} went away")))?;
    serde_json::from_slice(&bytes).map_err(|e| JobError::Storage(format!("{path}: {e}")))
}

/// The id of an offboarding of `tenant` not finished yet, if there is one.
pub fn offboarding(storage: &Storage, tenant: &TenantId) -> Result<Option<String>, JobError> {
    Ok(list(storage)?
        .into_iter()
        .find(|j| {
            j.tenant == tenant.as_str() && matches!(j.work, Work::Offboard) && !j.status.finished()
        })
        .map(|j| j.id))
}

/// The latest state of every job, oldest first (ids are time-ordered).
pub fn list(storage: &Storage) -> Result<Vec<Job>, JobError> {
    let mut latest: BTreeMap<String, ObjPath> = BTreeMap::new();
    for o in storage
        .list(&ObjPath::from(JOBS_PREFIX))
        .map_err(storage_error)?
    {
        let mut parts = o.location.parts().skip(1);
        let (Some(id), Some(_)) = (parts.next(), parts.next()) else {
            continue;
        };
        let id = id.as_ref().to_string();
        match latest.get(&id) {
            Some(p) if p.as_ref() >= o.location.as_ref() => {}
            _ => {
                latest.insert(id, o.location.clone());
            }
        }
    }
    // one unreadable state must not stop every other job
    Ok(latest
        .values()
        .filter_map(|p| match read(storage, p) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!(error = %e, "a job state cannot be read; the job is skipped");
                None
            }
        })
        .collect())
}

/// At most this many unfinished erasure jobs per tenant.
pub const MAX_PENDING_PER_TENANT: usize = 8;

/// Refuses a new erasure of `tenant` when it has too many unfinished ones.
pub fn check_room(storage: &Storage, tenant: &TenantId) -> Result<(), JobError> {
    let open = list(storage)?
        .iter()
        .filter(|j| j.tenant == tenant.as_str() && !j.status.finished())
        .count();
    if open >= MAX_PENDING_PER_TENANT {
        return Err(JobError::Busy(format!(
            "tenant {tenant} has {open} erasure jobs not finished yet (at most {MAX_PENDING_PER_TENANT}); wait for them, or cancel pending ones"
        )));
    }
    Ok(())
}

/// Writes the next state of `job`, made by `change`; `Ok(None)` when
/// another writer changed the job first (read it again).
pub fn advance(
    storage: &Storage,
    job: &Job,
    change: impl FnOnce(&mut Job),
) -> Result<Option<Job>, JobError> {
    let mut next = job.clone();
    change(&mut next);
    next.version = job.version + 1;
    let bytes = serde_json::to_vec_pretty(&next).map_err(storage_error)?;
    if storage
        .put_if_absent(&state_path(&next.id, next.version), Bytes::from(bytes))
        .map_err(storage_error)?
    {
        Ok(Some(next))
    } else {
        Ok(None)
    }
}

/// Cancels job `id` if it is still pending.
pub fn cancel(storage: &Storage, id: &str, now_nanos: i64) -> Result<Job, JobError> {
    for _ in 0..3 {
        let job = get(storage, id)?;
        match job.status {
            Status::Pending => {}
            Status::Running => {
                return Err(JobError::Conflict(format!(
                    "job {id} is running: its rewrite is one atomic commit and cannot be stopped half-way; it ends done or failed"
                )))
            }
            s => return Err(JobError::Conflict(format!("job {id} is {} already", s.as_str()))),
        }
        if let Some(j) = advance(storage, &job, |j| {
            j.status = Status::Cancelled;
            j.finished_at = Some(rfc3339(now_nanos));
            forget_predicate(j);
        })? {
            return Ok(j);
        }
    }
    Err(JobError::Conflict(format!(
        "job {id} kept changing while it was being cancelled; look at it again"
    )))
}

fn forget_predicate(job: &mut Job) {
    if let Work::Erasure { predicate, .. } = &mut job.work {
        *predicate = None;
    }
}

/// Where a test may stop the process during an erasure
/// (`BULKHEAD_TEST_ABORT_ERASURE`): to show that a crash at that moment
/// loses nothing and the job finishes after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortAt {
    /// After the copies were put, before the manifest commit.
    BeforeCommit,
    /// After the commit, before the job's state says done.
    AfterCommit,
}

impl AbortAt {
    pub fn from_env() -> Option<AbortAt> {
        match std::env::var("BULKHEAD_TEST_ABORT_ERASURE").ok()?.as_str() {
            "before_commit" => Some(AbortAt::BeforeCommit),
            "after_commit" => Some(AbortAt::AfterCommit),
            _ => None,
        }
    }
}

/// Runs the jobs of the storage on this node.
pub struct JobRunner {
    pub store: Arc<Store>,
    pub tenants: Arc<TenantDirectory>,
    pub audit: Arc<AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub node: String,
    pub policy_dir: std::path::PathBuf,
    /// Policy-directory writes of the admin API, taken for offboarding.
    pub policy_writes: Arc<parking_lot::Mutex<()>>,
    pub abort_at: Option<AbortAt>,
    /// How long after its request an erasure waits before it runs: on
    /// storage several nodes share, every node's buffers must have been
    /// committed by age first (`flush.max_age` and a margin); zero on a
    /// node's own disk, where the job flushes the only buffers there are.
    pub settle: std::time::Duration,
    /// One pass at a time.
    pub running: parking_lot::Mutex<()>,
    /// When this runner started (clock nanoseconds): offboardings another
    /// node finished before then were dealt with by the replay.
    pub started_at: i64,
    /// Offboardings by other nodes this node has dealt with.
    pub seen_offboards: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// While above zero, the background passes take no job (tests hold a
    /// job pending this way; [`JobRunner::run_due`] called directly still
    /// runs).
    pub paused: std::sync::atomic::AtomicUsize,
}

/// Holds the background job passes off while it lives.
#[derive(Debug)]
pub struct JobsPaused(Arc<JobRunner>);

impl JobsPaused {
    pub fn new(runner: Arc<JobRunner>) -> Self {
        runner
            .paused
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(runner)
    }
}

impl Drop for JobsPaused {
    fn drop(&mut self) {
        self.0
            .paused
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("node", &self.node)
            .field("abort_at", &self.abort_at)
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    fn storage(&self) -> &Storage {
        self.store.storage()
    }

    fn now(&self) -> String {
        rfc3339(self.clock.now_nanos())
    }

    fn audit(&self, event: NewEvent) {
        if let Err(e) = self.audit.append(event) {
            tracing::error!(error = %e, "audit trail: a job event was not written");
        }
    }

    /// Runs every pending job, and every job this node was running when it
    /// stopped. Returns how many jobs ended.
    pub fn run_due(&self) -> Result<usize, JobError> {
        let _one = self.running.lock();
        let mut ended = 0;
        for job in list(self.storage())? {
            if job.status == Status::Done && matches!(job.work, Work::Offboard) {
                self.offboarded_elsewhere(&job);
                continue;
            }
            let mine = job.status == Status::Running && job.node.as_deref() == Some(&self.node);
            // a node that took a job and never came back: after the lease
            // another node runs it again (harmless: erasure and offboarding
            // both finish what an earlier run left)
            let abandoned = job.status == Status::Running && !mine && {
                let started = job
                    .started_at
                    .as_deref()
                    .and_then(rfc3339_nanos)
                    .unwrap_or(i64::MIN);
                let lease = i64::try_from(JOB_LEASE.as_nanos()).unwrap_or(i64::MAX);
                self.clock.now_nanos() >= started.saturating_add(lease)
            };
            if abandoned {
                if let Some(j) = advance(self.storage(), &job, |j| {
                    j.node = Some(self.node.clone());
                    j.started_at = Some(self.now());
                })? {
                    tracing::warn!(job = %j.id, tenant = %j.tenant, from = ?job.node, "taking over a job its node left running past the lease");
                    self.audit(
                        j.event(EventKind::ErasureStarted)
                            .detail("kind", j.kind())
                            .detail("taken_over_from", job.node.as_deref().unwrap_or("")),
                    );
                }
                // run on the next pass, as this node's own
                continue;
            }
            if job.status != Status::Pending && !mine {
                continue;
            }
            if job.status == Status::Pending && matches!(job.work, Work::Erasure { .. }) {
                let settle = i64::try_from(self.settle.as_nanos()).unwrap_or(i64::MAX);
                let made = rfc3339_nanos(&job.created_at).unwrap_or(i64::MIN);
                if self.clock.now_nanos() < made.saturating_add(settle) {
                    // other nodes may still buffer rows it covers
                    continue;
                }
            }
            let resumed = job.status == Status::Running;
            let started = if job.status == Status::Pending {
                match advance(self.storage(), &job, |j| {
                    j.status = Status::Running;
                    j.node = Some(self.node.clone());
                    j.started_at = Some(self.now());
                })? {
                    Some(j) => {
                        self.audit(j.event(EventKind::ErasureStarted).detail("kind", j.kind()));
                        j
                    }
                    // another node (or a cancel) got there first
                    None => continue,
                }
            } else {
                tracing::info!(job = %job.id, tenant = %job.tenant, "resuming a job this node was running");
                job
            };
            let outcome = self.execute(&started);
            let finished = advance(self.storage(), &started, |j| {
                j.finished_at = Some(self.now());
                forget_predicate(j);
                match outcome {
                    Ok(mut counts) => {
                        j.status = Status::Done;
                        if resumed {
                            // the counts are the last run's: an earlier run
                            // may have removed rows before the node stopped
                            counts.insert("resumed".into(), 1);
                        }
                        j.counts = counts;
                    }
                    Err(reason) => {
                        j.status = Status::Failed;
                        j.reason = Some(reason);
                    }
                }
            })?;
            if let Some(j) = finished {
                let kind = match (&j.work, j.status) {
                    (_, Status::Failed) => EventKind::ErasureFailed,
                    (Work::Offboard, _) => EventKind::TenantOffboarded,
                    (Work::Erasure { .. }, _) => EventKind::ErasureDone,
                };
                tracing::info!(job = %j.id, tenant = %j.tenant, status = j.status.as_str(), reason = ?j.reason, counts = ?j.counts, "job ended");
                self.audit(j.event(kind).detail("kind", j.kind()));
                if matches!(j.work, Work::Offboard) && j.status == Status::Done {
                    // its data is gone: no mark of a removal with data kept
                    // (see tenants::removed_marker) is left to ask for
                    // restore. Only now, after the entry the audit table
                    // cuts at: until then the name is not free
                    if let Ok(t) = TenantId::new(&j.tenant) {
                        let marker = tenants::removed_marker(&self.policy_dir, &t);
                        if let Err(e) = std::fs::remove_file(&marker) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                tracing::error!(job = %j.id, error = %e, "removing the mark of the tenant's removal");
                            }
                        }
                    }
                }
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Another node offboarded a tenant: what this node still buffers of
    /// it goes too (with encryption on, the shred did that already).
    fn offboarded_elsewhere(&self, job: &Job) {
        if job.node.as_deref() == Some(&self.node)
            || !self.seen_offboards.lock().insert(job.id.clone())
        {
            return;
        }
        let finished = job
            .finished_at
            .as_deref()
            .and_then(rfc3339_nanos)
            .unwrap_or(i64::MIN);
        if finished < self.started_at {
            return;
        }
        let Ok(tenant) = TenantId::new(&job.tenant) else {
            return;
        };
        match self.store.offboarded_elsewhere(&tenant) {
            Ok(rows) => {
                tracing::info!(job = %job.id, %tenant, rows, "tenant offboarded by another node; what this node buffered of it is dropped")
            }
            Err(e) => {
                // tried again on the next pass
                self.seen_offboards.lock().remove(&job.id);
                tracing::error!(job = %job.id, %tenant, error = %e, "dropping an offboarded tenant's buffers failed");
            }
        }
    }

    /// Does the job's work; its counts, or why it failed.
    fn execute(&self, job: &Job) -> Result<BTreeMap<String, u64>, String> {
        let tenant = TenantId::new(&job.tenant).map_err(|e| e.to_string())?;
        if self
            .tenants
            .policy(&tenant)
            .is_some_and(|p| p.retention.legal_hold)
        {
            return Err(format!(
                "tenant {tenant} is under a legal hold (retention.legal_hold in its policy): nothing of it may be erased until the hold is lifted"
            ));
        }
        match &job.work {
            Work::Erasure {
                table,
                from_nanos,
                to_nanos,
                predicate,
                ..
            } => {
                let predicate = predicate.as_deref().ok_or(
                    "the job's predicate is gone (the job ended once already); make a new request",
                )?;
                // asked for by a tenant offboarded since (before the
                // offboarding's mark, or while it ran: before its end): not
                // to be run on whatever a later tenant of the name sends
                let before_mark = self
                    .store
                    .offboarded_before(&tenant)
                    .map_err(|e| e.to_string())?
                    .is_some_and(|mark| job.made_before(mark));
                let before_an_end = || -> Result<bool, String> {
                    Ok(list(self.storage())
                        .map_err(|e| e.to_string())?
                        .iter()
                        .any(|o| {
                            o.tenant == job.tenant
                                && matches!(o.work, Work::Offboard)
                                && o.status == Status::Done
                                && o.finished_at
                                    .as_deref()
                                    .and_then(rfc3339_nanos)
                                    .is_some_and(|end| job.made_before(end.saturating_add(1)))
                        }))
                };
                if before_mark || before_an_end()? {
                    return Err(format!(
                        "tenant {tenant} was offboarded after this erasure was asked for: nothing of that tenant is left to erase"
                    ));
                }
                let signal = erasable(table)?;
                let compiled = RowPredicate::compile(signal, predicate)?;
                let range = TimeRange {
                    start: *from_nanos,
                    end: to_nanos.saturating_sub(1),
                };
                let abort = self.abort_at;
                let stats = self
                    .store
                    .erase_racing(&tenant, signal, range, &|b| compiled.matches(b), &|| {
                        if abort == Some(AbortAt::BeforeCommit) {
                            eprintln!("BULKHEAD_TEST_ABORT_ERASURE: stopping before the commit");
                            std::process::abort();
                        }
                    })
                    .map_err(|e| e.to_string())?;
                if abort == Some(AbortAt::AfterCommit) {
                    eprintln!("BULKHEAD_TEST_ABORT_ERASURE: stopping after the commit");
                    std::process::abort();
                }
                Ok(BTreeMap::from([
                    ("rows_read".to_string(), stats.rows_read),
                    ("rows_removed".to_string(), stats.rows_removed),
                    ("files_read".to_string(), stats.files_read as u64),
                    ("files_rewritten".to_string(), stats.files_rewritten as u64),
                    ("files_removed".to_string(), stats.files_removed as u64),
                ]))
            }
            Work::Offboard => {
                // its keys stop first, so nothing new arrives (a policy
                // already gone needs no lock: the directory may be
                // read-only)
                let policy = bulkhead_rules::PolicySet::path_for(&self.policy_dir, &tenant);
                let policy_removed = policy.exists() && {
                    let _one = self.policy_writes.lock();
                    let _dir = tenants::lock_writes(&self.policy_dir)?;
                    match tenants::remove_tenant(&self.policy_dir, tenant.as_str()) {
                        Ok(_) => true,
                        Err(e) if e.starts_with("no tenant") => false,
                        Err(e) => return Err(format!("removing the tenant's policy: {e}")),
                    }
                };
                if policy_removed {
                    self.tenants
                        .refresh(&tenant, &format!("offboarding job {}", job.id))
                        .map_err(|e| format!("taking the policy removal in: {e}"))?;
                    // the removal of its policy and keys is the old
                    // tenant's: audited now, before the job's end, which
                    // the audit table cuts a later tenant of the name at
                    let events = bulkhead_collector::audit::unaudited_policy_events(&self.tenants);
                    if !events.is_empty() {
                        if let Err(e) = self.audit.append_all(events) {
                            tracing::error!(error = %e, "audit trail: an offboarding's policy removal was not written");
                        }
                    }
                }
                // erasures it asked for and that have not started would run
                // on whatever a later tenant of the name sends
                let mut erasures_cancelled = 0u64;
                for pending in list(self.store.storage())
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|j| {
                        j.tenant == tenant.as_str()
                            && matches!(j.work, Work::Erasure { .. })
                            && j.status == Status::Pending
                    })
                {
                    match cancel(self.store.storage(), &pending.id, self.clock.now_nanos()) {
                        Ok(_) => erasures_cancelled += 1,
                        // started meanwhile: it ends on the data as it is
                        Err(JobError::Conflict(_)) => {}
                        Err(e) => return Err(format!("cancelling erasure {}: {e}", pending.id)),
                    }
                }
                let stats = self.store.offboard(&tenant).map_err(|e| e.to_string())?;
                Ok(BTreeMap::from([
                    ("erasures_cancelled".to_string(), erasures_cancelled),
                    ("objects_deleted".to_string(), stats.objects_deleted as u64),
                    ("bytes_deleted".to_string(), stats.bytes_deleted),
                    (
                        "data_keys_destroyed".to_string(),
                        stats.data_keys_destroyed as u64,
                    ),
                    ("policy_removed".to_string(), u64::from(policy_removed)),
                    (
                        "buffered_rows_dropped".to_string(),
                        stats.buffered_rows_dropped as u64,
                    ),
                ]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_checked_when_made() {
        let t = TenantId::new("acme").unwrap();
        let request = |table: &str, from: &str, to: &str, predicate: &str| ErasureRequest {
            table: table.into(),
            from: from.into(),
            to: to.into(),
            predicate: predicate.into(),
        };
        let ok = Job::erasure(
            &t,
            &request(
                "logs",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "attr(attributes, 'user.id') = 'u1'",
            ),
            "k",
            "api",
            0,
        )
        .unwrap();
        assert_eq!(ok.status, Status::Pending);
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["kind"], "erasure");
        assert_eq!(json["table"], "logs");
        let back: Job = serde_json::from_value(json).unwrap();
        assert_eq!(back, ok);
        for (table, from, to, pred, says) in [
            (
                "nope",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "true",
                "no table",
            ),
            (
                "logs",
                "yesterday",
                "2026-01-02T00:00:00Z",
                "true",
                "RFC 3339",
            ),
            (
                "logs",
                "2026-01-02T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "true",
                "empty",
            ),
            (
                "logs",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "nosuch = 1",
                "nosuch",
            ),
        ] {
            let err = Job::erasure(&t, &request(table, from, to, pred), "k", "api", 0).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        let off = Job::offboard(&t, "ops", "admin_api", 0);
        let back: Job = serde_json::from_str(&serde_json::to_string(&off).unwrap()).unwrap();
        assert_eq!(back, off);
    }

    #[test]
    fn states_are_versioned_and_a_lost_race_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&bulkhead_store::StorageConfig::Local {
            root: dir.path().to_path_buf(),
        })
        .unwrap();
        let t = TenantId::new("acme").unwrap();
        let job = Job::offboard(&t, "ops", "cli", 0);
        submit(&storage, &job).unwrap();
        assert_eq!(get(&storage, &job.id).unwrap(), job);
        let running = advance(&storage, &job, |j| j.status = Status::Running)
            .unwrap()
            .unwrap();
        // a second writer moving on from the same state loses
        assert!(advance(&storage, &job, |j| j.status = Status::Cancelled)
            .unwrap()
            .is_none());
        assert_eq!(get(&storage, &job.id).unwrap(), running);
        let err = cancel(&storage, &job.id, 0).unwrap_err();
        assert!(err.to_string().contains("running"), "{err}");
        let other = Job::offboard(&t, "ops", "cli", 0);
        submit(&storage, &other).unwrap();
        let c = cancel(&storage, &other.id, 5).unwrap();
        assert_eq!(c.status, Status::Cancelled);
        let all = list(&storage).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].status, Status::Running);
        assert_eq!(all[1].status, Status::Cancelled);
        assert!(matches!(get(&storage, "nope"), Err(JobError::NotFound(_))));
        assert!(matches!(get(&storage, "../x"), Err(JobError::NotFound(_))));
    }
}
