//! The [`Store`]: per-tenant buffers, the write-ahead log in front of them,
//! and their flush into committed files.
//!
//! State is sharded by tenant: each tenant has its own buffers, its own
//! table manifests and its own commit lock, so one tenant's flush, commit or
//! retention pass never waits for another's. The shard map itself is locked
//! only to look a shard up. Locks are `parking_lot`'s: a panic while one is
//! held does not poison it for everyone else.
//!
//! What a tenant's table holds is what its [`Manifest`] lists: a commit puts
//! the Parquet object first, then commits the manifest version naming it;
//! readers take the manifest's file list, never a directory listing.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::{Clock, TenantId};
use object_store::path::Path as ObjPath;
use parking_lot::{Mutex, RwLock};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::encryption::decrypt::FileDecryptionProperties;

use crate::crypto::{self, DataKey, DataKeys, KeyError};
use crate::error::{Error, Result};
use crate::manifest::{Action, CommitError, FileEntry, Manifest, WalRef};
use crate::objects::{Storage, StorageConfig};
use crate::paths::{ParquetFilePath, PartitionHour};
use crate::wal::{RecoveryReport, Wal, WalConfig, WalEntry};
use crate::writer;
use crate::Signal;

/// When buffered data becomes a file.
#[derive(Clone, Debug)]
pub struct FlushConfig {
    /// A partition's buffer is flushed once it holds this many bytes (in memory).
    pub max_buffer_bytes: usize,
    /// ... or once its oldest batch has waited this long.
    pub max_age: Duration,
    /// Above this many buffered bytes in total, appends are refused as
    /// transient (the client retries) until flushing catches up. From half
    /// of it on, the largest partitions are flushed whatever their size and
    /// age, until a quarter of it is left ([`Store::flush_due`]).
    pub max_total_bytes: usize,
    /// A file removed from a table (retention, compaction) is deleted from
    /// storage this long after its removal, so queries that started before
    /// still read it. Longer than the longest query may run.
    pub removal_grace: Duration,
    /// When the write-ahead log holds more than this, the oldest buffers
    /// are committed early, so the log's oldest segments can be deleted
    /// (a long `max_age` must not let the log grow without bound).
    pub max_wal_bytes: u64,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            max_buffer_bytes: 64 << 20,
            max_age: Duration::from_secs(30),
            max_total_bytes: 1 << 30,
            removal_grace: Duration::from_secs(300),
            max_wal_bytes: 4 << 30,
        }
    }
}

/// An inclusive range of event time in nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    pub(crate) fn overlaps(&self, hour: PartitionHour) -> bool {
        hour.start_nanos() <= self.end && hour.end_nanos() > self.start
    }

    pub(crate) fn overlaps_file(&self, f: &FileEntry) -> bool {
        f.min_time <= self.end && f.max_time >= self.start
    }
}

/// A partition within a tenant's shard.
type PartKey = (Signal, PartitionHour);

/// One buffered batch and the WAL entry it came from (none for stores
/// without a WAL).
#[derive(Clone)]
struct Part {
    batch: RecordBatch,
    seq: Option<u64>,
    policy_version: Arc<str>,
}

#[derive(Default)]
struct Pending {
    parts: Vec<Part>,
    bytes: usize,
    rows: usize,
    /// Clock time the oldest batch arrived.
    first_at: i64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} rows, {} bytes)", self.rows, self.bytes)
    }
}

/// One tenant's buffers and locks.
#[derive(Debug, Default)]
struct Shard {
    pending: Mutex<BTreeMap<PartKey, Pending>>,
    /// Taken for writing while a commit moves rows from `pending` to a file
    /// (or retention removes an hour), and for reading while a [`Snapshot`]
    /// is taken, so a reader never sees a row twice or not at all.
    commit: RwLock<()>,
    /// One flusher at a time per tenant.
    flushing: Mutex<()>,
    /// One compactor at a time per tenant.
    compacting: Arc<Mutex<()>>,
    /// The manifests of the tenant's tables, loaded on first use.
    tables: Mutex<HashMap<Signal, Manifest>>,
    /// Bytes of the tenant's committed files, known once every table's
    /// manifest was loaded; kept up to date by commits and refreshes.
    committed_bytes: std::sync::OnceLock<AtomicU64>,
    /// When data for the tenant last arrived (or the shard was made), on
    /// the store's clock: idle shards are evicted ([`Store::evict_idle`]).
    last_write: std::sync::atomic::AtomicI64,
    /// Counts every look at the tenant's manifests, so eviction can tell
    /// that nothing changed between its two passes.
    accesses: AtomicU64,
}

/// What is kept of an evicted shard: per table, the start of its oldest
/// event hour (None: no files) and the manifest version that was read, so
/// retention passes need not bring the shard back to learn that nothing is
/// due (unless another node committed since).
type Evicted = [(Option<i64>, u64); Signal::ALL.len()];

/// What one flush pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub files: usize,
    pub rows: usize,
    pub bytes: u64,
}

/// Totals since start, for self-metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub files_committed: AtomicU64,
    pub rows_committed: AtomicU64,
    pub bytes_committed: AtomicU64,
    pub flush_errors: AtomicU64,
    /// Nanoseconds spent writing and publishing files, and how many.
    pub flush_nanos_total: AtomicU64,
    /// Partitions flushed early because the buffers neared their budget.
    pub pressure_flushes: AtomicU64,
    /// Flush rounds that committed the oldest buffers early because the
    /// write-ahead log was over `max_wal_bytes`.
    pub wal_pressure_flushes: AtomicU64,
}

/// A consistent view of one tenant's signal: every committed file in the
/// requested time range plus every batch still buffered. A row is in
/// exactly one of the two.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Committed Parquet files, with their object paths relative to the
    /// store root (see [`Store::object_store`]) and sizes.
    pub files: Vec<(ObjPath, u64)>,
    pub buffered: Vec<RecordBatch>,
}

/// What start-up recovered from the write-ahead log.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// What the WAL itself found (segments, entries, cut tails).
    pub wal: RecoveryReport,
    /// Entries put back into the buffers.
    pub entries_replayed: usize,
    /// Rows put back into the buffers.
    pub rows_replayed: usize,
    /// Entry parts found already committed (a crash between a commit and the
    /// deletion of its WAL segment), skipped.
    pub parts_already_committed: usize,
    /// Encrypted entries whose tenant was shredded since, dropped.
    pub entries_unreadable: usize,
    /// Entries of a tenant offboarded since they were logged, dropped.
    pub entries_offboarded: usize,
}

/// The WAL side of the store: the log, and for each outstanding entry the
/// number of its partition parts not yet in a committed file.
#[derive(Debug)]
struct Durability {
    wal: Wal,
    outstanding: Mutex<HashMap<u64, usize>>,
}

