//! Erasure and offboarding in the store, on local disk and on S3, with
//! encryption on: matching rows in the range go (buffered ones too), every
//! other row stays, files stay readable and encrypted; an erasure stopped
//! between its copies and its commit leaves the old files (the copies are
//! orphans), and running it again finishes it; a merge by another node in
//! between makes the pass start over; offboarding leaves no object.
mod common;
use common::{parquet_of, timed_batch, values, Backend};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{BooleanArray, Int64Array, RecordBatch};
use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::crypto::{DataKeys, Keyring, MasterKey};
use bulkhead_store::paths::tenant_prefix;
use bulkhead_store::{CompactionConfig, FlushConfig, Signal, Store, TimeRange};

// 2024-03-05T00:00:00Z
const T0: i64 = 1_709_596_800_000_000_000;
const HOUR: i64 = 3_600_000_000_000;

fn open(backend: &Backend, dir: &std::path::Path, node: &str) -> Store {
    let ring = Keyring::open(dir.join("keyring.json"), MasterKey::from_bytes([7; 32])).unwrap();
    let keys = Arc::new(DataKeys::new(Arc::new(ring)));
    let cfg = FlushConfig {
        max_buffer_bytes: 1 << 30,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1 << 30,
        removal_grace: Duration::ZERO,
        ..Default::default()
    };
    Store::open_with_keys(
        &backend.config(),
        node,
        None,
        cfg,
        Arc::new(ManualClock::new(T0 + 10 * HOUR)),
        Some(keys),
    )
    .unwrap()
    .0
}

/// Rows whose `value` is a multiple of `n`.
fn multiple_of(n: i64) -> impl Fn(&RecordBatch) -> Result<BooleanArray, String> {
    move |b: &RecordBatch| {
        let v = b
            .column_by_name("value")
            .ok_or("no value column")?
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("value is not Int64")?;
        Ok(v.iter().map(|x| x.map(|x| x % n == 0)).collect())
    }
}

/// Three hours of rows, value i at T0 + i minutes (0..180), in two files
/// per hour, and 10 more rows of hour 0 still buffered.
fn fill(store: &Store, t: &TenantId) {
    let minute = 60_000_000_000;
    for half in 0..6 {
        let times: Vec<i64> = (half * 30..half * 30 + 30)
            .map(|i| T0 + i * minute)
            .collect();
        store
            .append(
                t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &times, half * 30),
            )
            .unwrap();
        store.flush_all().unwrap();
    }
    let times: Vec<i64> = (0..10).map(|i| T0 + i * minute + 1).collect();
    store
        .append(t, Signal::Logs, "v1", timed_batch("acme", &times, 1000))
        .unwrap();
}

fn erasure_removes_matching_rows_in_the_range_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&backend, dir.path(), "node-1");
    let (t, other) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("other").unwrap(),
    );
    fill(&store, &t);
    fill(&store, &other);
    let before = values(&store, &t);
    assert_eq!(before.len(), 190);
    // multiples of 10 in the first two hours (and the buffered 1000..1010)
    let range = TimeRange {
        start: T0,
        end: T0 + 2 * HOUR - 1,
    };
    let stats = store
        .erase(&t, Signal::Logs, range, &multiple_of(10))
        .unwrap();
    let expected: Vec<i64> = before
        .iter()
        .copied()
        .filter(|v| !(v % 10 == 0 && (*v < 120 || *v >= 1000)))
        .collect();
    assert_eq!(values(&store, &t), expected);
    assert_eq!(stats.rows_removed as usize, before.len() - expected.len());
    assert_eq!(stats.rows_removed, 12 + 1);
    // hour 0: two flushed files and the one the buffered rows became;
    // hour 1: two files; hour 2 not touched
    assert_eq!(stats.files_read, 5);
    assert_eq!(stats.files_rewritten, 5);
    assert_eq!(stats.attempts, 1);
    // the other tenant is untouched
    assert_eq!(values(&store, &other).len(), 190);
    // the copies are encrypted and read with the tenant's keys
    let snap = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    for (p, _) in &snap.files {
        let bytes = store.read_object(p).unwrap().unwrap();
        assert!(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).is_err(),
            "{p} reads without its key"
        );
        parquet_of(&store, p).build().unwrap();
    }
    // again: nothing left to remove, nothing rewritten
    let again = store
        .erase(&t, Signal::Logs, range, &multiple_of(10))
        .unwrap();
    assert_eq!((again.rows_removed, again.files_rewritten), (0, 0));
    // a predicate that matches every row of a file removes the file
    let all = store
        .erase(
            &t,
            Signal::Logs,
            TimeRange {
                start: T0 + 2 * HOUR,
                end: T0 + 3 * HOUR - 1,
            },
            &|b: &RecordBatch| Ok(BooleanArray::from(vec![true; b.num_rows()])),
        )
        .unwrap();
    assert_eq!((all.files_removed, all.rows_removed), (2, 60));
    assert!(values(&store, &t).iter().all(|v| *v < 120 || *v >= 1000));
    // a predicate that fails names the file and changes nothing
    let err = store
        .erase(&t, Signal::Logs, TimeRange::ALL, &|_| Err("boom".into()))
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(err.to_string().contains("signal=logs"), "{err}");
}

