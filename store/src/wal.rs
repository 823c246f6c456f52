//! The write-ahead log: every batch is appended and fsynced here before it
//! is acknowledged, and stays until the store reports it committed to
//! Parquet ([`Wal::complete`]).
//!
//! # Use
//!
//! [`Wal::open`] recovers what a previous run left (the entries not yet
//! completed, in seq order), then [`Wal::append`] returns an entry's seq once
//! it is durable and [`Wal::complete`] releases it. Concurrent appends share
//! one write and one fdatasync (group commit): each appender encodes its
//! batch (Arrow IPC) on its own thread, queues the bytes, and one of the
//! waiting appenders (the leader) writes and syncs the queue without
//! holding the queue lock while the others wait. Seqs are given as a group
//! is taken, in write order. A tenant has at most a quarter megabyte (or one
//! entry) waiting for a group, and while entries of tenants with little
//! waiting queue beside a heavy tenant's, they go first as a group of their
//! own (for at most a few milliseconds), so a small entry's wait is for a
//! small write and fsync.
//!
//! The log has two *lanes*, each a chain of segment files with a leader of
//! its own, written and synced side by side: the main lane, which takes
//! every group while it is free, and the side lane, which takes the entries
//! of light tenants (less than 64 KiB waiting) while the main lane is busy.
//! So a small entry arriving while a flood's group is being written and
//! synced does not wait for that group: it goes out in the side lane at
//! once. Seqs come from one count for both lanes, so they increase within
//! each lane but interleave between them.
//!
//! Completion is not itself logged: a segment file is deleted once it is
//! sealed and all its entries are completed, and that deletion is what makes
//! completions durable. After a restart, completed entries whose segment is
//! still there (the segment that was active, or one that still held other
//! outstanding entries) are recovered again; the store recognises them by
//! the WAL id and seq it records with its Parquet files.
//!
//! # On-disk format
//!
//! A directory holds the id file `wal.id` (the WAL's uuid v7 as text), the
//! main lane's segment files named
//! `<first seq, 20 digits zero-padded>.wal`, and the directory `side`
//! ([`SIDE_DIR`]) with the side lane's segment files, named the same way
//! (a directory written before there were lanes has none: it reads the
//! same). A segment starts with a 52-byte header, all integers
//! little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic and format version: `BHWAL\0\0\x02` when its entries may be LZ4-compressed ([`WalConfig::compress`]), `BHWAL\0\0\x01` when they are not (what builds before compression wrote and can read; they refuse a version 2 segment instead of cutting entries they cannot decode) |
//! | 8..24 | WAL id (uuid bytes) |
//! | 24..32 | first seq of the segment (equals the file name) |
//! | 32..40 | first seq of the previous segment (0: none) |
//! | 40..48 | durable length of the previous segment when this one started |
//! | 48..52 | CRC-32 of bytes 0..48 |
//!
//! followed by entries, each `[payload_len u32][crc32 of payload u32][payload]`
//! with the payload
//!
//! | field | encoding |
//! | --- | --- |
//! | seq | u64 |
//! | tenant | u16 length + UTF-8 (validated as a `TenantId` when read) |
//! | signal | u8: 1 logs, 2 spans, 3 metrics, 4 anomalies |
//! | policy version | u16 length + UTF-8 |
//! | batch | the rest: an Arrow IPC stream (schema, one batch, end marker), its buffers LZ4-compressed unless [`WalConfig::compress`] is off (the stream says which, so either reads back) |
//!
//! The side lane writes zeros ahead of its entries (1 MiB by default,
//! [`WalConfig::side_zero_fill_bytes`]) whenever an entry would reach past
//! those already there, so a segment file may run on past its last entry
//! with zeros; the next entry overwrites them. Most of the side lane's
//! fsyncs then write into a file that does not grow and have no metadata
//! to commit.
//!
//! A payload is at most 1 GiB. Seqs start at 1 and strictly increase within
//! and across the segments of a lane; they may have gaps (a failed append
//! uses up its seq, a restart skips one, and the other lane has the seqs in
//! between). No seq is in both lanes. Entries are only ever appended to a
//! lane's newest segment, which is never deleted while it is active; a new
//! segment starts once the active one reaches [`WalConfig::segment_bytes`],
//! after a failed write, and at every open (in both lanes). The "previous
//! segment" of a header is the previous one of its lane. A lane's directory
//! is fsynced after a segment file is created or deleted in it.
//!
//! Seqs continue from the segments, so the id changes whenever an open finds
//! none (a new or wiped directory): (WAL id, seq) never names two entries.
//!
//! # Recovery
//!
//! At open each lane's segments are read in seq order and the longest
//! valid prefix of each kept: an entry ends the prefix if it runs past the
//! end of the file (or past the durable length a later segment's header
//! recorded for it), has an absurd length, a wrong checksum, a seq not
//! above the previous one of its lane, an invalid tenant, an unknown
//! signal, or an IPC stream that does not decode to exactly one batch. The
//! rest of the file is cut (truncate + fsync), a warning logged and a
//! [`Truncation`] reported; later segments are still read. In the side
//! lane, zeros left after the last valid entry are zeros written ahead, not
//! damage: they are cut without a report (an entry torn before them is still
//! torn, and zeros within the durable length a later segment recorded are
//! damage like any other bytes). A segment whose
//! header is torn (a crash while it was created) is deleted. A header that
//! is whole but names another WAL, another seq or an unknown format refuses
//! the open instead ([`WalError::Corrupt`]), as do segments without an id
//! file and a seq found in both lanes: that is not a crash but a mix-up,
//! and the data is not ours to delete. The entries of both lanes are given
//! back together, in seq order.
//!
//! A failed write is cut back off its segment at once, and the next segment's
//! header records where that segment ends, so it is cut at recovery even if
//! cutting back failed. Only if cutting back fails and the process dies
//! before another segment could start can a failed (never acknowledged)
//! entry come back.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use bulkhead_rules::TenantId;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::Signal;