/// The per-tenant store, on local disk or object storage.
#[derive(Debug)]
pub struct Store {
    storage: Arc<Storage>,
    /// Tenants' data keys, when data is encrypted (or was).
    keys: Option<Arc<DataKeys>>,
    /// This node's name, recorded in the files it commits.
    node: String,
    config: FlushConfig,
    clock: Arc<dyn Clock>,
    shards: RwLock<HashMap<TenantId, Arc<Shard>>>,
    /// Tenants whose idle shard was evicted, with their tables' oldest
    /// hours. Locked after `shards` where both are.
    evicted: RwLock<HashMap<TenantId, Evicted>>,
    buffered: AtomicUsize,
    durability: Option<Durability>,
    stats: StoreStats,
    /// Waits for a turn at the CPU for a tenant's flush or merge, when the
    /// server shares the CPU fairly ([`Store::share_cpu_with`]).
    cpu_turns: std::sync::OnceLock<SharedTurns>,
}

/// Gives a turn at the CPU for work of a tenant's; the turn is held until
/// the returned value is dropped.
pub type CpuTurns = Arc<dyn Fn(&TenantId) -> Box<dyn std::any::Any> + Send + Sync>;

struct SharedTurns(CpuTurns);

impl std::fmt::Debug for SharedTurns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTurns")
    }
}

impl Store {
    /// Opens (creating if needed) a store in the local directory `root`
    /// without a write-ahead log. Buffered data is lost in a crash: for
    /// tools and tests; the server uses [`Store::open_storage`].
    pub fn open(
        root: impl Into<PathBuf>,
        config: FlushConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let storage = StorageConfig::Local { root: root.into() };
        Ok(Self::open_storage(&storage, "local", None, config, clock)?.0)
    }

    /// [`Store::open_storage`] on local disk, with a write-ahead log.
    pub fn open_durable(
        root: impl Into<PathBuf>,
        wal: WalConfig,
        config: FlushConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, ReplayReport)> {
        let storage = StorageConfig::Local { root: root.into() };
        Self::open_storage(&storage, "local", Some(wal), config, clock)
    }

    /// Opens the store on `storage` as node `node`, with its write-ahead
    /// log when given one, and replays the log into the buffers: every
    /// acknowledged entry not yet in a committed file is buffered again.
    /// Replay is idempotent: each committed file's manifest entry names the
    /// WAL entries it holds, and a part already in a file is skipped, so a
    /// crash during replay, or between a commit and the deletion of its WAL
    /// segment, neither loses nor duplicates rows.
    pub fn open_storage(
        storage: &StorageConfig,
        node: &str,
        wal: Option<WalConfig>,
        config: FlushConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, ReplayReport)> {
        Self::open_with_keys(storage, node, wal, config, clock, None)
    }

    /// [`Store::open_storage`] with tenants' data keys: files and log
    /// entries are encrypted under them when they encrypt, and encrypted
    /// ones can be read.
    pub fn open_with_keys(
        storage: &StorageConfig,
        node: &str,
        wal: Option<WalConfig>,
        config: FlushConfig,
        clock: Arc<dyn Clock>,
        keys: Option<Arc<DataKeys>>,
    ) -> Result<(Self, ReplayReport)> {
        let mut store = Self {
            storage: Arc::new(Storage::open(storage)?),
            keys,
            node: node.to_string(),
            config,
            clock,
            shards: RwLock::default(),
            evicted: RwLock::default(),
            buffered: AtomicUsize::new(0),
            durability: None,
            stats: StoreStats::default(),
            cpu_turns: std::sync::OnceLock::new(),
        };
        let adopted = store.adopt_files_without_manifest()?;
        if adopted > 0 {
            tracing::warn!(
                adopted,
                "files of a store from before table manifests adopted into manifests"
            );
        }
        let mut report = ReplayReport::default();
        if let Some(wal) = wal {
            let (wal, entries, recovery) = Wal::open(wal).map_err(Error::Wal)?;
            store.durability = Some(Durability {
                wal,
                outstanding: Mutex::default(),
            });
            report.wal = recovery;
            store.replay(entries, &mut report)?;
        }
        Ok((store, report))
    }

