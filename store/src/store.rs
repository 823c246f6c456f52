//! The [`Store`]: per-tenant buffers, the write-ahead log in front of them,
//! and their flush into committed files.
//!
//! State is sharded by tenant: each tenant has its own buffers and its own
//! commit lock, so one tenant's flush, commit or retention pass never waits
//! for another's. The shard map itself is locked only to look a shard up.
//! Locks are `parking_lot`'s: a panic while one is held does not poison it
//! for everyone else.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::{Clock, TenantId};
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::paths::{self, ParquetFilePath, PartitionHour};
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
    /// transient (the client retries) until flushing catches up.
    pub max_total_bytes: usize,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            max_buffer_bytes: 64 << 20,
            max_age: Duration::from_secs(30),
            max_total_bytes: 1 << 30,
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

    fn overlaps(&self, hour: PartitionHour) -> bool {
        hour.start_nanos() <= self.end && hour.end_nanos() > self.start
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
    /// Bytes of the tenant's committed files; measured from disk once (the
    /// first time it is asked for), then kept up to date by commits and
    /// deletions.
    committed_bytes: std::sync::OnceLock<AtomicU64>,
}

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
}

/// A consistent view of one tenant's signal: every committed file in the
/// requested hours plus every batch still buffered. A row is in exactly one
/// of the two.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Absolute paths of committed Parquet files, with their sizes.
    pub files: Vec<(PathBuf, u64)>,
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
}

/// Key of the Parquet footer entry naming the WAL entries a file holds.
pub const WAL_FOOTER_KEY: &str = "bulkhead.wal";

/// The WAL side of the store: the log, and for each outstanding entry the
/// number of its partition parts not yet in a committed file.
#[derive(Debug)]
struct Durability {
    wal: Wal,
    outstanding: Mutex<HashMap<u64, usize>>,
}

/// The per-tenant store on local disk.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    config: FlushConfig,
    clock: Arc<dyn Clock>,
    shards: RwLock<HashMap<TenantId, Arc<Shard>>>,
    buffered: AtomicUsize,
    durability: Option<Durability>,
    stats: StoreStats,
}

impl Store {
    /// Opens (creating if needed) a store at `root` without a write-ahead
    /// log, removing temporary files a crash may have left behind. Buffered
    /// data is lost in a crash: for tools and tests; the server uses
    /// [`Store::open_durable`].
    pub fn open(
        root: impl Into<PathBuf>,
        config: FlushConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let removed = writer::remove_stale_temp_files(&root)?;
        if removed > 0 {
            tracing::warn!(removed, root = %root.display(), "removed unfinished temporary files");
        }
        Ok(Self {
            root,
            config,
            clock,
            shards: RwLock::default(),
            buffered: AtomicUsize::new(0),
            durability: None,
            stats: StoreStats::default(),
        })
    }

    /// Opens the store with its write-ahead log and replays the log into the
    /// buffers: every acknowledged entry not yet in a committed file is
    /// buffered again. Replay is idempotent: each committed file names the
    /// WAL entries it holds in its footer ([`WAL_FOOTER_KEY`]), and a part
    /// already in a file is skipped, so a crash during replay, or between a
    /// commit and the deletion of its WAL segment, neither loses nor
    /// duplicates rows.
    pub fn open_durable(
        root: impl Into<PathBuf>,
        wal: WalConfig,
        config: FlushConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, ReplayReport)> {
        let mut store = Self::open(root, config, clock)?;
        let (wal, entries, recovery) = Wal::open(wal).map_err(Error::Wal)?;
        store.durability = Some(Durability {
            wal,
            outstanding: Mutex::default(),
        });
        let mut report = ReplayReport {
            wal: recovery,
            ..Default::default()
        };
        store.replay(entries, &mut report)?;
        Ok((store, report))
    }