mod files;
mod format;
mod recovery;

use files::{ActiveSegment, Disk};
use format::{EncodedEntry, PreviousSegment, SegmentHeader, HEADER_LEN};

pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log i/o error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Found at open: something other than a torn write, left alone.
    #[error("write-ahead log at {path} is not usable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("arrow error encoding a write-ahead log entry: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The entry cannot be logged (too large); retrying will not help.
    #[error("write-ahead log entry refused: {0}")]
    Invalid(String),
    /// Another process has the log open (its lock file is held).
    #[error("the write-ahead log at {} is in use by another process (a server already running with the same wal.path or data_dir?)", .0.parent().unwrap_or(.0).display())]
    Locked(PathBuf),
}

impl WalError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for conditions a client should retry (the disk, not the data):
    /// i/o errors such as a full disk.
    pub fn is_transient(&self) -> bool {
        matches!(self, WalError::Io { .. })
    }
}

/// Where and how the WAL is kept.
#[derive(Clone, Debug)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A segment is sealed and a new one started once it is this large.
    /// Default 64 MiB.
    pub segment_bytes: u64,
    /// The side lane writes this many zero bytes ahead of its last entry
    /// whenever an entry would reach past the zeros already there, so most
    /// of its fsyncs write data into a file that does not grow: on a
    /// journalling file system such a sync has no metadata to commit and
    /// does not wait for the journal that the main lane's growing file and
    /// the store's Parquet writes share. 0 turns it off. Default 1 MiB.
    pub side_zero_fill_bytes: u64,
    /// Entries' Arrow buffers are LZ4-compressed (before encryption).
    /// Recovery reads compressed and plain entries alike. Default on.
    pub compress: bool,
    /// Fault injection for tests. Default `None`.
    pub faults: Option<Arc<WriteFaults>>,
}

impl WalConfig {
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    pub const DEFAULT_SIDE_ZERO_FILL_BYTES: u64 = 1 << 20;

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            side_zero_fill_bytes: Self::DEFAULT_SIDE_ZERO_FILL_BYTES,
            compress: true,
            faults: None,
        }
    }
}

/// Fault injection for tests: a disk that is full, that cannot cut a failed
/// write back, or that ignores fsync; and a hold on group commits.
#[derive(Debug, Default)]
pub struct WriteFaults {
    failing: AtomicBool,
    cut_back_failing: AtomicBool,
    skip_sync: AtomicBool,
    panicking: AtomicBool,
    hold: Mutex<()>,
    main_hold: Mutex<()>,
}

/// While held (see [`WriteFaults::hold_writes`]), appends queue up but no
/// leader starts writing.
#[derive(Debug)]
pub struct WriteHold<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl WriteFaults {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// While on, every fsync of written data (entries, segment headers, the id
    /// file) fails as on a full disk, after the data was written.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// While on, a group write panics before it writes anything.
    pub fn set_panicking(&self, panicking: bool) {
        self.panicking.store(panicking, Ordering::SeqCst);
    }

    fn panics(&self) -> bool {
        self.panicking.load(Ordering::SeqCst)
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// `Err(StorageFull)` while failing.
    pub fn check(&self, path: &Path) -> io::Result<()> {
        if self.is_failing() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no space left on device (injected fault) writing {}",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// While on, cutting a failed write back off a segment fails too.
    pub fn set_cut_back_failing(&self, failing: bool) {
        self.cut_back_failing.store(failing, Ordering::SeqCst);
    }

    fn cut_back_fails(&self) -> bool {
        self.cut_back_failing.load(Ordering::SeqCst)
    }

    /// While on, fsyncs are skipped (reported done): for tests that only
    /// simulate process crashes, where the page cache survives.
    pub fn set_skip_sync(&self, skip: bool) {
        self.skip_sync.store(skip, Ordering::SeqCst);
    }

    fn skips_sync(&self) -> bool {
        self.skip_sync.load(Ordering::SeqCst)
    }

    /// Holds group commits: a leader waits before taking the queue until the
    /// returned guard is dropped, so tests can line appends up
    /// deterministically (see [`Wal::queued`]).
    pub fn hold_writes(&self) -> WriteHold<'_> {
        WriteHold {
            _guard: self.hold.lock(),
        }
    }

    fn wait_for_release(&self) {
        drop(self.hold.lock());
    }

    /// Holds the main lane's group writes once taken (the side lane's go
    /// on): a write in progress that lasts until the guard is dropped.
    pub fn hold_main_lane(&self) -> WriteHold<'_> {
        WriteHold {
            _guard: self.main_hold.lock(),
        }
    }

    fn wait_for_main_lane(&self) {
        drop(self.main_hold.lock());
    }
}

/// One logged batch.
#[derive(Clone, Debug, PartialEq)]
pub struct WalEntry {
    pub seq: u64,
    pub tenant: TenantId,
    pub signal: Signal,
    pub policy_version: String,
    pub body: WalBody,
}

/// An entry's batch, as logged.
#[derive(Clone, Debug, PartialEq)]
pub enum WalBody {
    /// In the clear.
    Batch(RecordBatch),
    /// Encrypted under the tenant's data key `key`: opened with
    /// [`WalEntry::open`].
    Sealed {
        key: uuid::Uuid,
        bytes: arrow::buffer::Buffer,
    },
}

impl WalEntry {
    /// The batch, if it was logged in the clear.
    pub fn batch(&self) -> Option<&RecordBatch> {
        match &self.body {
            WalBody::Batch(b) => Some(b),
            WalBody::Sealed { .. } => None,
        }
    }

