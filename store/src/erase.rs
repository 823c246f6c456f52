//! Erasure: removing a tenant's rows that match a predicate inside a time
//! range, by rewriting the files that hold them; and offboarding, removing
//! everything of a tenant.
//!
//! An erasure first flushes what the tenant buffers of the table in that
//! range (so buffered rows are covered too), then reads each live file whose
//! time bounds overlap the range, one file at a time, and writes a copy
//! without the matching rows (a file left with no row is removed, or,
//! when it names write-ahead log entries, replaced by an empty copy that
//! keeps naming them, so a restart does not replay the erased rows from a
//! log segment not yet deleted). One manifest commit then removes every old file and adds every
//! copy: a crash before it leaves the old files live (the copies are
//! orphans the sweep deletes), after it the copies; never both, never
//! neither. The commit is refused when another writer removed one of the
//! files meanwhile (a merge on another node); the pass is then repeated on
//! the fresh state. Running an erasure again is harmless: the rows it
//! removed no longer match, so a job that was interrupted is finished by
//! running it once more.
//!
//! The old files stay in storage for the removal grace period (queries that
//! started before the commit still read them), then are deleted with every
//! other removed file.
use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::kernels::boolean::{and_kleene, not};
use arrow::compute::{filter_record_batch, prep_null_mask_filter};
use bulkhead_rules::TenantId;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::manifest::{Action, CommitError, FileEntry};
use crate::paths::ParquetFilePath;
use crate::store::{Store, TimeRange};
use crate::{writer, Signal};

/// Decides which rows of a batch match an erasure's predicate: true to
/// remove (null counts as no match). An error names what went wrong.
pub type RowMatcher<'a> = dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, String> + 'a;

/// At most this many passes when other writers keep removing files.
const MAX_ATTEMPTS: usize = 5;

/// What an erasure did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EraseStats {
    /// Live files whose time bounds overlapped the range (all read).
    pub files_read: usize,
    /// Files replaced by a copy without the matching rows.
    pub files_rewritten: usize,
    /// Files removed whole (every row matched).
    pub files_removed: usize,
    /// Rows in the files read.
    pub rows_read: u64,
    /// Rows removed.
    pub rows_removed: u64,
    /// Passes made (more than one when another writer got in the way).
    pub attempts: usize,
}

/// What offboarding removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffboardStats {
    /// Objects deleted under the tenant's prefix (data, manifests, data
    /// keys, anything else).
    pub objects_deleted: usize,
    pub bytes_deleted: u64,
    /// Data keys destroyed by the shred (0 without encryption).
    pub data_keys_destroyed: usize,
    /// Rows this node still buffered, dropped.
    pub buffered_rows_dropped: usize,
}

/// Where offboarding marks live: outside the tenant's prefix, which it
/// deletes.
const OFFBOARDED_PREFIX: &str = "_offboarded";

/// What offboarding leaves for a node's write-ahead log: the tenant's
/// entries below `before_seq` in log `wal` are not to be replayed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OffboardMark {
    tenant: String,
    wal: String,
    before_seq: u64,
}

/// What offboarding leaves for every node, whichever was running then: rows
/// of the tenant received before `received_before` (nanoseconds) are not to
/// be replayed from any log.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OffboardTime {
    tenant: String,
    received_before: i64,
}

const TIME_MARK: &str = "received_before.json";

fn mark_path(tenant: &TenantId, name: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{OFFBOARDED_PREFIX}/{tenant}/{name}"))
}

/// What a replay must leave out of offboarded tenants' entries.
#[derive(Debug, Default)]
pub(crate) struct Offboarded {
    /// Per tenant, the sequence number below which its entries in this
    /// node's log are dropped.
    pub before_seq: std::collections::HashMap<TenantId, u64>,
    /// Per tenant, the receive time before which its rows are dropped.
    pub received_before: std::collections::HashMap<TenantId, i64>,
}

