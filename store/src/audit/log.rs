//! The writer: one append-only file; appenders queue their line under a
//! mutex and one of them (the leader) writes and fsyncs everything queued
//! (group commit).
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use bulkhead_rules::{Clock, TenantId};

use super::{
    detail, parse_line, Anchor, AuditError, AuditEvent, EventKind, NewEvent, GENESIS_HASH,
    LOG_FILE_NAME,
};
use crate::TimeRange;

/// The audit log of one node: `<dir>/audit.log`.
///
/// [`AuditLog::append`] returns once the entry is on disk (fdatasync).
/// Entries appended while an fsync runs are queued in memory and written and
/// fsynced together by the next leader, so concurrent appends cost about one
/// write and one fsync per batch. Only the leader touches the file: writes
/// never wait behind an fsync. The file is locked (`flock`) while open so two
/// processes cannot interleave chains.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    /// Opened for append; written only by the current leader.
    file: File,
    state: Mutex<State>,
    /// Signalled when a leader finishes.
    flushed: Condvar,
}

#[derive(Debug)]
struct State {
    /// Chain position of the next entry (queued entries included).
    next_seq: u64,
    last_hash: String,
    /// Lines assigned a seq but not yet written.
    pending: Vec<u8>,
    /// A leader is writing and fsyncing.
    flushing: bool,
    /// Last durable entry.
    durable: Anchor,
    /// Bytes of durable entries in the file.
    len: u64,
    /// Set when a write or fsync failed: queued entries chain onto lost ones
    /// and after a failed fsync the file's state is unknown, so nothing more
    /// may be appended.
    poisoned: bool,
    /// fsyncs done, to see how well group commit batches.
    fsyncs: u64,
}