    /// The data key a sealed entry needs.
    pub fn key_id(&self) -> Option<uuid::Uuid> {
        match &self.body {
            WalBody::Batch(_) => None,
            WalBody::Sealed { key, .. } => Some(*key),
        }
    }

    /// The batch, decrypted with `key` if the entry is sealed.
    pub fn open(
        &self,
        key: Option<&crate::crypto::DataKey>,
    ) -> std::result::Result<RecordBatch, String> {
        match (&self.body, key) {
            (WalBody::Batch(b), _) => Ok(b.clone()),
            (WalBody::Sealed { key: id, bytes }, Some(k)) if k.id == *id => {
                format::open_sealed(&self.tenant, self.signal, bytes, k)
            }
            (WalBody::Sealed { key, .. }, _) => Err(format!(
                "entry {} is sealed with data key {key}, not given",
                self.seq
            )),
        }
    }
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Entries recovered.
    pub entries: usize,
    /// One per segment whose tail was cut.
    pub truncated: Vec<Truncation>,
}

/// A segment cut at recovery: `bytes_cut` bytes from `offset` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes_cut: u64,
    pub reason: String,
}

/// Counters and gauges of the WAL.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Gauge: bytes of the segment files (durable lengths).
    pub bytes_on_disk: AtomicU64,
    /// Gauge: segment files.
    pub segments: AtomicU64,
    /// Entries appended durably.
    pub appends: AtomicU64,
    /// fdatasyncs of appended entries (one per group commit, failed ones too).
    pub fsyncs: AtomicU64,
    pub fsync_nanos_total: AtomicU64,
    /// Group commits (or segment starts) that failed.
    pub write_errors: AtomicU64,
    /// Bytes cut off segment tails at recovery.
    pub truncated_bytes: AtomicU64,
}

/// An entry of a group: its appender's ticket, its seq and its sealed frame.
type Numbered = (u64, u64, Vec<u8>);

/// A queued entry, encoded; sealed with its seq when a group takes it.
#[derive(Debug)]
struct Pending {
    /// The appender's ticket, under which its result is left.
    ticket: u64,
    tenant: TenantId,
    entry: EncodedEntry,
    queued: Instant,
}

/// Why a group commit failed, handed to each of its appenders.
#[derive(Clone, Debug)]
struct FailedWrite {
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
    /// Not an i/o failure that a retry may get past.
    lasting: bool,
}

impl FailedWrite {
    fn new(err: &WalError) -> Self {
        match err {
            WalError::Io { path, source } => Self {
                path: path.clone(),
                kind: source.kind(),
                message: source.to_string(),
                lasting: false,
            },
            other => Self {
                path: PathBuf::new(),
                kind: io::ErrorKind::Other,
                message: other.to_string(),
                lasting: false,
            },
        }
    }

    /// No seq is left to give (not transient: a retry cannot help).
    fn exhausted() -> Self {
        Self {
            path: PathBuf::new(),
            kind: io::ErrorKind::Other,
            message: "sequence numbers exhausted".into(),
            lasting: true,
        }
    }

    fn to_error(&self) -> WalError {
        if self.lasting {
            return WalError::Invalid(self.message.clone());
        }
        WalError::io(&self.path, io::Error::new(self.kind, self.message.clone()))
    }
}

/// Group-commit state, under [`Wal::queue`].
#[derive(Debug)]
struct Queue {
    next_seq: u64,
    next_ticket: u64,
    pending: Vec<Pending>,
    /// A leader is writing, by lane.
    writing: [bool; LANES],
    /// Each written (or failed) entry's seq, by ticket, until its appender
    /// takes it.
    results: HashMap<u64, std::result::Result<u64, FailedWrite>>,
    /// Bytes each tenant has in `pending` (tenants with none are absent).
    pending_bytes: HashMap<TenantId, usize>,
    /// Entries of a lower ticket were queued before the last
    /// [`Wal::next_seq`]: while any of them waits, groups take everything
    /// in queue order (no light group first), so each gets a seq below it.
    marked_below: u64,
    /// Appenders waiting for room in their tenant's share, by tenant (how
    /// many, and where they wait): woken when a group takes that tenant's
    /// entries, not at the end of every write, so a flood's backlog is not
    /// a herd that every other appender's wake-up queues behind.
    share_waiters: HashMap<TenantId, (usize, Arc<Condvar>)>,
}

impl Queue {
    /// An empty queue whose next entry gets `next_seq`.
    fn new(next_seq: u64) -> Self {
        Self {
            next_seq,
            next_ticket: 0,
            pending: Vec::new(),
            writing: [false; LANES],
            results: HashMap::new(),
            pending_bytes: HashMap::new(),
            marked_below: 0,
            share_waiters: HashMap::new(),
        }
    }

    /// Whether the side lane takes `p`: an entry of a light tenant, and
    /// while entries queued before the last mark wait (`marked_waiting`),
    /// one of them.
    fn side_takes(&self, p: &Pending, marked_waiting: bool) -> bool {
        let light = self.pending_bytes.get(&p.tenant).copied().unwrap_or(0) < LIGHT_TENANT_BYTES;
        light && (p.ticket < self.marked_below || !marked_waiting)
    }

    fn side_has_work(&self) -> bool {
        let marked = self.marked_waiting();
        self.pending.iter().any(|p| self.side_takes(p, marked))
    }

    /// Entries queued before the last [`Wal::next_seq`] are still waiting.
    fn marked_waiting(&self) -> bool {
        self.pending.iter().any(|p| p.ticket < self.marked_below)
    }

    /// See [`Wal::next_seq`]: the entries waiting are numbered before any
    /// queued after this call.
    fn mark(&mut self) -> u64 {
        self.marked_below = self.next_ticket;
        self.next_seq.saturating_add(self.pending.len() as u64)
    }
}

