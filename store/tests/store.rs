//! Store behaviour: partitioning by event hour, flush by size and age with an
//! injected clock, atomic commits, consistent snapshots, crash leftovers.
mod common;
use common::timed_batch;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::{FlushConfig, Signal, Store, TimeRange};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const HOUR: i64 = 3_600_000_000_000;
// 2024-03-05T00:00:00Z
const T0: i64 = 1_709_596_800_000_000_000;

fn rows_in(paths: &[(std::path::PathBuf, u64)]) -> usize {
    paths
        .iter()
        .map(|(p, _)| {
            let r = ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                .unwrap()
                .build()
                .unwrap();
            r.map(|b| b.unwrap().num_rows()).sum::<usize>()
        })
        .sum()
}

fn open(dir: &std::path::Path, clock: Arc<ManualClock>, max_bytes: usize) -> Store {
    let cfg = FlushConfig {
        max_buffer_bytes: max_bytes,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1 << 30,
    };
    Store::open(dir, cfg, clock).unwrap()
}

#[test]
fn rows_land_in_the_hour_partition_of_their_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let store = open(dir.path(), clock, 1 << 30);
    let t = TenantId::new("acme").unwrap();
    store
        .append(
            &t,
            Signal::Logs,
            "v1",
            timed_batch("acme", &[T0 + 1, T0 + HOUR + 5, T0 + 2], 0),
        )
        .unwrap();
    let stats = store.flush_all().unwrap();
    assert_eq!((stats.files, stats.rows), (2, 3));
    let h0 = dir
        .path()
        .join("tenant=acme/signal=logs/date=2024-03-05/hour=00");
    let h1 = dir
        .path()
        .join("tenant=acme/signal=logs/date=2024-03-05/hour=01");
    assert_eq!(std::fs::read_dir(&h0).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(&h1).unwrap().count(), 1);
    // time pruning: only hour 1 is listed for a range inside it
    let snap = store
        .snapshot(
            &t,
            Signal::Logs,
            TimeRange {
                start: T0 + HOUR,
                end: T0 + HOUR + 10,
            },
        )
        .unwrap();
    assert_eq!(snap.files.len(), 1);
    assert_eq!(rows_in(&snap.files), 1);
    assert!(snap.files[0].0.starts_with(&h1));
}

#[test]
fn flush_waits_for_age_on_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = open(dir.path(), clock.clone(), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    store
        .append(&t, Signal::Spans, "v1", timed_batch("acme", &[T0], 0))
        .unwrap();
    assert_eq!(store.flush_due().unwrap().files, 0);
    clock.advance(Duration::from_secs(9));
    assert_eq!(store.flush_due().unwrap().files, 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.flush_due().unwrap().files, 1);
    assert_eq!(store.buffered_bytes(), 0);
}

#[test]
fn flush_by_size_is_signalled_and_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(ManualClock::new(0)), 1);
    let t = TenantId::new("acme").unwrap();
    assert!(store
        .append(&t, Signal::Metrics, "v1", timed_batch("acme", &[T0], 0))
        .unwrap());
    assert_eq!(store.flush_due().unwrap().files, 1);
}

#[test]
fn snapshot_sees_each_row_exactly_once_before_and_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(ManualClock::new(0)), 1 << 30);
    let a = TenantId::new("a").unwrap();
    let b = TenantId::new("b").unwrap();
    store
        .append(&a, Signal::Logs, "v1", timed_batch("a", &[T0, T0 + 1], 0))
        .unwrap();
    store
        .append(&b, Signal::Logs, "v1", timed_batch("b", &[T0], 0))
        .unwrap();
    let count = |s: &Store, t: &TenantId| {
        let snap = s.snapshot(t, Signal::Logs, TimeRange::ALL).unwrap();
        rows_in(&snap.files) + snap.buffered.iter().map(|b| b.num_rows()).sum::<usize>()
    };
    assert_eq!(count(&store, &a), 2);
    assert_eq!(count(&store, &b), 1);
    store.flush_all().unwrap();
    store
        .append(&a, Signal::Logs, "v1", timed_batch("a", &[T0 + 2], 0))
        .unwrap();
    assert_eq!(count(&store, &a), 3);
    assert_eq!(count(&store, &b), 1);
    assert_eq!(
        store
            .snapshot(&a, Signal::Spans, TimeRange::ALL)
            .unwrap()
            .files
            .len(),
        0
    );
}

#[test]
fn committed_files_are_zstd_parquet_and_no_temporaries_remain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(ManualClock::new(0)), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0; 100], 0))
        .unwrap();
    store.flush_all().unwrap();
    let snap = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(File::open(&snap.files[0].0).unwrap()).unwrap();
    let meta = reader.metadata();
    let codec = meta.row_group(0).column(0).compression().to_string();
    assert!(codec.starts_with("ZSTD"), "{codec}");
    let hour_dir = snap.files[0].0.parent().unwrap();
    assert!(std::fs::read_dir(hour_dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}

#[test]
fn open_removes_leftovers_of_an_interrupted_commit() {
    let dir = tempfile::tempdir().unwrap();
    let hour = dir
        .path()
        .join("tenant=a/signal=logs/date=2024-03-05/hour=00");
    std::fs::create_dir_all(&hour).unwrap();
    std::fs::write(hour.join(".tmp-0190.parquet"), b"half a file").unwrap();
    let store = open(dir.path(), Arc::new(ManualClock::new(0)), 1 << 30);
    assert_eq!(std::fs::read_dir(&hour).unwrap().count(), 0);
    let snap = store
        .snapshot(&TenantId::new("a").unwrap(), Signal::Logs, TimeRange::ALL)
        .unwrap();
    assert!(snap.files.is_empty());
}

#[test]
fn a_full_buffer_refuses_appends_as_transient() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FlushConfig {
        max_buffer_bytes: 1 << 30,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1,
    };
    let store = Store::open(dir.path(), cfg, Arc::new(ManualClock::new(0))).unwrap();
    let t = TenantId::new("acme").unwrap();
    store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0], 0))
        .unwrap();
    let err = store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0], 0))
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    store.flush_all().unwrap();
    store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0], 0))
        .unwrap();
}

#[test]
fn retention_deletes_whole_hours_that_ended_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(ManualClock::new(0)), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    let other = TenantId::new("other").unwrap();
    store
        .append(
            &t,
            Signal::Logs,
            "v1",
            timed_batch("acme", &[T0, T0 + HOUR, T0 + 2 * HOUR], 0),
        )
        .unwrap();
    store
        .append(&other, Signal::Logs, "v1", timed_batch("other", &[T0], 0))
        .unwrap();
    store.flush_all().unwrap();
    // a buffered row of an old hour goes too
    store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + 5], 0))
        .unwrap();
    // hours 00 and 01 ended by T0 + 2h; hour 02 has not
    assert_eq!(
        store
            .delete_before(&t, Signal::Logs, T0 + 2 * HOUR)
            .unwrap(),
        2
    );
    let snap = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    assert_eq!(
        rows_in(&snap.files) + snap.buffered.iter().map(|b| b.num_rows()).sum::<usize>(),
        1
    );
    // other tenants and other signals are untouched
    assert_eq!(
        rows_in(
            &store
                .snapshot(&other, Signal::Logs, TimeRange::ALL)
                .unwrap()
                .files
        ),
        1
    );
    assert_eq!(
        store
            .delete_before(&t, Signal::Logs, T0 + 2 * HOUR)
            .unwrap(),
        0
    );
}
