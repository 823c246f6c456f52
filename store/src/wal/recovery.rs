//! Reading the segments at open: the valid prefix of each, the rest cut.
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use arrow::buffer::Buffer;
use uuid::Uuid;

use super::files::{self, Disk};
use super::format::{
    is_zeros, scan_entries, HeaderProblem, PreviousSegment, SegmentHeader, HEADER_LEN,
};
use super::{RecoveryReport, Truncation, WalEntry, WalError};

/// A segment with a usable header, after its invalid tail was cut.
#[derive(Debug)]
pub(super) struct RecoveredSegment {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    pub(super) len: u64,
    pub(super) seqs: Vec<u64>,
}

#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) entries: Vec<WalEntry>,
    pub(super) segments: Vec<RecoveredSegment>,
    /// Segments whose header is torn: they never held a durable entry.
    pub(super) discard: Vec<PathBuf>,
    pub(super) report: RecoveryReport,
    /// First seq of the next segment: above every seq and segment name seen.
    pub(super) next_seq: u64,
    /// The last usable segment, for the next segment's header.
    pub(super) previous: Option<PreviousSegment>,
}

/// Recovers one lane's `segments`; `zeros_ahead`: the lane writes zeros
/// ahead of its entries, so zeros after a segment's last entry are its end
/// (within a length a later segment recorded as durable they are damage).
pub(super) fn recover(
    wal_id: Uuid,
    segments: &[(u64, PathBuf)],
    zeros_ahead: bool,
    disk: &Disk,
) -> Result<Recovered, WalError> {
    // Headers first: a segment's durable length may be recorded in a later one's.
    let mut headers = Vec::with_capacity(segments.len());
    for (name_seq, path) in segments {
        let header = match SegmentHeader::decode(&files::read_header_bytes(path)?) {
            Ok(h) if h.wal_id != wal_id => {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    reason: format!(
                        "segment belongs to WAL {}, this WAL is {}",
                        h.wal_id.hyphenated(),
                        wal_id.hyphenated()
                    ),
                })
            }
            Ok(h) if h.first_seq != *name_seq => {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    reason: format!(
                        "segment header starts at seq {}, its name at {name_seq}",
                        h.first_seq
                    ),
                })
            }
            Ok(h) => Ok(h),
            Err(HeaderProblem::Torn(reason)) => Err(reason),
            Err(HeaderProblem::Unknown(reason)) => {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    reason: reason.to_string(),
                })
            }
        };
        headers.push(header);
    }
    let mut claims: HashMap<u64, u64> = HashMap::new();
    for prev in headers.iter().flatten().filter_map(|h| h.previous) {
        let claim = claims.entry(prev.first_seq).or_insert(prev.durable_len);
        *claim = (*claim).min(prev.durable_len);
    }

    let mut out = Recovered {
        entries: Vec::new(),
        segments: Vec::new(),
        discard: Vec::new(),
        report: RecoveryReport {
            segments: segments.len(),
            ..RecoveryReport::default()
        },
        next_seq: 1,
        previous: None,
    };
    let mut last_seq = None;
    for ((name_seq, path), header) in segments.iter().zip(headers) {
        out.next_seq = out.next_seq.max(seq_after(*name_seq, path)?);
        let data = fs::read(path).map_err(|e| WalError::io(path, e))?;
        let file_len = data.len() as u64;
        let header = match header {
            Ok(h) => h,
            Err(reason) => {
                if file_len > 0 {
                    record_cut(&mut out.report, path.clone(), 0, file_len, reason.into());
                }
                out.discard.push(path.clone());
                continue;
            }
        };
        let claim = claims.get(name_seq).map(|&c| c.max(HEADER_LEN));
        let limit = claim.map_or(file_len, |c| c.min(file_len));
        let data = Buffer::from_vec(data);
        let scan = scan_entries(
            &data,
            limit,
            header.first_seq,
            last_seq,
            zeros_ahead && claim.is_none(),
        );
        let zero_tail = zeros_ahead
            && scan.stop.is_none()
            && is_zeros(&data.as_slice()[scan.valid_end as usize..]);
        if scan.valid_end < file_len && zero_tail {
            // Zeros written ahead of the next entry: no damage, nothing lost.
            files::cut(path, scan.valid_end, disk)?;
            tracing::debug!(
                segment = %path.display(),
                offset = scan.valid_end,
                bytes = file_len - scan.valid_end,
                "write-ahead log segment's zeros written ahead cut"
            );
        } else if scan.valid_end < file_len {
            let reason = scan.stop.unwrap_or_else(|| {
                format!(
                    "bytes past the durable length {} recorded when the segment was sealed \
                     (a failed write that could not be cut back)",
                    claim.unwrap_or(file_len)
                )
            });
            files::cut(path, scan.valid_end, disk)?;
            record_cut(
                &mut out.report,
                path.clone(),
                scan.valid_end,
                file_len - scan.valid_end,
                reason,
            );
        }
        if let Some(last) = scan.entries.last() {
            last_seq = Some(last.seq);
            out.next_seq = out.next_seq.max(seq_after(last.seq, path)?);
        }
        out.previous = Some(PreviousSegment {
            first_seq: *name_seq,
            durable_len: scan.valid_end,
        });
        out.segments.push(RecoveredSegment {
            first_seq: *name_seq,
            path: path.clone(),
            len: scan.valid_end,
            seqs: scan.entries.iter().map(|e| e.seq).collect(),
        });
        out.entries.extend(scan.entries);
    }
    out.report.entries = out.entries.len();
    Ok(out)
}

fn seq_after(seq: u64, path: &std::path::Path) -> Result<u64, WalError> {
    seq.checked_add(1).ok_or_else(|| WalError::Corrupt {
        path: path.to_path_buf(),
        reason: "sequence numbers exhausted".into(),
    })
}

fn record_cut(
    report: &mut RecoveryReport,
    segment: PathBuf,
    offset: u64,
    bytes_cut: u64,
    reason: String,
) {
    tracing::warn!(
        segment = %segment.display(),
        offset,
        bytes_cut,
        %reason,
        "write-ahead log segment cut after its last valid entry"
    );
    report.truncated.push(Truncation {
        segment,
        offset,
        bytes_cut,
        reason,
    });
}