/// The most bytes one tenant may have waiting for the next group write
/// (beyond one entry): a tenant appending as fast as it can would otherwise
/// make every group, and so every other tenant's wait for its fsync, as
/// large as its backlog. Its further appends wait for the group under way.
const TENANT_PENDING_BYTES: usize = 256 << 10;

/// A tenant with at least this much waiting is *heavy* for the next group:
/// while lighter entries wait too, they are written and synced as a group
/// of their own first, so an entry of a few kilobytes waits for a small
/// write's fsync, not for a flood's quarter megabyte.
const LIGHT_TENANT_BYTES: usize = 64 << 10;

/// How long a heavy tenant's entries are left for lighter ones at most: past
/// it they go with the next group whatever waits, so a steady stream of
/// light entries cannot hold them back.
const HEAVY_DEFER_MAX: Duration = Duration::from_millis(5);

/// The lanes of the log: chains of segments written and synced side by
/// side, each by a leader of its own, seqs given from one count (see the
/// module docs).
const LANES: usize = 2;
/// The lane every group goes to while it is free, in the WAL directory.
const MAIN: usize = 0;
/// The lane that takes light tenants' entries while the main lane is
/// writing, in [`SIDE_DIR`].
const SIDE: usize = 1;

/// The side lane's directory, under the WAL directory.
pub const SIDE_DIR: &str = "side";

/// A lane's segment being written, only touched by its leader.
#[derive(Debug)]
struct Writer {
    /// The lane's directory.
    dir: PathBuf,
    active: ActiveSegment,
    /// Start a new segment before the next write (after a failed one).
    needs_roll: bool,
    /// The zeros written ahead of the last entry (see
    /// [`WalConfig::side_zero_fill_bytes`]; the main lane has none).
    zeros: Vec<u8>,
}

#[derive(Debug)]
struct SegmentState {
    path: PathBuf,
    bytes: u64,
    outstanding: HashSet<u64>,
}

/// Which segment holds which outstanding entries.
#[derive(Debug)]
struct Segments {
    by_first_seq: BTreeMap<u64, SegmentState>,
    active: u64,
}

/// The write-ahead log of one store. See the module docs.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    id: String,
    wal_id: uuid::Uuid,
    segment_bytes: u64,
    /// [`WalConfig::compress`].
    compress: bool,
    disk: Disk,
    queue: Mutex<Queue>,
    written: Condvar,
    writers: [Mutex<Writer>; LANES],
    /// Each lane's segments.
    segments: Mutex<[Segments; LANES]>,
    stats: WalStats,
    /// Held (locked) while the log is open: see [`files::lock_dir`].
    _lock: std::fs::File,
}

