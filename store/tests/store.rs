//! Store behaviour, on local disk and on a real S3-compatible server:
//! partitioning by event hour, flush by size and age with an injected clock,
//! manifest commits, consistent snapshots, retention with a grace period,
//! several nodes on one table, compaction.
mod common;
use common::{parquet_of, rows_in, timed_batch, values, Backend};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::Array;
use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::{CompactionConfig, FlushConfig, Signal, Store, TimeRange};

const HOUR: i64 = 3_600_000_000_000;
// 2024-03-05T00:00:00Z
const T0: i64 = 1_709_596_800_000_000_000;

fn config(max_bytes: usize) -> FlushConfig {
    FlushConfig {
        max_buffer_bytes: max_bytes,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1 << 30,
        removal_grace: Duration::from_secs(60),
        max_wal_bytes: 4 << 30,
    }
}

fn open_as(b: &Backend, node: &str, clock: Arc<ManualClock>, max_bytes: usize) -> Store {
    Store::open_storage(&b.config(), node, None, config(max_bytes), clock)
        .unwrap()
        .0
}

fn open(b: &Backend, clock: Arc<ManualClock>, max_bytes: usize) -> Store {
    open_as(b, "node-a", clock, max_bytes)
}

fn count(s: &Store, t: &TenantId) -> usize {
    let snap = s.snapshot(t, Signal::Logs, TimeRange::ALL).unwrap();
    rows_in(s, &snap.files) + snap.buffered.iter().map(|b| b.num_rows()).sum::<usize>()
}

on_both_backends!(
    rows_land_in_the_hour_partition_of_their_event_time,
    flush_waits_for_age_on_the_injected_clock,
    snapshot_sees_each_row_exactly_once_before_and_after_flush,
    committed_files_are_zstd_parquet_named_by_the_manifest,
    retention_removes_whole_hours_and_deletes_after_the_grace_period,
    two_nodes_on_one_table_lose_and_double_nothing,
    a_table_loads_from_its_checkpoint_and_later_commits,
    compaction_merges_an_hour_sorted_with_a_trace_id_bloom_filter,
    compaction_gives_up_when_retention_removed_an_input,
    compaction_keeps_each_merge_within_the_row_bound,
    the_tenants_in_storage_are_found,
);

fn rows_land_in_the_hour_partition_of_their_event_time(b: Backend) {
    let clock = Arc::new(ManualClock::new(0));
    let store = open(&b, clock, 1 << 30);
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
    let files = store.files(&t, Signal::Logs).unwrap();
    let mut dirs: Vec<String> = files
        .iter()
        .map(|f| f.path.rsplit_once('/').unwrap().0.to_string())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "tenant=acme/signal=logs/date=2024-03-05/hour=00",
            "tenant=acme/signal=logs/date=2024-03-05/hour=01"
        ]
    );
    assert!(files.iter().all(|f| f.policy_versions == ["v1"]));
    // time pruning: only hour 1 for a range inside it
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
    assert_eq!(rows_in(&store, &snap.files), 1);
    assert!(snap.files[0].0.as_ref().contains("hour=01"));
    // and by each file's own time bounds within the hour
    let snap = store
        .snapshot(
            &t,
            Signal::Logs,
            TimeRange {
                start: T0 + 10,
                end: T0 + 20,
            },
        )
        .unwrap();
    assert!(snap.files.is_empty(), "{:?}", snap.files);
}

fn flush_waits_for_age_on_the_injected_clock(b: Backend) {
    let clock = Arc::new(ManualClock::new(1_000));
    let store = open(&b, clock.clone(), 1 << 30);
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
    // flush by size is signalled by the append
    let small = open_as(&b, "node-b", clock, 1);
    assert!(small
        .append(&t, Signal::Metrics, "v1", timed_batch("acme", &[T0], 0))
        .unwrap());
    assert_eq!(small.flush_due().unwrap().files, 1);
}

