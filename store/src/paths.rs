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
    /// The hour holding `nanos`. Total over `i64`: the hours at the very
    /// ends of the range, which do not fit whole, are clamped to the first
    /// and last whole hours (ingest never gets there: event times are
    /// checked against an accepted window first).
    pub fn containing(nanos: i64) -> Self {
        let start =
            i128::from(nanos).div_euclid(i128::from(NANOS_PER_HOUR)) * i128::from(NANOS_PER_HOUR);
        let first =
            i128::from(i64::MIN.div_euclid(NANOS_PER_HOUR) + 1) * i128::from(NANOS_PER_HOUR);
        let last = i128::from(i64::MAX.div_euclid(NANOS_PER_HOUR) - 1) * i128::from(NANOS_PER_HOUR);
        Self {
            // in range after the clamp, so the conversion cannot fail
            start_nanos: i64::try_from(start.clamp(first, last)).unwrap_or(0),
        }
    }

    pub fn start_nanos(self) -> i64 {
        self.start_nanos
    }

    /// First nanosecond after the hour.
    pub fn end_nanos(self) -> i64 {
        self.start_nanos.saturating_add(NANOS_PER_HOUR)
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
    fn extreme_times_never_panic_or_wrap() {
        for nanos in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            let h = PartitionHour::containing(nanos);
            assert!(h.start_nanos() < h.end_nanos(), "{nanos}");
            // the path renders and parses back
            let rel = h.relative();
            let mut parts = rel.iter().map(|p| p.to_str().unwrap());
            let (d, hr) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(PartitionHour::parse(d, hr), Some(h), "{nanos}");
        }
        // inside the clamped range the hour really contains the time
        let near_top = i64::MAX - 2 * NANOS_PER_HOUR;
        let h = PartitionHour::containing(near_top);
        assert!(h.start_nanos() <= near_top && near_top < h.end_nanos());
    }

    #[test]
    fn junk_directory_names_do_not_parse() {
        assert_eq!(PartitionHour::parse("date=2024-13-01", "hour=00"), None);
        assert_eq!(PartitionHour::parse("date=2024-01-01", "hour=24"), None);
        assert_eq!(PartitionHour::parse("2024-01-01", "hour=01"), None);
    }
}