impl Wal {
    /// Opens (creating) the WAL directory, recovers every segment (see the
    /// module docs) and starts a new active segment. Returns the recovered
    /// entries in seq order; they stay outstanding until completed.
    pub fn open(config: WalConfig) -> Result<(Wal, Vec<WalEntry>, RecoveryReport)> {
        let disk = Disk {
            faults: config.faults.clone(),
        };
        let dir = config.dir;
        files::create_dir(&dir, &disk)?;
        let lock = files::lock_dir(&dir)?;
        let lane_dirs: [PathBuf; LANES] = [dir.clone(), dir.join(SIDE_DIR)];
        let lane_segments = |d: &Path| {
            if d.is_dir() {
                files::list_segments(d)
            } else {
                Ok(Vec::new())
            }
        };
        let found = [
            lane_segments(&lane_dirs[MAIN])?,
            lane_segments(&lane_dirs[SIDE])?,
        ];
        let any = found.iter().any(|f| !f.is_empty());
        let wal_id = files::load_or_create_id(&dir, any, &disk)?;
        let mut recovered = [
            recovery::recover(wal_id, &found[MAIN], false, &disk)?,
            recovery::recover(wal_id, &found[SIDE], true, &disk)?,
        ];
        let mut seen = HashSet::new();
        for (lane_dir, lane) in lane_dirs.iter().zip(&recovered) {
            if let Some(twice) = lane.entries.iter().find(|e| !seen.insert(e.seq)) {
                return Err(WalError::Corrupt {
                    path: lane_dir.clone(),
                    reason: format!(
                        "seq {} is in both lanes (a segment copied into the other lane?)",
                        twice.seq
                    ),
                });
            }
        }
        let next_seq = recovered.iter().map(|r| r.next_seq).max().unwrap_or(1);
        let mut report = RecoveryReport::default();
        let mut entries = Vec::new();
        for lane in &mut recovered {
            report.segments += lane.report.segments;
            report.truncated.append(&mut lane.report.truncated);
            entries.append(&mut lane.entries);
        }
        entries.sort_by_key(|e| e.seq);
        report.entries = entries.len();

        files::create_dir(&lane_dirs[SIDE], &disk)?;
        let [main, side] = recovered;
        let [main_dir, side_dir] = lane_dirs;
        let (main_writer, main_segments) =
            start_lane(main_dir, main, wal_id, next_seq, 0, config.compress, &disk)?;
        let (side_writer, side_segments) = start_lane(
            side_dir,
            side,
            wal_id,
            next_seq,
            // zeros past a segment's size would never be written
            config.side_zero_fill_bytes.min(config.segment_bytes),
            config.compress,
            &disk,
        )?;
        let segments = [main_segments, side_segments];

        let stats = WalStats::default();
        let store = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        let all = || segments.iter().flat_map(|s| s.by_first_seq.values());
        store(&stats.segments, all().count() as u64);
        store(&stats.bytes_on_disk, all().map(|s| s.bytes).sum());
        store(
            &stats.truncated_bytes,
            report.truncated.iter().map(|t| t.bytes_cut).sum(),
        );
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            entries = report.entries,
            truncated = report.truncated.len(),
            "write-ahead log opened"
        );
        let wal = Wal {
            id: wal_id.hyphenated().to_string(),
            wal_id,
            segment_bytes: config.segment_bytes,
            compress: config.compress,
            disk,
            queue: Mutex::new(Queue::new(next_seq)),
            written: Condvar::new(),
            segments: Mutex::new(segments),
            writers: [Mutex::new(main_writer), Mutex::new(side_writer)],
            stats,
            dir,
            _lock: lock,
        };
        Ok((wal, entries, report))
    }

    /// Identity of this WAL (uuid v7 text): created with the directory,
    /// stable across reopen, stored in every segment header.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one entry and returns its seq once it is durable (written and
    /// fdatasynced, shared with concurrent appends). On an i/o error (e.g. a
    /// full disk) the entry is not on disk and the error is transient: the
    /// next append tries again, in a new segment.
    pub fn append(
        &self,
        tenant: &TenantId,
        signal: Signal,
        policy_version: &str,
        batch: &RecordBatch,
    ) -> Result<u64> {
        self.append_then(tenant, signal, policy_version, batch, None, || {})
    }

    /// [`Wal::append`], the batch sealed with `key` when given, calling
    /// `encoded` once the entry is encoded (the CPU work done), before
    /// waiting for the write and fsync.
    pub fn append_then(
        &self,
        tenant: &TenantId,
        signal: Signal,
        policy_version: &str,
        batch: &RecordBatch,
        key: Option<&crate::crypto::DataKey>,
        encoded: impl FnOnce(),
    ) -> Result<u64> {
        let entry = EncodedEntry::new(tenant, signal, policy_version, batch, key, self.compress);
        encoded();
        let encoded = entry?;
        let mut queue = self.queue.lock();
        // a tenant with a group's worth waiting lets that group go first
        loop {
            let mine = queue.pending_bytes.get(tenant).copied().unwrap_or(0);
            if mine == 0 || mine.saturating_add(encoded.len()) <= TENANT_PENDING_BYTES {
                break;
            }
            if queue.writing[MAIN] {
                let room = {
                    let waiting = queue
                        .share_waiters
                        .entry(tenant.clone())
                        .or_insert_with(|| (0, Arc::new(Condvar::new())));
                    waiting.0 += 1;
                    waiting.1.clone()
                };
                room.wait(&mut queue);
                if let Some(waiting) = queue.share_waiters.get_mut(tenant) {
                    waiting.0 -= 1;
                    if waiting.0 == 0 {
                        queue.share_waiters.remove(tenant);
                    }
                }
            } else {
                self.lead(&mut queue, MAIN);
            }
        }
        *queue.pending_bytes.entry(tenant.clone()).or_default() += encoded.len();
        let ticket = queue.next_ticket;
        queue.next_ticket = ticket.wrapping_add(1);
        queue.pending.push(Pending {
            ticket,
            tenant: tenant.clone(),
            entry: encoded,
            queued: Instant::now(),
        });
        loop {
            if let Some(result) = queue.results.remove(&ticket) {
                return result.map_err(|failed| failed.to_error());
            }
            if !queue.writing[MAIN] && !queue.pending.is_empty() {
                self.lead(&mut queue, MAIN);
            } else if !queue.writing[SIDE] && queue.side_has_work() {
                self.lead(&mut queue, SIDE);
            } else {
                self.written.wait(&mut queue);
            }
        }
    }

    /// Writes the next group of `lane` ([`Wal::take_group`] for the main
    /// lane, [`Wal::take_side_group`] for the side one); the queue lock is
    /// released while writing.
    fn lead(&self, queue: &mut MutexGuard<'_, Queue>, lane: usize) {
        queue.writing[lane] = true;
        if let Some(faults) = &self.disk.faults {
            MutexGuard::unlocked(queue, || faults.wait_for_release());
        }
        let (group, unnumbered) = if lane == MAIN {
            Self::take_group(queue, Instant::now())
        } else {
            Self::take_side_group(queue)
        };
        for ticket in unnumbered {
            queue.results.insert(ticket, Err(FailedWrite::exhausted()));
        }
        let outcome = MutexGuard::unlocked(queue, || {
            if let Some(faults) = self.disk.faults.as_ref().filter(|_| lane == MAIN) {
                faults.wait_for_main_lane();
            }
            // a panic while writing fails this group, not the lane: the
            // lane stays marked as writing otherwise, and every later
            // append waits for it forever
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.write_group(lane, &group)
            }))
            .unwrap_or_else(|_| {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.writers[lane].lock().needs_roll = true;
                Err(FailedWrite::new(&WalError::io(
                    &self.dir,
                    io::Error::other("the write-ahead log write panicked"),
                )))
            })
        });
        for (ticket, seq, _) in group {
            queue
                .results
                .insert(ticket, outcome.as_ref().map(|()| seq).map_err(Clone::clone));
        }
        queue.writing[lane] = false;
        self.written.notify_all();
    }

    /// Takes the next group out of the queue, in the order queued, each
    /// entry sealed with its seq (so seqs increase in write order): every
    /// entry, unless entries of light tenants wait beside those of heavy
    /// ones (see [`LIGHT_TENANT_BYTES`]) and no heavy entry has waited
    /// [`HEAVY_DEFER_MAX`] yet: then the light ones alone. Also the tickets
    /// left without a seq (none unless seqs ran out).
    fn take_group(queue: &mut Queue, now: Instant) -> (Vec<Numbered>, Vec<u64>) {
        let heavy = |q: &Queue, t: &TenantId| {
            q.pending_bytes.get(t).copied().unwrap_or(0) >= LIGHT_TENANT_BYTES
        };
        let any_light = queue.pending.iter().any(|p| !heavy(queue, &p.tenant));
        let heavy_waited = queue
            .pending
            .iter()
            .filter(|p| heavy(queue, &p.tenant))
            .map(|p| now.saturating_duration_since(p.queued))
            .max();
        let marked_waiting = queue.marked_waiting();
        let light_alone =
            any_light && !marked_waiting && heavy_waited.is_some_and(|w| w < HEAVY_DEFER_MAX);
        let pending = std::mem::take(&mut queue.pending);
        let (taken, left): (Vec<Pending>, Vec<Pending>) = if light_alone {
            pending.into_iter().partition(|p| !heavy(queue, &p.tenant))
        } else {
            (pending, Vec::new())
        };
        queue.pending = left;
        Self::number(queue, taken)
    }

    /// Takes the side lane's group: the entries of light tenants (see
    /// [`LIGHT_TENANT_BYTES`]), in the order queued; while entries queued
    /// before a [`Wal::next_seq`] wait, only those of them.
    fn take_side_group(queue: &mut Queue) -> (Vec<Numbered>, Vec<u64>) {
        let marked = queue.marked_waiting();
        let pending = std::mem::take(&mut queue.pending);
        let (taken, left): (Vec<Pending>, Vec<Pending>) = pending
            .into_iter()
            .partition(|p| queue.side_takes(p, marked));
        queue.pending = left;
        Self::number(queue, taken)
    }

    /// Gives `taken` their seqs in order and seals them; tells their
    /// tenants' share waiters.
    fn number(queue: &mut Queue, taken: Vec<Pending>) -> (Vec<Numbered>, Vec<u64>) {
        let mut group = Vec::with_capacity(taken.len());
        let mut unnumbered = Vec::new();
        for p in taken {
            if let Some(bytes) = queue.pending_bytes.get_mut(&p.tenant) {
                *bytes = bytes.saturating_sub(p.entry.len());
                if *bytes == 0 {
                    queue.pending_bytes.remove(&p.tenant);
                }
            }
            if let Some((_, room)) = queue.share_waiters.get(&p.tenant) {
                room.notify_all();
            }
            let seq = queue.next_seq;
            match seq.checked_add(1) {
                Some(next) => {
                    queue.next_seq = next;
                    group.push((p.ticket, seq, p.entry.seal(seq)));
                }
                None => unnumbered.push(p.ticket),
            }
        }
        (group, unnumbered)
    }

    fn write_group(&self, lane: usize, group: &[Numbered]) -> std::result::Result<(), FailedWrite> {
        let Some((_, first_seq, first_frame)) = group.first() else {
            return Ok(());
        };
        if self.disk.faults.as_ref().is_some_and(|f| f.panics()) {
            panic!("injected fault: a write-ahead log write panics");
        }
        let mut writer = self.writers[lane].lock();
        let full = writer.active.len >= self.segment_bytes && writer.active.len > HEADER_LEN;
        if writer.needs_roll || full {
            if let Err(e) = self.roll(lane, &mut writer, *first_seq) {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "write-ahead log could not start a new segment");
                return Err(FailedWrite::new(&e));
            }
        }
        let joined;
        let bytes: &[u8] = if group.len() == 1 {
            first_frame
        } else {
            let mut all = Vec::with_capacity(group.iter().map(|(_, _, f)| f.len()).sum());
            for (_, _, frame) in group {
                all.extend_from_slice(frame);
            }
            joined = all;
            &joined
        };
        let end = writer.active.len + bytes.len() as u64;
        // Zeros after the entries when they would reach past those written
        // ahead: the file grows by a chunk at once, not at every sync.
        let zero_fill = writer.zeros.len() as u64;
        let mut zero_to = if zero_fill > 0 && end > writer.active.zeroed_to {
            end.saturating_add(zero_fill)
                .min(self.segment_bytes)
                .max(end)
        } else {
            end
        };
        let Writer { active, zeros, .. } = &mut *writer;
        let written = active
            .file
            .seek(SeekFrom::Start(active.len))
            .and_then(|_| active.file.write_all(bytes))
            .and_then(|()| {
                // best effort: on a disk too full for them the entries go
                // out without zeros ahead (cut back to their end)
                let ahead = usize::try_from(zero_to - end).expect("at most zeros.len()");
                if let Err(e) = active.file.write_all(&zeros[..ahead]) {
                    tracing::debug!(error = %e, "write-ahead log could not write zeros ahead");
                    active.file.set_len(end)?;
                    zero_to = end;
                }
                Ok(())
            })
            .and_then(|()| {
                let started = Instant::now();
                let synced = self.disk.sync_data(&active.file, &active.path);
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.stats.fsync_nanos_total.fetch_add(
                    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                synced
            });
        if let Err(e) = written {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            let err = WalError::io(&active.path, e);
            match self.disk.cut_back(&active.file, &active.path, active.len) {
                Ok(()) => {
                    // the zeros written ahead went with it
                    let gone = active.zeroed_to - active.len;
                    if let Some(seg) = self.segments.lock()[lane]
                        .by_first_seq
                        .get_mut(&active.first_seq)
                    {
                        seg.bytes -= gone;
                    }
                    self.stats.bytes_on_disk.fetch_sub(gone, Ordering::Relaxed);
                    active.zeroed_to = active.len;
                    tracing::warn!(error = %err, entries = group.len(), "write-ahead log write failed; cut back")
                }
                Err(cut) => tracing::error!(
                    error = %err,
                    cut_error = %cut,
                    entries = group.len(),
                    "write-ahead log write failed and could not be cut back; \
                     the next segment records where this one ends"
                ),
            }
            // Continue in a fresh file: after a failed fsync the kernel's view of
            // this one is not to be trusted.
            writer.needs_roll = true;
            return Err(FailedWrite::new(&err));
        }
        // The file's growth: the entries past the zeros written ahead, and
        // the new zeros.
        let added = zero_to.saturating_sub(active.zeroed_to);
        active.len = end;
        active.zeroed_to = active.zeroed_to.max(zero_to);
        let first_seq = active.first_seq;
        {
            let mut segments = self.segments.lock();
            if let Some(seg) = segments[lane].by_first_seq.get_mut(&first_seq) {
                seg.bytes += added;
                seg.outstanding.extend(group.iter().map(|(_, seq, _)| *seq));
            }
        }
        self.stats.bytes_on_disk.fetch_add(added, Ordering::Relaxed);
        self.stats
            .appends
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Seals the lane's active segment and starts one at `first_seq`; the
    /// old one goes if none of its entries is outstanding.
    fn roll(&self, lane: usize, writer: &mut Writer, first_seq: u64) -> Result<()> {
        let header = SegmentHeader {
            wal_id: self.wal_id,
            first_seq,
            previous: Some(PreviousSegment {
                first_seq: writer.active.first_seq,
                durable_len: writer.active.len,
            }),
            compressed: self.compress,
        };
        let new = files::create_segment(&writer.dir, &header, &self.disk)?;
        let old = std::mem::replace(&mut writer.active, new);
        writer.needs_roll = false;
        self.stats.segments.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_on_disk
            .fetch_add(HEADER_LEN, Ordering::Relaxed);
        let doomed = {
            let mut all = self.segments.lock();
            let segments = &mut all[lane];
            segments.by_first_seq.insert(
                first_seq,
                SegmentState {
                    path: writer.active.path.clone(),
                    bytes: HEADER_LEN,
                    outstanding: HashSet::new(),
                },
            );
            segments.active = first_seq;
            let done = segments
                .by_first_seq
                .get(&old.first_seq)
                .is_some_and(|s| s.outstanding.is_empty());
            if done {
                segments.by_first_seq.remove(&old.first_seq)
            } else {
                None
            }
        };
        if let Some(seg) = doomed {
            self.delete_segment(seg);
        }
        Ok(())
    }

    /// Marks an entry as committed to Parquet. A sealed segment without
    /// outstanding entries is deleted. Unknown or completed seqs are ignored.
    pub fn complete(&self, seq: u64) {
        let doomed = {
            let mut all = self.segments.lock();
            let mut doomed = None;
            for lane in all.iter_mut() {
                let Some((&first, seg)) = lane.by_first_seq.range_mut(..=seq).next_back() else {
                    continue;
                };
                if seg.outstanding.remove(&seq) {
                    if seg.outstanding.is_empty() && first != lane.active {
                        doomed = lane.by_first_seq.remove(&first);
                    }
                    break;
                }
            }
            doomed
        };
        if let Some(seg) = doomed {
            self.delete_segment(seg);
        }
    }

    fn delete_segment(&self, seg: SegmentState) {
        let removed = fs::remove_file(&seg.path)
            .map_err(|e| WalError::io(&seg.path, e))
            .and_then(|()| {
                self.stats.segments.fetch_sub(1, Ordering::Relaxed);
                self.stats
                    .bytes_on_disk
                    .fetch_sub(seg.bytes, Ordering::Relaxed);
                self.disk.sync_dir(seg.path.parent().unwrap_or(&self.dir))
            });
        match removed {
            Ok(()) => {
                tracing::debug!(segment = %seg.path.display(), "write-ahead log segment deleted")
            }
            Err(e) => tracing::warn!(
                error = %e,
                "could not delete a completed write-ahead log segment; \
                 its entries will be recovered again after a restart"
            ),
        }
    }

    /// A sequence number above that of every entry appended so far, those
    /// still queued included, and at or below that of every entry appended
    /// later: entries are numbered when a group takes them, and until the
    /// ones queued now are taken no light group goes ahead of them.
    pub fn next_seq(&self) -> u64 {
        self.queue.lock().mark()
    }

    /// Entries queued for the next group commit (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.queue.lock().pending.len()
    }

    /// Lanes with a group write in progress (for tests and metrics).
    pub fn lanes_writing(&self) -> usize {
        self.queue.lock().writing.iter().filter(|w| **w).count()
    }

    /// Seqs not completed yet, in order.
    pub fn outstanding(&self) -> Vec<u64> {
        let segments = self.segments.lock();
        let mut out: Vec<u64> = segments
            .iter()
            .flat_map(|lane| lane.by_first_seq.values())
            .flat_map(|s| s.outstanding.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }
}

