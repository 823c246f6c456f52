//! Object paths of the store. Each is a newtype with one constructor, so the
//! layout `tenant=<id>/signal=<name>/date=YYYY-MM-DD/hour=HH/<id>.parquet`
//! is written down once, here.
use std::path::{Path, PathBuf};

use bulkhead_rules::TenantId;
use chrono::{DateTime, Datelike, NaiveDate, Timelike};

use crate::Signal;

const NANOS_PER_HOUR: i64 = 3_600 * 1_000_000_000;

/// One event-time hour: the unit of partitioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionHour {
    /// Start of the hour, nanoseconds since the epoch.
    start_nanos: i64,
}

impl PartitionHour {
    pub fn containing(nanos: i64) -> Self {
        Self {
            start_nanos: nanos.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR,
        }
    }

    pub fn start_nanos(self) -> i64 {
        self.start_nanos
    }

    /// First nanosecond after the hour.
    pub fn end_nanos(self) -> i64 {
        self.start_nanos + NANOS_PER_HOUR
    }

    fn datetime(self) -> DateTime<chrono::Utc> {
        DateTime::from_timestamp_nanos(self.start_nanos)
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    fn relative(self) -> PathBuf {
        let dt = self.datetime();
        PathBuf::from(format!(
            "date={:04}-{:02}-{:02}",
            dt.year(),
            dt.month(),
            dt.day()
        ))
        .join(format!("hour={:02}", dt.hour()))
    }

    /// Parses the `date=` and `hour=` directory names back.
    pub fn parse(date_dir: &str, hour_dir: &str) -> Option<Self> {
        let date = NaiveDate::parse_from_str(date_dir.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
        let hour: u32 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
        let dt = date.and_hms_opt(hour, 0, 0)?.and_utc();
        Some(Self {
            start_nanos: dt.timestamp_nanos_opt()?,
        })
    }
}

/// `tenant=<id>/signal=<name>` below the store root.
pub fn signal_dir(root: &Path, tenant: &TenantId, signal: Signal) -> PathBuf {
    root.join(format!("tenant={tenant}"))
        .join(format!("signal={}", signal.name()))
}

/// The hour directory of a tenant's signal.
pub fn hour_dir(root: &Path, tenant: &TenantId, signal: Signal, hour: PartitionHour) -> PathBuf {
    signal_dir(root, tenant, signal).join(hour.relative())
}

/// A committed Parquet file's path relative to the store root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetFilePath(PathBuf);

impl ParquetFilePath {
    /// `tenant=<id>/signal=<name>/date=YYYY-MM-DD/hour=HH/<file_id>.parquet`;
    /// `file_id` is a time-ordered UUID (v7), so names sort by creation.
    pub fn new(
        tenant: &TenantId,
        signal: Signal,
        hour: PartitionHour,
        file_id: uuid::Uuid,
    ) -> Self {
        Self(
            hour_dir(Path::new(""), tenant, signal, hour)
                .join(format!("{}.parquet", file_id.simple())),
        )
    }

    pub fn relative(&self) -> &Path {
        &self.0
    }

    pub fn absolute(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_hive_style_by_event_hour() {
        let t = TenantId::new("acme").unwrap();
        // 2024-03-05T07:59:59.5Z
        let nanos = 1_709_625_599_500_000_000;
        let hour = PartitionHour::containing(nanos);
        let id = uuid::Uuid::nil();
        let p = ParquetFilePath::new(&t, Signal::Logs, hour, id);
        assert_eq!(
            p.relative().to_str().unwrap(),
            "tenant=acme/signal=logs/date=2024-03-05/hour=07/00000000000000000000000000000000.parquet"
        );
        assert_eq!(
            PartitionHour::parse("date=2024-03-05", "hour=07"),
            Some(hour)
        );
        assert!(hour.start_nanos() <= nanos && nanos < hour.end_nanos());
    }

    #[test]
    fn negative_times_partition_correctly() {
        let h = PartitionHour::containing(-1);
        assert_eq!(h.start_nanos(), -NANOS_PER_HOUR);
        assert_eq!(PartitionHour::parse("date=1969-12-31", "hour=23"), Some(h));
    }

    #[test]
    fn junk_directory_names_do_not_parse() {
        assert_eq!(PartitionHour::parse("date=2024-13-01", "hour=00"), None);
        assert_eq!(PartitionHour::parse("date=2024-01-01", "hour=24"), None);
        assert_eq!(PartitionHour::parse("2024-01-01", "hour=01"), None);
    }
}
