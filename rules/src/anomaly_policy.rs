//! The `[anomaly]` section of a tenant policy: which of the tenant's series
//! get baselines, how many, and with which detector settings.
//!
//! ```toml
//! [anomaly]
//! series = ["volume", "error_ratio", "latency", "metric"]
//! metrics = ["http.server.request.duration", "system.cpu.*"]
//! series_limit = 1000
//!
//! [anomaly.detector]
//! sensitivity = 0.5
//! seasonality = "auto"
//! ```
use serde::{Deserialize, Serialize};

use crate::anomaly::DetectorSettings;

/// The families of series the collector learns baselines for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Records per minute per signal and service (a drop to zero included).
    Volume,
    /// Share of error records per minute per service (logs: severity ERROR
    /// and above; spans: status error).
    ErrorRatio,
    /// p95 span duration per minute per service and span name.
    Latency,
    /// Values of the selected metrics (gauges as is, monotonic sums as rates).
    Metric,
}

impl SeriesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Volume => "volume",
            SeriesKind::ErrorRatio => "error_ratio",
            SeriesKind::Latency => "latency_p95",
            SeriesKind::Metric => "metric",
        }
    }
}

/// Per-tenant anomaly detection settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyPolicy {
    /// Off turns every detector of the tenant off.
    pub enabled: bool,
    /// Which families of series to watch.
    pub series: Vec<SeriesKind>,
    /// Metric names to watch (`metric` series); a trailing `*` matches a prefix.
    pub metrics: Vec<String>,
    /// At most this many series are tracked; new series beyond it are
    /// counted, not tracked, so one tenant's cardinality cannot grow memory.
    pub series_limit: usize,
    /// Detector settings shared by the tenant's series.
    pub detector: DetectorSettings,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            series: vec![
                SeriesKind::Volume,
                SeriesKind::ErrorRatio,
                SeriesKind::Latency,
                SeriesKind::Metric,
            ],
            metrics: Vec::new(),
            series_limit: 1_000,
            detector: DetectorSettings::default(),
        }
    }
}

impl AnomalyPolicy {
    pub fn watches(&self, kind: SeriesKind) -> bool {
        self.enabled && self.series.contains(&kind)
    }

    /// True when `name` is one of the selected metrics.
    pub fn selects_metric(&self, name: &str) -> bool {
        self.watches(SeriesKind::Metric)
            && self.metrics.iter().any(|m| match m.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == m,
            })
    }

    /// Every problem, as messages naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.detector.validate() {
            out.push(format!("anomaly.detector: {e}"));
        }
        if self.series_limit == 0 || self.series_limit > 1_000_000 {
            out.push(format!(
                "anomaly.series_limit must be in 1..=1000000, got {}",
                self.series_limit
            ));
        }
        for m in &self.metrics {
            if m.is_empty() || m[..m.len().saturating_sub(1)].contains('*') {
                out.push(format!(
                    "anomaly.metrics: {m:?} must be a metric name, optionally ending in '*'"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_selection_matches_names_and_prefixes() {
        let p = AnomalyPolicy {
            metrics: vec!["cpu.usage".into(), "http.server.*".into()],
            ..Default::default()
        };
        assert!(p.selects_metric("cpu.usage"));
        assert!(!p.selects_metric("cpu.usage.total"));
        assert!(p.selects_metric("http.server.duration"));
        assert!(!p.selects_metric("http.client.duration"));
        let off = AnomalyPolicy {
            enabled: false,
            ..p.clone()
        };
        assert!(!off.selects_metric("cpu.usage"));
    }

    #[test]
    fn problems_name_the_setting() {
        let mut p = AnomalyPolicy {
            series_limit: 0,
            metrics: vec!["a*b".into()],
            ..Default::default()
        };
        p.detector.sensitivity = 3.0;
        let all = p.problems().join("\n");
        assert!(all.contains("anomaly.series_limit"), "{all}");
        assert!(all.contains("anomaly.metrics"), "{all}");
        assert!(all.contains("anomaly.detector: sensitivity"), "{all}");
        let mut p = AnomalyPolicy::default();
        p.detector.adapt_points = 0;
        assert_eq!(
            p.problems(),
            vec!["anomaly.detector: adapt_points must be in 1..=1000000, got 0".to_string()]
        );
        let parsed: AnomalyPolicy =
            toml::from_str("[detector]\nadapt_points = 120\nsuppress_points = 10").unwrap();
        assert_eq!(parsed.detector.adapt_points, 120);
        assert!(parsed.problems().is_empty());
    }
}