/// Starts a lane after recovery (its entries and report taken): a new
/// active segment at `next_seq` after the lane's last one, and the
/// recovered segments without entries (or with a torn header) deleted.
fn start_lane(
    dir: PathBuf,
    lane: recovery::Recovered,
    wal_id: uuid::Uuid,
    next_seq: u64,
    zero_fill: u64,
    compressed: bool,
    disk: &Disk,
) -> Result<(Writer, Segments)> {
    let header = SegmentHeader {
        wal_id,
        first_seq: next_seq,
        previous: lane.previous,
        compressed,
    };
    let active = files::create_segment(&dir, &header, disk)?;
    let mut by_first_seq = BTreeMap::new();
    let mut doomed = lane.discard;
    for seg in lane.segments {
        if seg.seqs.is_empty() {
            doomed.push(seg.path);
        } else {
            by_first_seq.insert(
                seg.first_seq,
                SegmentState {
                    path: seg.path,
                    bytes: seg.len,
                    outstanding: seg.seqs.into_iter().collect(),
                },
            );
        }
    }
    by_first_seq.insert(
        active.first_seq,
        SegmentState {
            path: active.path.clone(),
            bytes: active.len,
            outstanding: HashSet::new(),
        },
    );
    for path in &doomed {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io(path, e)),
        }
    }
    if !doomed.is_empty() {
        disk.sync_dir(&dir)?;
    }
    let segments = Segments {
        by_first_seq,
        active: active.first_seq,
    };
    let writer = Writer {
        dir,
        active,
        needs_roll: false,
        zeros: vec![0; usize::try_from(zero_fill).unwrap_or(usize::MAX)],
    };
    Ok((writer, segments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    fn entry(tenant: &str, bytes: usize) -> (TenantId, EncodedEntry) {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["x".repeat(bytes)]))],
        )
        .unwrap();
        let tenant = TenantId::new(tenant).unwrap();
        let e = EncodedEntry::new(&tenant, Signal::Logs, "v1", &batch, None, false).unwrap();
        (tenant, e)
    }

    fn queue_of(entries: &[(&str, usize)], queued: Instant) -> Queue {
        let mut q = Queue::new(10);
        for (t, bytes) in entries {
            push(&mut q, t, *bytes, queued);
        }
        q
    }

    fn push(q: &mut Queue, tenant: &str, bytes: usize, queued: Instant) {
        let (tenant, entry) = entry(tenant, bytes);
        *q.pending_bytes.entry(tenant.clone()).or_default() += entry.len();
        q.pending.push(Pending {
            ticket: q.next_ticket,
            tenant,
            entry,
            queued,
        });
        q.next_ticket += 1;
    }

    /// An offboarding mark (`next_seq`) is above every entry queued before
    /// it: a light entry queued after it does not go ahead of them.
    #[test]
    fn entries_queued_after_a_mark_do_not_go_ahead_of_those_before() {
        let start = Instant::now();
        let soon = start + Duration::from_millis(1);
        let mut q = queue_of(&[("flood", 150_000), ("flood", 100)], start);
        let mark = q.mark();
        assert_eq!(mark, 12);
        push(&mut q, "small", 100, start);
        let (group, _) = Wal::take_group(&mut q, soon);
        assert_eq!(tickets(&group), vec![0, 1, 2], "all, in queue order");
        assert!(group[0].1 < mark && group[1].1 < mark);
        assert!(group[2].1 >= mark);
        // the marked entries gone, light entries go first again
        push(&mut q, "flood", 150_000, start);
        push(&mut q, "small", 100, start);
        let (group, _) = Wal::take_group(&mut q, soon);
        assert_eq!(tickets(&group), vec![4]);
    }

    #[test]
    fn the_side_lane_takes_light_entries_and_respects_a_mark() {
        let start = Instant::now();
        let mut q = queue_of(&[("flood", 150_000), ("small", 100), ("b", 200)], start);
        assert!(q.side_has_work());
        let (group, _) = Wal::take_side_group(&mut q);
        assert_eq!(tickets(&group), vec![1, 2], "never the heavy one");
        assert_eq!(group[0].1, 10);
        assert!(!q.side_has_work(), "only the flood's entry is left");
        // entries queued before a mark wait: only those of them
        push(&mut q, "c", 100, start);
        let mark = q.mark();
        push(&mut q, "d", 100, start);
        let (group, _) = Wal::take_side_group(&mut q);
        assert_eq!(tickets(&group), vec![3], "c, queued before the mark");
        assert!(group[0].1 < mark);
        assert!(
            !q.side_has_work(),
            "d waits for the flood's entry to be numbered"
        );
        let (group, _) = Wal::take_group(&mut q, start + HEAVY_DEFER_MAX);
        assert_eq!(tickets(&group), vec![0, 4]);
        assert!(group[0].1 < mark && group[1].1 >= mark);
    }

    fn tickets(group: &[Numbered]) -> Vec<u64> {
        group.iter().map(|(t, _, _)| *t).collect()
    }

    #[test]
    fn light_entries_go_first_as_a_group_of_their_own_for_a_while() {
        let start = Instant::now();
        let entries = [
            ("flood", 150_000),
            ("small", 100),
            ("flood", 100),
            ("b", 200),
        ];
        // the flood has 150 KB waiting: heavy; the others light
        let mut q = queue_of(&entries, start);
        let (group, none) = Wal::take_group(&mut q, start + Duration::from_millis(1));
        assert!(none.is_empty());
        assert_eq!(tickets(&group), vec![1, 3], "the light ones alone");
        // seqs in write order, and each frame sealed with its own
        assert_eq!(
            group.iter().map(|(_, s, _)| *s).collect::<Vec<_>>(),
            vec![10, 11]
        );
        for (_, seq, frame) in &group {
            assert_eq!(&frame[8..16], &seq.to_le_bytes());
        }
        assert_eq!(q.pending.len(), 2);
        assert!(!q
            .pending_bytes
            .contains_key(&TenantId::new("small").unwrap()));
        // then the heavy ones, numbered after
        let (group, _) = Wal::take_group(&mut q, start + Duration::from_millis(1));
        assert_eq!(tickets(&group), vec![0, 2]);
        assert_eq!(group[0].1, 12);
        assert!(q.pending.is_empty() && q.pending_bytes.is_empty());

        // once a heavy entry has waited its most, everything goes together
        let mut q = queue_of(&entries, start);
        let (group, _) = Wal::take_group(&mut q, start + HEAVY_DEFER_MAX);
        assert_eq!(tickets(&group), vec![0, 1, 2, 3]);

        // light tenants alone, or heavy ones alone: one group of all
        let mut q = queue_of(&[("a", 100), ("b", 100)], start);
        assert_eq!(tickets(&Wal::take_group(&mut q, start).0), vec![0, 1]);
        let mut q = queue_of(&[("a", 100_000), ("b", 100_000)], start);
        assert_eq!(tickets(&Wal::take_group(&mut q, start).0), vec![0, 1]);
    }
}
