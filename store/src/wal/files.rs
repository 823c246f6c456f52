//! File-system side of the WAL: segment names, creation, the id file, and
//! every fsync (through [`Disk`], where test faults are injected).
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::format::{SegmentHeader, HEADER_LEN};
use super::{WalError, WriteFaults};

/// Name of the file holding the WAL id.
pub(super) const ID_FILE: &str = "wal.id";
const ID_TEMP: &str = "wal.id.tmp";
/// Locked (`flock`) while a process has the WAL open.
const LOCK_FILE: &str = "wal.lock";
const SEGMENT_SUFFIX: &str = ".wal";
const SEQ_DIGITS: usize = 20;

pub(super) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:0SEQ_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The first seq in a segment file name, if `name` is one.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files of `dir` in seq order; other files are left alone.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(parse_segment_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every durability point of the WAL, so that tests can fail or skip them.
#[derive(Clone, Debug)]
pub(super) struct Disk {
    pub(super) faults: Option<Arc<WriteFaults>>,
}

impl Disk {
    fn skip_sync(&self) -> bool {
        self.faults.as_ref().is_some_and(|f| f.skips_sync())
    }

    /// fdatasync of freshly written data; fails while write faults are on.
    pub(super) fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        if let Some(faults) = &self.faults {
            faults.check(path)?;
        }
        if self.skip_sync() {
            return Ok(());
        }
        file.sync_data()
    }

    /// fdatasync after shrinking a file: needs no space, so write faults do
    /// not apply.
    pub(super) fn sync_cut(&self, file: &File) -> io::Result<()> {
        if self.skip_sync() {
            return Ok(());
        }
        file.sync_data()
    }

    /// Cuts a failed write back off the active segment.
    pub(super) fn cut_back(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        if self.faults.as_ref().is_some_and(|f| f.cut_back_fails()) {
            return Err(io::Error::other(format!(
                "injected fault: cannot cut back {}",
                path.display()
            )));
        }
        file.set_len(len)?;
        self.sync_cut(file)
    }

    pub(super) fn sync_dir(&self, dir: &Path) -> Result<(), WalError> {
        if self.skip_sync() {
            return Ok(());
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| WalError::io(dir, e))
    }
}

/// Creates `dir` (and fsyncs its parent) if it does not exist yet.
pub(super) fn create_dir(dir: &Path, disk: &Disk) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        disk.sync_dir(parent)?;
    }
    Ok(())
}

/// Locks the WAL directory for this process while the returned file is
/// open: a second server given the same log (the same `wal.path`, or the
/// same data directory) would write its segments beside ours and replay
/// ours as its own after a restart.
pub(super) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| WalError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(WalError::Locked(path)),
        Err(fs::TryLockError::Error(e)) => Err(WalError::io(&path, e)),
    }
}

/// Reads the WAL id, or creates a new one when there are no segments: seqs
/// continue from the segments (the active one is never deleted), so without
/// any the old id could see its seqs again. Segments without an id file are
/// refused: they belong to a WAL whose identity is lost.
pub(super) fn load_or_create_id(
    dir: &Path,
    has_segments: bool,
    disk: &Disk,
) -> Result<Uuid, WalError> {
    let path = dir.join(ID_FILE);
    let temp = dir.join(ID_TEMP);
    let _ = fs::remove_file(&temp);
    match fs::read_to_string(&path) {
        Ok(text) if has_segments => Uuid::try_parse(text.trim()).map_err(|e| WalError::Corrupt {
            path: path.clone(),
            reason: format!("invalid WAL id: {e}"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && has_segments => Err(WalError::Corrupt {
            path,
            reason: "segment files exist but the WAL id file is missing".into(),
        }),
        Ok(_) => new_id(dir, &path, &temp, disk),
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_id(dir, &path, &temp, disk),
        Err(e) => Err(WalError::io(&path, e)),
    }
}

fn new_id(dir: &Path, path: &Path, temp: &Path, disk: &Disk) -> Result<Uuid, WalError> {
    let id = Uuid::now_v7();
    let write = || -> io::Result<()> {
        let mut f = File::create(temp)?;
        f.write_all(format!("{}\n", id.hyphenated()).as_bytes())?;
        disk.sync_data(&f, temp)?;
        fs::rename(temp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(temp);
        WalError::io(path, e)
    })?;
    disk.sync_dir(dir)?;
    Ok(id)
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct ActiveSegment {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) first_seq: u64,
    /// Bytes known durable (header and fsynced entries): where the next
    /// entry goes.
    pub(super) len: u64,
    /// The file's length: past `len` it holds only zeros written ahead
    /// (see [`super::WalConfig::side_zero_fill_bytes`]).
    pub(super) zeroed_to: u64,
}

/// Creates a segment file holding only `header`, durable (file and
/// directory fsynced) before it is returned; on failure nothing is left.
pub(super) fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
    disk: &Disk,
) -> Result<ActiveSegment, WalError> {
    let path = dir.join(segment_name(header.first_seq));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| WalError::io(&path, e))?;
    let written = file
        .write_all(&header.encode())
        .and_then(|()| disk.sync_data(&file, &path));
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(&path);
        let _ = disk.sync_dir(dir);
        return Err(WalError::io(&path, e));
    }
    disk.sync_dir(dir)?;
    Ok(ActiveSegment {
        file,
        path,
        first_seq: header.first_seq,
        len: HEADER_LEN,
        zeroed_to: HEADER_LEN,
    })
}

/// The first `HEADER_LEN` bytes of a file (fewer if it is shorter).
pub(super) fn read_header_bytes(path: &Path) -> Result<Vec<u8>, WalError> {
    let mut out = Vec::with_capacity(HEADER_LEN as usize);
    File::open(path)
        .and_then(|f| f.take(HEADER_LEN).read_to_end(&mut out))
        .map_err(|e| WalError::io(path, e))?;
    Ok(out)
}

/// Shrinks `path` to `len` bytes, durably.
pub(super) fn cut(path: &Path, len: u64, disk: &Disk) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io(path, e))?;
    file.set_len(len)
        .and_then(|()| disk.sync_cut(&file))
        .map_err(|e| WalError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_seq_and_parse_back() {
        assert_eq!(segment_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert!(segment_name(9) < segment_name(10));
        for bad in [
            "42.wal",
            "0000000000000000004x.wal",
            "00000000000000000042.wal.tmp",
            "99999999999999999999.wal",
            "wal.id",
            "+0000000000000000042.wal",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
