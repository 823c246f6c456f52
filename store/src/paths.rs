//! Object paths of the store, relative to its root (a directory or a bucket
//! prefix). The layout
//! `tenant=<id>/signal=<name>/date=YYYY-MM-DD/hour=HH/<id>.parquet`, and the
//! manifest beside the data (`tenant=<id>/signal=<name>/_manifest/`), is
//! written down once, here; every constructor takes the tenant as a type.
use bulkhead_rules::TenantId;
use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use object_store::path::Path as ObjPath;

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

    /// `date=YYYY-MM-DD` and `hour=HH`.
    fn relative(self) -> (String, String) {
        let dt = self.datetime();
        (
            format!("date={:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day()),
            format!("hour={:02}", dt.hour()),
        )
    }

    /// From the start of the hour, as recorded in a manifest; none if
    /// `start_nanos` is not the start of an hour.
    pub fn from_start_nanos(start_nanos: i64) -> Option<Self> {
        let h = Self::containing(start_nanos);
        (h.start_nanos == start_nanos).then_some(h)
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

/// `tenant=<id>/signal=<name>`: one tenant table's objects.
pub fn table_prefix(tenant: &TenantId, signal: Signal) -> ObjPath {
    ObjPath::from_iter([
        format!("tenant={tenant}"),
        format!("signal={}", signal.name()),
    ])
}

/// `tenant=<id>`: everything of one tenant.
pub fn tenant_prefix(tenant: &TenantId) -> ObjPath {
    ObjPath::from_iter([format!("tenant={tenant}")])
}

/// The tenant a `tenant=<id>` prefix names, if it is one.
pub fn parse_tenant_prefix(prefix: &ObjPath) -> Option<TenantId> {
    let name = prefix.parts().next_back()?;
    TenantId::new(name.as_ref().strip_prefix("tenant=")?).ok()
}

/// `tenant=<id>/signal=<name>/_manifest`: the table's manifest versions.
pub fn manifest_dir(tenant: &TenantId, signal: Signal) -> ObjPath {
    table_prefix(tenant, signal).join("_manifest")
}

/// A committed Parquet file's object path, relative to the store root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetFilePath(ObjPath);

impl ParquetFilePath {
    /// `tenant=<id>/signal=<name>/date=YYYY-MM-DD/hour=HH/<file_id>.parquet`;
    /// `file_id` is a time-ordered UUID (v7), so names sort by creation.
    pub fn new(
        tenant: &TenantId,
        signal: Signal,
        hour: PartitionHour,
        file_id: uuid::Uuid,
    ) -> Self {
        let (date, hour_dir) = hour.relative();
        let mut p = table_prefix(tenant, signal);
        for part in [date, hour_dir, format!("{}.parquet", file_id.simple())] {
            p = p.join(part);
        }
        Self(p)
    }

    pub fn path(&self) -> &ObjPath {
        &self.0
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
            p.path().as_ref(),
            "tenant=acme/signal=logs/date=2024-03-05/hour=07/00000000000000000000000000000000.parquet"
        );
        assert_eq!(
            manifest_dir(&t, Signal::Logs).as_ref(),
            "tenant=acme/signal=logs/_manifest"
        );
        assert_eq!(parse_tenant_prefix(&tenant_prefix(&t)), Some(t));
        assert_eq!(
            PartitionHour::from_start_nanos(hour.start_nanos()),
            Some(hour)
        );
        assert_eq!(PartitionHour::from_start_nanos(nanos), None);
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
            let (d, hr) = h.relative();
            assert_eq!(PartitionHour::parse(&d, &hr), Some(h), "{nanos}");
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