fn an_interrupted_erasure_leaves_the_old_files_and_finishes_when_run_again(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&backend, dir.path(), "node-1");
    let t = TenantId::new("acme").unwrap();
    fill(&store, &t);
    let before = values(&store, &t);
    let range = TimeRange::ALL;
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.erase_racing(&t, Signal::Logs, range, &multiple_of(2), &|| {
            panic!("stopped between the copies and the commit")
        })
    }));
    assert!(stopped.is_err());
    // the old files are live: nothing is missing, nothing twice
    assert_eq!(values(&store, &t), before);
    // the copies are orphans, which the sweep deletes
    assert!(
        store
            .sweep_orphans(&t, Signal::Logs, Duration::ZERO)
            .unwrap()
            > 0
    );
    assert_eq!(values(&store, &t), before);
    let stats = store
        .erase(&t, Signal::Logs, range, &multiple_of(2))
        .unwrap();
    assert_eq!(stats.rows_removed, 95);
    assert!(values(&store, &t).iter().all(|v| v % 2 == 1));
    assert_eq!(values(&store, &t).len(), 95);
}

fn a_merge_by_another_node_makes_the_erasure_start_over(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&backend, dir.path(), "node-a");
    let b = open(&backend, dir.path(), "node-b");
    let t = TenantId::new("acme").unwrap();
    fill(&a, &t);
    a.flush_all().unwrap();
    let merged = std::sync::atomic::AtomicBool::new(false);
    let stats = a
        .erase_racing(&t, Signal::Logs, TimeRange::ALL, &multiple_of(3), &|| {
            if !merged.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let s = b
                    .compact(
                        &t,
                        Signal::Logs,
                        &CompactionConfig {
                            min_files: 2,
                            settle: Duration::ZERO,
                            max_input_bytes: 1 << 30,
                            max_input_rows: u64::MAX,
                        },
                    )
                    .unwrap();
                assert!(s.merged > 0);
            }
        })
        .unwrap();
    assert_eq!(stats.attempts, 2);
    assert!(values(&a, &t).iter().all(|v| v % 3 != 0));
    assert_eq!(values(&b, &t), values(&a, &t));
    assert_eq!(values(&a, &t).len(), 190 - 63);
}

fn offboarding_leaves_nothing_of_the_tenant(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&backend, dir.path(), "node-1");
    let (t, other) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("other").unwrap(),
    );
    fill(&store, &t);
    fill(&store, &other);
    store.flush_all().unwrap();
    // a file no manifest names (a crash's leftover) goes too
    let stray = object_store::path::Path::from("tenant=acme/signal=logs/stray.parquet");
    store
        .storage()
        .put(&stray, bytes::Bytes::from_static(b"x"))
        .unwrap();
    let buffered = timed_batch("acme", &[T0 + 5], 5000);
    store.append(&t, Signal::Logs, "v1", buffered).unwrap();
    let stats = store.offboard(&t).unwrap();
    assert!(stats.objects_deleted > 10, "{stats:?}");
    assert!(stats.data_keys_destroyed >= 1, "{stats:?}");
    assert!(store.storage().list(&tenant_prefix(&t)).unwrap().is_empty());
    // nothing buffered comes back at the next flush
    store.flush_all().unwrap();
    assert!(store.storage().list(&tenant_prefix(&t)).unwrap().is_empty());
    assert_eq!(values(&store, &other).len(), 190);
    // running it again is harmless
    assert_eq!(store.offboard(&t).unwrap().objects_deleted, 0);
}

on_both_backends!(
    erasure_removes_matching_rows_in_the_range_only,
    an_interrupted_erasure_leaves_the_old_files_and_finishes_when_run_again,
    a_merge_by_another_node_makes_the_erasure_start_over,
    offboarding_leaves_nothing_of_the_tenant,
);

