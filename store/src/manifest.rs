//! The manifest of one tenant table: which Parquet files it consists of.
//!
//! A table (`tenant=<id>/signal=<name>`) is the set of files its manifest
//! lists, nothing else: readers never list directories. The manifest is a
//! log of numbered commits under `_manifest/`, each an object
//! `<version, 20 digits>.json` holding the actions of one change (files
//! added, files removed). Version `n + 1` is written with put-if-absent
//! (a conditional put on object storage, a hard link on local disk), so of
//! two nodes committing at once exactly one wins; the other reads the
//! winner's commit, checks its own change still applies, and tries the next
//! version. Every [`CHECKPOINT_EVERY`] versions the whole state is written
//! as `<version>.checkpoint.json` and `_last_checkpoint.json` points at it,
//! so loading a table reads one checkpoint and the few commits after it.
//!
//! A removed file stays in storage for a grace period (queries that took a
//! snapshot before the removal still read it); [`Manifest::expired`] names
//! the ones whose grace has passed, for deletion.
use std::collections::{BTreeMap, HashSet};

use bulkhead_rules::TenantId;
use bytes::Bytes;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::objects::Storage;
use crate::paths::{self, PartitionHour};
use crate::Signal;

/// A checkpoint is written after every this many versions.
pub const CHECKPOINT_EVERY: u64 = 32;

/// How often a commit is retried against other nodes' commits before it
/// gives up (the flush is retried later; nothing is lost).
const MAX_COMMIT_ATTEMPTS: usize = 64;

/// One committed Parquet file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Object path, relative to the store root.
    pub path: String,
    pub size: u64,
    pub rows: u64,
    /// Start of the event hour (nanoseconds) the file's rows belong to.
    pub hour: i64,
    /// Smallest and largest event time in the file.
    pub min_time: i64,
    pub max_time: i64,
    /// Versions of the tenant policy the rows were governed under.
    pub policy_versions: Vec<String>,
    /// The write-ahead log entries whose rows the file holds (one item per
    /// log: a compacted file may hold several nodes' rows), so replay after
    /// a crash can skip them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wals: Vec<WalRef>,
    /// The node that wrote the file.
    pub node: String,
    /// Clock time of the commit, nanoseconds.
    pub added_at: i64,
    /// How many compactions the rows went through (0: a flush).
    #[serde(default)]
    pub level: u32,
}

impl FileEntry {
    pub fn object_path(&self) -> ObjPath {
        ObjPath::from(self.path.as_str())
    }

    pub fn partition_hour(&self) -> PartitionHour {
        PartitionHour::containing(self.hour)
    }
}

/// The entries of one write-ahead log a file holds, as inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRef {
    pub id: String,
    pub seqs: Vec<[u64; 2]>,
}

impl WalRef {
    pub fn new(id: &str, seqs: &[u64]) -> Self {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for s in sorted {
            match ranges.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(s) => r[1] = s,
                _ => ranges.push([s, s]),
            }
        }
        Self {
            id: id.to_string(),
            seqs: ranges,
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.seqs.iter().any(|[a, b]| *a <= seq && seq <= *b)
    }

    /// The references of several files merged, one per log.
    pub fn merge<'a>(refs: impl IntoIterator<Item = &'a WalRef>) -> Vec<WalRef> {
        let mut by_log: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for r in refs {
            by_log.entry(&r.id).or_default().extend(r.iter());
        }
        by_log
            .into_iter()
            .map(|(id, seqs)| WalRef::new(id, &seqs))
            .collect()
    }

    /// Every seq, bounded (a corrupt huge range cannot exhaust memory).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.seqs.iter().flat_map(|[a, b]| (*a..=*b).take(1 << 24))
    }
}

/// One change of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    Add(FileEntry),
    Remove { path: String, at: i64, size: u64 },
}

/// A version object: the actions of one commit.
#[derive(Debug, Serialize, Deserialize)]
struct Commit {
    version: u64,
    node: String,
    at: i64,
    actions: Vec<Action>,
}

/// A checkpoint object: the whole state at a version.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    version: u64,
    files: Vec<FileEntry>,
    removed: Vec<Removed>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LastCheckpoint {
    version: u64,
}

/// A file removed from the table, not yet deleted from storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub path: String,
    pub at: i64,
    pub size: u64,
}

