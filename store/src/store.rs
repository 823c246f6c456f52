//! The [`Store`]: per-tenant buffers and their flush into committed files.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arrow::array::{Array, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::{Clock, TenantId};

use crate::error::{Error, Result};
use crate::paths::{self, ParquetFilePath, PartitionHour};
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

type PartitionKey = (TenantId, Signal, PartitionHour);

#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    bytes: usize,
    rows: usize,
    /// Clock time the oldest batch arrived.
    first_at: i64,
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

/// The per-tenant store on local disk.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    config: FlushConfig,
    clock: Arc<dyn Clock>,
    pending: Mutex<BTreeMap<PartitionKey, Pending>>,
    /// Taken for writing while a commit moves rows from `pending` to a file,
    /// and for reading while a [`Snapshot`] is taken, so a reader never sees a
    /// row twice or not at all.
    commit: RwLock<()>,
    /// One flusher at a time.
    flushing: Mutex<()>,
    stats: StoreStats,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} rows, {} bytes)", self.rows, self.bytes)
    }
}

impl Store {
    /// Opens (creating if needed) a store at `root`, removing temporary files a
    /// crash may have left behind.
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
            pending: Mutex::default(),
            commit: RwLock::default(),
            flushing: Mutex::default(),
            stats: StoreStats::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Bytes currently buffered across all tenants.
    pub fn buffered_bytes(&self) -> usize {
        self.pending
            .lock()
            .expect("pending lock")
            .values()
            .map(|p| p.bytes)
            .sum()
    }

    /// Buffers a batch of `signal` for `tenant`, split by event hour. Returns
    /// true when some partition is now due for a flush by size.
    pub fn append(&self, tenant: &TenantId, signal: Signal, batch: RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            return Ok(false);
        }
        let parts = split_by_hour(tenant, &batch)?;
        let now = self.clock.now_nanos();
        let mut pending = self.pending.lock().expect("pending lock");
        let total: usize = pending.values().map(|p| p.bytes).sum();
        if total >= self.config.max_total_bytes {
            return Err(Error::BufferFull {
                buffered: total,
                limit: self.config.max_total_bytes,
            });
        }
        let mut due = false;
        for (hour, part) in parts {
            let p = pending.entry((tenant.clone(), signal, hour)).or_default();
            if p.batches.is_empty() {
                p.first_at = now;
            }
            p.bytes += part.get_array_memory_size();
            p.rows += part.num_rows();
            p.batches.push(part);
            due |= p.bytes >= self.config.max_buffer_bytes;
        }
        Ok(due)
    }

    /// Flushes every partition that is due by size or age.
    pub fn flush_due(&self) -> Result<FlushStats> {
        let now = self.clock.now_nanos();
        let max_age = self.config.max_age.as_nanos() as i64;
        self.flush_where(|p| p.bytes >= self.config.max_buffer_bytes || now - p.first_at >= max_age)
    }

    /// Flushes everything buffered (shutdown).
    pub fn flush_all(&self) -> Result<FlushStats> {
        self.flush_where(|_| true)
    }

    fn flush_where(&self, due: impl Fn(&Pending) -> bool) -> Result<FlushStats> {
        let _one_flusher = self.flushing.lock().expect("flushing lock");
        let work: Vec<(PartitionKey, Vec<RecordBatch>)> = {
            let pending = self.pending.lock().expect("pending lock");
            pending
                .iter()
                .filter(|(_, p)| !p.batches.is_empty() && due(p))
                .map(|(k, p)| (k.clone(), p.batches.clone()))
                .collect()
        };
        let mut stats = FlushStats::default();
        let mut first_error = None;
        for (key, batches) in work {
            match self.commit_partition(&key, &batches) {
                Ok(bytes) => {
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    stats.files += 1;
                    stats.rows += rows;
                    stats.bytes += bytes;
                }
                Err(e) => {
                    self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(tenant = %key.0, signal = %key.1, error = %e, "flush failed; data stays buffered");
                    first_error.get_or_insert(e);
                }
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

    /// Commits the given (leading) batches of one partition and removes them
    /// from the buffer. Batches appended meanwhile stay buffered.
    fn commit_partition(&self, key: &PartitionKey, batches: &[RecordBatch]) -> Result<u64> {
        let (tenant, signal, hour) = key;
        let path = ParquetFilePath::new(tenant, *signal, *hour, uuid::Uuid::now_v7());
        let schema = batches[0].schema();
        let staged = writer::stage_parquet(&self.root, &path, &schema, batches)?;
        let size = staged.size;
        // The rename and the removal from the buffer happen under the write
        // lock: a reader sees the rows in exactly one place.
        let _write = self.commit.write().expect("commit lock");
        let final_path = staged.publish()?;
        let mut pending = self.pending.lock().expect("pending lock");
        if let Some(p) = pending.get_mut(key) {
            let removed: Vec<RecordBatch> = p.batches.drain(..batches.len()).collect();
            p.bytes -= removed
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>();
            p.rows -= removed.iter().map(|b| b.num_rows()).sum::<usize>();
            if p.batches.is_empty() {
                pending.remove(key);
            } else {
                p.first_at = self.clock.now_nanos();
            }
        }
        tracing::debug!(tenant = %tenant, signal = %signal, path = %final_path.display(), size, "committed");
        Ok(size)
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
        // under the write lock: a reader sees the hour whole or not at all
        let _write = self.commit.write().expect("commit lock");
        self.pending
            .lock()
            .expect("pending lock")
            .retain(|(t, s, hour), _| {
                !(t == tenant && *s == signal && hour.end_nanos() <= cutoff_nanos)
            });
        let mut deleted = 0;
        for (hour, hour_dir) in list_hours(&dir)? {
            if hour.end_nanos() > cutoff_nanos {
                continue;
            }
            deleted += std::fs::read_dir(&hour_dir)
                .map_err(|e| Error::io(&hour_dir, e))?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count();
            std::fs::remove_dir_all(&hour_dir).map_err(|e| Error::io(&hour_dir, e))?;
            if let Some(date_dir) = hour_dir.parent() {
                // an emptied date directory goes too; a non-empty one stays
                let _ = std::fs::remove_dir(date_dir);
            }
        }
        if deleted > 0 {
            writer::sync_dir_if_exists(&dir)?;
        }
        Ok(deleted)
    }

    /// A consistent view of `tenant`'s `signal` within `range`.
    pub fn snapshot(
        &self,
        tenant: &TenantId,
        signal: Signal,
        range: TimeRange,
    ) -> Result<Snapshot> {
        let _read = self.commit.read().expect("commit lock");
        let mut snap = Snapshot::default();
        {
            let pending = self.pending.lock().expect("pending lock");
            for ((t, s, hour), p) in pending.iter() {
                if t == tenant && *s == signal && range.overlaps(*hour) {
                    snap.buffered.extend(p.batches.iter().cloned());
                }
            }
        }
        let dir = paths::signal_dir(&self.root, tenant, signal);
        for (hour, hour_dir) in list_hours(&dir)? {
            if !range.overlaps(hour) {
                continue;
            }
            let entries = std::fs::read_dir(&hour_dir).map_err(|e| Error::io(&hour_dir, e))?;
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
            snap.files.extend(files);
        }
        Ok(snap)
    }
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
            .push(i as u32);
    }
    groups
        .into_iter()
        .map(|(h, idx)| Ok((h, take_record_batch(batch, &UInt32Array::from(idx))?)))
        .collect()
}
