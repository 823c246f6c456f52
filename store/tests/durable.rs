//! The store with its write-ahead log: what was appended survives a crash
//! (dropping the store without a flush), and replay is idempotent: a crash
//! during replay, or between a commit and the deletion of its WAL segment,
//! neither loses nor duplicates rows.
mod common;
use common::timed_batch;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::wal::WalConfig;
use bulkhead_store::{FlushConfig, ReplayReport, Signal, Store};

const HOUR: i64 = 3_600_000_000_000;
// 2024-03-05T00:00:00Z
const T0: i64 = 1_709_596_800_000_000_000;

fn open(dir: &Path) -> (Store, ReplayReport) {
    let cfg = FlushConfig {
        max_buffer_bytes: 1 << 30,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1 << 30,
        ..Default::default()
    };
    Store::open_durable(
        dir.join("store"),
        WalConfig::new(dir.join("wal")),
        cfg,
        Arc::new(ManualClock::new(0)),
    )
    .unwrap()
}

/// Every `value` of `acme`'s logs, committed or buffered, sorted.
fn values(store: &Store) -> Vec<i64> {
    common::values(store, &TenantId::new("acme").unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn appended_batches_survive_a_crash_and_replay_twice_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::new("acme").unwrap();
    {
        let (store, report) = open(dir.path());
        assert_eq!(report.entries_replayed, 0);
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[T0, T0 + 1], 0),
            )
            .unwrap();
        store
            .append(&t, Signal::Logs, "v2", timed_batch("acme", &[T0 + HOUR], 2))
            .unwrap();
        // crash: no flush
    }
    // a crash during replay (nothing written by it) changes nothing
    for _ in 0..2 {
        let (store, report) = open(dir.path());
        assert_eq!(report.entries_replayed, 2);
        assert_eq!(report.rows_replayed, 3);
        assert_eq!(values(&store), vec![0, 1, 2]);
    }
    let (store, _) = open(dir.path());
    let stats = store.flush_all().unwrap();
    assert_eq!((stats.files, stats.rows), (2, 3));
    drop(store);
    let (store, report) = open(dir.path());
    assert_eq!(
        report.entries_replayed, 0,
        "committed entries are not replayed"
    );
    assert_eq!(values(&store), vec![0, 1, 2]);
}

#[test]
fn a_crash_between_commit_and_segment_deletion_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::new("acme").unwrap();
    let saved = dir.path().join("saved-wal");
    {
        let (store, _) = open(dir.path());
        // one entry spans two hours: two partitions, two files
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[T0, T0 + HOUR], 0),
            )
            .unwrap();
        store
            .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + 5], 2))
            .unwrap();
        copy_dir(&dir.path().join("wal"), &saved);
        store.flush_all().unwrap();
    }
    // the segments come back as if their deletion never happened
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    copy_dir(&saved, &dir.path().join("wal"));
    {
        let (store, report) = open(dir.path());
        assert_eq!(report.entries_replayed, 0, "{report:?}");
        assert_eq!(report.parts_already_committed, 3);
        assert_eq!(values(&store), vec![0, 1, 2]);
    }

    // a crash after one of the two partitions was committed (hour 00 was
    // version 1, hour 01 version 2): only the other hour's part is replayed
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    copy_dir(&saved, &dir.path().join("wal"));
    let files = parquet_files(&dir.path().join("store"));
    assert_eq!(files.len(), 2);
    let second_hour = files
        .iter()
        .find(|p| p.to_string_lossy().contains("hour=01"))
        .unwrap();
    std::fs::remove_file(second_hour).unwrap();
    std::fs::remove_file(
        dir.path()
            .join("store/tenant=acme/signal=logs/_manifest/00000000000000000002.json"),
    )
    .unwrap();
    let (store, report) = open(dir.path());
    assert_eq!(report.entries_replayed, 1, "{report:?}");
    assert_eq!(report.rows_replayed, 1);
    assert_eq!(report.parts_already_committed, 2);
    assert_eq!(values(&store), vec![0, 1, 2]);
    store.flush_all().unwrap();
    drop(store);
    let (store, report) = open(dir.path());
    assert_eq!(report.entries_replayed, 0, "{report:?}");
    assert_eq!(values(&store), vec![0, 1, 2]);
}