/// With a write-ahead log: rows erased from every file, and the store then
/// stopped dead (no shutdown) while the log segments still hold them: the
/// restart replays nothing of them.
#[test]
fn erased_rows_do_not_come_back_from_the_log_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::local();
    let open_durable = || {
        let ring = Keyring::open(
            dir.path().join("keyring.json"),
            MasterKey::from_bytes([7; 32]),
        )
        .unwrap();
        Store::open_with_keys(
            &backend.config(),
            "node-1",
            Some(bulkhead_store::wal::WalConfig::new(dir.path().join("wal"))),
            FlushConfig {
                max_buffer_bytes: 1 << 30,
                max_age: Duration::from_secs(10),
                max_total_bytes: 1 << 30,
                removal_grace: Duration::ZERO,
                ..Default::default()
            },
            Arc::new(ManualClock::new(T0 + 10 * HOUR)),
            Some(Arc::new(DataKeys::new(Arc::new(ring)))),
        )
        .unwrap()
    };
    let t = TenantId::new("acme").unwrap();
    {
        let (store, _) = open_durable();
        // one file all of whose rows go, one that keeps some, and rows
        // still buffered when the erasure starts
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[T0 + 1, T0 + 2], 0),
            )
            .unwrap();
        store.flush_all().unwrap();
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[T0 + HOUR + 1, T0 + HOUR + 2], 10),
            )
            .unwrap();
        store.flush_all().unwrap();
        store
            .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + 3], 20))
            .unwrap();
        let stats = store
            .erase(&t, Signal::Logs, TimeRange::ALL, &|b: &RecordBatch| {
                let v = b
                    .column_by_name("value")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                Ok(v.iter().map(|x| x.map(|x| x != 11)).collect())
            })
            .unwrap();
        assert_eq!(stats.rows_removed, 4);
        assert_eq!(stats.files_removed, 2);
        assert_eq!(values(&store, &t), vec![11]);
        // dropped without a shutdown: the segments still hold every entry
    }
    let (store, report) = open_durable();
    assert_eq!(report.entries_replayed, 0, "{report:?}");
    assert_eq!(values(&store, &t), vec![11]);
}

/// `timed_batch` with a `received_at` column.
fn received_batch(tenant: &str, time: i64, value: i64, received_at: i64) -> RecordBatch {
    let base = timed_batch(tenant, &[time], value);
    let mut fields: Vec<arrow::datatypes::Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(arrow::datatypes::Field::new(
        "received_at",
        arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Nanosecond,
            Some("UTC".into()),
        ),
        false,
    ));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(
        arrow::array::TimestampNanosecondArray::from(vec![received_at]).with_timezone("UTC"),
    ));
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap()
}

/// Without encryption (no shred to make the logs unreadable): a tenant
/// offboarded by one node, both nodes then stopped dead, comes back from
/// neither node's log, committed or buffered; a tenant of the same name
/// made afterwards keeps what it sends.
#[test]
fn an_offboarded_tenant_does_not_come_back_from_any_log_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::local();
    let clock = Arc::new(ManualClock::new(T0 + 10 * HOUR));
    let open_durable = |node: &str| {
        Store::open_with_keys(
            &backend.config(),
            node,
            Some(bulkhead_store::wal::WalConfig::new(dir.path().join(node))),
            FlushConfig::default(),
            clock.clone(),
            None,
        )
        .unwrap()
    };
    let (t, other) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("other").unwrap(),
    );
    let before = T0 + 10 * HOUR - 1;
    {
        let (one, _) = open_durable("node-1");
        let (two, _) = open_durable("node-2");
        one.append(
            &t,
            Signal::Logs,
            "v1",
            received_batch("acme", T0 + 1, 0, before),
        )
        .unwrap();
        one.flush_all().unwrap();
        one.append(
            &t,
            Signal::Logs,
            "v1",
            received_batch("acme", T0 + 2, 1, before),
        )
        .unwrap();
        one.append(
            &other,
            Signal::Logs,
            "v1",
            received_batch("other", T0 + 3, 2, before),
        )
        .unwrap();
        // the other node buffers some of the tenant's rows too
        two.append(
            &t,
            Signal::Logs,
            "v1",
            received_batch("acme", T0 + 5, 5, before),
        )
        .unwrap();
        assert_eq!(two.offboarded_before(&t).unwrap(), None);
        let stats = one.offboard(&t).unwrap();
        assert_eq!(stats.buffered_rows_dropped, 1);
        // every node sees when (what the audit table cuts an earlier
        // tenant of the name at)
        assert_eq!(two.offboarded_before(&t).unwrap(), Some(T0 + 10 * HOUR));
        assert_eq!(two.offboarded_before(&other).unwrap(), None);
        // the same name again, after the offboarding
        clock.advance(std::time::Duration::from_secs(1));
        one.append(
            &t,
            Signal::Logs,
            "v1",
            received_batch("acme", T0 + 4, 3, T0 + 10 * HOUR + 1),
        )
        .unwrap();
        // both dropped without a shutdown
    }
    let (two, report) = open_durable("node-2");
    assert_eq!(report.entries_offboarded, 1, "{report:?}");
    assert_eq!(values(&two, &t), Vec::<i64>::new());
    drop(two);
    let (one, report) = open_durable("node-1");
    assert_eq!(report.entries_offboarded, 2, "{report:?}");
    assert_eq!(values(&one, &t), vec![3]);
    assert_eq!(values(&one, &other), vec![2]);
}