impl Offboarded {
    /// The marks that concern write-ahead log `wal_id`.
    pub(crate) fn load(storage: &crate::objects::Storage, wal_id: &str) -> Result<Offboarded> {
        let mut out = Offboarded::default();
        for o in storage.list(&object_store::path::Path::from(OFFBOARDED_PREFIX))? {
            let name = o.location.filename().unwrap_or_default();
            let own_log = name == format!("{wal_id}.json");
            if !own_log && name != TIME_MARK {
                continue;
            }
            let Some(bytes) = storage.get(&o.location)? else {
                continue;
            };
            let bad = |e: serde_json::Error| Error::Storage(format!("{}: {e}", o.location));
            if own_log {
                let mark: OffboardMark = serde_json::from_slice(&bytes).map_err(bad)?;
                if let Ok(t) = TenantId::new(&mark.tenant) {
                    let v = out.before_seq.entry(t).or_insert(0);
                    *v = (*v).max(mark.before_seq);
                }
            } else {
                let mark: OffboardTime = serde_json::from_slice(&bytes).map_err(bad)?;
                if let Ok(t) = TenantId::new(&mark.tenant) {
                    let v = out.received_before.entry(t).or_insert(i64::MIN);
                    *v = (*v).max(mark.received_before);
                }
            }
        }
        Ok(out)
    }

    /// `batch` of `tenant` (logged as entry `seq`) without what offboarding
    /// removed; `None` when nothing is left.
    pub(crate) fn keep(
        &self,
        tenant: &TenantId,
        seq: u64,
        batch: RecordBatch,
    ) -> Result<Option<RecordBatch>> {
        if self.before_seq.get(tenant).is_some_and(|b| seq < *b) {
            return Ok(None);
        }
        let Some(before) = self.received_before.get(tenant) else {
            return Ok(Some(batch));
        };
        let Some(received) = batch
            .column_by_name("received_at")
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            // a table without receive times (anomalies): derived data of
            // the tenant, dropped whole
            return Ok(None);
        };
        let keep: BooleanArray = received
            .iter()
            .map(|t| Some(t.is_some_and(|t| t >= *before)))
            .collect();
        if keep.true_count() == 0 {
            return Ok(None);
        }
        Ok(Some(filter_record_batch(&batch, &keep)?))
    }
}

/// Rows of `batch` to keep: not (in `range` and matched).
fn keep_mask(
    batch: &RecordBatch,
    range: TimeRange,
    matches: &RowMatcher,
    path: &str,
) -> Result<BooleanArray> {
    let ts = batch
        .column_by_name(crate::schema::TIMESTAMP_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| Error::Erasure(format!("{path} has no usable timestamp column")))?;
    let in_range: BooleanArray = ts
        .iter()
        .map(|t| Some(t.is_some_and(|t| t >= range.start && t <= range.end)))
        .collect();
    let matched = matches(batch).map_err(|e| Error::Erasure(format!("{path}: {e}")))?;
    if matched.len() != batch.num_rows() {
        return Err(Error::Erasure(format!(
            "{path}: the predicate gave {} values for {} rows",
            matched.len(),
            batch.num_rows()
        )));
    }
    let remove = null_as_false(&and_kleene(&in_range, &null_as_false(&matched))?);
    Ok(not(&remove)?)
}

fn null_as_false(a: &BooleanArray) -> BooleanArray {
    if a.null_count() == 0 {
        a.clone()
    } else {
        prep_null_mask_filter(a)
    }
}

impl Store {
    /// Removes `tenant`'s rows of `signal` whose event time is in `range`
    /// and that `matches` (see the module documentation).
    pub fn erase(
        &self,
        tenant: &TenantId,
        signal: Signal,
        range: TimeRange,
        matches: &RowMatcher,
    ) -> Result<EraseStats> {
        self.erase_racing(tenant, signal, range, matches, &|| {})
    }

