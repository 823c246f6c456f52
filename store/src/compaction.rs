//! Compaction: a tenant-hour's small files merged into one large file,
//! sorted for the common filters (service, then time), with row-group
//! statistics and a bloom filter on `trace_id`.
//!
//! Crash-safe by the manifest: the merged file is put first, then one
//! manifest commit adds it and removes its inputs. A crash before the commit
//! leaves an orphan (the table still lists the inputs); after it the table
//! lists the merged file only. The commit is refused when an input is no
//! longer live (retention or another node's compaction removed it
//! meanwhile), and the merged file is deleted again. Inputs are deleted from
//! storage only after the removal grace period, so a query that took its
//! snapshot before still reads them.
use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use bulkhead_rules::TenantId;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::manifest::{Action, CommitError, FileEntry, WalRef};
use crate::paths::{ParquetFilePath, PartitionHour};
use crate::store::Store;
use crate::{writer, Signal};

/// When a tenant-hour is compacted.
#[derive(Clone, Debug)]
pub struct CompactionConfig {
    /// An hour still receiving data is compacted once it has this many
    /// flushed (level 0) files; only those are merged.
    pub min_files: usize,
    /// An hour that ended at least this long ago is merged whole once it
    /// has two files or more.
    pub settle: Duration,
    /// At most this many input bytes per merge (an hour's files make as
    /// many merges as the bounds need).
    pub max_input_bytes: u64,
    /// At most this many input rows per merge: a merge holds its rows
    /// decoded in memory (about twice over while sorting), and a tenant's
    /// files can compress many times over, so bytes alone do not bound it.
    pub max_input_rows: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            min_files: 8,
            settle: Duration::from_secs(600),
            max_input_bytes: 1 << 30,
            max_input_rows: 1_000_000,
        }
    }
}

/// What a compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Merged files written.
    pub merged: usize,
    /// Input files they replaced.
    pub inputs: usize,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Merges given up because an input was removed meanwhile.
    pub conflicts: usize,
}

impl CompactionStats {
    fn add(&mut self, o: CompactionStats) {
        self.merged += o.merged;
        self.inputs += o.inputs;
        self.rows += o.rows;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.conflicts += o.conflicts;
    }
}

/// The inputs of each merge due in `files` at `now`.
fn plan<'a>(
    files: impl IntoIterator<Item = &'a FileEntry>,
    now: i64,
    config: &CompactionConfig,
) -> Vec<Vec<FileEntry>> {
    let settle = i64::try_from(config.settle.as_nanos()).unwrap_or(i64::MAX);
    let mut by_hour: BTreeMap<i64, Vec<&FileEntry>> = BTreeMap::new();
    for f in files {
        by_hour.entry(f.hour).or_default().push(f);
    }
    let mut merges = Vec::new();
    for (hour, mut fs) in by_hour {
        let ended = PartitionHour::containing(hour)
            .end_nanos()
            .saturating_add(settle)
            <= now;
        let chosen: Vec<&FileEntry> = if ended {
            fs
        } else {
            fs.retain(|f| f.level == 0);
            if fs.len() < config.min_files {
                continue;
            }
            fs
        };
        // smallest first, each file that still fits the byte and row
        // bounds (a file past them alone is left as it is); as many merges
        // as the bounds make of the hour's files
        let mut left = chosen;
        left.sort_by_key(|f| (f.size, f.path.clone()));
        loop {
            let (mut bytes, mut rows) = (0u64, 0u64);
            let (mut take, mut rest) = (Vec::new(), Vec::new());
            for f in left {
                let (b, r) = (bytes.saturating_add(f.size), rows.saturating_add(f.rows));
                if b > config.max_input_bytes || r > config.max_input_rows {
                    rest.push(f);
                    continue;
                }
                (bytes, rows) = (b, r);
                take.push(f.clone());
            }
            if take.len() < 2 {
                break;
            }
            merges.push(take);
            left = rest;
        }
    }
    merges
}

/// True when no compaction pass, now or later, would merge any of `files`
/// (unless new files come): every hour, taken as settled, has nothing to
/// merge within the byte bound.
pub(crate) fn nothing_left<'a>(
    files: impl IntoIterator<Item = &'a FileEntry>,
    config: &CompactionConfig,
) -> bool {
    plan(files, i64::MAX, config).is_empty()
}

/// Sorts rows by service, then time: the columns the common filters use.
fn sort_for_queries(batch: &RecordBatch) -> Result<RecordBatch> {
    let columns: Vec<SortColumn> = ["service_name", "timestamp"]
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|c| SortColumn {
            values: c.clone(),
            options: None,
        })
        .collect();
    if columns.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let idx: UInt32Array = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &idx)?)
}