    fn replay(&self, entries: Vec<WalEntry>, report: &mut ReplayReport) -> Result<()> {
        let Some(d) = &self.durability else {
            return Ok(());
        };
        let wal_id = d.wal.id().to_string();
        // The WAL entries each committed file of a touched hour holds.
        let mut committed: HashMap<(TenantId, Signal, PartitionHour), HashSet<u64>> =
            HashMap::new();
        for entry in entries {
            let parts = split_by_hour(&entry.tenant, &entry.batch)?;
            let mut kept = Vec::new();
            for (hour, batch) in parts {
                let key = (entry.tenant.clone(), entry.signal, hour);
                if !committed.contains_key(&key) {
                    let dir = paths::hour_dir(&self.root, &entry.tenant, entry.signal, hour);
                    committed.insert(key.clone(), writer::committed_wal_seqs(&dir, &wal_id)?);
                }
                if committed[&key].contains(&entry.seq) {
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
            self.buffer(&entry.tenant, entry.signal, kept, Some(entry.seq));
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

    pub fn root(&self) -> &Path {
        &self.root
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
        self.shards
            .write()
            .entry(tenant.clone())
            .or_default()
            .clone()
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
        if batch.num_rows() == 0 {
            return Ok(false);
        }
        let parts = split_by_hour(tenant, &batch)?;
        let total = self.buffered.load(Ordering::Relaxed);
        if total >= self.config.max_total_bytes {
            return Err(Error::BufferFull {
                buffered: total,
                limit: self.config.max_total_bytes,
            });
        }
        let seq = match &self.durability {
            Some(d) => {
                let seq = d
                    .wal
                    .append(tenant, signal, policy_version, &batch)
                    .map_err(Error::Wal)?;
                d.outstanding.lock().insert(seq, parts.len());
                Some(seq)
            }
            None => None,
        };
        Ok(self.buffer(tenant, signal, parts, seq))
    }

    fn buffer(
        &self,
        tenant: &TenantId,
        signal: Signal,
        parts: Vec<(PartitionHour, RecordBatch)>,
        seq: Option<u64>,
    ) -> bool {
        let now = self.clock.now_nanos();
        let shard = self.shard(tenant);
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
            p.parts.push(Part { batch, seq });
            self.buffered.fetch_add(bytes, Ordering::Relaxed);
            due |= p.bytes >= self.config.max_buffer_bytes;
        }
        due
    }

    /// Flushes every partition that is due by size or age.
    pub fn flush_due(&self) -> Result<FlushStats> {
        let now = self.clock.now_nanos();
        let max_age = i64::try_from(self.config.max_age.as_nanos()).unwrap_or(i64::MAX);
        let max_bytes = self.config.max_buffer_bytes;
        self.flush_where(|p| p.bytes >= max_bytes || now.saturating_sub(p.first_at) >= max_age)
    }

    /// Flushes everything buffered (shutdown).
    pub fn flush_all(&self) -> Result<FlushStats> {
        self.flush_where(|_| true)
    }

    /// Flushes each tenant's due partitions; one tenant's failure does not
    /// stop the others (the first error is returned after all were tried).
    fn flush_where(&self, due: impl Fn(&Pending) -> bool) -> Result<FlushStats> {
        let mut stats = FlushStats::default();
        let mut first_error = None;
        for (tenant, shard) in self.all_shards() {
            if let Err(e) = self.flush_shard(&tenant, &shard, &due, &mut stats) {
                first_error.get_or_insert(e);
            }
        }
        self.stats
            .files_committed
            .fetch_add(stats.files as u64, Ordering::Relaxed);
        self.stats
            .rows_committed
            .fetch_add(stats.rows as u64, Ordering::Relaxed);
        self.stats
            .bytes_committed
            .fetch_add(stats.bytes, Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    fn flush_shard(
        &self,
        tenant: &TenantId,
        shard: &Shard,
        due: &impl Fn(&Pending) -> bool,
        stats: &mut FlushStats,
    ) -> Result<()> {
        let _one_flusher = shard.flushing.lock();
        let work: Vec<(PartKey, Vec<Part>)> = {
            let pending = shard.pending.lock();
            pending
                .iter()
                .filter(|(_, p)| !p.parts.is_empty() && due(p))
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
        let schema = parts[0].batch.schema();
        let batches: Vec<RecordBatch> = parts.iter().map(|p| p.batch.clone()).collect();
        let seqs: Vec<u64> = parts.iter().filter_map(|p| p.seq).collect();
        let footer = match (&self.durability, seqs.is_empty()) {
            (Some(d), false) => Some((
                WAL_FOOTER_KEY.to_string(),
                writer::wal_footer(d.wal.id(), &seqs),
            )),
            _ => None,
        };
        let staged = writer::stage_parquet(&self.root, &path, &schema, &batches, footer)?;
        let size = staged.size;
        {
            // The rename and the removal from the buffer happen under the
            // tenant's write lock: a reader sees the rows in exactly one place.
            let _write = shard.commit.write();
            let final_path = staged.publish()?;
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
            // counted under the write lock, so a measurement (read lock)
            // sees the file either on disk or in this count, not both
            if let Some(c) = shard.committed_bytes.get() {
                c.fetch_add(size, Ordering::Relaxed);
            }
            tracing::debug!(%tenant, %signal, path = %final_path.display(), size, "committed");
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

    /// Deletes `tenant`'s `signal` data of every event hour that ended at or
    /// before `cutoff_nanos`: committed files and still-buffered rows alike.
    /// Returns the number of files deleted.
    pub fn delete_before(
        &self,
        tenant: &TenantId,
        signal: Signal,
        cutoff_nanos: i64,
    ) -> Result<usize> {
        let dir = paths::signal_dir(&self.root, tenant, signal);
        let shard = self.shard(tenant);
        let mut released = Vec::new();
        let mut deleted = 0;
        let mut freed = 0u64;
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
            for (hour, hour_dir) in list_hours(&dir)? {
                if hour.end_nanos() > cutoff_nanos {
                    continue;
                }
                for e in std::fs::read_dir(&hour_dir)
                    .map_err(|e| Error::io(&hour_dir, e))?
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                {
                    deleted += 1;
                    freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                std::fs::remove_dir_all(&hour_dir).map_err(|e| Error::io(&hour_dir, e))?;
                if let Some(date_dir) = hour_dir.parent() {
                    // an emptied date directory goes too; a non-empty one stays
                    let _ = std::fs::remove_dir(date_dir);
                }
            }
            if let Some(c) = shard.committed_bytes.get() {
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(freed))
                });
            }
        }
        if deleted > 0 {
            writer::sync_dir_if_exists(&dir)?;
        }
        self.release(&released);
        Ok(deleted)
    }

    /// Bytes of `tenant`'s committed files, every signal. The first call for
    /// a tenant measures the directory (blocking); later ones are a load.
    pub fn committed_bytes(&self, tenant: &TenantId) -> Result<u64> {
        let shard = self.shard(tenant);
        if let Some(c) = shard.committed_bytes.get() {
            return Ok(c.load(Ordering::Relaxed));
        }
        let measured = {
            // under the read lock no commit or deletion of the tenant runs
            let _read = shard.commit.read();
            let mut total = 0;
            for signal in Signal::ALL {
                let dir = paths::signal_dir(&self.root, tenant, signal);
                total += list_files(&dir, TimeRange::ALL)?
                    .iter()
                    .map(|(_, size)| size)
                    .sum::<u64>();
            }
            shard
                .committed_bytes
                .get_or_init(|| AtomicU64::new(total))
                .load(Ordering::Relaxed)
        };
        Ok(measured)
    }

    /// [`Store::committed_bytes`] when already measured, without any I/O.
    pub fn committed_bytes_known(&self, tenant: &TenantId) -> Option<u64> {
        self.existing_shard(tenant)?
            .committed_bytes
            .get()
            .map(|c| c.load(Ordering::Relaxed))
    }

    /// A consistent view of `tenant`'s `signal` within `range`.
    pub fn snapshot(
        &self,
        tenant: &TenantId,
        signal: Signal,
        range: TimeRange,
    ) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let dir = paths::signal_dir(&self.root, tenant, signal);
        let Some(shard) = self.existing_shard(tenant) else {
            // nothing buffered, so no commit can race the listing
            snap.files = list_files(&dir, range)?;
            return Ok(snap);
        };
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
        snap.files = list_files(&dir, range)?;
        Ok(snap)
    }
}

/// The committed files of a signal directory in the hours `range` overlaps.
fn list_files(dir: &Path, range: TimeRange) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for (hour, hour_dir) in list_hours(dir)? {
        if !range.overlaps(hour) {
            continue;
        }
        let entries = match std::fs::read_dir(&hour_dir) {
            Ok(e) => e,
            // removed by retention since it was listed
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&hour_dir, e)),
        };
        let mut files: Vec<(PathBuf, u64)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".parquet") && !name.starts_with('.')
            })
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

/// The hour partitions present under a signal directory.
fn list_hours(signal_dir: &Path) -> Result<Vec<(PartitionHour, PathBuf)>> {
    let mut out = Vec::new();
    let dates = match std::fs::read_dir(signal_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(signal_dir, e)),
    };
    for date in dates.flatten() {
        let date_name = date.file_name().to_string_lossy().into_owned();
        let Ok(hours) = std::fs::read_dir(date.path()) else {
            continue;
        };
        for hour in hours.flatten() {
            let hour_name = hour.file_name().to_string_lossy().into_owned();
            if let Some(h) = PartitionHour::parse(&date_name, &hour_name) {
                out.push((h, hour.path()));
            }
        }
    }
    out.sort();
    Ok(out)
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
