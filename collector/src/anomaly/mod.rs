//! The anomaly runtime: per tenant, the accepted records are aggregated per
//! minute of event time into series ([`aggregate`]), each series has a
//! baseline detector (`bulkhead_rules::anomaly::Detector`), and every new
//! incident becomes a row of the tenant's `anomalies` table.
//!
//! Event time drives it: a minute is closed once the tenant's newest event
//! time is [`LATENESS_MINUTES`] past it, so historical data (backfills) is
//! scored as it was, and the order requests arrive in does not matter within
//! that slack. For tenants sending live data, the wall clock also closes
//! minutes, so a tenant that stops sending is seen to drop to zero.
//! Detector state is checkpointed per tenant ([`checkpoint`]).
//!
//! Nodes sharing a bucket ([`AnomalyEngine::shared`]) detect together: each
//! aggregates what it receives and publishes it, and one leader merges every
//! node's minutes and scores them ([`shared`]).
mod aggregate;
mod checkpoint;
mod shared;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use bulkhead_rules::anomaly::{Detector, DetectorSettings, Direction, Severity};
use bulkhead_rules::{AnomalyPolicy, Clock, SeriesKind, TenantId};
use bulkhead_store::schema::{AnomalyColumns, TIME_ZONE};
use bulkhead_store::Signal;

use crate::telemetry::Telemetry;
use aggregate::{Minutes, SeriesKey};

/// Minutes a minute stays open for late records.
pub const LATENESS_MINUTES: i64 = 2;
/// A gap longer than this (minutes) is not zero-filled: it is a pause, not
/// thousands of empty minutes.
const MAX_ZERO_FILL: i64 = 24 * 60;
/// Records further than this ahead of the clock are not used for detection.
const MAX_FUTURE_SECS: i64 = 3_600;
/// Time the leader spends taking in partials in one tick at most.
const TAKE_IN_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);
/// A tenant whose newest minute is this far behind the clock is idle: the
/// wall clock stops closing its minutes, and its state may leave memory.
const IDLE_AFTER_SECS: i64 = 3_600;

pub(crate) struct SeriesState {
    detector: Detector,
    prev_cumulative: Option<(i64, f64)>,
    last_minute: i64,
}

/// One tenant's detectors and open minutes.
#[derive(Default)]
pub(crate) struct TenantState {
    series: HashMap<SeriesKey, SeriesState>,
    pending: Minutes,
    /// Start (epoch seconds) of the newest minute with data.
    newest: Option<i64>,
    /// Start of the last closed minute.
    closed: Option<i64>,
    /// The settings the detectors were built with.
    settings: Option<AnomalyPolicy>,
    /// Shared detection: per node, the name of the last partials object
    /// taken in (each is taken in once, whoever leads).
    taken: std::collections::BTreeMap<String, String>,
    /// Counts changes (every time the state is locked to be worked on);
    /// `saved` is the count when it was last written.
    changes: u64,
    saved: u64,
}

/// An anomaly on its way to the `anomalies` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub minute_secs: i64,
    pub signal: Signal,
    pub kind: SeriesKind,
    pub series: String,
    pub service: Option<String>,
    pub observed: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    pub score: f64,
    pub severity: Severity,
    pub settings: String,
}

/// The detectors of every tenant.
pub struct AnomalyEngine {
    /// The tenants this node scores: every tenant it has seen, or, when
    /// detection is shared, every tenant while this node leads.
    tenants: Mutex<HashMap<TenantId, Arc<Mutex<TenantState>>>>,
    state_dir: PathBuf,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    shared: Option<shared::Shared>,
}

impl std::fmt::Debug for AnomalyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            Some(s) => write!(f, "AnomalyEngine(shared, node {})", s.node()),
            None => write!(f, "AnomalyEngine({})", self.state_dir.display()),
        }
    }
}

