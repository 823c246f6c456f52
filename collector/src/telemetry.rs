//! Bulkhead's own metrics, served in the OpenMetrics text format at
//! `/metrics` on their own listener (`listen.metrics`, loopback by default),
//! never on the API port. Counters are labelled by tenant where they concern
//! one; label values are `TenantId`s and fixed names, never free text.
//! Encoding is `prometheus-client`'s.
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use bulkhead_store::Store;

type Labels = Vec<(String, String)>;

/// Process-wide counters, registered once with their help texts.
pub struct Telemetry {
    registry: RwLock<Registry>,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    gauges: HashMap<&'static str, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

const HELP: &[(&str, &str)] = &[
    (
        "bulkhead_records_accepted_total",
        "OTLP records (log records, spans, data points) accepted, by tenant and signal.",
    ),
    (
        "bulkhead_records_rejected_total",
        "OTLP records rejected as invalid (partial success), by tenant and signal.",
    ),
    (
        "bulkhead_requests_refused_total",
        "OTLP requests refused as a whole, by reason.",
    ),
    (
        "bulkhead_redactions_total",
        "Redaction actions by tenant, rule (default:<detector> for the secure defaults) and action.",
    ),
    (
        "bulkhead_tenant_fields_overwritten_total",
        "Attributes naming another tenant (tenant.id, org_id, ...) overwritten with the caller's tenant.",
    ),
    (
        "bulkhead_retention_files_deleted_total",
        "Parquet files deleted because their data was past the tenant's retention period.",
    ),
    (
        "bulkhead_compaction_merges_total",
        "Files written by compaction, each replacing a tenant-hour's smaller files.",
    ),
    (
        "bulkhead_compaction_inputs_total",
        "Files replaced by compaction (deleted after the removal grace period).",
    ),
    (
        "bulkhead_compaction_conflicts_total",
        "Merges given up because an input was removed meanwhile (retention, another node).",
    ),
    (
        "bulkhead_removed_files_deleted_total",
        "Files removed from a table (retention, compaction) deleted from storage once their grace period passed.",
    ),
    (
        "bulkhead_policy_reloads_total",
        "Policy directory reloads taken into force.",
    ),
    (
        "bulkhead_policy_checks_total",
        "Looks at the policy directory for changes (periodic and on SIGHUP).",
    ),
    (
        "bulkhead_housekeeping_runs_total",
        "Runs of the housekeeping loop (flushes, retention, anomaly ticks, policy checks).",
    ),
    (
        "bulkhead_policy_reload_errors_total",
        "Policy changes refused (the previous policies stay in force).",
    ),
    (
        "bulkhead_anomalies_total",
        "Anomalies detected, by tenant and series kind.",
    ),
    (
        "bulkhead_anomaly_series_dropped_total",
        "New series not tracked because the tenant's series limit was reached.",
    ),
    (
        "bulkhead_attributes_dropped_total",
        "Attributes dropped over the tenant's limits.max_attributes_per_record, by tenant.",
    ),
    (
        "bulkhead_attribute_values_truncated_total",
        "Attribute values cut to the tenant's limits.max_attribute_value_length, by tenant.",
    ),
    (
        "bulkhead_metric_series_rejected_total",
        "Data points rejected because they would start a metric series past the tenant's limits.max_metric_series.",
    ),
    (
        "bulkhead_ingest_backlogged_requests_total",
        "Requests whose CPU work ran at the lower priority of ingest.backlog_nice (their tenant had more requests queued for a turn).",
    ),
    (
        "bulkhead_request_panics_total",
        "Requests whose handling panicked (answered 500 / INTERNAL; other requests unaffected).",
    ),
    (
        "bulkhead_wal_replayed_entries_total",
        "Write-ahead log entries put back into the buffers at start-up.",
    ),
    (
        "bulkhead_wal_truncations_total",
        "Write-ahead log segments whose torn or corrupt tail was cut at start-up.",
    ),
];

/// Gauges read from the store and the WAL when `/metrics` is scraped.
const GAUGES: &[(&str, &str)] = &[
    (
        "bulkhead_store_buffered_bytes",
        "Bytes buffered in memory, not yet committed.",
    ),
    (
        "bulkhead_store_files_committed",
        "Parquet files committed since start (a counter).",
    ),
    (
        "bulkhead_store_rows_committed",
        "Rows committed to Parquet since start (a counter).",
    ),
    (
        "bulkhead_store_bytes_committed",
        "Parquet bytes committed since start (a counter).",
    ),
    (
        "bulkhead_store_flush_errors",
        "Failed flush attempts since start (data stays buffered; a counter).",
    ),
    (
        "bulkhead_store_wal_pressure_flushes",
        "Flush rounds that committed the oldest buffers early because the write-ahead log was over wal.max_size (a counter).",
    ),
    (
        "bulkhead_store_pressure_flushes",
        "Partitions flushed early because all buffers together neared flush.max_total_buffer (a counter).",
    ),
    (
        "bulkhead_store_flush_seconds",
        "Seconds spent writing and publishing Parquet files since start (a counter; divide by files committed for the mean).",
    ),
    (
        "bulkhead_wal_bytes",
        "Bytes of write-ahead log segments on disk.",
    ),
    (
        "bulkhead_wal_segments",
        "Write-ahead log segments on disk.",
    ),
    (
        "bulkhead_wal_appends",
        "Entries appended to the write-ahead log since start (a counter).",
    ),
    (
        "bulkhead_wal_fsyncs",
        "fsyncs of the write-ahead log since start (a counter; appends / fsyncs is the group-commit batch).",
    ),
    (
        "bulkhead_wal_fsync_seconds",
        "Seconds spent in write-ahead log fsyncs since start (a counter; divide by fsyncs for the mean latency).",
    ),
    (
        "bulkhead_wal_write_errors",
        "Failed write-ahead log writes since start (answered 503 / UNAVAILABLE; a counter).",
    ),
    (
        "bulkhead_ingest_in_flight_bytes",
        "Bytes of OTLP requests being worked on now.",
    ),
    (
        "bulkhead_store_tenants_in_memory",
        "Tenants whose store shard (buffers, manifests) is in memory; idle ones are evicted.",
    ),
    (
        "bulkhead_ingest_requests_waiting",
        "OTLP requests waiting for a turn at the CPU stage (decode, convert, redact) now.",
    ),
    (
        "bulkhead_ingest_tenants_waiting",
        "Tenants with a request waiting for a turn at the CPU stage now (turns go round-robin across them).",
    ),
];

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counters = HashMap::new();
        for (name, help) in HELP {
            let family = Family::<Labels, Counter>::default();
            // the registry appends `_total` to counters itself
            let base = name.strip_suffix("_total").unwrap_or(name);
            registry.register(base, *help, family.clone());
            counters.insert(*name, family);
        }
        let mut gauges = HashMap::new();
        for (name, help) in GAUGES {
            let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            registry.register(*name, *help, g.clone());
            gauges.insert(*name, g);
        }
        Self {
            registry: RwLock::new(registry),
            counters,
            gauges,
        }
    }
}