    /// [`Store::erase`], running `between` after the copies were put and
    /// before the commit: for tests of what races or interrupts an erasure.
    #[doc(hidden)]
    pub fn erase_racing(
        &self,
        tenant: &TenantId,
        signal: Signal,
        range: TimeRange,
        matches: &RowMatcher,
        between: &dyn Fn(),
    ) -> Result<EraseStats> {
        if range.start > range.end {
            return Err(Error::Erasure(format!(
                "the time range ends ({}) before it starts ({})",
                range.end, range.start
            )));
        }
        self.check_tenant_readable(tenant)?;
        // buffered rows of the range become files first, so they are covered
        self.flush_tenant_where(tenant, |s, hour| s == signal && range.overlaps(hour))?;
        let _one_rewriter = self.compaction_lock(tenant);
        for attempt in 1..=MAX_ATTEMPTS {
            let mut stats = EraseStats {
                attempts: attempt,
                ..Default::default()
            };
            let files: Vec<FileEntry> = self
                .files(tenant, signal)?
                .into_iter()
                .filter(|f| range.overlaps_file(f))
                .collect();
            let mut changes: Vec<(FileEntry, Option<FileEntry>)> = Vec::new();
            let rewritten = (|| {
                for f in &files {
                    stats.files_read += 1;
                    stats.rows_read += f.rows;
                    if let Some(change) = self.rewrite_without(tenant, signal, f, range, matches)? {
                        stats.rows_removed += f.rows - change.as_ref().map_or(0, |c| c.rows);
                        changes.push((f.clone(), change));
                    }
                }
                Ok::<_, Error>(())
            })();
            let copies: Vec<String> = changes
                .iter()
                .filter_map(|(_, c)| c.as_ref().map(|c| c.path.clone()))
                .collect();
            let undo = |copies: &[String]| {
                for p in copies {
                    let _ = self
                        .storage()
                        .delete(&object_store::path::Path::from(p.as_str()));
                }
            };
            if let Err(e) = rewritten {
                undo(&copies);
                return Err(e);
            }
            if changes.is_empty() {
                return Ok(stats);
            }
            between();
            let now = self.clock().now_nanos();
            let committed = self.commit_actions(tenant, signal, now, |state| {
                // a copy already in the table: this commit landed on an
                // earlier try whose answer was lost (a timeout, a retried
                // conditional put); nothing more to do
                if changes.iter().any(|(_, c)| {
                    c.as_ref()
                        .is_some_and(|c| state.files.contains_key(&c.path))
                }) {
                    return Ok(Vec::new());
                }
                if let Some((gone, _)) = changes
                    .iter()
                    .find(|(old, _)| !state.files.contains_key(&old.path))
                {
                    return Err(CommitError::Conflict(format!(
                        "{} was removed meanwhile",
                        gone.path
                    )));
                }
                let mut actions = Vec::new();
                for (old, copy) in &changes {
                    if let Some(c) = copy {
                        actions.push(Action::Add(c.clone()));
                    }
                    actions.push(Action::Remove {
                        path: old.path.clone(),
                        at: now,
                        size: old.size,
                    });
                }
                Ok(actions)
            });
            match committed {
                Ok(()) => {
                    // emptied files (removed, or kept empty for their log
                    // references) count as removed
                    stats.files_removed = changes
                        .iter()
                        .filter(|(_, c)| c.as_ref().is_none_or(|c| c.rows == 0))
                        .count();
                    stats.files_rewritten = changes.len() - stats.files_removed;
                    return Ok(stats);
                }
                Err(CommitError::Conflict(why)) => {
                    // never delete a copy the table names
                    let live: std::collections::HashSet<String> = self
                        .files(tenant, signal)?
                        .into_iter()
                        .map(|f| f.path)
                        .collect();
                    let orphans: Vec<String> =
                        copies.into_iter().filter(|c| !live.contains(c)).collect();
                    undo(&orphans);
                    tracing::info!(%tenant, %signal, why, attempt, "erasure pass repeated");
                }
                Err(CommitError::Store(e)) => {
                    // the commit may have landed all the same: the copies
                    // are left to the orphan sweep, which deletes only what
                    // no manifest names
                    return Err(e);
                }
            }
        }
        Err(Error::Erasure(format!(
            "gave up after {MAX_ATTEMPTS} passes: other writers kept changing {tenant}/{signal}"
        )))
    }