/// The settings of one series: the tenant's, with what each family needs.
fn series_settings(base: &DetectorSettings, kind: SeriesKind) -> DetectorSettings {
    let mut s = base.clone();
    match kind {
        // counts: both ways (a drop to zero matters); one record is not news
        SeriesKind::Volume => s.min_spread = s.min_spread.max(1.0),
        // error ratios and latency: only up is bad
        SeriesKind::ErrorRatio => {
            s.direction = Direction::Up;
            s.min_spread = s.min_spread.max(0.01);
            s.detect_flatline = false;
        }
        SeriesKind::Latency => s.direction = Direction::Up,
        SeriesKind::Metric => {}
    }
    s
}

impl AnomalyEngine {
    pub fn new(state_dir: PathBuf, clock: Arc<dyn Clock>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            tenants: Mutex::default(),
            state_dir,
            clock,
            telemetry,
            shared: None,
        }
    }

    /// Detection shared by every node of `store`'s storage: this node
    /// publishes what it receives there, and scores every tenant's merged
    /// minutes while it holds the lead. State lives in the storage.
    pub fn shared(
        store: Arc<bulkhead_store::Store>,
        clock: Arc<dyn Clock>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            tenants: Mutex::default(),
            state_dir: PathBuf::new(),
            clock,
            telemetry,
            shared: Some(shared::Shared::new(store)),
        }
    }

    fn tenant(&self, tenant: &TenantId) -> Arc<Mutex<TenantState>> {
        let mut all = self.tenants.lock();
        all.entry(tenant.clone())
            .or_insert_with(|| {
                let state = checkpoint::load(&self.state_dir, tenant).unwrap_or_else(|e| {
                    tracing::warn!(%tenant, error = %e, "anomaly checkpoint not usable; baselines start afresh");
                    TenantState::default()
                });
                Arc::new(Mutex::new(state))
            })
            .clone()
    }

    /// Feeds a batch the tenant just sent; returns the anomalies of every
    /// minute this closes.
    pub fn observe(
        &self,
        tenant: &TenantId,
        policy: &AnomalyPolicy,
        signal: Signal,
        batch: &RecordBatch,
    ) -> Vec<Finding> {
        if !policy.enabled || signal == Signal::Anomalies {
            return Vec::new();
        }
        let now_secs = self.clock.now_nanos().div_euclid(1_000_000_000);
        if let Some(sh) = &self.shared {
            // the leader scores; this node passes its minutes on
            let mut fresh = Minutes::new();
            aggregate::accumulate(
                signal,
                batch,
                policy,
                |m| m <= now_secs + MAX_FUTURE_SECS,
                &mut fresh,
            );
            sh.add(tenant, fresh);
            return Vec::new();
        }
        let state = self.tenant(tenant);
        let mut st = state.lock();
        st.changes += 1;
        st.apply_policy(policy);
        let closed = st.closed;
        let mut fresh = Minutes::new();
        aggregate::accumulate(
            signal,
            batch,
            policy,
            |m| closed.is_none_or(|c| m > c) && m <= now_secs + MAX_FUTURE_SECS,
            &mut fresh,
        );
        for (minute, series) in fresh {
            st.newest = Some(st.newest.map_or(minute, |n| n.max(minute)));
            for (k, acc) in series {
                aggregate::add(&mut st.pending, minute, k, acc);
            }
        }
        let until = st.newest.map(|n| n - LATENESS_MINUTES * 60);
        let findings = match until {
            Some(u) => st.close_until(u, policy, tenant, &self.telemetry),
            None => Vec::new(),
        };
        self.count(tenant, &findings);
        findings
    }

    /// Lets the wall clock close minutes of tenants whose data is live, so a
    /// tenant (or service) that stops sending is scored as sending zero;
    /// `record` stores each tenant's findings. When detection is shared,
    /// this node first publishes what it received, and, if it leads, takes
    /// in every node's partials and scores the minutes they close.
    pub fn tick(
        &self,
        policies: impl Fn(&TenantId) -> Option<AnomalyPolicy>,
        record: impl Fn(&TenantId, &[Finding]),
    ) {
        if let Some(sh) = &self.shared {
            let now = self.clock.now_nanos();
            if let Err(e) = sh.publish(now, false) {
                tracing::warn!(error = %e, "anomaly partials not published; kept for the next try");
            }
            match sh.lead(now) {
                shared::Lead::Following => {
                    self.tenants.lock().clear();
                    return;
                }
                shared::Lead::Took => self.tenants.lock().clear(),
                shared::Lead::Leading => {}
            }
            match self.take_in(sh, &policies, &record) {
                Ok(true) => {}
                // minutes still waiting in unread partials must not be
                // closed by the wall clock: catch up first
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "anomaly partials not taken in; will retry");
                    return;
                }
            }
        }
        let now_minute = self.clock.now_nanos().div_euclid(60_000_000_000) * 60;
        let tenants = self.all_tenants();
        for (tenant, state) in tenants {
            let Some(policy) = policies(&tenant).filter(|p| p.enabled) else {
                continue;
            };
            let mut st = state.lock();
            let live = st.newest.is_some_and(|n| now_minute - n <= IDLE_AFTER_SECS);
            if !live {
                continue;
            }
            let (settings_before, closed_before) =
                (st.settings.as_ref() == Some(&policy), st.closed);
            st.apply_policy(&policy);
            let findings = st.close_until(
                now_minute - (LATENESS_MINUTES + 1) * 60,
                &policy,
                &tenant,
                &self.telemetry,
            );
            if !settings_before || st.closed != closed_before {
                st.changes += 1;
            }
            if !findings.is_empty() {
                if !self.may_act() {
                    return; // the lead ran out meanwhile: the next leader scores
                }
                self.count(&tenant, &findings);
                record(&tenant, &findings);
                self.saved_after_findings(&tenant, &st);
            }
        }
    }

    /// Whether this node may record findings and write state now: always on
    /// its own, and while it holds the lead when detection is shared.
    fn may_act(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|sh| sh.holds(self.clock.now_nanos()))
    }

    /// Shared detection: after a tenant's findings are stored, its state is
    /// saved at once, so a new leader does not score those minutes again.
    fn saved_after_findings(&self, tenant: &TenantId, st: &TenantState) {
        if let Some(sh) = &self.shared {
            if let Err(e) = sh.save_state(tenant, st) {
                tracing::warn!(%tenant, error = %e, "anomaly state not saved");
            }
        }
    }

    /// The leader's share of a tick: every node's unread partials (up to a
    /// bound), merged into the tenants' open minutes once each, then the
    /// minutes they close. True when no unread partials are left.
    fn take_in(
        &self,
        sh: &shared::Shared,
        policies: &impl Fn(&TenantId) -> Option<AnomalyPolicy>,
        record: &impl Fn(&TenantId, &[Finding]),
    ) -> Result<bool, String> {
        let now_secs = self.clock.now_nanos().div_euclid(1_000_000_000);
        let mut touched: HashMap<TenantId, AnomalyPolicy> = HashMap::new();
        let (unread, mut caught_up) = sh.unread()?;
        // bounded work per tick: the rest of the housekeeping waits on it
        let budget = std::time::Instant::now() + TAKE_IN_BUDGET;
        for partials in unread {
            if std::time::Instant::now() > budget || !sh.holds(self.clock.now_nanos()) {
                caught_up = false;
                break;
            }
            for (tenant, minutes) in &partials.tenants {
                let existing = self.tenants.lock().get(tenant).cloned();
                let state = match existing {
                    Some(s) => s,
                    None => {
                        // not read: this object is read again next time
                        let st = sh.load_state(tenant)?.unwrap_or_default();
                        let s = Arc::new(Mutex::new(st));
                        self.tenants.lock().insert(tenant.clone(), s.clone());
                        s
                    }
                };
                let mut st = state.lock();
                if st
                    .taken
                    .get(&partials.node)
                    .is_some_and(|t| *t >= partials.name)
                {
                    continue; // taken in by an earlier leader
                }
                st.changes += 1;
                st.taken
                    .insert(partials.node.clone(), partials.name.clone());
                let Some(policy) = policies(tenant).filter(|p| p.enabled) else {
                    continue;
                };
                let closed = st.closed;
                for (minute, series) in minutes {
                    if closed.is_some_and(|c| *minute <= c) || *minute > now_secs + MAX_FUTURE_SECS
                    {
                        continue; // too late: that minute was scored
                    }
                    st.newest = Some(st.newest.map_or(*minute, |n| n.max(*minute)));
                    for (k, acc) in series {
                        aggregate::add(&mut st.pending, *minute, k.clone(), acc.clone());
                    }
                }
                touched.insert(tenant.clone(), policy);
            }
            sh.mark_read(&partials);
        }
        for (tenant, policy) in touched {
            let Some(state) = self.tenants.lock().get(&tenant).cloned() else {
                continue;
            };
            let mut st = state.lock();
            st.changes += 1;
            st.apply_policy(&policy);
            let Some(until) = st.newest.map(|n| n - LATENESS_MINUTES * 60) else {
                continue;
            };
            let findings = st.close_until(until, &policy, &tenant, &self.telemetry);
            if !findings.is_empty() {
                if !self.may_act() {
                    return Ok(false); // the lead ran out meanwhile
                }
                self.count(&tenant, &findings);
                record(&tenant, &findings);
                self.saved_after_findings(&tenant, &st);
            }
        }
        Ok(caught_up)
    }

    /// The tenants seen so far, without holding the map's lock afterwards.
    fn all_tenants(&self) -> Vec<(TenantId, Arc<Mutex<TenantState>>)> {
        let all = self.tenants.lock();
        all.iter().map(|(t, s)| (t.clone(), s.clone())).collect()
    }

    fn count(&self, tenant: &TenantId, findings: &[Finding]) {
        for f in findings {
            self.telemetry.add(
                "bulkhead_anomalies_total",
                &[("tenant", tenant.as_str()), ("kind", f.kind.as_str())],
                1,
            );
        }
    }

    /// Writes every tenant's detector state (periodically). When detection
    /// is shared, this node's partials are published first, and states are
    /// written only while it leads (a follower holds none).
    pub fn checkpoint_all(&self) -> Result<(), String> {
        if let Some(sh) = &self.shared {
            let now = self.clock.now_nanos();
            sh.publish(now, true)?;
            if !sh.holds(now) {
                return Ok(()); // another node's states now: not ours to write
            }
        }
        let tenants = self.all_tenants();
        for (tenant, state) in tenants {
            let mut st = state.lock();
            if st.saved == st.changes {
                continue; // written before, unchanged since
            }
            match &self.shared {
                Some(sh) => sh.save_state(&tenant, &st)?,
                None => checkpoint::save(&self.state_dir, &tenant, &st)?,
            }
            st.saved = st.changes;
        }
        Ok(())
    }

    /// Writes every tenant's state, then forgets the tenants that have sent
    /// nothing for an hour (the wall clock no longer closes their minutes):
    /// their next batch loads the saved state, open minutes included, so
    /// they come back with the baselines they left with. Returns how many
    /// were forgotten.
    pub fn checkpoint_and_evict(&self) -> Result<usize, String> {
        self.checkpoint_all()?;
        if self
            .shared
            .as_ref()
            .is_some_and(|sh| !sh.holds(self.clock.now_nanos()))
        {
            return Ok(0);
        }
        let now_minute = self.clock.now_nanos().div_euclid(60_000_000_000) * 60;
        let mut all = self.tenants.lock();
        let before = all.len();
        all.retain(|_, state| {
            // a state in use right now (or just fetched for use) stays
            if Arc::strong_count(state) > 1 {
                return true;
            }
            let Some(st) = state.try_lock() else {
                return true;
            };
            // unchanged since it was written (open minutes included) and
            // nothing recent
            let idle = st.saved == st.changes
                && st.newest.is_none_or(|n| now_minute - n > IDLE_AFTER_SECS);
            !idle
        });
        Ok(before - all.len())
    }

    /// At shutdown: every state written, and the lead given up so another
    /// node takes over without waiting for the lease to run out.
    pub fn shutdown(&self) -> Result<(), String> {
        let saved = self.checkpoint_all();
        if let Some(sh) = &self.shared {
            if saved.is_ok() {
                sh.resign(self.clock.now_nanos());
            }
            self.tenants.lock().clear();
        }
        saved
    }
}