    fn replay(&self, entries: Vec<WalEntry>, report: &mut ReplayReport) -> Result<()> {
        let Some(d) = &self.durability else {
            return Ok(());
        };
        let wal_id = d.wal.id().to_string();
        // (hour, seq) of this WAL's entries that each touched table holds
        let mut committed: HashMap<(TenantId, Signal), HashSet<(i64, u64)>> = HashMap::new();
        let offboarded = if entries.is_empty() {
            crate::erase::Offboarded::default()
        } else {
            crate::erase::Offboarded::load(&self.storage, &wal_id)?
        };
        for entry in entries {
            if offboarded
                .before_seq
                .get(&entry.tenant)
                .is_some_and(|b| entry.seq < *b)
            {
                report.entries_offboarded += 1;
                d.wal.complete(entry.seq);
                continue;
            }
            let key = match (entry.key_id(), &self.keys) {
                (None, _) => None,
                (Some(id), Some(keys)) => match keys.by_id(&self.storage, &entry.tenant, id) {
                    Ok(k) => Some(k),
                    Err(e @ (KeyError::Shredded { .. } | KeyError::NoDataKey { .. })) => {
                        // shredded: unreadable for good, and not to be kept
                        tracing::warn!(tenant = %entry.tenant, seq = entry.seq, error = %e, "write-ahead log entry cannot be decrypted; dropped");
                        report.entries_unreadable += 1;
                        d.wal.complete(entry.seq);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
                (Some(_), None) => {
                    return Err(Error::Key(KeyError::Invalid(format!(
                        "the write-ahead log holds encrypted entries (tenant {}, seq {}) but no keyring is configured",
                        entry.tenant, entry.seq
                    ))))
                }
            };
            let batch = entry.open(key.as_deref()).map_err(|reason| {
                Error::Wal(crate::wal::WalError::Invalid(format!(
                    "entry {} of tenant {}: {reason}",
                    entry.seq, entry.tenant
                )))
            })?;
            let Some(batch) = offboarded.keep(&entry.tenant, entry.seq, batch)? else {
                report.entries_offboarded += 1;
                d.wal.complete(entry.seq);
                continue;
            };
            let parts = split_by_hour(&entry.tenant, &batch)?;
            let table = (entry.tenant.clone(), entry.signal);
            if !committed.contains_key(&table) {
                let parts = self.with_manifest(&entry.tenant, entry.signal, |m| {
                    Ok(m.state().wal_parts(&wal_id))
                })?;
                committed.insert(table.clone(), parts);
            }
            let mut kept = Vec::new();
            for (hour, batch) in parts {
                if committed[&table].contains(&(hour.start_nanos(), entry.seq)) {
                    report.parts_already_committed += 1;
                } else {
                    kept.push((hour, batch));
                }
            }
            if kept.is_empty() {
                d.wal.complete(entry.seq);
                continue;
            }
            report.entries_replayed += 1;
            report.rows_replayed += kept.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
            d.outstanding.lock().insert(entry.seq, kept.len());
            let version: Arc<str> = Arc::from(entry.policy_version.as_str());
            self.buffer(&entry.tenant, entry.signal, kept, Some(entry.seq), version);
        }
        if report.entries_replayed > 0 || !report.wal.truncated.is_empty() {
            tracing::info!(
                entries = report.entries_replayed,
                rows = report.rows_replayed,
                already_committed = report.parts_already_committed,
                cut_tails = report.wal.truncated.len(),
                "write-ahead log replayed"
            );
        }
        Ok(())
    }

    /// Once per store: a store written before table manifests holds Parquet
    /// files no manifest names. Each table without a manifest adopts its
    /// files (their rows from the footer, their write-ahead-log entries
    /// from the footer key older versions wrote), then a marker object
    /// records that the store is in the manifest format. Returns how many
    /// files were adopted.
    fn adopt_files_without_manifest(&self) -> Result<usize> {
        const MARKER: &str = "_bulkhead_store.json";
        let marker = ObjPath::from(MARKER);
        if self.storage.get(&marker)?.is_some() {
            return Ok(0);
        }
        let mut by_table: BTreeMap<(TenantId, Signal), Vec<object_store::ObjectMeta>> =
            BTreeMap::new();
        for tenant in self.stored_tenants()? {
            for signal in Signal::ALL {
                let listed = self
                    .storage
                    .list(&crate::paths::table_prefix(&tenant, signal))?;
                let files: Vec<_> = listed
                    .into_iter()
                    .filter(|o| o.location.as_ref().ends_with(".parquet"))
                    .collect();
                if !files.is_empty() {
                    by_table.insert((tenant.clone(), signal), files);
                }
            }
        }
        let mut adopted = 0;
        let now = self.clock.now_nanos();
        for ((tenant, signal), files) in by_table {
            let empty = self.with_manifest(&tenant, signal, |m| Ok(m.state().version == 0))?;
            if !empty {
                continue;
            }
            let mut actions = Vec::new();
            for o in files {
                let Some(entry) = self.entry_from_footer(&o, now)? else {
                    continue;
                };
                actions.push(Action::Add(entry));
            }
            adopted += actions.len();
            let shard = self.shard(&tenant);
            let _write = shard.commit.write();
            self.with_manifest(&tenant, signal, |m| {
                m.commit(&self.storage, &self.node, now, |state| {
                    // another node adopting at once: what it added stays once
                    Ok(actions
                        .iter()
                        .filter(|a| match a {
                            Action::Add(f) => !state.files.contains_key(&f.path),
                            Action::Remove { .. } => false,
                        })
                        .cloned()
                        .collect())
                })
                .map_err(commit_error)?;
                Ok(())
            })?;
        }
        self.storage
            .put(&marker, bytes::Bytes::from_static(br#"{"format":2}"#))?;
        Ok(adopted)
    }

    /// A manifest entry for a file written before manifests, from its path
    /// and footer; none for a file whose path is not a partition file.
    fn entry_from_footer(
        &self,
        o: &object_store::ObjectMeta,
        now: i64,
    ) -> Result<Option<FileEntry>> {
        let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_string()).collect();
        let [.., date, hour, _] = parts.as_slice() else {
            return Ok(None);
        };
        let Some(hour) = PartitionHour::parse(date, hour) else {
            return Ok(None);
        };
        let Some(bytes) = self.storage.get(&o.location)? else {
            return Ok(None);
        };
        let Some(tenant) = parts
            .first()
            .and_then(|p| p.strip_prefix("tenant="))
            .and_then(|t| TenantId::new(t).ok())
        else {
            return Ok(None);
        };
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_decryption_properties(self.decryption(&tenant)?)
            .parse_and_finish(&bytes)
            .map_err(|e| Error::Decode {
                path: o.location.to_string(),
                source: e,
            })?;
        let mut wals = Vec::new();
        for kv in meta
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
        {
            if kv.key != "bulkhead.wal" {
                continue;
            }
            let Some(v) = kv
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            else {
                continue;
            };
            let seqs: Vec<[u64; 2]> = v["seqs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some([r[0].as_u64()?, r[1].as_u64()?]))
                .collect();
            if let Some(id) = v["wal"].as_str() {
                wals.push(WalRef {
                    id: id.to_string(),
                    seqs,
                });
            }
        }
        Ok(Some(FileEntry {
            path: o.location.to_string(),
            size: o.size,
            rows: u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0),
            hour: hour.start_nanos(),
            // the hour's bounds: the footer's statistics are not needed to be safe
            min_time: hour.start_nanos(),
            max_time: hour.end_nanos().saturating_sub(1),
            policy_versions: Vec::new(),
            wals,
            node: self.node.clone(),
            added_at: now,
            level: 0,
        }))
    }

    /// Where the store keeps its objects, for logs.
    pub fn location(&self) -> &str {
        self.storage.describe()
    }

    /// The local directory, when the store is on local disk.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.storage.local_root()
    }

    /// The object store the committed files are read from; the paths of a
    /// [`Snapshot`] are relative to it. Registered with the query engine
    /// under [`crate::objects::OBJECT_STORE_URL`].
    pub fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.storage.object_store()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Reads a committed object (a path from a [`Snapshot`] or
    /// [`Store::files`]); none when it is gone.
    pub fn read_object(&self, path: &ObjPath) -> Result<Option<bytes::Bytes>> {
        self.storage.get(path)
    }

    /// The storage itself, for other shared state kept beside the tenant
    /// trees (the anomaly detectors' exchange, under `_anomaly/`).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The tenants' data keys, when the store has a keyring.
    pub fn keys(&self) -> Option<&Arc<DataKeys>> {
        self.keys.as_ref()
    }

    /// The key new data of `tenant` is encrypted with now, if data is
    /// encrypted; fails if the tenant was shredded.
    pub(crate) fn writing_key(&self, tenant: &TenantId) -> Result<Option<Arc<DataKey>>> {
        match &self.keys {
            Some(k) if k.encrypts() => Ok(Some(k.for_writing(
                &self.storage,
                tenant,
                self.clock.now_nanos(),
            )?)),
            Some(k) => {
                k.check(tenant)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Properties that decrypt `tenant`'s files (none without a keyring);
    /// fails if the tenant was shredded.
    pub fn decryption(&self, tenant: &TenantId) -> Result<Option<Arc<FileDecryptionProperties>>> {
        match &self.keys {
            Some(k) => Ok(Some(crypto::decryption_properties(
                k.clone(),
                self.storage.clone(),
                tenant,
            )?)),
            None => Ok(None),
        }
    }

    /// Reader options for `tenant`'s files.
    pub(crate) fn reader_options(&self, tenant: &TenantId) -> Result<ArrowReaderOptions> {
        let mut o = ArrowReaderOptions::new();
        if let Some(d) = self.decryption(tenant)? {
            o = o.with_file_decryption_properties(d);
        }
        Ok(o)
    }

    /// Drops everything buffered of `tenant` (shredded: it may not be
    /// read or written any more); its log entries are released.
    /// Returns the rows dropped.
    fn discard_buffered(&self, tenant: &TenantId, shard: &Shard) -> usize {
        let _write = shard.commit.write();
        let mut pending = shard.pending.lock();
        let mut seqs = Vec::new();
        let mut rows = 0;
        for (_, p) in std::mem::take(&mut *pending) {
            self.buffered.fetch_sub(p.bytes, Ordering::Relaxed);
            rows += p.rows;
            seqs.extend(p.parts.iter().filter_map(|part| part.seq));
        }
        drop(pending);
        if !seqs.is_empty() {
            tracing::warn!(%tenant, entries = seqs.len(), "buffered data of a shredded or offboarded tenant dropped");
        }
        self.release(&seqs);
        rows
    }

    /// Shreds `tenant` (see [`DataKeys::shred`]) and drops what this node
    /// buffers of it. Returns the data keys deleted.
    pub fn shred(&self, tenant: &TenantId) -> Result<usize> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            Error::Key(KeyError::Invalid(
                "this store has no keyring: encryption is not configured".into(),
            ))
        })?;
        let at = chrono::DateTime::from_timestamp_nanos(self.clock.now_nanos()).to_rfc3339();
        let deleted = keys.shred(&self.storage, tenant, &at)?;
        if let Some(shard) = self.existing_shard(tenant) {
            self.discard_buffered(tenant, &shard);
        }
        Ok(deleted)
    }

    /// When `tenant`'s keys were shredded (it was offboarded), if they were:
    /// data written under its name could never be read, so the name is
    /// not to be used again.
    pub fn shredded_at(&self, tenant: &TenantId) -> Result<Option<String>> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        match keys.check(tenant) {
            Ok(()) => Ok(None),
            Err(KeyError::Shredded { at, .. }) => Ok(Some(at)),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops what this node holds of a tenant another process shredded:
    /// its keys in memory and its buffered data.
    pub fn forget_shredded(&self, tenant: &TenantId) {
        if let Some(keys) = &self.keys {
            keys.forget(tenant);
        }
        if let Some(shard) = self.existing_shard(tenant) {
            self.discard_buffered(tenant, &shard);
        }
    }

    /// Drops everything this node holds of `tenant`: its buffered rows
    /// (their log entries released), its loaded manifests and its keys in
    /// memory (offboarding).
    /// Returns the buffered rows dropped.
    pub fn forget_tenant(&self, tenant: &TenantId) -> usize {
        if let Some(keys) = &self.keys {
            keys.forget(tenant);
        }
        let rows = self
            .existing_shard(tenant)
            .map_or(0, |shard| self.discard_buffered(tenant, &shard));
        self.shards.write().remove(tenant);
        self.evicted.write().remove(tenant);
        rows
    }

    /// Fails if `tenant` was shredded.
    pub(crate) fn check_tenant_readable(&self, tenant: &TenantId) -> Result<()> {
        let shard = self.shard(tenant);
        self.check_not_shredded(tenant, &shard)
    }

    /// Flushes `tenant`'s buffered partitions for which `due(signal, hour)`
    /// holds.
    pub(crate) fn flush_tenant_where(
        &self,
        tenant: &TenantId,
        due: impl Fn(Signal, PartitionHour) -> bool,
    ) -> Result<FlushStats> {
        let shard = self.shard(tenant);
        let mut stats = FlushStats::default();
        let result = self.flush_shard(
            tenant,
            &shard,
            &|_, key: &PartKey, _| due(key.0, key.1),
            &mut stats,
        );
        self.count_flushed(&stats);
        result.map(|()| stats)
    }

    /// Rotates `tenant`'s key-encryption key (see [`DataKeys::rotate`]).
    pub fn rotate_key(&self, tenant: &TenantId) -> Result<crypto::Rotation> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            Error::Key(KeyError::Invalid(
                "this store has no keyring: encryption is not configured".into(),
            ))
        })?;
        Ok(keys.rotate(&self.storage, tenant)?)
    }

    /// Fails if `tenant` was shredded, dropping what is still buffered of it.
    fn check_not_shredded(&self, tenant: &TenantId, shard: &Shard) -> Result<()> {
        if let Some(keys) = &self.keys {
            if let Err(e) = keys.check(tenant) {
                if matches!(e, KeyError::Shredded { .. }) {
                    self.discard_buffered(tenant, shard);
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The tenants this node holds state for.
    pub(crate) fn known_tenants(&self) -> Vec<TenantId> {
        self.shards.read().keys().cloned().collect()
    }

    /// Runs `f` while no flush and no merge of `tenant` runs on this node.
    pub(crate) fn with_tenant_still<T>(&self, tenant: &TenantId, f: impl FnOnce() -> T) -> T {
        let shard = self.shard(tenant);
        let _merges = shard.compacting.lock();
        let _flushes = shard.flushing.lock();
        f()
    }

    pub(crate) fn compaction_lock(
        &self,
        tenant: &TenantId,
    ) -> parking_lot::lock_api::ArcMutexGuard<parking_lot::RawMutex, ()> {
        self.shard(tenant).compacting.lock_arc()
    }

    /// Commits the actions `build` makes from the fresh state of `tenant`'s
    /// `signal` table, under the tenant's write lock.
    pub(crate) fn commit_actions(
        &self,
        tenant: &TenantId,
        signal: Signal,
        now: i64,
        build: impl FnMut(&crate::manifest::TableState) -> Result<Vec<Action>, CommitError>,
    ) -> Result<(), CommitError> {
        let shard = self.shard(tenant);
        let _write = shard.commit.write();
        let mut build = Some(build);
        let result = self.with_manifest(tenant, signal, |m| {
            let Some(build) = build.take() else {
                return Ok(Err(CommitError::Conflict("committed twice".into())));
            };
            Ok(m.commit(&self.storage, &self.node, now, build).map(|_| ()))
        });
        self.update_committed_bytes(&shard);
        result?
    }

    /// Runs `f` on the loaded manifest of `tenant`'s `signal` table (loading
    /// it first if needed).
    fn with_manifest<T>(
        &self,
        tenant: &TenantId,
        signal: Signal,
        f: impl FnOnce(&mut Manifest) -> Result<T>,
    ) -> Result<T> {
        let shard = self.shard(tenant);
        let mut tables = shard.tables.lock();
        shard.accesses.fetch_add(1, Ordering::Relaxed);
        let m = match tables.entry(signal) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Manifest::load(&self.storage, tenant, signal)?)
            }
        };
        f(m)
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The write-ahead log, when the store has one.
    pub fn wal(&self) -> Option<&Wal> {
        self.durability.as_ref().map(|d| &d.wal)
    }

    /// Bytes currently buffered across all tenants.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    fn shard(&self, tenant: &TenantId) -> Arc<Shard> {
        if let Some(s) = self.shards.read().get(tenant) {
            return s.clone();
        }
        let mut shards = self.shards.write();
        shards
            .entry(tenant.clone())
            .or_insert_with(|| {
                // back in memory: its manifests are the truth again
                self.evicted.write().remove(tenant);
                Arc::new(Shard {
                    last_write: self.clock.now_nanos().into(),
                    ..Shard::default()
                })
            })
            .clone()
    }

    /// Drops from memory the shards of tenants that sent nothing for
    /// `idle`, hold no buffered rows, and have nothing left for compaction
    /// (under `compaction`) or for the deletion of removed files: their
    /// manifests and locks go, and come back from storage on the tenant's
    /// next request, query or due retention. A shard anyone holds (an
    /// append, a flush, a snapshot, a compaction) is never evicted: it is
    /// looked up only under the shard map's lock, which eviction holds for
    /// writing, so a count of one reference means nobody else has it or
    /// can get it. Returns how many were evicted.
    pub fn evict_idle(
        &self,
        idle: Duration,
        compaction: &crate::compaction::CompactionConfig,
    ) -> usize {
        let now = self.clock.now_nanos();
        let idle = i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX);
        let quiet = |shard: &Shard| {
            now.saturating_sub(shard.last_write.load(Ordering::Relaxed)) >= idle
                && shard.pending.try_lock().is_some_and(|p| p.is_empty())
        };
        // First, under the read lock (lookups go on), the shards with
        // nothing left, and what is kept of each...
        let mut candidates = Vec::new();
        for (tenant, shard) in self.shards.read().iter() {
            if !quiet(shard) {
                continue;
            }
            let accesses = shard.accesses.load(Ordering::Relaxed);
            let Some(tables) = shard.tables.try_lock() else {
                continue;
            };
            let mut kept: Evicted = [(None, 0); Signal::ALL.len()];
            let settled = Signal::ALL.iter().enumerate().all(|(i, signal)| {
                // a table not loaded since start has not been looked at by
                // compaction yet: kept until it has
                let Some(m) = tables.get(signal) else {
                    return false;
                };
                let state = m.state();
                kept[i] = (state.files.values().map(|f| f.hour).min(), state.version);
                state.removed.is_empty()
                    && crate::compaction::nothing_left(state.files.values(), compaction)
            });
            if settled {
                candidates.push((tenant.clone(), kept, accesses));
            }
        }
        if candidates.is_empty() {
            return 0;
        }
        // ... then, under the write lock, those still untouched and held by
        // nobody but the map
        let mut shards = self.shards.write();
        let mut evicted = self.evicted.write();
        let mut n = 0;
        for (tenant, kept, accesses) in candidates {
            let Some(shard) = shards.get(&tenant) else {
                continue;
            };
            if Arc::strong_count(shard) == 1
                && Arc::strong_count(&shard.compacting) == 1
                && shard.accesses.load(Ordering::Relaxed) == accesses
                && quiet(shard)
            {
                shards.remove(&tenant);
                evicted.insert(tenant, kept);
                n += 1;
            }
        }
        n
    }

    /// Flushes and merges take their turn at the CPU from `turns` (the
    /// ingest pipeline's fair gate), with the tenant whose data they are,
    /// instead of competing with every tenant's requests outside it.
    pub fn share_cpu_with(&self, turns: CpuTurns) {
        let _ = self.cpu_turns.set(SharedTurns(turns));
    }

    /// A turn at the CPU for `tenant`'s work (nothing when not shared).
    pub(crate) fn cpu_turn(&self, tenant: &TenantId) -> Option<Box<dyn std::any::Any>> {
        self.cpu_turns.get().map(|t| (t.0)(tenant))
    }

    /// Tenants with a shard in memory, and tenants evicted.
    pub fn shards_in_memory(&self) -> (usize, usize) {
        (self.shards.read().len(), self.evicted.read().len())
    }

    fn existing_shard(&self, tenant: &TenantId) -> Option<Arc<Shard>> {
        self.shards.read().get(tenant).cloned()
    }

    fn all_shards(&self) -> Vec<(TenantId, Arc<Shard>)> {
        self.shards
            .read()
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect()
    }

    /// Makes a batch of `signal` for `tenant` durable (in the write-ahead
    /// log, fsynced, when the store has one) and buffers it, split by event
    /// hour. Returns once the batch is durable; true when some partition is
    /// now due for a flush by size. Blocking: call it off the async runtime.
    pub fn append(
        &self,
        tenant: &TenantId,
        signal: Signal,
        policy_version: &str,
        batch: RecordBatch,
    ) -> Result<bool> {
        self.append_then(tenant, signal, policy_version, batch, || {})
    }

    /// [`Store::append`], calling `encoded` once the CPU work is done (the
    /// batch split by hour and encoded for the log), before the wait for
    /// the log's fsync; it is called whatever the outcome.
    pub fn append_then(
        &self,
        tenant: &TenantId,
        signal: Signal,
        policy_version: &str,
        batch: RecordBatch,
        encoded: impl FnOnce(),
    ) -> Result<bool> {
        if batch.num_rows() == 0 {
            encoded();
            return Ok(false);
        }
        let mut encoded = Some(encoded);
        let mut done = || {
            if let Some(f) = encoded.take() {
                f()
            }
        };
        let parts = split_by_hour(tenant, &batch);
        let total = self.buffered.load(Ordering::Relaxed);
        let parts = match parts {
            Ok(p) if total < self.config.max_total_bytes => p,
            Ok(_) => {
                done();
                return Err(Error::BufferFull {
                    buffered: total,
                    limit: self.config.max_total_bytes,
                });
            }
            Err(e) => {
                done();
                return Err(e);
            }
        };
        let key = match self.writing_key(tenant) {
            Ok(k) => k,
            Err(e) => {
                done();
                return Err(e);
            }
        };
        let seq = match &self.durability {
            Some(d) => {
                let seq = d
                    .wal
                    .append_then(
                        tenant,
                        signal,
                        policy_version,
                        &batch,
                        key.as_deref(),
                        &mut done,
                    )
                    .map_err(Error::Wal)?;
                d.outstanding.lock().insert(seq, parts.len());
                Some(seq)
            }
            None => {
                done();
                None
            }
        };
        Ok(self.buffer(tenant, signal, parts, seq, Arc::from(policy_version)))
    }

    fn buffer(
        &self,
        tenant: &TenantId,
        signal: Signal,
        parts: Vec<(PartitionHour, RecordBatch)>,
        seq: Option<u64>,
        policy_version: Arc<str>,
    ) -> bool {
        let now = self.clock.now_nanos();
        let shard = self.shard(tenant);
        shard.last_write.store(now, Ordering::Relaxed);
        let mut pending = shard.pending.lock();
        let mut due = false;
        for (hour, batch) in parts {
            let p = pending.entry((signal, hour)).or_default();
            if p.parts.is_empty() {
                p.first_at = now;
            }
            let bytes = batch.get_array_memory_size();
            p.bytes += bytes;
            p.rows += batch.num_rows();
            p.parts.push(Part {
                batch,
                seq,
                policy_version: policy_version.clone(),
            });
            let total = self.buffered.fetch_add(bytes, Ordering::Relaxed) + bytes;
            due |= p.bytes >= self.config.max_buffer_bytes || total >= self.pressure_at();
        }
        due
    }

    /// Buffered bytes from which the largest partitions are flushed early.
    fn pressure_at(&self) -> usize {
        self.config.max_total_bytes / 2
    }

    /// Flushes every partition that is due by size or age; and, when the
    /// buffers together hold half of `max_total_bytes` or more, the largest
    /// partitions of any tenant until a quarter is left. Many small tenants
    /// thus make files as their data grows, not one per tenant and age
    /// bound, and the memory budget is kept before appends are refused.
    pub fn flush_due(&self) -> Result<FlushStats> {
        let now = self.clock.now_nanos();
        let max_age = i64::try_from(self.config.max_age.as_nanos()).unwrap_or(i64::MAX);
        let max_bytes = self.config.max_buffer_bytes;
        let largest = self.largest_under_pressure();
        let started_by = self.wal_pressure_cutoff(now);
        self.flush_where(|tenant, key, p| {
            p.bytes >= max_bytes
                || now.saturating_sub(p.first_at) >= max_age
                || largest.contains(&(tenant.clone(), *key))
                || started_by.is_some_and(|t| p.first_at <= t)
        })
    }

    /// When the write-ahead log holds more than `max_wal_bytes`: a clock
    /// time, halfway from the oldest buffer's start to now, by which every
    /// buffer started is to be committed. That commits every log entry
    /// appended before it, so the segments written before it can go; each
    /// round halves the oldest buffered age until the log fits.
    fn wal_pressure_cutoff(&self, now: i64) -> Option<i64> {
        let d = self.durability.as_ref()?;
        if d.wal.stats().bytes_on_disk.load(Ordering::Relaxed) <= self.config.max_wal_bytes {
            return None;
        }
        let oldest = self
            .all_shards()
            .iter()
            .filter_map(|(_, s)| {
                s.pending
                    .lock()
                    .values()
                    .filter(|p| !p.parts.is_empty())
                    .map(|p| p.first_at)
                    .min()
            })
            .min()?;
        self.stats
            .wal_pressure_flushes
            .fetch_add(1, Ordering::Relaxed);
        Some(oldest.saturating_add(now.saturating_sub(oldest) / 2))
    }

    /// Under memory pressure, the largest partitions whose flushing brings
    /// the buffered total down to a quarter of the budget.
    fn largest_under_pressure(&self) -> std::collections::HashSet<(TenantId, PartKey)> {
        let mut total = self.buffered.load(Ordering::Relaxed);
        let mut chosen = std::collections::HashSet::new();
        if total < self.pressure_at() {
            return chosen;
        }
        let mut all: Vec<(usize, TenantId, PartKey)> = Vec::new();
        for (tenant, shard) in self.all_shards() {
            let pending = shard.pending.lock();
            all.extend(
                pending
                    .iter()
                    .filter(|(_, p)| !p.parts.is_empty())
                    .map(|(k, p)| (p.bytes, tenant.clone(), *k)),
            );
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.0));
        let target = self.config.max_total_bytes / 4;
        for (bytes, tenant, key) in all {
            if total <= target {
                break;
            }
            total = total.saturating_sub(bytes);
            chosen.insert((tenant, key));
        }
        self.stats
            .pressure_flushes
            .fetch_add(chosen.len() as u64, Ordering::Relaxed);
        chosen
    }

