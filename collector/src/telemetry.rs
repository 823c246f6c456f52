//! Bulkhead's own metrics, served in the Prometheus text format at
//! `/metrics` on the API port. Counters are labelled by tenant where they
//! concern one; label values are `TenantId`s and fixed names, never free text.
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;

use bulkhead_store::Store;

/// A counter's identity: metric name and its labels, in order.
type Key = (&'static str, Vec<(&'static str, String)>);

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Telemetry {
    counters: Mutex<BTreeMap<Key, u64>>,
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
        "bulkhead_policy_reloads_total",
        "Policy directory reloads taken into force.",
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

impl Telemetry {
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        if by == 0 {
            return;
        }
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        *self.counters.lock().entry(key).or_default() += by;
    }

    /// The current value of one counter (0 if never incremented).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        self.counters.lock().get(&key).copied().unwrap_or(0)
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let counters = self.counters.lock();
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, labels), v) in counters.iter().filter(|((n, _), _)| n == name) {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                if labels.is_empty() {
                    let _ = writeln!(out, "{n} {v}");
                } else {
                    let _ = writeln!(out, "{n}{{{}}} {v}", labels.join(","));
                }
            }
        }
        let s = store.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "bulkhead_store_buffered_bytes",
                "gauge",
                "Bytes buffered in memory, not yet committed.",
                store.buffered_bytes() as u64,
            ),
            (
                "bulkhead_store_files_committed_total",
                "counter",
                "Parquet files committed.",
                load(&s.files_committed),
            ),
            (
                "bulkhead_store_rows_committed_total",
                "counter",
                "Rows committed to Parquet.",
                load(&s.rows_committed),
            ),
            (
                "bulkhead_store_bytes_committed_total",
                "counter",
                "Parquet bytes committed.",
                load(&s.bytes_committed),
            ),
            (
                "bulkhead_store_flush_errors_total",
                "counter",
                "Failed flush attempts (data stays buffered).",
                load(&s.flush_errors),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = t.render(&store);
        assert!(
            text.contains("bulkhead_records_accepted_total{tenant=\"acme\",signal=\"logs\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("bulkhead_requests_refused_total{reason=\"unauthenticated\"} 1\n"));
        assert!(text.contains(
            "# TYPE bulkhead_store_buffered_bytes gauge\nbulkhead_store_buffered_bytes 0\n"
        ));
    }
}