#[test]
fn retention_and_commits_release_wal_segments() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::new("acme").unwrap();
    let cfg = FlushConfig {
        max_buffer_bytes: 1 << 30,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1 << 30,
        ..Default::default()
    };
    let mut wal = WalConfig::new(dir.path().join("wal"));
    wal.segment_bytes = 64 << 10;
    let (store, _) = Store::open_durable(
        dir.path().join("store"),
        wal,
        cfg,
        Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    for i in 0..200 {
        let times: Vec<i64> = (0..50).map(|j| T0 + j).collect();
        store
            .append(&t, Signal::Logs, "v1", timed_batch("acme", &times, i * 50))
            .unwrap();
    }
    let segments = |d: &Path| {
        std::fs::read_dir(d.join("wal"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            .count()
    };
    assert!(segments(dir.path()) > 2, "small segments roll over");
    // committed bytes: measured once, then kept by commits and deletions
    assert_eq!(store.committed_bytes(&t).unwrap(), 0);
    let stats = store.flush_all().unwrap();
    assert!(stats.bytes > 0);
    assert_eq!(store.committed_bytes(&t).unwrap(), stats.bytes);
    assert_eq!(store.committed_bytes_known(&t), Some(stats.bytes));
    for i in 0..3 {
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[T0 + i], 100_000 + i),
            )
            .unwrap();
    }
    // retention drops the hour, committed and buffered: its entries are
    // released too
    store.delete_before(&t, Signal::Logs, T0 + HOUR).unwrap();
    assert_eq!(segments(dir.path()), 1, "only the active segment is left");
    assert!(values(&store).is_empty());
    assert_eq!(store.committed_bytes(&t).unwrap(), 0);
}

#[test]
fn an_oversized_log_commits_the_oldest_buffers_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let open = |max_wal_bytes: u64, sub: &str| {
        let cfg = FlushConfig {
            max_buffer_bytes: 1 << 30,
            max_age: Duration::from_secs(3_600),
            max_total_bytes: 1 << 30,
            max_wal_bytes,
            ..Default::default()
        };
        let mut wal = WalConfig::new(dir.path().join(sub).join("wal"));
        wal.segment_bytes = 64 << 10;
        Store::open_durable(dir.path().join(sub).join("store"), wal, cfg, clock.clone())
            .unwrap()
            .0
    };
    let (roomy, tight) = (open(4 << 30, "roomy"), open(1, "tight"));
    let names = ["old", "mid", "new"];
    let tenants: Vec<TenantId> = names.iter().map(|n| TenantId::new(n).unwrap()).collect();
    // "old" starts buffering at 0 s, "mid" at 10 s, "new" at 20 s
    for (i, t) in tenants.iter().enumerate() {
        clock.set(i as i64 * 10_000_000_000);
        for s in [&roomy, &tight] {
            s.append(t, Signal::Logs, "v1", timed_batch(t.as_str(), &[T0], 0))
                .unwrap();
        }
    }
    // none is due by size or age; a log within its budget commits nothing
    assert_eq!(roomy.flush_due().unwrap().files, 0);
    // over its budget: the buffers started by halfway (10 s) are committed
    assert_eq!(tight.flush_due().unwrap().files, 2);
    let committed: Vec<usize> = tenants
        .iter()
        .map(|t| tight.files(t, Signal::Logs).unwrap().len())
        .collect();
    assert_eq!(committed, [1, 1, 0], "oldest first");
    // the next round takes the rest (the log still holds its header)
    assert_eq!(tight.flush_due().unwrap().files, 1);
}