    /// Flushes everything buffered (shutdown).
    pub fn flush_all(&self) -> Result<FlushStats> {
        self.flush_where(|_, _, _| true)
    }

    /// Flushes each tenant's due partitions; one tenant's failure does not
    /// stop the others (the first error is returned after all were tried).
    fn flush_where(
        &self,
        due: impl Fn(&TenantId, &PartKey, &Pending) -> bool,
    ) -> Result<FlushStats> {
        let mut stats = FlushStats::default();
        let mut first_error = None;
        for (tenant, shard) in self.all_shards() {
            if let Err(e) = self.flush_shard(&tenant, &shard, &due, &mut stats) {
                first_error.get_or_insert(e);
            }
        }
        self.count_flushed(&stats);
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    fn count_flushed(&self, stats: &FlushStats) {
        self.stats
            .files_committed
            .fetch_add(stats.files as u64, Ordering::Relaxed);
        self.stats
            .rows_committed
            .fetch_add(stats.rows as u64, Ordering::Relaxed);
        self.stats
            .bytes_committed
            .fetch_add(stats.bytes, Ordering::Relaxed);
    }

    fn flush_shard(
        &self,
        tenant: &TenantId,
        shard: &Shard,
        due: &impl Fn(&TenantId, &PartKey, &Pending) -> bool,
        stats: &mut FlushStats,
    ) -> Result<()> {
        let _one_flusher = shard.flushing.lock();
        if let Err(e) = self.check_not_shredded(tenant, shard) {
            return match e {
                Error::Key(KeyError::Shredded { .. }) => Ok(()),
                e => Err(e),
            };
        }
        let work: Vec<(PartKey, Vec<Part>)> = {
            let pending = shard.pending.lock();
            pending
                .iter()
                .filter(|(k, p)| !p.parts.is_empty() && due(tenant, k, p))
                .map(|(k, p)| (*k, p.parts.clone()))
                .collect()
        };
        let mut first_error = None;
        for (key, parts) in work {
            let started = std::time::Instant::now();
            match self.commit_partition(tenant, shard, key, &parts) {
                Ok(bytes) => {
                    stats.files += 1;
                    stats.rows += parts.iter().map(|p| p.batch.num_rows()).sum::<usize>();
                    stats.bytes += bytes;
                    self.stats.flush_nanos_total.fetch_add(
                        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
                Err(e) => {
                    self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%tenant, signal = %key.0, error = %e, "flush failed; data stays buffered");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits the given (leading) parts of one partition and removes them
    /// from the buffer; parts appended meanwhile stay buffered. Then the WAL
    /// entries whose every part is committed are released.
    fn commit_partition(
        &self,
        tenant: &TenantId,
        shard: &Shard,
        key: PartKey,
        parts: &[Part],
    ) -> Result<u64> {
        let (signal, hour) = key;
        let path = ParquetFilePath::new(tenant, signal, hour, uuid::Uuid::now_v7());
        // the tenant is in the path, not in the file (see `schema::file_schema`)
        let batches = parts
            .iter()
            .map(|p| crate::schema::without_tenant(&p.batch))
            .collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
        let schema = batches[0].schema();
        let seqs: Vec<u64> = parts.iter().filter_map(|p| p.seq).collect();
        let bytes = {
            // encoding is CPU work: a turn of the tenant's (the put is not)
            let key = self.writing_key(tenant)?;
            let _turn = self.cpu_turn(tenant);
            writer::encode_parquet(
                path.path().as_ref(),
                &schema,
                &batches,
                writer::encrypted(writer::flush_properties(), key.as_deref())?,
            )?
        };
        let size = bytes.len() as u64;
        let (min_time, max_time) = time_bounds(&batches);
        let versions: BTreeSet<&str> = parts.iter().map(|p| &*p.policy_version).collect();
        let entry = FileEntry {
            path: path.path().to_string(),
            size,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
            hour: hour.start_nanos(),
            min_time,
            max_time,
            policy_versions: versions.into_iter().map(str::to_string).collect(),
            wals: match (&self.durability, seqs.is_empty()) {
                (Some(d), false) => vec![WalRef::new(d.wal.id(), &seqs)],
                _ => Vec::new(),
            },
            node: self.node.clone(),
            added_at: self.clock.now_nanos(),
            level: 0,
        };
        // The object first: until the manifest names it, no reader sees it
        // (a crash here leaves an orphan for the sweep, never a half table).
        self.storage.put(path.path(), bytes)?;
        {
            // The manifest commit and the removal from the buffer happen under
            // the tenant's write lock: a reader sees the rows in exactly one
            // place.
            let _write = shard.commit.write();
            let committed = self.with_manifest(tenant, signal, |m| {
                m.commit(&self.storage, &self.node, entry.added_at, |_| {
                    Ok(vec![Action::Add(entry.clone())])
                })
                .map_err(commit_error)
            });
            if let Err(e) = committed {
                // not in the table: the object is an orphan now; remove it
                let _ = self.storage.delete(path.path());
                return Err(e);
            }
            let mut pending = shard.pending.lock();
            if let Some(p) = pending.get_mut(&key) {
                let removed: Vec<Part> = p.parts.drain(..parts.len()).collect();
                let bytes: usize = removed
                    .iter()
                    .map(|r| r.batch.get_array_memory_size())
                    .sum();
                p.bytes -= bytes;
                p.rows -= removed.iter().map(|r| r.batch.num_rows()).sum::<usize>();
                self.buffered.fetch_sub(bytes, Ordering::Relaxed);
                if p.parts.is_empty() {
                    pending.remove(&key);
                } else {
                    p.first_at = self.clock.now_nanos();
                }
            }
            drop(pending);
            self.update_committed_bytes(shard);
            tracing::debug!(%tenant, %signal, path = %path.path(), size, "committed");
        }
        self.release(&seqs);
        Ok(size)
    }

    /// One part of each of `seqs` left the buffer (committed or deleted):
    /// entries with no part left are released from the WAL.
    fn release(&self, seqs: &[u64]) {
        let Some(d) = &self.durability else {
            return;
        };
        let mut done = Vec::new();
        {
            let mut outstanding = d.outstanding.lock();
            for seq in seqs {
                if let Some(n) = outstanding.get_mut(seq) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        outstanding.remove(seq);
                        done.push(*seq);
                    }
                }
            }
        }
        for seq in done {
            d.wal.complete(seq);
        }
    }

    /// Removes `tenant`'s `signal` data of every event hour that ended at or
    /// before `cutoff_nanos` from the table: committed files (deleted from
    /// storage after the removal grace period) and still-buffered rows
    /// alike. Returns the number of files removed.
    pub fn delete_before(
        &self,
        tenant: &TenantId,
        signal: Signal,
        cutoff_nanos: i64,
    ) -> Result<usize> {
        if self.existing_shard(tenant).is_none() {
            // an evicted tenant whose oldest hour is not due stays evicted,
            // unless another node committed to the table since
            let kept = self.evicted.read().get(tenant).map(|kept| {
                let i = Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0);
                kept[i]
            });
            if let Some((oldest, version)) = kept {
                let not_due =
                    oldest.is_none_or(|h| PartitionHour::containing(h).end_nanos() > cutoff_nanos);
                if not_due && !Manifest::has_newer(&self.storage, tenant, signal, version)? {
                    return Ok(0);
                }
            }
        }
        let shard = self.shard(tenant);
        let mut released = Vec::new();
        let mut removed = 0;
        {
            // under the tenant's write lock: a reader sees the hour whole or
            // not at all
            let _write = shard.commit.write();
            shard.pending.lock().retain(|(s, hour), p| {
                let drop = *s == signal && hour.end_nanos() <= cutoff_nanos;
                if drop {
                    self.buffered.fetch_sub(p.bytes, Ordering::Relaxed);
                    released.extend(p.parts.iter().filter_map(|part| part.seq));
                }
                !drop
            });
            let now = self.clock.now_nanos();
            self.with_manifest(tenant, signal, |m| {
                m.refresh(&self.storage)?;
                let due = |f: &FileEntry| f.partition_hour().end_nanos() <= cutoff_nanos;
                if !m.state().files.values().any(due) {
                    return Ok(());
                }
                m.commit(&self.storage, &self.node, now, |state| {
                    let actions: Vec<Action> = state
                        .files
                        .values()
                        .filter(|f| due(f))
                        .map(|f| Action::Remove {
                            path: f.path.clone(),
                            at: now,
                            size: f.size,
                        })
                        .collect();
                    removed = actions.len();
                    Ok(actions)
                })
                .map_err(commit_error)?;
                Ok(())
            })?;
            self.update_committed_bytes(&shard);
        }
        self.release(&released);
        Ok(removed)
    }

    /// Deletes from storage the files removed from `tenant`'s tables whose
    /// grace period has passed; returns how many. Tables not loaded on this
    /// node are left to the node that loaded them (or to the next start).
    pub fn delete_expired(&self, tenant: &TenantId) -> Result<usize> {
        let Some(shard) = self.existing_shard(tenant) else {
            return Ok(0);
        };
        let now = self.clock.now_nanos();
        let grace = i64::try_from(self.config.removal_grace.as_nanos()).unwrap_or(i64::MAX);
        let mut tables = shard.tables.lock();
        let mut deleted = 0;
        for m in tables.values_mut() {
            let expired = m.expired(now, grace);
            let mut gone = Vec::new();
            for r in expired {
                self.storage.delete(&ObjPath::from(r.path.as_str()))?;
                gone.push(r.path);
            }
            deleted += gone.len();
            m.forget_deleted(&gone);
        }
        Ok(deleted)
    }

    /// Deletes the Parquet objects under `tenant`'s `signal` table that its
    /// manifest does not name (neither live nor awaiting deletion) and that
    /// are older than `min_age`: files a crash left between their put and
    /// their commit, on any node. `min_age` must exceed the longest time a
    /// put may take before its commit, so no node's commit in progress is
    /// touched. Returns how many were deleted. Lists the table's objects:
    /// housekeeping, never on a query's path.
    pub fn sweep_orphans(
        &self,
        tenant: &TenantId,
        signal: Signal,
        min_age: Duration,
    ) -> Result<usize> {
        let listed = self
            .storage
            .list(&crate::paths::table_prefix(tenant, signal))?;
        let names = |m: &Manifest| -> HashSet<String> {
            let s = m.state();
            s.files.keys().chain(s.removed.keys()).cloned().collect()
        };
        let known: HashSet<String> = match self.existing_shard(tenant) {
            Some(shard) => {
                let _read = shard.commit.read();
                self.with_manifest(tenant, signal, |m| {
                    m.refresh(&self.storage)?;
                    Ok(names(m))
                })?
            }
            // a tenant not in memory (never touched, or evicted) is not
            // brought back for this: its manifest is read and dropped. No
            // commit of this node's can be under way for it, and the age
            // bound covers every other node's.
            None => names(&Manifest::load(&self.storage, tenant, signal)?),
        };
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        for o in listed {
            let path = o.location.to_string();
            if !path.ends_with(".parquet") || known.contains(&path) || o.last_modified > cutoff {
                continue;
            }
            tracing::warn!(%tenant, %signal, path, "deleting a file no manifest names (left by a crash)");
            self.storage.delete(&o.location)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// [`Store::sweep_orphans`] over every table of every tenant in storage;
    /// one table's failure does not stop the others.
    pub fn sweep_orphans_all(&self, min_age: Duration) -> Result<usize> {
        let tables = self
            .stored_tenants()?
            .into_iter()
            .flat_map(|t| Signal::ALL.map(|s| (t.clone(), s)));
        sum_all(tables, |(t, s)| self.sweep_orphans(&t, s, min_age))
    }

    /// [`Store::delete_expired`] for every tenant this node holds state for;
    /// one tenant's failure does not stop the others.
    pub fn delete_expired_all(&self) -> Result<usize> {
        sum_all(self.known_tenants(), |t| self.delete_expired(&t))
    }

    /// The tenants with data in storage (a listing of the root: for start-up
    /// and housekeeping, never for queries).
    pub fn stored_tenants(&self) -> Result<Vec<TenantId>> {
        Ok(self
            .storage
            .list_dirs(None)?
            .iter()
            .filter_map(crate::paths::parse_tenant_prefix)
            .collect())
    }

    /// Recomputes the tenant's committed bytes from its loaded manifests,
    /// once all of them are loaded.
    fn update_committed_bytes(&self, shard: &Shard) {
        let tables = shard.tables.lock();
        if tables.len() < Signal::ALL.len() {
            return;
        }
        let total: u64 = tables.values().map(|m| m.state().bytes()).sum();
        shard
            .committed_bytes
            .get_or_init(|| AtomicU64::new(total))
            .store(total, Ordering::Relaxed);
    }

    /// Bytes of `tenant`'s committed files, every signal. The first call for
    /// a tenant loads its manifests (blocking); later ones are a load.
    pub fn committed_bytes(&self, tenant: &TenantId) -> Result<u64> {
        let shard = self.shard(tenant);
        if let Some(c) = shard.committed_bytes.get() {
            return Ok(c.load(Ordering::Relaxed));
        }
        for signal in Signal::ALL {
            self.with_manifest(tenant, signal, |_| Ok(()))?;
        }
        self.update_committed_bytes(&shard);
        Ok(shard
            .committed_bytes
            .get()
            .map_or(0, |c| c.load(Ordering::Relaxed)))
    }

    /// [`Store::committed_bytes`] when already measured, without any I/O.
    pub fn committed_bytes_known(&self, tenant: &TenantId) -> Option<u64> {
        self.existing_shard(tenant)?
            .committed_bytes
            .get()
            .map(|c| c.load(Ordering::Relaxed))
    }

    /// A consistent view of `tenant`'s `signal` within `range`: the files
    /// its manifest lists (after reading other nodes' newer commits) and
    /// the rows this node still buffers.
    pub fn snapshot(
        &self,
        tenant: &TenantId,
        signal: Signal,
        range: TimeRange,
    ) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let shard = self.shard(tenant);
        self.check_not_shredded(tenant, &shard)?;
        let _read = shard.commit.read();
        {
            let pending = shard.pending.lock();
            for ((s, hour), p) in pending.iter() {
                if *s == signal && range.overlaps(*hour) {
                    snap.buffered
                        .extend(p.parts.iter().map(|p| p.batch.clone()));
                }
            }
        }
        snap.files = self.with_manifest(tenant, signal, |m| {
            m.refresh(&self.storage)?;
            Ok(m.state()
                .files
                .values()
                .filter(|f| range.overlaps(f.partition_hour()) && range.overlaps_file(f))
                .map(|f| (f.object_path(), f.size))
                .collect())
        })?;
        Ok(snap)
    }

    /// The manifest entries of `tenant`'s `signal` table (fresh).
    pub fn files(&self, tenant: &TenantId, signal: Signal) -> Result<Vec<FileEntry>> {
        let shard = self.shard(tenant);
        let _read = shard.commit.read();
        self.with_manifest(tenant, signal, |m| {
            m.refresh(&self.storage)?;
            Ok(m.state().files.values().cloned().collect())
        })
    }
}

/// Runs `f` on every item, summing what it returns; one item's failure does
/// not stop the others (the first error is returned after all were tried).
fn sum_all<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> Result<usize>) -> Result<usize> {
    let mut total = 0;
    let mut first_error = None;
    for item in items {
        match f(item) {
            Ok(n) => total += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

fn commit_error(e: CommitError) -> Error {
    match e {
        CommitError::Store(e) => e,
        CommitError::Conflict(why) => Error::Manifest(why),
    }
}

/// Smallest and largest `timestamp` in `batches`.
pub(crate) fn time_bounds(batches: &[RecordBatch]) -> (i64, i64) {
    let mut bounds = (i64::MAX, i64::MIN);
    for b in batches {
        let Some(ts) = b
            .column_by_name("timestamp")
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            continue;
        };
        if let Some(min) = arrow::compute::min(ts) {
            bounds.0 = bounds.0.min(min);
        }
        if let Some(max) = arrow::compute::max(ts) {
            bounds.1 = bounds.1.max(max);
        }
    }
    if bounds.0 > bounds.1 {
        (i64::MIN, i64::MAX)
    } else {
        bounds
    }
}

/// Splits a batch by the event hour of its `timestamp` column.
fn split_by_hour(
    tenant: &TenantId,
    batch: &RecordBatch,
) -> Result<Vec<(PartitionHour, RecordBatch)>> {
    let ts = batch
        .column_by_name("timestamp")
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .filter(|c| c.null_count() == 0)
        .ok_or_else(|| Error::NoTimestamp {
            tenant: tenant.to_string(),
        })?;
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let first = PartitionHour::containing(ts.value(0));
    if ts
        .values()
        .iter()
        .all(|v| PartitionHour::containing(*v) == first)
    {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut groups: BTreeMap<PartitionHour, Vec<u32>> = BTreeMap::new();
    for (i, v) in ts.values().iter().enumerate() {
        groups
            .entry(PartitionHour::containing(*v))
            .or_default()
            .push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    groups
        .into_iter()
        .map(|(h, idx)| Ok((h, take_record_batch(batch, &UInt32Array::from(idx))?)))
        .collect()
}