fn labels(labels: &[(&'static str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Telemetry {
    /// Adds to a counter; `name` must be one of the registered counters.
    pub fn add(&self, name: &'static str, labels_: &[(&'static str, &str)], by: u64) {
        if by == 0 {
            return;
        }
        match self.counters.get(name) {
            Some(f) => {
                f.get_or_create(&labels(labels_)).inc_by(by);
            }
            None => tracing::error!(name, "counter not registered"),
        }
    }

    /// The current value of one counter (0 if never incremented).
    pub fn get(&self, name: &'static str, labels_: &[(&'static str, &str)]) -> u64 {
        self.counters
            .get(name)
            .map(|f| f.get_or_create(&labels(labels_)).get())
            .unwrap_or(0)
    }

    fn set(&self, name: &str, value: f64) {
        if let Some(g) = self.gauges.get(name) {
            g.set(value);
        }
    }

    /// Everything in the OpenMetrics text format; `in_flight` is the bytes of
    /// requests being worked on, `gate` who waits for the CPU stage.
    pub fn render(&self, store: &Store, in_flight: u64, gate: crate::fair::GateLoad) -> String {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        let s = store.stats();
        self.set(
            "bulkhead_store_buffered_bytes",
            store.buffered_bytes() as f64,
        );
        self.set("bulkhead_store_files_committed", load(&s.files_committed));
        self.set("bulkhead_store_rows_committed", load(&s.rows_committed));
        self.set("bulkhead_store_bytes_committed", load(&s.bytes_committed));
        self.set("bulkhead_store_flush_errors", load(&s.flush_errors));
        self.set("bulkhead_store_pressure_flushes", load(&s.pressure_flushes));
        self.set(
            "bulkhead_store_wal_pressure_flushes",
            load(&s.wal_pressure_flushes),
        );
        self.set(
            "bulkhead_store_flush_seconds",
            load(&s.flush_nanos_total) / 1e9,
        );
        if let Some(wal) = store.wal() {
            let w = wal.stats();
            self.set("bulkhead_wal_bytes", load(&w.bytes_on_disk));
            self.set("bulkhead_wal_segments", load(&w.segments));
            self.set("bulkhead_wal_appends", load(&w.appends));
            self.set("bulkhead_wal_fsyncs", load(&w.fsyncs));
            self.set(
                "bulkhead_wal_fsync_seconds",
                load(&w.fsync_nanos_total) / 1e9,
            );
            self.set("bulkhead_wal_write_errors", load(&w.write_errors));
        }
        self.set("bulkhead_ingest_in_flight_bytes", in_flight as f64);
        self.set(
            "bulkhead_store_tenants_in_memory",
            store.shards_in_memory().0 as f64,
        );
        self.set("bulkhead_ingest_requests_waiting", gate.waiting as f64);
        self.set(
            "bulkhead_ingest_tenants_waiting",
            gate.tenants_waiting as f64,
        );
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry.read()) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_prometheus_format() {
        let t = Telemetry::default();
        t.add(
            "bulkhead_records_accepted_total",
            &[("tenant", "acme"), ("signal", "logs")],
            3,
        );
        t.add(
            "bulkhead_records_accepted_total",
            &[("tenant", "acme"), ("signal", "logs")],
            2,
        );
        t.add(
            "bulkhead_requests_refused_total",
            &[("reason", "unauthenticated")],
            1,
        );
        assert_eq!(
            t.get(
                "bulkhead_records_accepted_total",
                &[("tenant", "acme"), ("signal", "logs")]
            ),
            5
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Default::default(),
            std::sync::Arc::new(bulkhead_rules::ManualClock::new(0)),
        )
        .unwrap();
        let text = t.render(&store, 7, Default::default());
        assert!(
            text.contains("bulkhead_records_accepted_total{tenant=\"acme\",signal=\"logs\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("bulkhead_requests_refused_total{reason=\"unauthenticated\"} 1\n"));
        assert!(
            text.contains(
                "# TYPE bulkhead_store_buffered_bytes gauge\nbulkhead_store_buffered_bytes 0.0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("bulkhead_ingest_in_flight_bytes 7.0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