fn snapshot_sees_each_row_exactly_once_before_and_after_flush(b: Backend) {
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    let a = TenantId::new("a").unwrap();
    let other = TenantId::new("b").unwrap();
    store
        .append(&a, Signal::Logs, "v1", timed_batch("a", &[T0, T0 + 1], 0))
        .unwrap();
    store
        .append(&other, Signal::Logs, "v1", timed_batch("b", &[T0], 0))
        .unwrap();
    assert_eq!(count(&store, &a), 2);
    assert_eq!(count(&store, &other), 1);
    store.flush_all().unwrap();
    store
        .append(&a, Signal::Logs, "v1", timed_batch("a", &[T0 + 2], 0))
        .unwrap();
    assert_eq!(count(&store, &a), 3);
    assert_eq!(count(&store, &other), 1);
    assert!(store
        .snapshot(&a, Signal::Spans, TimeRange::ALL)
        .unwrap()
        .files
        .is_empty());
    // a second store on the same storage sees the committed rows only
    let reader = open_as(&b, "node-b", Arc::new(ManualClock::new(0)), 1 << 30);
    assert_eq!(count(&reader, &a), 2);
}

fn committed_files_are_zstd_parquet_named_by_the_manifest(b: Backend) {
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0; 100], 0))
        .unwrap();
    store.flush_all().unwrap();
    let snap = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    let reader = parquet_of(&store, &snap.files[0].0);
    let codec = reader
        .metadata()
        .row_group(0)
        .column(0)
        .compression()
        .to_string();
    assert!(codec.starts_with("ZSTD"), "{codec}");
    let f = &store.files(&t, Signal::Logs).unwrap()[0];
    assert_eq!((f.rows, f.size, f.level), (100, snap.files[0].1, 0));
    assert_eq!((f.min_time, f.max_time), (T0, T0));
    assert_eq!(f.node, "node-a");
    if let Some(dir) = b.local_dir() {
        // the manifest sits beside the data; nothing else is in the tree
        let manifest = dir.join("tenant=acme/signal=logs/_manifest");
        let names: Vec<String> = std::fs::read_dir(&manifest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["00000000000000000001.json"]);
    }
}

#[test]
fn open_removes_unfinished_uploads_on_local_disk() {
    let b = Backend::local();
    let hour = b
        .local_dir()
        .unwrap()
        .join("tenant=a/signal=logs/date=2024-03-05/hour=00");
    std::fs::create_dir_all(&hour).unwrap();
    std::fs::write(hour.join("0190.parquet#3"), b"half a file").unwrap();
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    assert_eq!(std::fs::read_dir(&hour).unwrap().count(), 0);
    let snap = store
        .snapshot(&TenantId::new("a").unwrap(), Signal::Logs, TimeRange::ALL)
        .unwrap();
    assert!(snap.files.is_empty());
}