impl TenantState {
    /// New detector settings (policy change) rebuild the detectors from
    /// their current state where the state is compatible.
    fn apply_policy(&mut self, policy: &AnomalyPolicy) {
        if self.settings.as_ref() == Some(policy) {
            return;
        }
        if self
            .settings
            .as_ref()
            .is_some_and(|old| old.detector != policy.detector)
        {
            for (k, s) in self.series.iter_mut() {
                let settings = series_settings(&policy.detector, k.kind);
                s.detector = Detector::restore(&settings, &s.detector.checkpoint())
                    .unwrap_or_else(|_| Detector::new(&settings));
            }
        }
        self.settings = Some(policy.clone());
    }

    /// Closes every minute up to and including `until`, in order, scoring each
    /// series; volume series get explicit zeros for minutes without records.
    fn close_until(
        &mut self,
        until: i64,
        policy: &AnomalyPolicy,
        tenant: &TenantId,
        telemetry: &Telemetry,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        loop {
            let next_pending = self.pending.keys().next().copied().filter(|m| *m <= until);
            // the minute after the last closed one, if some volume series
            // is waiting for it (as a zero) and has not paused for too long
            let next_fill = self.closed.map(|c| c + 60).filter(|f| {
                *f <= until
                    && self.series.iter().any(|(k, s)| {
                        k.kind == SeriesKind::Volume && *f - s.last_minute <= MAX_ZERO_FILL * 60
                    })
            });
            // pending minutes are all after the last closed one, so a fill
            // minute always comes first
            let Some(minute) = next_fill.or(next_pending) else {
                break;
            };
            let accs = self.pending.remove(&minute).unwrap_or_default();
            let mut seen = Vec::with_capacity(accs.len());
            for (key, acc) in accs {
                if !self.series.contains_key(&key) {
                    if self.series.len() >= policy.series_limit {
                        telemetry.add(
                            "bulkhead_anomaly_series_dropped_total",
                            &[("tenant", tenant.as_str())],
                            1,
                        );
                        continue;
                    }
                    self.series.insert(
                        key.clone(),
                        SeriesState {
                            detector: Detector::new(&series_settings(&policy.detector, key.kind)),
                            prev_cumulative: None,
                            last_minute: minute,
                        },
                    );
                }
                let s = self.series.get_mut(&key).expect("inserted above");
                if let Some(v) = acc.value(&mut s.prev_cumulative) {
                    score(&key, s, minute, v, policy, &mut findings);
                }
                s.last_minute = minute;
                seen.push(key);
            }
            // volume series without records this minute sent zero
            for (key, s) in self.series.iter_mut() {
                if key.kind == SeriesKind::Volume
                    && s.last_minute < minute
                    && minute - s.last_minute <= MAX_ZERO_FILL * 60
                    && !seen.contains(key)
                {
                    score(key, s, minute, 0.0, policy, &mut findings);
                    s.last_minute = minute;
                }
            }
            self.closed = Some(minute);
        }
        findings
    }
}

