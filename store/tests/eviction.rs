//! Idle tenants leave memory: a shard with no buffered rows, no data for
//! the idle period and nothing left for compaction or deletion is evicted,
//! comes back unchanged on the tenant's next request, and is not brought
//! back by a retention pass that has nothing to delete. A shard in use or
//! with work left (buffered rows, a merge, removed files awaiting
//! deletion) stays.
mod common;
use common::{rows_in, timed_batch, Backend};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::{CompactionConfig, FlushConfig, Signal, Store, TimeRange};

const HOUR: i64 = 3_600_000_000_000;
// 2024-03-05T00:00:00Z
const T0: i64 = 1_709_596_800_000_000_000;
const IDLE: Duration = Duration::from_secs(3_600);

on_both_backends!(
    an_idle_tenant_leaves_memory_and_comes_back_unchanged,
    another_nodes_commit_reaches_the_retention_of_an_evicted_tenant,
);

fn flush_config() -> FlushConfig {
    FlushConfig {
        max_buffer_bytes: 1 << 30,
        max_age: Duration::from_secs(10),
        max_total_bytes: 1 << 30,
        removal_grace: Duration::from_secs(60),
        max_wal_bytes: 4 << 30,
    }
}

/// Node A evicted the tenant knowing it had no spans; node B then commits
/// old spans for it. A's retention must not trust what it kept.
fn another_nodes_commit_reaches_the_retention_of_an_evicted_tenant(b: Backend) {
    let clock = Arc::new(ManualClock::new(T0 + 3 * HOUR));
    let open = |node: &str| {
        Store::open_storage(&b.config(), node, None, flush_config(), clock.clone())
            .unwrap()
            .0
    };
    let (a, other) = (open("node-a"), open("node-b"));
    let t = TenantId::new("quiet").unwrap();
    a.append(&t, Signal::Logs, "v1", timed_batch("quiet", &[T0 + 1], 0))
        .unwrap();
    a.flush_all().unwrap();
    for s in Signal::ALL {
        a.files(&t, s).unwrap();
    }
    clock.advance(IDLE);
    assert_eq!(a.evict_idle(IDLE, &CompactionConfig::default()), 1);
    other
        .append(&t, Signal::Spans, "v1", timed_batch("quiet", &[T0 + 5], 0))
        .unwrap();
    other.flush_all().unwrap();
    assert_eq!(a.delete_before(&t, Signal::Spans, T0 + HOUR).unwrap(), 1);
    assert_eq!(a.shards_in_memory(), (1, 0));
}

fn count(s: &Store, t: &TenantId) -> usize {
    let snap = s.snapshot(t, Signal::Logs, TimeRange::ALL).unwrap();
    rows_in(s, &snap.files) + snap.buffered.iter().map(|b| b.num_rows()).sum::<usize>()
}

fn an_idle_tenant_leaves_memory_and_comes_back_unchanged(b: Backend) {
    let clock = Arc::new(ManualClock::new(T0 + 3 * HOUR));
    let store = Store::open_storage(&b.config(), "node-a", None, flush_config(), clock.clone())
        .unwrap()
        .0;
    let compaction = CompactionConfig::default();
    let (quiet, busy, split) = (
        TenantId::new("quiet").unwrap(),
        TenantId::new("busy").unwrap(),
        TenantId::new("split").unwrap(),
    );
    store
        .append(
            &quiet,
            Signal::Logs,
            "v1",
            timed_batch("quiet", &[T0 + 1, T0 + 2], 0),
        )
        .unwrap();
    // two flushes of one hour: compaction has work left until they merge
    for i in 0..2 {
        store
            .append(
                &split,
                Signal::Logs,
                "v1",
                timed_batch("split", &[T0 + 10 + i], 0),
            )
            .unwrap();
        store.flush_all().unwrap();
    }
    store.flush_all().unwrap();
    // every table looked at once, as the compaction loop does
    for t in [&quiet, &split] {
        for s in Signal::ALL {
            store.files(t, s).unwrap();
        }
    }
    assert_eq!(store.shards_in_memory(), (2, 0));

    // not idle long enough yet
    clock.advance(Duration::from_secs(1_800));
    assert_eq!(store.evict_idle(IDLE, &compaction), 0);
    clock.advance(Duration::from_secs(1_800));
    // `busy` writes now: it stays; `split` has a merge left: it stays
    store
        .append(
            &busy,
            Signal::Logs,
            "v1",
            timed_batch("busy", &[T0 + 3 * HOUR], 0),
        )
        .unwrap();
    // a reader's snapshot needs no shard: files go only after the grace
    let held = store
        .snapshot(&quiet, Signal::Logs, TimeRange::ALL)
        .unwrap();
    assert_eq!(store.evict_idle(IDLE, &compaction), 1);
    assert_eq!(rows_in(&store, &held.files), 2);
    assert_eq!(store.shards_in_memory(), (2, 1));

    // retention with nothing due does not bring it back, nor does the
    // orphan sweep
    store.sweep_orphans_all(Duration::from_secs(3_600)).unwrap();
    assert_eq!(store.delete_before(&quiet, Signal::Logs, T0).unwrap(), 0);
    assert_eq!(
        store
            .delete_before(&quiet, Signal::Spans, T0 + 10 * HOUR)
            .unwrap(),
        0
    );
    assert_eq!(store.shards_in_memory(), (2, 1));

    // once compacted, `split` goes too
    store.compact_due(&compaction).unwrap();
    assert_eq!(
        store.evict_idle(IDLE, &compaction),
        0,
        "compaction just committed: removed files await deletion"
    );
    clock.advance(Duration::from_secs(120));
    store.delete_expired_all().unwrap();
    assert_eq!(store.evict_idle(IDLE, &compaction), 1);
    assert_eq!(store.shards_in_memory(), (1, 2));

    // back on the next request, with everything it had
    assert_eq!(count(&store, &quiet), 2);
    assert_eq!(count(&store, &split), 2);
    store
        .append(
            &quiet,
            Signal::Logs,
            "v1",
            timed_batch("quiet", &[T0 + 3], 0),
        )
        .unwrap();
    store.flush_all().unwrap();
    assert_eq!(count(&store, &quiet), 3);
    assert!(store.committed_bytes(&quiet).unwrap() > 0);

    // settled again (quiet's two files of one hour merged, the inputs
    // deleted after the grace), every tenant goes
    store.compact_due(&compaction).unwrap();
    clock.advance(IDLE);
    store.delete_expired_all().unwrap();
    assert_eq!(store.evict_idle(IDLE, &compaction), 3);
    assert_eq!(store.shards_in_memory(), (0, 3));
    // due retention brings an evicted tenant back, and deletes
    assert_eq!(
        store
            .delete_before(&quiet, Signal::Logs, T0 + HOUR)
            .unwrap(),
        1
    );
    assert_eq!(store.shards_in_memory(), (1, 2));
    assert_eq!(count(&store, &quiet), 0);
}