/// A table's state at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableState {
    pub version: u64,
    /// Live files by path.
    pub files: BTreeMap<String, FileEntry>,
    /// Removed files awaiting deletion, by path.
    pub removed: BTreeMap<String, Removed>,
}

impl TableState {
    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Add(f) => {
                    self.removed.remove(&f.path);
                    self.files.insert(f.path.clone(), f.clone());
                }
                Action::Remove { path, at, size } => {
                    if self.files.remove(path).is_some() {
                        self.removed.insert(
                            path.clone(),
                            Removed {
                                path: path.clone(),
                                at: *at,
                                size: *size,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Bytes of the live files.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// The (hour, seq) pairs of write-ahead log `wal_id` held by live files.
    pub fn wal_parts(&self, wal_id: &str) -> HashSet<(i64, u64)> {
        self.files
            .values()
            .flat_map(|f| f.wals.iter().map(move |w| (f.hour, w)))
            .filter(|(_, w)| w.id == wal_id)
            .flat_map(|(hour, w)| w.iter().map(move |s| (hour, s)))
            .collect()
    }
}

/// Why a commit was not made.
#[derive(Debug)]
pub enum CommitError {
    /// The change no longer applies to the table as other commits left it
    /// (e.g. a compaction's input was removed by retention meanwhile).
    Conflict(String),
    Store(Error),
}

impl From<Error> for CommitError {
    fn from(e: Error) -> Self {
        CommitError::Store(e)
    }
}

/// One table's manifest, loaded.
#[derive(Debug)]
pub struct Manifest {
    dir: ObjPath,
    state: TableState,
}

/// Puts a commit object if absent; true when the object there is this
/// commit. "Taken" may be this very commit: a put that landed but whose
/// answer was lost, then retried and refused as existing. The bytes tell
/// (they name the node and the time); taking it for another node's would
/// make the caller undo a commit in force.
fn put_commit(storage: &Storage, path: &ObjPath, bytes: Bytes) -> Result<bool> {
    Ok(storage.put_if_absent(path, bytes.clone())?
        || storage.get(path)?.is_some_and(|there| there == bytes))
}

fn version_path(dir: &ObjPath, version: u64) -> ObjPath {
    dir.clone().join(format!("{version:020}.json"))
}

fn checkpoint_path(dir: &ObjPath, version: u64) -> ObjPath {
    dir.clone().join(format!("{version:020}.checkpoint.json"))
}

fn last_checkpoint_path(dir: &ObjPath) -> ObjPath {
    dir.clone().join("_last_checkpoint.json")
}

fn corrupt(path: &ObjPath, e: impl std::fmt::Display) -> Error {
    Error::Manifest(format!("{path}: {e}"))
}

impl Manifest {
    /// Loads the table's manifest: the newest checkpoint, then every commit
    /// after it.
    pub fn load(storage: &Storage, tenant: &TenantId, signal: Signal) -> Result<Self> {
        let mut m = Self {
            dir: paths::manifest_dir(tenant, signal),
            state: TableState::default(),
        };
        m.reload(storage)?;
        Ok(m)
    }

    fn reload(&mut self, storage: &Storage) -> Result<()> {
        let hint = last_checkpoint_path(&self.dir);
        let state = match storage.get(&hint)? {
            Some(bytes) => {
                let last: LastCheckpoint =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(&hint, e))?;
                let path = checkpoint_path(&self.dir, last.version);
                let bytes = storage
                    .get(&path)?
                    .ok_or_else(|| corrupt(&path, "named by _last_checkpoint.json but missing"))?;
                let cp: Checkpoint =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
                TableState {
                    version: cp.version,
                    files: cp.files.into_iter().map(|f| (f.path.clone(), f)).collect(),
                    removed: cp
                        .removed
                        .into_iter()
                        .map(|r| (r.path.clone(), r))
                        .collect(),
                }
            }
            None => TableState::default(),
        };
        self.state = state;
        self.refresh(storage)?;
        Ok(())
    }

    /// Applies the commits other nodes made since this state was read.
    /// Costs one read of a missing object when nothing changed.
    pub fn refresh(&mut self, storage: &Storage) -> Result<()> {
        loop {
            let path = version_path(&self.dir, self.state.version + 1);
            let Some(bytes) = storage.get(&path)? else {
                return Ok(());
            };
            let commit: Commit = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
            if commit.version != self.state.version + 1 {
                return Err(corrupt(&path, format!("holds version {}", commit.version)));
            }
            self.state.apply(&commit.actions);
            self.state.version = commit.version;
        }
    }

    /// Whether `tenant`'s `signal` table has a version after `version` in
    /// storage (another node committed since): one read, no state loaded.
    pub fn has_newer(
        storage: &Storage,
        tenant: &TenantId,
        signal: Signal,
        version: u64,
    ) -> Result<bool> {
        let path = version_path(&paths::manifest_dir(tenant, signal), version + 1);
        Ok(storage.get(&path)?.is_some())
    }

    pub fn state(&self) -> &TableState {
        &self.state
    }

    /// Commits the actions `build` makes from the current state, as the next
    /// version. When another node took that version first, its commit is
    /// read and `build` asked again; `build` refuses with
    /// [`CommitError::Conflict`] when its change no longer applies.
    pub fn commit(
        &mut self,
        storage: &Storage,
        node: &str,
        now: i64,
        mut build: impl FnMut(&TableState) -> Result<Vec<Action>, CommitError>,
    ) -> Result<u64, CommitError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            self.refresh(storage)?;
            let actions = build(&self.state)?;
            let version = self.state.version + 1;
            let commit = Commit {
                version,
                node: node.to_string(),
                at: now,
                actions,
            };
            let bytes = Bytes::from(
                serde_json::to_vec(&commit).map_err(|e| Error::Manifest(e.to_string()))?,
            );
            let path = version_path(&self.dir, version);
            if put_commit(storage, &path, bytes)? {
                self.state.apply(&commit.actions);
                self.state.version = version;
                if version.is_multiple_of(CHECKPOINT_EVERY) {
                    // a failed checkpoint costs readers a longer load, nothing else
                    if let Err(e) = self.checkpoint(storage, now) {
                        tracing::warn!(dir = %self.dir, version, error = %e, "checkpoint not written");
                    }
                }
                return Ok(version);
            }
        }
        Err(CommitError::Store(Error::Manifest(format!(
            "{}: gave up after {MAX_COMMIT_ATTEMPTS} attempts lost to concurrent commits",
            self.dir
        ))))
    }

    fn checkpoint(&self, storage: &Storage, _now: i64) -> Result<()> {
        let cp = Checkpoint {
            version: self.state.version,
            files: self.state.files.values().cloned().collect(),
            removed: self.state.removed.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&cp).map_err(|e| Error::Manifest(e.to_string()))?;
        storage.put(&checkpoint_path(&self.dir, cp.version), Bytes::from(bytes))?;
        let last = serde_json::to_vec(&LastCheckpoint {
            version: cp.version,
        })
        .map_err(|e| Error::Manifest(e.to_string()))?;
        storage.put(&last_checkpoint_path(&self.dir), Bytes::from(last))
    }

    /// Removed files whose grace period ended by `now`: safe to delete from
    /// storage (no query that started before their removal still runs).
    pub fn expired(&self, now: i64, grace_nanos: i64) -> Vec<Removed> {
        self.state
            .removed
            .values()
            .filter(|r| now.saturating_sub(r.at) >= grace_nanos)
            .cloned()
            .collect()
    }

    /// Forgets removed files once deleted from storage (this node's view;
    /// a later checkpoint may still name them, and deleting again is
    /// harmless).
    pub fn forget_deleted(&mut self, paths: &[String]) {
        for p in paths {
            self.state.removed.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit whose put landed but whose answer was lost, retried and
    /// refused as existing, is this commit, not another node's: the caller
    /// must not take it for a conflict (and undo what is in force).
    #[test]
    fn a_commit_that_landed_unseen_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&crate::StorageConfig::Local {
            root: dir.path().to_path_buf(),
        })
        .unwrap();
        let path = ObjPath::from("t/_manifest/00000000000000000001.json");
        let mine = Bytes::from_static(b"{\"node\":\"node-1\"}");
        assert!(put_commit(&storage, &path, mine.clone()).unwrap());
        // the same bytes again (the lost answer's retry): still ours
        assert!(put_commit(&storage, &path, mine).unwrap());
        // another node's commit there: not ours
        assert!(!put_commit(
            &storage,
            &path,
            Bytes::from_static(b"{\"node\":\"node-2\"}")
        )
        .unwrap());
    }
}