impl Store {
    /// Merges the due tenant-hours of every table of every tenant this node
    /// has touched; one tenant's failure does not stop the others.
    pub fn compact_due(&self, config: &CompactionConfig) -> Result<CompactionStats> {
        let mut stats = CompactionStats::default();
        let mut first_error = None;
        for tenant in self.known_tenants() {
            for signal in Signal::ALL {
                match self.compact(&tenant, signal, config) {
                    Ok(s) => stats.add(s),
                    Err(e) => {
                        tracing::error!(%tenant, %signal, error = %e, "compaction failed");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Merges the due tenant-hours of one table.
    pub fn compact(
        &self,
        tenant: &TenantId,
        signal: Signal,
        config: &CompactionConfig,
    ) -> Result<CompactionStats> {
        self.compact_racing(tenant, signal, config, || {})
    }

    /// [`Store::compact`], running `between` after each merge's inputs were
    /// read and before its commit: for tests of what races a compaction.
    #[doc(hidden)]
    pub fn compact_racing(
        &self,
        tenant: &TenantId,
        signal: Signal,
        config: &CompactionConfig,
        between: impl Fn(),
    ) -> Result<CompactionStats> {
        let _one_compactor = self.compaction_lock(tenant);
        let files = self.files(tenant, signal)?;
        let mut stats = CompactionStats::default();
        for inputs in plan(&files, self.clock().now_nanos(), config) {
            stats.add(self.merge(tenant, signal, &inputs, &between)?);
        }
        Ok(stats)
    }

    fn merge(
        &self,
        tenant: &TenantId,
        signal: Signal,
        inputs: &[FileEntry],
        between: &dyn Fn(),
    ) -> Result<CompactionStats> {
        let hour = inputs[0].partition_hour();
        let path = ParquetFilePath::new(tenant, signal, hour, uuid::Uuid::now_v7());
        let key = self.writing_key(tenant)?;
        let mut batches = Vec::new();
        for f in inputs {
            let path = f.object_path();
            let Some(bytes) = self.storage().get(&path)? else {
                // removed and deleted meanwhile: the commit below would be
                // refused anyway
                return Ok(CompactionStats {
                    conflicts: 1,
                    ..Default::default()
                });
            };
            let decode = |e| Error::Decode {
                path: f.path.clone(),
                source: e,
            };
            let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
                bytes,
                self.reader_options(tenant)?,
            )
            .map_err(decode)?
            .with_batch_size(64 * 1024)
            .build()
            .map_err(decode)?;
            // decoding is CPU work: a turn of the tenant's (the read above
            // and the put below are not)
            let _turn = self.cpu_turn(tenant);
            for b in reader {
                // files written before the tenant left the files still hold it
                batches.push(crate::schema::without_tenant(&b?)?);
            }
        }
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => crate::schema::file_schema(&signal.schema()),
        };
        let (bytes, rows) = {
            let _turn = self.cpu_turn(tenant);
            // one copy of the rows at a time besides the sorted one
            let all = concat_batches(&schema, &batches)?;
            drop(batches);
            let merged = sort_for_queries(&all)?;
            drop(all);
            let bytes = writer::encode_parquet(
                path.path().as_ref(),
                &schema,
                std::slice::from_ref(&merged),
                writer::encrypted(writer::compacted_properties(&schema), key.as_deref())?,
            )?;
            (bytes, merged.num_rows() as u64)
        };
        let now = self.clock().now_nanos();
        let mut versions: Vec<String> = inputs
            .iter()
            .flat_map(|f| f.policy_versions.iter().cloned())
            .collect();
        versions.sort();
        versions.dedup();
        let entry = FileEntry {
            path: path.path().to_string(),
            size: bytes.len() as u64,
            rows,
            hour: hour.start_nanos(),
            min_time: inputs.iter().map(|f| f.min_time).min().unwrap_or(i64::MIN),
            max_time: inputs.iter().map(|f| f.max_time).max().unwrap_or(i64::MAX),
            policy_versions: versions,
            wals: WalRef::merge(inputs.iter().flat_map(|f| &f.wals)),
            node: self.node().to_string(),
            added_at: now,
            level: inputs.iter().map(|f| f.level).max().unwrap_or(0) + 1,
        };
        let input_rows: u64 = inputs.iter().map(|f| f.rows).sum();
        if entry.rows != input_rows {
            return Err(Error::Manifest(format!(
                "compaction of {tenant}/{signal} read {} rows from files the manifest says hold {input_rows}",
                entry.rows
            )));
        }
        let size = entry.size;
        self.storage().put(path.path(), bytes)?;
        between();
        let committed = self.commit_actions(tenant, signal, now, |state| {
            if let Some(gone) = inputs.iter().find(|f| !state.files.contains_key(&f.path)) {
                return Err(CommitError::Conflict(format!(
                    "{} was removed meanwhile",
                    gone.path
                )));
            }
            let mut actions = vec![Action::Add(entry.clone())];
            actions.extend(inputs.iter().map(|f| Action::Remove {
                path: f.path.clone(),
                at: now,
                size: f.size,
            }));
            Ok(actions)
        });
        match committed {
            Ok(()) => Ok(CompactionStats {
                merged: 1,
                inputs: inputs.len(),
                rows: entry.rows,
                bytes_in: inputs.iter().map(|f| f.size).sum(),
                bytes_out: size,
                conflicts: 0,
            }),
            Err(e) => {
                // not in the table: remove the merged file again
                let _ = self.storage().delete(path.path());
                match e {
                    CommitError::Conflict(why) => {
                        tracing::info!(%tenant, %signal, why, "compaction given up");
                        Ok(CompactionStats {
                            conflicts: 1,
                            ..Default::default()
                        })
                    }
                    CommitError::Store(e) => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hour: i64, level: u32, size: u64, n: usize) -> FileEntry {
        rows_file(hour, level, size, 1, n)
    }

    fn rows_file(hour: i64, level: u32, size: u64, rows: u64, n: usize) -> FileEntry {
        FileEntry {
            path: format!("h{hour}/f{n}"),
            size,
            rows,
            hour,
            min_time: hour,
            max_time: hour,
            policy_versions: vec![],
            wals: vec![],
            node: "n".into(),
            added_at: 0,
            level,
        }
    }

    const H: i64 = 3_600_000_000_000;

    #[test]
    fn an_open_hour_waits_for_enough_small_files() {
        let cfg = CompactionConfig {
            min_files: 3,
            settle: Duration::from_secs(600),
            max_input_bytes: 1 << 30,
            max_input_rows: u64::MAX,
        };
        let now = 10 * H + 60_000_000_000; // one minute into hour 10
        let mut files = vec![file(10 * H, 0, 10, 0), file(10 * H, 0, 10, 1)];
        assert!(plan(&files, now, &cfg).is_empty());
        files.push(file(10 * H, 1, 1000, 2));
        assert!(
            plan(&files, now, &cfg).is_empty(),
            "the merged file does not count"
        );
        files.push(file(10 * H, 0, 10, 3));
        let merges = plan(&files, now, &cfg);
        assert_eq!(merges.len(), 1);
        assert_eq!(merges[0].len(), 3);
        assert!(merges[0].iter().all(|f| f.level == 0));
    }

    #[test]
    fn a_settled_hour_is_merged_whole_within_the_byte_bound() {
        let cfg = CompactionConfig {
            min_files: 100,
            settle: Duration::from_secs(600),
            max_input_bytes: 25,
            max_input_rows: u64::MAX,
        };
        let files = vec![
            file(H, 1, 20, 0),
            file(H, 0, 5, 1),
            file(H, 0, 5, 2),
            file(H, 0, 5, 3),
            file(5 * H, 0, 5, 4), // alone in its hour
        ];
        // hour 1 ended long ago; hour 5 too, but holds one file
        let merges = plan(&files, 20 * H, &cfg);
        assert_eq!(merges.len(), 1);
        let sizes: Vec<u64> = merges[0].iter().map(|f| f.size).collect();
        assert_eq!(
            sizes,
            vec![5, 5, 5],
            "smallest first, 20 more would pass 25"
        );
        // not yet settled: hour 1 ended 5 minutes ago
        assert!(plan(&files, 2 * H + 300_000_000_000, &cfg).is_empty());
    }

    #[test]
    fn a_merge_holds_at_most_the_row_bound_and_a_larger_file_is_left_alone() {
        let cfg = CompactionConfig {
            min_files: 2,
            settle: Duration::from_secs(600),
            max_input_bytes: 1 << 30,
            max_input_rows: 1_000,
        };
        // small on disk, many rows: bytes alone would take all of them
        let files = vec![
            rows_file(H, 0, 10, 400, 0),
            rows_file(H, 1, 11, 5_000, 3),
            rows_file(H, 0, 12, 400, 1),
            rows_file(H, 0, 13, 400, 2),
        ];
        let merges = plan(&files, 20 * H, &cfg);
        assert_eq!(merges.len(), 1);
        let paths: Vec<&str> = merges[0].iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["h3600000000000/f0", "h3600000000000/f1"],
            "the large file is passed over, a third small one would pass 1,000 rows"
        );
        // what is left after that merge: the merged file and the third
        // together pass the bound, and the large file is never taken
        let after = vec![
            rows_file(H, 1, 21, 800, 4),
            rows_file(H, 0, 12, 400, 2),
            rows_file(H, 1, 13, 5_000, 3),
        ];
        assert!(plan(&after, 20 * H, &cfg).is_empty());
        assert!(nothing_left(&after, &cfg));
        // five files of 400 rows: two merges of two in one pass, one left
        let five: Vec<FileEntry> = (0..5).map(|n| rows_file(H, 0, 10, 400, n)).collect();
        let merges = plan(&five, 20 * H, &cfg);
        assert_eq!(merges.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
    }
}