    /// Writes a copy of `f` without the rows to erase and returns its entry:
    /// `None` when no row matches (nothing to do), `Some(None)` when every
    /// row does (the file goes, no copy). Two passes over the file: the
    /// first only counts what matches (most files of a narrow erasure hold
    /// nothing to remove, and are not re-encoded); the second streams the
    /// kept rows into the copy, so memory holds one batch, not the file.
    fn rewrite_without(
        &self,
        tenant: &TenantId,
        signal: Signal,
        f: &FileEntry,
        range: TimeRange,
        matches: &RowMatcher,
    ) -> Result<Option<Option<FileEntry>>> {
        let Some(bytes) = self.storage().get(&f.object_path())? else {
            return Err(Error::Erasure(format!(
                "{} is in the table but not in storage",
                f.path
            )));
        };
        let decode = |e| Error::Decode {
            path: f.path.clone(),
            source: e,
        };
        let open = || -> Result<_> {
            let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
                bytes.clone(),
                self.reader_options(tenant)?,
            )
            .map_err(decode)?;
            let schema = crate::schema::file_schema(builder.schema());
            let reader = builder.with_batch_size(64 * 1024).build().map_err(decode)?;
            Ok((schema, reader))
        };
        let (schema, reader) = open()?;
        let mut removed = 0usize;
        for b in reader {
            let b = crate::schema::without_tenant(&b?)?;
            let keep = keep_mask(&b, range, matches, &f.path)?;
            removed += keep.len() - keep.true_count();
        }
        if removed == 0 {
            return Ok(None);
        }
        let kept_rows = f.rows.saturating_sub(removed as u64);
        if kept_rows == 0 && f.wals.is_empty() {
            return Ok(Some(None));
        }
        // A file emptied of every row is still replaced by a copy, with no
        // rows, when it names write-ahead log entries: a restart replays
        // the entries no live file names, and would bring the erased rows
        // back from a log segment not yet deleted.
        let path = ParquetFilePath::new(tenant, signal, f.partition_hour(), uuid::Uuid::now_v7());
        let key = self.writing_key(tenant)?;
        let props = if f.level == 0 {
            writer::flush_properties()
        } else {
            writer::compacted_properties(&schema)
        };
        let encode = |e| Error::Encode {
            what: path.path().to_string(),
            source: e,
        };
        // encoding is CPU work: a turn of the tenant's, as for merges
        let _turn = self.cpu_turn(tenant);
        let mut out = parquet::arrow::ArrowWriter::try_new(
            Vec::new(),
            schema.clone(),
            Some(writer::encrypted(props, key.as_deref())?),
        )
        .map_err(encode)?;
        let (mut rows, mut removed_again) = (0u64, 0usize);
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        let (_, reader) = open()?;
        for b in reader {
            let b = crate::schema::without_tenant(&b?)?;
            let keep = keep_mask(&b, range, matches, &f.path)?;
            removed_again += keep.len() - keep.true_count();
            if keep.true_count() == 0 {
                continue;
            }
            let kept = filter_record_batch(&b, &keep)?;
            let (lo, hi) = crate::store::time_bounds(std::slice::from_ref(&kept));
            min_time = min_time.min(lo);
            max_time = max_time.max(hi);
            rows += kept.num_rows() as u64;
            out.write(&kept).map_err(encode)?;
        }
        if removed_again != removed {
            return Err(Error::Erasure(format!(
                "{}: the predicate matched {removed} rows, then {removed_again}: it must give the same answer every time",
                f.path
            )));
        }
        let bytes = bytes::Bytes::from(out.into_inner().map_err(encode)?);
        if rows == 0 {
            (min_time, max_time) = (f.min_time, f.max_time);
        }
        let entry = FileEntry {
            path: path.path().to_string(),
            size: bytes.len() as u64,
            rows,
            hour: f.hour,
            min_time,
            max_time,
            policy_versions: f.policy_versions.clone(),
            wals: f.wals.clone(),
            node: self.node().to_string(),
            added_at: self.clock().now_nanos(),
            level: f.level,
        };
        if entry.rows + removed as u64 != f.rows {
            return Err(Error::Manifest(format!(
                "{} holds {} rows, the manifest says {}",
                f.path,
                entry.rows + removed as u64,
                f.rows
            )));
        }
        self.storage().put(path.path(), bytes)?;
        Ok(Some(Some(entry)))
    }

    /// When `tenant` was last offboarded (from any node): what was received
    /// or recorded of the name before then belongs to the tenant removed,
    /// not to one created under the same name since. `None`: never.
    pub fn offboarded_before(&self, tenant: &TenantId) -> Result<Option<i64>> {
        let path = mark_path(tenant, TIME_MARK);
        let Some(bytes) = self.storage().get(&path)? else {
            return Ok(None);
        };
        let mark: OffboardTime =
            serde_json::from_slice(&bytes).map_err(|e| Error::Storage(format!("{path}: {e}")))?;
        Ok(Some(mark.received_before))
    }

    /// Leaves this node's log a mark: `tenant`'s entries logged so far are
    /// not to be replayed.
    fn mark_log_offboarded(&self, tenant: &TenantId) -> Result<()> {
        if let Some(wal) = self.wal() {
            let mark = OffboardMark {
                tenant: tenant.to_string(),
                wal: wal.id().to_string(),
                before_seq: wal.next_seq(),
            };
            let bytes = serde_json::to_vec(&mark).map_err(|e| Error::Storage(e.to_string()))?;
            self.storage().put(
                &mark_path(tenant, &format!("{}.json", wal.id())),
                bytes::Bytes::from(bytes),
            )?;
        }
        Ok(())
    }

    /// What a node does when another node offboarded `tenant`: drops what
    /// it still buffers of it (its log entries released, and marked not to
    /// be replayed). Returns the rows dropped.
    pub fn offboarded_elsewhere(&self, tenant: &TenantId) -> Result<usize> {
        let _one_rewriter = self.compaction_lock(tenant);
        let rows = self.forget_tenant(tenant);
        self.mark_log_offboarded(tenant)?;
        Ok(rows)
    }

    /// Removes everything of `tenant` from the store: drops what this node
    /// buffers of it (its log entries are released), destroys its keys when
    /// the store encrypts (so no copy anywhere, backups included, can be
    /// read again), and deletes every object under its prefix, whether a
    /// manifest names it or not. Safe to run again after an interruption.
    pub fn offboard(&self, tenant: &TenantId) -> Result<OffboardStats> {
        // no flush or merge of the tenant puts an object after the listing
        self.with_tenant_still(tenant, || self.offboard_still(tenant))
    }

    fn offboard_still(&self, tenant: &TenantId) -> Result<OffboardStats> {
        let mut stats = OffboardStats {
            buffered_rows_dropped: self.forget_tenant(tenant),
            ..Default::default()
        };
        // the log segments of every node may still hold the tenant's
        // entries (committed or not): no restart may replay them
        let time = OffboardTime {
            tenant: tenant.to_string(),
            received_before: self.clock().now_nanos(),
        };
        let bytes = serde_json::to_vec(&time).map_err(|e| Error::Storage(e.to_string()))?;
        self.storage()
            .put(&mark_path(tenant, TIME_MARK), bytes::Bytes::from(bytes))?;
        self.mark_log_offboarded(tenant)?;
        if let Some(keys) = self.keys() {
            match keys.check(tenant) {
                Ok(()) => stats.data_keys_destroyed = self.shred(tenant)?,
                Err(crate::crypto::KeyError::Shredded { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let prefix = crate::paths::tenant_prefix(tenant);
        for o in self.storage().list(&prefix)? {
            self.storage().delete(&o.location)?;
            stats.objects_deleted += 1;
            stats.bytes_deleted += o.size;
        }
        // anything that came in meanwhile
        stats.buffered_rows_dropped += self.forget_tenant(tenant);
        Ok(stats)
    }
}