impl AuditLog {
    /// Opens (or creates) `<dir>/audit.log` and resumes its chain from the
    /// last entry, which must be intact. A torn last line (no newline, left by
    /// a crash mid-append, never acknowledged) is cut off with a warning and
    /// recorded as a `log_recovered` entry. Earlier entries are not checked
    /// here: that is [`super::verify`]'s job, and would make start-up linear
    /// in the log's size.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        let path = dir.join(LOG_FILE_NAME);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(AuditError::Locked(path)),
            Err(TryLockError::Error(e)) => return Err(AuditError::io(&path, e)),
        }
        if !existed {
            // The new directory entry must survive a crash along with the data.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| AuditError::io(dir, e))?;
        }
        let len = file.metadata().map_err(|e| AuditError::io(&path, e))?.len();
        let tail = read_tail(&file, len).map_err(|e| AuditError::io(&path, e))?;
        let torn = len - tail.complete_len;
        if torn > 0 {
            tracing::warn!(
                path = %path.display(),
                offset = tail.complete_len,
                bytes = torn,
                "audit log ends in an incomplete entry (crash mid-append); removing it"
            );
            file.set_len(tail.complete_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| AuditError::io(&path, e))?;
        }
        let (next_seq, last_hash) = match tail.last_line {
            None => (1, GENESIS_HASH.to_string()),
            Some((offset, line)) => {
                let e = parse_line(&line).map_err(|problem| AuditError::Corrupt {
                    path: path.clone(),
                    offset,
                    problem,
                })?;
                (e.seq + 1, e.hash)
            }
        };
        let log = AuditLog {
            path,
            clock,
            file,
            state: Mutex::new(State {
                next_seq,
                durable: Anchor {
                    seq: next_seq - 1,
                    hash: last_hash.clone(),
                },
                last_hash,
                pending: Vec::new(),
                flushing: false,
                len: tail.complete_len,
                poisoned: false,
                fsyncs: 0,
            }),
            flushed: Condvar::new(),
        };
        if torn > 0 {
            log.append(
                NewEvent::new(EventKind::LogRecovered)
                    .detail(detail::TRUNCATED_BYTES, torn)
                    .detail(detail::OFFSET, tail.complete_len),
            )?;
        }
        Ok(log)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last durable entry (seq 0 and the genesis hash when empty).
    /// Worth recording outside the node (logs, metrics) as an [`Anchor`] for
    /// `verify`: the chain alone cannot reveal entries cut from its end.
    pub fn head(&self) -> Anchor {
        lock(&self.state).durable.clone()
    }

    /// fsyncs done by appends since open; with [`AuditLog::head`] it shows
    /// how many entries each fsync covered (worth exporting as a metric).
    pub fn fsyncs(&self) -> u64 {
        lock(&self.state).fsyncs
    }

    /// Appends `event`, stamped with the next seq, the clock's time and the
    /// chain hashes, and returns it once it is durable.
    pub fn append(&self, event: NewEvent) -> Result<AuditEvent, AuditError> {
        let mut out = self.append_all(vec![event])?;
        out.pop()
            .ok_or_else(|| AuditError::Poisoned(self.path.clone()))
    }

    /// Appends `events` in order and returns them once all are durable: one
    /// write and one fsync for the lot (and for whatever else is queued).
    pub fn append_all(&self, events: Vec<NewEvent>) -> Result<Vec<AuditEvent>, AuditError> {
        let mut s = lock(&self.state);
        if s.poisoned {
            return Err(AuditError::Poisoned(self.path.clone()));
        }
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let mut entry = AuditEvent {
                seq: s.next_seq,
                time_nanos: self.clock.now_nanos(),
                tenant: event.tenant,
                key_id: event.key_id,
                kind: event.kind,
                details: event.details,
                prev_hash: s.last_hash.clone(),
                hash: String::new(),
            };
            entry.hash = entry.compute_hash();
            s.pending.extend_from_slice(entry.to_line().as_bytes());
            s.pending.push(b'\n');
            s.next_seq += 1;
            s.last_hash.clone_from(&entry.hash);
            out.push(entry);
        }
        let Some(last) = out.last().map(|e| e.seq) else {
            return Ok(out);
        };
        loop {
            if s.durable.seq >= last {
                return Ok(out);
            }
            if s.poisoned {
                return Err(AuditError::Poisoned(self.path.clone()));
            }
            if s.flushing {
                self.flushed.wait(&mut s);
                continue;
            }
            // Lead: write and fsync everything queued, without the lock so
            // others can queue meanwhile.
            s.flushing = true;
            let batch = std::mem::take(&mut s.pending);
            let head = Anchor {
                seq: s.next_seq - 1,
                hash: s.last_hash.clone(),
            };
            let base_len = s.len;
            drop(s);
            let result = (&self.file)
                .write_all(&batch)
                .and_then(|()| self.file.sync_data());
            s = lock(&self.state);
            s.flushing = false;
            s.fsyncs += 1;
            match result {
                Ok(()) => {
                    s.len = base_len + batch.len() as u64;
                    s.durable = head;
                }
                Err(e) => {
                    // Cut a partial batch so the file stays a valid chain up
                    // to the last durable entry; refuse appends from now on.
                    let _ = self.file.set_len(base_len);
                    s.poisoned = true;
                    self.flushed.notify_all();
                    return Err(AuditError::io(&self.path, e));
                }
            }
            self.flushed.notify_all();
        }
    }

    /// The events of `tenant` whose time lies in `range` (inclusive), in log
    /// order. Events without a tenant (e.g. unknown keys) are never returned,
    /// nor those of an earlier tenant of the same name: everything up to and
    /// including the name's last `tenant_offboarded` entry belongs to the
    /// tenant that was offboarded, not to one created under its name later.
    pub fn events_for(
        &self,
        tenant: &TenantId,
        range: TimeRange,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let mut out = Vec::new();
        self.for_each_event(|e| {
            if e.tenant.as_deref() != Some(tenant.as_str()) {
                return;
            }
            if e.kind == EventKind::TenantOffboarded {
                out.clear();
            } else if e.time_nanos >= range.start && e.time_nanos <= range.end {
                out.push(e);
            }
        })?;
        Ok(out)
    }

    /// Every entry for which `keep` is true, in log order. Reads the file
    /// from the start up to the entries durable so far (a consistent prefix;
    /// appends continue meanwhile). Each line is checked as by `verify`
    /// (canonical form and own hash), not the chain.
    pub fn events_matching(
        &self,
        mut keep: impl FnMut(&AuditEvent) -> bool,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let mut out = Vec::new();
        self.for_each_event(|e| {
            if keep(&e) {
                out.push(e);
            }
        })?;
        Ok(out)
    }

    /// Calls `f` with every entry durable so far, in log order.
    fn for_each_event(&self, mut f: impl FnMut(AuditEvent)) -> Result<(), AuditError> {
        let len = lock(&self.state).len;
        let file = File::open(&self.path).map_err(|e| AuditError::io(&self.path, e))?;
        let mut reader = BufReader::new(file.take(len));
        let mut buf = Vec::new();
        let mut offset = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| AuditError::io(&self.path, e))?;
            if n == 0 {
                break;
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let e = parse_line(&buf).map_err(|problem| AuditError::Corrupt {
                path: self.path.clone(),
                offset,
                problem,
            })?;
            offset += n as u64;
            f(e);
        }
        Ok(())
    }
}

/// Nothing panics while holding the lock in a way that leaves the state
/// half-updated (the leader updates it after its I/O); `parking_lot` locks
/// are not poisoned by a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

struct Tail {
    /// Length up to and including the last newline.
    complete_len: u64,
    /// Offset and bytes (no newline) of the last complete line.
    last_line: Option<(u64, Vec<u8>)>,
}

/// Finds the last complete line by reading backwards from the end in growing
/// windows, so opening a large log does not read all of it.
fn read_tail(file: &File, len: u64) -> std::io::Result<Tail> {
    let mut window = len.min(64 * 1024);
    loop {
        let start = len - window;
        let mut buf = vec![0u8; window as usize];
        let mut f = file;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        let last_nl = buf.iter().rposition(|&b| b == b'\n');
        match last_nl {
            None if start == 0 => {
                return Ok(Tail {
                    complete_len: 0,
                    last_line: None,
                })
            }
            None => {}
            Some(end) => {
                let line_start = buf[..end].iter().rposition(|&b| b == b'\n').map(|p| p + 1);
                match line_start {
                    Some(s) => {
                        return Ok(Tail {
                            complete_len: start + end as u64 + 1,
                            last_line: Some((start + s as u64, buf[s..end].to_vec())),
                        })
                    }
                    None if start == 0 => {
                        return Ok(Tail {
                            complete_len: end as u64 + 1,
                            last_line: Some((0, buf[..end].to_vec())),
                        })
                    }
                    None => {}
                }
            }
        }
        window = (window * 2).min(len);
    }
}
