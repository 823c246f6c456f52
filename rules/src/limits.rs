//! The `[limits]` and `[retention]` sections of a tenant policy.
//!
//! ```toml
//! [limits]
//! records_per_second = 5000   # sustained ingest (log records + spans + data points); 0: unlimited
//! burst_records = 20000       # what may arrive at once; default 2 × records_per_second
//! bytes_per_second = 10485760 # sustained request bytes as received (compressed); 0: unlimited
//! burst_bytes = 20971520      # default 2 × bytes_per_second
//! max_attributes_per_record = 128    # more are dropped and counted
//! max_attribute_value_length = 8192  # longer string/bytes values are cut (bytes) and counted
//! max_metric_series = 100000 # metric name + resource and point attributes; points of new series past it are rejected
//! storage_quota = "50GiB"     # committed Parquet bytes; over it ingest is refused (429); absent: none
//!
//! [retention]
//! logs = "30d"                # how long each table's data is kept; absent: forever
//! spans = "14d"
//! metrics = "90d"
//! anomalies = "365d"
//! legal_hold = false          # true: nothing is deleted, whatever the periods say
//! ```
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Ingest limits of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub records_per_second: u64,
    pub burst_records: u64,
    /// Request bytes per second as received (before decompression and
    /// decoding, which is when they are charged); 0: unlimited.
    pub bytes_per_second: u64,
    pub burst_bytes: u64,
    /// Attributes kept per resource, scope, record, span, event, link or
    /// data point; the rest are dropped and counted.
    pub max_attributes_per_record: u32,
    /// Bytes kept of a string or bytes attribute value; longer ones are cut
    /// (at a character boundary) and counted.
    pub max_attribute_value_length: u32,
    /// Distinct metric series (name, resource and data point attributes)
    /// the tenant may have; data points of new series past it are
    /// rejected. 0: no limit.
    pub max_metric_series: u64,
    /// Committed Parquet bytes the tenant may hold; at or over it, ingest is
    /// refused as exhausted (retry once retention or an operator freed
    /// room). None: no quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_quota: Option<crate::units::ByteSize>,
}

/// Attributes kept per item by default (the OpenTelemetry SDKs' default).
pub const DEFAULT_MAX_ATTRIBUTES: u32 = 128;
/// Metric series per tenant by default.
pub const DEFAULT_MAX_METRIC_SERIES: u64 = 100_000;
/// Bytes kept of an attribute value by default.
pub const DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH: u32 = 8192;

impl Default for Limits {
    fn default() -> Self {
        Self {
            records_per_second: 0,
            burst_records: 0,
            bytes_per_second: 0,
            burst_bytes: 0,
            max_attributes_per_record: DEFAULT_MAX_ATTRIBUTES,
            max_attribute_value_length: DEFAULT_MAX_ATTRIBUTE_VALUE_LENGTH,
            max_metric_series: DEFAULT_MAX_METRIC_SERIES,
            storage_quota: None,
        }
    }
}

impl Limits {
    /// The bucket size actually used.
    pub fn burst(&self) -> u64 {
        if self.burst_records > 0 {
            self.burst_records
        } else {
            self.records_per_second.saturating_mul(2)
        }
    }

    /// The byte bucket's size actually used.
    pub fn burst_bytes(&self) -> u64 {
        if self.burst_bytes > 0 {
            self.burst_bytes
        } else {
            self.bytes_per_second.saturating_mul(2)
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_attributes_per_record == 0 {
            out.push("limits.max_attributes_per_record must be at least 1".into());
        }
        if self.max_attribute_value_length < 16 {
            out.push("limits.max_attribute_value_length must be at least 16".into());
        }
        if self.burst_bytes > 0 && self.bytes_per_second == 0 {
            out.push(
                "limits.burst_bytes is set but limits.bytes_per_second is 0 (unlimited)".into(),
            );
        }
        if self.bytes_per_second > 0 && self.burst_bytes() < self.bytes_per_second {
            out.push("limits.burst_bytes must be at least limits.bytes_per_second".into());
        }
        if self.burst_records > 0 && self.records_per_second == 0 {
            out.push(
                "limits.burst_records is set but limits.records_per_second is 0 (unlimited)".into(),
            );
        }
        if self.records_per_second > 0 && self.burst() < self.records_per_second {
            out.push("limits.burst_records must be at least limits.records_per_second".into());
        }
        out
    }
}

/// A period written as `30d`, `12h`, `90m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Period {
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = crate::units::parse_duration(s)?;
        if d < Duration::from_secs(60) || d.subsec_nanos() != 0 || d.as_secs() % 60 != 0 {
            return Err(format!(
                "period {s:?} must be a whole number of minutes, at least one"
            ));
        }
        Ok(Period(d))
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let secs = self.0.as_secs();
        let text = if secs.is_multiple_of(86_400) {
            format!("{}d", secs / 86_400)
        } else if secs.is_multiple_of(3_600) {
            format!("{}h", secs / 3_600)
        } else {
            format!("{}m", secs / 60)
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How long a tenant's data is kept, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Period>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans: Option<Period>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Period>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<Period>,
    /// Suspends every deletion while set.
    pub legal_hold: bool,
}

impl Retention {
    /// The period of a table by name (`logs`, `spans`, `metrics`, `anomalies`).
    pub fn period(&self, table: &str) -> Option<Duration> {
        match table {
            "logs" => self.logs,
            "spans" => self.spans,
            "metrics" => self.metrics,
            "anomalies" => self.anomalies,
            _ => None,
        }
        .map(|p| p.0)
    }

    /// The longest period of the tables that receive OTLP data (`logs`,
    /// `spans`, `metrics`); `None` when any of them is kept forever.
    pub fn longest_ingest_period(&self) -> Option<Duration> {
        [self.logs, self.spans, self.metrics]
            .into_iter()
            .map(|p| p.map(|p| p.0))
            .try_fold(Duration::ZERO, |acc, p| p.map(|p| acc.max(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_print() {
        assert_eq!(
            Period::parse("30d").unwrap().0,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(Period::parse("90m").unwrap().0, Duration::from_secs(5_400));
        assert!(Period::parse("0d").is_err());
        assert_eq!(
            Period::parse("3w").unwrap().0,
            Duration::from_secs(21 * 86_400)
        );
        assert!(Period::parse("3 parsecs")
            .unwrap_err()
            .contains("not understood"));
        assert!(Period::parse("90s")
            .unwrap_err()
            .contains("whole number of minutes"));
        let r: Retention = toml::from_str("logs = \"30d\"\nspans = \"12h\"\n").unwrap();
        assert_eq!(r.period("logs"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r.period("metrics"), None);
        assert_eq!(
            toml::to_string(&r).unwrap(),
            "logs = \"30d\"\nspans = \"12h\"\nlegal_hold = false\n"
        );
    }

    #[test]
    fn limits_are_checked() {
        let l = Limits {
            records_per_second: 100,
            burst_records: 0,
            ..Limits::default()
        };
        assert_eq!(l.burst(), 200);
        assert!(l.problems().is_empty());
        let bad = Limits {
            records_per_second: 100,
            burst_records: 10,
            ..Limits::default()
        };
        assert!(bad.problems()[0].contains("burst_records"));
        let odd = Limits {
            records_per_second: 0,
            burst_records: 10,
            ..Limits::default()
        };
        assert!(odd.problems()[0].contains("unlimited"));
    }
}