fn score(
    key: &SeriesKey,
    s: &mut SeriesState,
    minute: i64,
    value: f64,
    policy: &AnomalyPolicy,
    out: &mut Vec<Finding>,
) {
    let sc = s.detector.observe(minute, value);
    if sc.anomaly {
        out.push(Finding {
            minute_secs: minute,
            signal: key.signal,
            kind: key.kind,
            series: key.label(),
            service: key.service.clone(),
            observed: sc.observed,
            expected: sc.expected,
            lower: sc.lower,
            upper: sc.upper,
            score: sc.score,
            severity: sc.severity,
            settings: series_settings(&policy.detector, key.kind).describe(),
        });
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::None => "none",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

/// Findings as a batch of the `anomalies` table.
pub fn to_batch(
    tenant: &TenantId,
    findings: &[Finding],
    policy_version: &str,
    node: &str,
    detected_at_nanos: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = findings.len();
    let f64s = |f: fn(&Finding) -> f64| Float64Array::from_iter_values(findings.iter().map(f));
    let strs = |f: fn(&Finding) -> String| StringArray::from_iter_values(findings.iter().map(f));
    let times = |v: Vec<i64>| TimestampNanosecondArray::from(v).with_timezone(TIME_ZONE);
    AnomalyColumns {
        tenant: StringArray::from(vec![tenant.as_str(); n]),
        timestamp: times(
            findings
                .iter()
                .map(|f| f.minute_secs.saturating_mul(1_000_000_000))
                .collect(),
        ),
        signal: strs(|f| f.signal.name().to_string()),
        kind: strs(|f| f.kind.as_str().to_string()),
        series: strs(|f| f.series.clone()),
        service_name: StringArray::from_iter(findings.iter().map(|f| f.service.clone())),
        observed: f64s(|f| f.observed),
        expected: f64s(|f| f.expected),
        lower: f64s(|f| f.lower),
        upper: f64s(|f| f.upper),
        score: f64s(|f| f.score),
        severity: strs(|f| severity_name(f.severity).to_string()),
        settings: strs(|f| f.settings.clone()),
        policy_version: StringArray::from(vec![policy_version; n]),
        detected_by: StringArray::from(vec![node; n]),
        detected_at: times(vec![detected_at_nanos; n]),
    }
    .into_batch()
}

#[cfg(test)]
mod shared_tests;

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bulkhead_rules::ManualClock;

    pub(super) const T0: i64 = 1_748_822_400; // 2025-06-02T00:00:00Z

    /// A logs batch with `counts[i]` records in minute `first + i`.
    pub(super) fn logs(first: i64, counts: &[u64]) -> RecordBatch {
        let schema = bulkhead_store::schema::logs_schema();
        let mut times = Vec::new();
        for (i, n) in counts.iter().enumerate() {
            for j in 0..*n {
                times.push(((T0 + (first + i as i64) * 60) * 1_000_000_000) + j as i64);
            }
        }
        let n = times.len();
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "timestamp" => {
                    Arc::new(TimestampNanosecondArray::from(times.clone()).with_timezone("UTC"))
                        as arrow::array::ArrayRef
                }
                "service_name" => {
                    Arc::new(StringArray::from(vec!["svc"; n])) as arrow::array::ArrayRef
                }
                "severity_number" => {
                    Arc::new(arrow::array::Int32Array::from(vec![9; n])) as arrow::array::ArrayRef
                }
                _ => arrow::array::new_null_array(f.data_type(), n),
            })
            .collect();
        RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
            columns,
            &Default::default(),
        )
        .unwrap()
    }

    pub(super) fn normal(minutes: std::ops::Range<i64>) -> Vec<u64> {
        minutes.map(|m| 20 + (m as u64 * 7919) % 5).collect()
    }

    fn engine(dir: &std::path::Path) -> AnomalyEngine {
        let clock = Arc::new(ManualClock::new((T0 + 86_400 * 30) * 1_000_000_000));
        AnomalyEngine::new(dir.to_path_buf(), clock, Arc::new(Telemetry::default()))
    }

    #[test]
    fn a_restart_keeps_the_baselines() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let policy = AnomalyPolicy::default();
        let history = logs(0, &normal(0..300));
        let burst = logs(300, &[200, 21, 22, 20]);

        // one engine sees history then the burst
        let a = engine(dir.path());
        assert!(a
            .observe(&tenant, &policy, Signal::Logs, &history)
            .is_empty());
        a.checkpoint_all().unwrap();
        let uninterrupted = a.observe(&tenant, &policy, Signal::Logs, &burst);
        assert_eq!(uninterrupted.len(), 1, "{uninterrupted:?}");
        assert_eq!(uninterrupted[0].minute_secs, T0 + 300 * 60);

        // another starts from the checkpoint and finds exactly the same
        let b = engine(dir.path());
        let restarted = b.observe(&tenant, &policy, Signal::Logs, &burst);
        assert_eq!(restarted, uninterrupted);

        // without the checkpoint, a fresh baseline is still warming up
        let fresh_dir = tempfile::tempdir().unwrap();
        let c = engine(fresh_dir.path());
        assert!(c.observe(&tenant, &policy, Signal::Logs, &burst).is_empty());
    }

    #[test]
    fn an_idle_tenant_leaves_memory_and_comes_back_with_its_baselines() {
        let tenant = TenantId::new("acme").unwrap();
        let policy = AnomalyPolicy::default();
        let history = logs(0, &normal(0..300));
        let burst = logs(300, &[200, 21, 22, 20]);
        let uninterrupted = {
            let dir = tempfile::tempdir().unwrap();
            let e = engine(dir.path());
            e.observe(&tenant, &policy, Signal::Logs, &history);
            e.observe(&tenant, &policy, Signal::Logs, &burst)
        };
        assert_eq!(uninterrupted.len(), 1);

        // the clock is a month past the data: the tenant is idle
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.observe(&tenant, &policy, Signal::Logs, &history);
        assert_eq!(e.checkpoint_and_evict().unwrap(), 1);
        assert!(e.tenants.lock().is_empty());
        assert_eq!(
            e.observe(&tenant, &policy, Signal::Logs, &burst),
            uninterrupted
        );

        // a tenant sending now stays
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new((T0 + 301 * 60) * 1_000_000_000));
        let live = AnomalyEngine::new(
            dir.path().to_path_buf(),
            clock,
            Arc::new(Telemetry::default()),
        );
        live.observe(&tenant, &policy, Signal::Logs, &history);
        assert_eq!(live.checkpoint_and_evict().unwrap(), 0);
        assert_eq!(live.tenants.lock().len(), 1);
    }

    #[test]
    fn a_service_that_stops_sending_is_a_drop_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let policy = AnomalyPolicy::default();
        let e = engine(dir.path());
        let mut counts = normal(0..300);
        counts.extend([0, 0, 0, 0, 0]); // five silent minutes...
        counts.push(21); // ... then data again, which closes them
        counts.extend([20, 22, 21]);
        let found = e.observe(&tenant, &policy, Signal::Logs, &logs(0, &counts));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].minute_secs, T0 + 300 * 60);
        assert_eq!(found[0].observed, 0.0);
        assert_eq!(found[0].kind, SeriesKind::Volume);
    }

    #[test]
    fn the_series_limit_bounds_what_is_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let policy = AnomalyPolicy {
            series_limit: 1,
            ..Default::default()
        };
        let telemetry = Arc::new(Telemetry::default());
        let clock = Arc::new(ManualClock::new((T0 + 86_400) * 1_000_000_000));
        let e = AnomalyEngine::new(dir.path().to_path_buf(), clock, telemetry.clone());
        e.observe(&tenant, &policy, Signal::Logs, &logs(0, &normal(0..10)));
        let st = e.tenant(&tenant);
        assert_eq!(st.lock().series.len(), 1);
        assert!(
            telemetry.get(
                "bulkhead_anomaly_series_dropped_total",
                &[("tenant", "acme")]
            ) > 0
        );
    }
}