#[test]
fn a_full_buffer_refuses_appends_as_transient() {
    let b = Backend::local();
    let cfg = FlushConfig {
        max_total_bytes: 1,
        ..config(1 << 30)
    };
    let store = Store::open_storage(&b.config(), "n", None, cfg, Arc::new(ManualClock::new(0)))
        .unwrap()
        .0;
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
fn near_the_budget_the_largest_partitions_of_any_tenant_are_flushed() {
    let b = Backend::local();
    let batch = |t: &str| timed_batch(t, &[T0; 64], 0);
    // what one batch weighs once buffered
    let probe = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    probe
        .append(
            &TenantId::new("t99").unwrap(),
            Signal::Logs,
            "v1",
            batch("t99"),
        )
        .unwrap();
    let one = probe.buffered_bytes();
    // tenant i holds i + 1 batches: 210 batches in all, none due by size
    // (1 GiB) or age (10 s, the clock stands still); the budget is 300
    let cfg = FlushConfig {
        max_total_bytes: 300 * one,
        ..config(1 << 30)
    };
    let store = Store::open_storage(&b.config(), "n", None, cfg, Arc::new(ManualClock::new(0)))
        .unwrap()
        .0;
    let tenants: Vec<TenantId> = (0..20)
        .map(|i| TenantId::new(&format!("t{i:02}")).unwrap())
        .collect();
    let mut pressed = false;
    for (i, t) in tenants.iter().enumerate() {
        for _ in 0..=i {
            pressed |= store
                .append(t, Signal::Logs, "v1", batch(t.as_str()))
                .unwrap();
        }
    }
    assert_eq!(store.buffered_bytes(), 210 * one);
    assert!(pressed, "past half the budget, appends ask for a flush");
    let stats = store.flush_due().unwrap();
    // largest first, down to a quarter of the budget (75 batches): tenants
    // 19 down to 11 (20 + 19 + ... + 12 = 144 batches, 66 left)
    assert_eq!(stats.files, 9, "{stats:?}");
    assert!(
        store.buffered_bytes() <= 300 * one / 4,
        "{}",
        store.buffered_bytes()
    );
    for (i, t) in tenants.iter().enumerate() {
        let committed = store.files(t, Signal::Logs).unwrap().len();
        assert_eq!(committed, usize::from(i >= 11), "tenant {t}");
        assert_eq!(count(&store, t), 64 * (i + 1), "tenant {t}: every row once");
    }
    // below half the budget nothing more is due
    assert_eq!(store.flush_due().unwrap().files, 0);
}

fn retention_removes_whole_hours_and_deletes_after_the_grace_period(b: Backend) {
    let clock = Arc::new(ManualClock::new(0));
    let store = open(&b, clock.clone(), 1 << 30);
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
    let before = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    // hours 00 and 01 ended by T0 + 2h; hour 02 has not
    assert_eq!(
        store
            .delete_before(&t, Signal::Logs, T0 + 2 * HOUR)
            .unwrap(),
        2
    );
    assert_eq!(count(&store, &t), 1);
    // a query that took its snapshot before the removal still reads it
    assert_eq!(rows_in(&store, &before.files), 3);
    assert_eq!(
        store.delete_expired(&t).unwrap(),
        0,
        "within the grace period"
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(store.delete_expired(&t).unwrap(), 2);
    for (path, _) in &before.files {
        let gone = store.read_object(path).unwrap().is_none();
        assert_eq!(gone, !path.as_ref().contains("hour=02"), "{path}");
    }
    assert_eq!(store.delete_expired(&t).unwrap(), 0);
    // other tenants and other signals are untouched
    assert_eq!(count(&store, &other), 1);
    assert_eq!(
        store
            .delete_before(&t, Signal::Logs, T0 + 2 * HOUR)
            .unwrap(),
        0
    );
    // quota accounting follows the manifest
    let left = store.files(&t, Signal::Logs).unwrap();
    assert_eq!(
        store.committed_bytes(&t).unwrap(),
        left.iter().map(|f| f.size).sum::<u64>()
    );
}

fn two_nodes_on_one_table_lose_and_double_nothing(b: Backend) {
    let t = TenantId::new("shared").unwrap();
    let nodes: Vec<Arc<Store>> = ["node-a", "node-b"]
        .iter()
        .map(|n| Arc::new(open_as(&b, n, Arc::new(ManualClock::new(0)), 1 << 30)))
        .collect();
    const PER_NODE: i64 = 12;
    let threads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, t) = (store.clone(), t.clone());
            std::thread::spawn(move || {
                for k in 0..PER_NODE {
                    let value = (i as i64) * 1_000 + k * 10;
                    store
                        .append(
                            &t,
                            Signal::Logs,
                            "v1",
                            timed_batch("shared", &[T0 + k; 2], value),
                        )
                        .unwrap();
                    // every append its own commit, racing the other node's
                    store.flush_all().unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let mut expected: Vec<i64> = (0..2)
        .flat_map(|i| (0..PER_NODE).flat_map(move |k| [i * 1_000 + k * 10, i * 1_000 + k * 10 + 1]))
        .collect();
    expected.sort_unstable();
    for store in &nodes {
        assert_eq!(values(store, &t), expected);
    }
    let files = nodes[0].files(&t, Signal::Logs).unwrap();
    assert_eq!(files.len(), 2 * PER_NODE as usize);
    assert_eq!(
        files.iter().filter(|f| f.node == "node-b").count(),
        PER_NODE as usize
    );
    // a compaction on one node is seen by the other
    let stats = nodes[1]
        .compact(
            &t,
            Signal::Logs,
            &CompactionConfig {
                min_files: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((stats.merged, stats.inputs), (1, 2 * PER_NODE as usize));
    assert_eq!(nodes[0].files(&t, Signal::Logs).unwrap().len(), 1);
    assert_eq!(values(&nodes[0], &t), expected);
}

fn a_table_loads_from_its_checkpoint_and_later_commits(b: Backend) {
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    // 40 commits: a checkpoint at 32, eight commits after it
    for k in 0..40 {
        store
            .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + k], k))
            .unwrap();
        store.flush_all().unwrap();
    }
    if let Some(dir) = b.local_dir() {
        let m = dir.join("tenant=acme/signal=logs/_manifest");
        assert!(m.join("00000000000000000032.checkpoint.json").exists());
        assert!(m.join("_last_checkpoint.json").exists());
    }
    let fresh = open_as(&b, "node-b", Arc::new(ManualClock::new(0)), 1 << 30);
    assert_eq!(values(&fresh, &t), (0..40).collect::<Vec<_>>());
    assert_eq!(
        fresh.files(&t, Signal::Logs).unwrap(),
        store.files(&t, Signal::Logs).unwrap()
    );
}

fn compaction_merges_an_hour_sorted_with_a_trace_id_bloom_filter(b: Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(&b, clock.clone(), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    for k in 0..5 {
        // later appends carry earlier times: the merged file is sorted
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                common::trace_batch(&[T0 + 100 - k], k),
            )
            .unwrap();
        store.flush_all().unwrap();
    }
    store
        .append(
            &t,
            Signal::Logs,
            "v2",
            common::trace_batch(&[T0 + HOUR], 99),
        )
        .unwrap();
    store.flush_all().unwrap();
    let before = store.snapshot(&t, Signal::Logs, TimeRange::ALL).unwrap();
    let cfg = CompactionConfig {
        min_files: 5,
        ..Default::default()
    };
    let stats = store.compact(&t, Signal::Logs, &cfg).unwrap();
    assert_eq!((stats.merged, stats.inputs, stats.rows), (1, 5, 5));
    let files = store.files(&t, Signal::Logs).unwrap();
    assert_eq!(files.len(), 2, "hour 01 keeps its one file");
    let merged = files.iter().find(|f| f.level == 1).unwrap();
    assert_eq!(
        (merged.rows, merged.min_time, merged.max_time),
        (5, T0 + 96, T0 + 100)
    );
    let reader = parquet_of(&store, &merged.object_path());
    let meta = reader.metadata().clone();
    let trace_col = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "trace_id")
        .unwrap();
    assert!(
        meta.row_group(0)
            .column(trace_col)
            .bloom_filter_offset()
            .is_some(),
        "bloom filter on trace_id"
    );
    let rows = reader.build().unwrap().next().unwrap().unwrap();
    let ts = rows
        .column_by_name("timestamp")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()
        .unwrap();
    assert!(
        ts.values().windows(2).all(|w| w[0] <= w[1]),
        "sorted by time"
    );
    assert_eq!(values(&store, &t), [0, 1, 2, 3, 4, 99]);
    // the snapshot taken before still reads its (removed) inputs
    assert_eq!(rows_in(&store, &before.files), 6);
    // a settled hour with one file is left alone; nothing more to do
    clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(store.compact(&t, Signal::Logs, &cfg).unwrap().merged, 0);
}

fn compaction_keeps_each_merge_within_the_row_bound(b: Backend) {
    let store = open(&b, Arc::new(ManualClock::new(T0 + 10 * HOUR)), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    // seven flushed files of three rows in one settled hour
    for k in 0..7i64 {
        let at = T0 + 3 * k;
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[at, at + 1, at + 2], 3 * k),
            )
            .unwrap();
        store.flush_all().unwrap();
    }
    let cfg = CompactionConfig {
        min_files: 2,
        settle: Duration::ZERO,
        max_input_rows: 7,
        ..Default::default()
    };
    let stats = store.compact(&t, Signal::Logs, &cfg).unwrap();
    assert_eq!((stats.merged, stats.inputs, stats.rows), (3, 6, 18));
    let files = store.files(&t, Signal::Logs).unwrap();
    let mut rows: Vec<u64> = files.iter().map(|f| f.rows).collect();
    rows.sort();
    assert_eq!(rows, vec![3, 6, 6, 6], "no merge past 7 rows");
    assert_eq!(values(&store, &t), (0..21).collect::<Vec<_>>());
    // merged files of 6 rows and the one left over pass the bound together
    assert_eq!(store.compact(&t, Signal::Logs, &cfg).unwrap().merged, 0);
}

fn compaction_gives_up_when_retention_removed_an_input(b: Backend) {
    let store = open(&b, Arc::new(ManualClock::new(T0 + 10 * HOUR)), 1 << 30);
    let t = TenantId::new("acme").unwrap();
    for k in 0..3 {
        store
            .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + k], k))
            .unwrap();
        store.flush_all().unwrap();
    }
    // the compactor read the manifest, then retention removed the hour
    let cfg = CompactionConfig::default();
    let stats = store
        .compact_racing(&t, Signal::Logs, &cfg, || {
            store.delete_before(&t, Signal::Logs, T0 + HOUR).unwrap();
        })
        .unwrap();
    assert_eq!((stats.merged, stats.conflicts), (0, 1));
    assert!(store.files(&t, Signal::Logs).unwrap().is_empty());
    assert_eq!(count(&store, &t), 0);
    if let Some(dir) = b.local_dir() {
        // the merged file was deleted again; only the removed inputs remain
        let hour = dir.join("tenant=acme/signal=logs/date=2024-03-05/hour=00");
        assert_eq!(std::fs::read_dir(hour).unwrap().count(), 3);
    }
}

