//! The store with tenants' data keys, on local disk and on S3: log entries
//! replay after a crash, files are encrypted (no key, no read) through
//! flushes and merges, and a tenant shredded while the node was down has
//! its log entries dropped at replay while other tenants' come back.
mod common;
use common::{parquet_of, timed_batch, values, Backend};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::crypto::{DataKeys, KeyError, Keyring, MasterKey};
use bulkhead_store::objects::Storage;
use bulkhead_store::wal::WalConfig;
use bulkhead_store::{
    CompactionConfig, Error, FlushConfig, ReplayReport, Signal, Store, TimeRange,
};

// 2024-03-05T00:00:00Z
const T0: i64 = 1_709_596_800_000_000_000;

struct Node {
    backend: Backend,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(backend: Backend) -> Self {
        Self {
            backend,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn keys(&self) -> Arc<DataKeys> {
        let ring = Keyring::open(
            self.dir.path().join("keyring.json"),
            MasterKey::from_bytes([42; 32]),
        )
        .unwrap();
        Arc::new(DataKeys::new(Arc::new(ring)))
    }

    fn open(&self, keys: Option<Arc<DataKeys>>) -> Result<(Store, ReplayReport), Error> {
        let cfg = FlushConfig {
            max_buffer_bytes: 1 << 30,
            max_age: Duration::from_secs(10),
            max_total_bytes: 1 << 30,
            ..Default::default()
        };
        Store::open_with_keys(
            &self.backend.config(),
            "node-1",
            Some(WalConfig::new(self.dir.path().join("wal"))),
            cfg,
            Arc::new(ManualClock::new(T0)),
            keys,
        )
    }
}

fn encrypted_log_entries_replay_and_files_stay_encrypted_through_merges(backend: Backend) {
    let node = Node::new(backend);
    let t = TenantId::new("acme").unwrap();
    {
        let (store, _) = node.open(Some(node.keys())).unwrap();
        store
            .append(
                &t,
                Signal::Logs,
                "v1",
                timed_batch("acme", &[T0 + 1, T0 + 2], 0),
            )
            .unwrap();
        store
            .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + 3], 10))
            .unwrap();
        // dropped without a flush: a crash
    }
    // without the keyring the sealed entries cannot be replayed: refused,
    // not skipped
    let e = node.open(None).unwrap_err();
    assert!(e.to_string().contains("no keyring"), "{e}");

    let (store, report) = node.open(Some(node.keys())).unwrap();
    assert_eq!(report.entries_replayed, 2);
    assert_eq!(report.rows_replayed, 3);
    assert_eq!(values(&store, &t), vec![0, 1, 10]);
    store.flush_all().unwrap();
    store
        .append(&t, Signal::Logs, "v1", timed_batch("acme", &[T0 + 4], 20))
        .unwrap();
    store.flush_all().unwrap();
    let files = store
        .snapshot(&t, Signal::Logs, TimeRange::ALL)
        .unwrap()
        .files;
    assert_eq!(files.len(), 2);
    for (path, _) in &files {
        let bytes = store.read_object(path).unwrap().unwrap();
        assert!(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).is_err(),
            "{path} reads without its key"
        );
        assert!(parquet_of(&store, path).build().is_ok());
    }
    // merged: one file, encrypted, the same rows
    let merged = store
        .compact_due(&CompactionConfig {
            min_files: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(merged.merged, 1);
    let files = store
        .snapshot(&t, Signal::Logs, TimeRange::ALL)
        .unwrap()
        .files;
    assert_eq!(files.len(), 1);
    let bytes = store.read_object(&files[0].0).unwrap().unwrap();
    assert!(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).is_err());
    assert_eq!(values(&store, &t), vec![0, 1, 10, 20]);
}

fn a_tenant_shredded_while_the_node_was_down_is_not_replayed(backend: Backend) {
    let node = Node::new(backend);
    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    {
        let (store, _) = node.open(Some(node.keys())).unwrap();
        store
            .append(&acme, Signal::Logs, "v1", timed_batch("acme", &[T0 + 1], 0))
            .unwrap();
        store
            .append(
                &globex,
                Signal::Logs,
                "v1",
                timed_batch("globex", &[T0 + 1], 5),
            )
            .unwrap();
        store
            .append(&acme, Signal::Logs, "v1", timed_batch("acme", &[T0 + 2], 1))
            .unwrap();
    }
    let keys = node.keys();
    let storage = Storage::open_beside_server(&node.backend.config()).unwrap();
    assert_eq!(
        keys.shred(&storage, &acme, "2026-12-04T00:00:00Z").unwrap(),
        1
    );

    let (store, report) = node.open(Some(node.keys())).unwrap();
    assert_eq!(report.entries_unreadable, 2);
    assert_eq!(report.entries_replayed, 1);
    assert_eq!(values(&store, &globex), vec![5]);
    let e = store
        .snapshot(&acme, Signal::Logs, TimeRange::ALL)
        .unwrap_err();
    assert!(matches!(e, Error::Key(KeyError::Shredded { .. })), "{e}");
    let e = store
        .append(&acme, Signal::Logs, "v1", timed_batch("acme", &[T0 + 3], 2))
        .unwrap_err();
    assert!(matches!(e, Error::Key(KeyError::Shredded { .. })), "{e}");
    // the dropped entries are released: the next start replays only globex's
    store.flush_all().unwrap();
    drop(store);
    let (_, report) = node.open(Some(node.keys())).unwrap();
    assert_eq!((report.entries_replayed, report.entries_unreadable), (0, 0));
}

on_both_backends!(
    encrypted_log_entries_replay_and_files_stay_encrypted_through_merges,
    a_tenant_shredded_while_the_node_was_down_is_not_replayed,
);
