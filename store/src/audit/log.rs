//! The writer: one append-only file, appends serialized by a mutex, fsyncs
//! shared between concurrent appenders (group commit).
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bulkhead_rules::{Clock, TenantId};

use super::{
    detail, parse_line, Anchor, AuditError, AuditEvent, EventKind, NewEvent, GENESIS_HASH,
    LOG_FILE_NAME,
};
use crate::TimeRange;

/// The audit log of one node: `<dir>/audit.log`.
///
/// [`AuditLog::append`] returns once the entry is on disk (fdatasync).
/// Appenders that arrive while an fsync is running are written right away and
/// covered by the next single fsync, so concurrent appends cost about one
/// fsync per batch rather than one each. The file is locked (`flock`) while
/// open so two processes cannot interleave chains.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    /// Opened for append; writes go through `&File` under `writer`, fsyncs
    /// run outside it so the next appenders can write meanwhile.
    file: File,
    writer: Mutex<Writer>,
    /// Highest seq known durable; held during an fsync.
    synced: Mutex<u64>,
    /// Highest seq written to the file (maybe not yet durable).
    written: AtomicU64,
    /// Set when a write could not be undone or an fsync failed: the file's
    /// state is unknown, so appending more could hide the gap.
    poisoned: AtomicBool,
}

#[derive(Debug)]
struct Writer {
    next_seq: u64,
    last_hash: String,
    /// Bytes of complete entries in the file.
    len: u64,
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
            writer: Mutex::new(Writer {
                next_seq,
                last_hash,
                len: tail.complete_len,
            }),
            synced: Mutex::new(next_seq - 1),
            written: AtomicU64::new(next_seq - 1),
            poisoned: AtomicBool::new(false),
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

    /// The last entry written (seq 0 and the genesis hash when empty). Worth
    /// recording outside the node (logs, metrics) as an [`Anchor`] for
    /// `verify`: the chain alone cannot reveal entries cut from its end.
    pub fn head(&self) -> Anchor {
        let w = lock(&self.writer);
        Anchor {
            seq: w.next_seq - 1,
            hash: w.last_hash.clone(),
        }
    }

    /// Appends `event`, stamped with the next seq, the clock's time and the
    /// chain hashes, and returns it once it is durable.
    pub fn append(&self, event: NewEvent) -> Result<AuditEvent, AuditError> {
        let entry = {
            let mut w = lock(&self.writer);
            self.check_poisoned()?;
            let mut entry = AuditEvent {
                seq: w.next_seq,
                time_nanos: self.clock.now_nanos(),
                tenant: event.tenant,
                key_id: event.key_id,
                kind: event.kind,
                details: event.details,
                prev_hash: w.last_hash.clone(),
                hash: String::new(),
            };
            entry.hash = entry.compute_hash();
            let mut line = entry.to_line();
            line.push('\n');
            if let Err(e) = (&self.file).write_all(line.as_bytes()) {
                // Cut a partial line so the next entry does not land after it.
                if self.file.set_len(w.len).is_err() {
                    self.poisoned.store(true, Ordering::SeqCst);
                }
                return Err(AuditError::io(&self.path, e));
            }
            w.len += line.len() as u64;
            w.next_seq += 1;
            w.last_hash.clone_from(&entry.hash);
            self.written.store(entry.seq, Ordering::SeqCst);
            entry
        };
        self.sync_through(entry.seq)?;
        Ok(entry)
    }

    /// Makes every entry up to `seq` durable with at most one fsync, which
    /// also covers whatever others wrote before it started.
    fn sync_through(&self, seq: u64) -> Result<(), AuditError> {
        let mut synced = lock(&self.synced);
        if *synced >= seq {
            return Ok(());
        }
        self.check_poisoned()?;
        let upto = self.written.load(Ordering::SeqCst);
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync Linux may drop the dirty pages and report
            // success next time: nothing after this point can be trusted.
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(AuditError::io(&self.path, e));
        }
        *synced = upto;
        Ok(())
    }

    fn check_poisoned(&self) -> Result<(), AuditError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(AuditError::Poisoned(self.path.clone()));
        }
        Ok(())
    }

    /// The events of `tenant` whose time lies in `range` (inclusive), in log
    /// order. Events without a tenant (e.g. unknown keys) are never returned.
    pub fn events_for(
        &self,
        tenant: &TenantId,
        range: TimeRange,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        self.events_matching(|e| {
            e.tenant.as_deref() == Some(tenant.as_str())
                && e.time_nanos >= range.start
                && e.time_nanos <= range.end
        })
    }

    /// Every entry for which `keep` is true, in log order. Reads the file
    /// from the start up to the entries written so far (a consistent prefix;
    /// appends continue meanwhile). Each line is checked as by `verify`
    /// (canonical form and own hash), not the chain.
    pub fn events_matching(
        &self,
        mut keep: impl FnMut(&AuditEvent) -> bool,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let len = lock(&self.writer).len;
        let file = File::open(&self.path).map_err(|e| AuditError::io(&self.path, e))?;
        let mut reader = BufReader::new(file.take(len));
        let mut out = Vec::new();
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
            if keep(&e) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// A panic in another appender leaves the state consistent (it is only
/// updated after a successful write), so a poisoned mutex is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