fn the_tenants_in_storage_are_found(b: Backend) {
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    for name in ["b", "a"] {
        let t = TenantId::new(name).unwrap();
        store
            .append(&t, Signal::Logs, "v1", timed_batch(name, &[T0], 0))
            .unwrap();
    }
    store.flush_all().unwrap();
    let mut found = store.stored_tenants().unwrap();
    found.sort();
    assert_eq!(
        found,
        [TenantId::new("a").unwrap(), TenantId::new("b").unwrap()]
    );
}

#[test]
fn a_store_from_before_manifests_adopts_its_files_once() {
    let b = Backend::local();
    let dir = b
        .local_dir()
        .unwrap()
        .join("tenant=acme/signal=logs/date=2024-03-05/hour=00");
    std::fs::create_dir_all(&dir).unwrap();
    // as older versions wrote it: the tenant column inside, the WAL entries
    // in a footer key
    let batch = timed_batch("acme", &[T0, T0 + 1, T0 + 2], 0);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "bulkhead.wal".to_string(),
            r#"{"wal":"old-wal","seqs":[[1,2]]}"#.to_string(),
        )]))
        .build();
    let file = std::fs::File::create(dir.join("0190aa.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let t = TenantId::new("acme").unwrap();
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    let files = store.files(&t, Signal::Logs).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, 3);
    assert_eq!(files[0].wals[0].id, "old-wal");
    assert!(files[0].wals[0].contains(2));
    assert_eq!(values(&store, &t), [0, 1, 2]);
    drop(store);
    // adopted once: a restart commits nothing more
    let store = open(&b, Arc::new(ManualClock::new(0)), 1 << 30);
    assert_eq!(store.files(&t, Signal::Logs).unwrap().len(), 1);
    let manifest = b
        .local_dir()
        .unwrap()
        .join("tenant=acme/signal=logs/_manifest");
    assert_eq!(std::fs::read_dir(manifest).unwrap().count(), 1);
}
