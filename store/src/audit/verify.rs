//! Verification of a whole log file: every line canonical and self-hashed,
//! seqs consecutive from 1, each `prev_hash` the previous entry's `hash`, a
//! newline after the last entry, and optionally an externally kept anchor.
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::{parse_line, GENESIS_HASH};

/// An entry known from outside the file (e.g. the head the collector logged
/// at shutdown or that an operator noted). The chain alone cannot show that
/// entries were cut from the end, or cut and re-appended; an anchor can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    /// `SEQ:HASH`, as printed by [`VerifyReport`]'s head.
    fn from_str(s: &str) -> Result<Self, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("anchor {s:?} is not SEQ:HASH"))?;
        let seq = seq
            .parse()
            .map_err(|_| format!("anchor seq {seq:?} is not a number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("anchor hash {hash:?} is not 64 hex digits"));
        }
        Ok(Anchor {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Entries that must be present with exactly these hashes.
    pub anchors: Vec<Anchor>,
}

/// A log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    /// The last entry (seq 0 and [`GENESIS_HASH`] for an empty log); keep it
    /// as an [`Anchor`] for the next verification.
    pub head: Anchor,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not an audit entry at all (bad JSON, missing or unknown field).
    Malformed(String),
    /// Parses, but is not byte-for-byte the canonical form of what it holds.
    NotCanonical { seq: u64 },
    /// The stored hash is not the hash of the fields: the entry was edited.
    HashMismatch {
        seq: u64,
        stored: String,
        computed: String,
    },
    /// Seq is not the previous one plus one: entries removed or reordered.
    SeqOutOfOrder { expected: u64, found: u64 },
    /// `prev_hash` is not the previous entry's hash: an entry removed,
    /// reordered, replaced or forged.
    BrokenChain {
        seq: u64,
        expected: String,
        found: String,
    },
    /// The last line has no newline: cut off by truncation or a torn write.
    Incomplete,
    /// An anchor's entry is missing: the log ends before it.
    AnchorMissing { anchor: Anchor, last_seq: u64 },
    /// An anchor's entry has another hash: rewritten from there on.
    AnchorMismatch { anchor: Anchor, found: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed(e) => write!(f, "not an audit entry: {e}"),
            Problem::NotCanonical { seq } => {
                write!(f, "seq {seq} is not in canonical form (edited)")
            }
            Problem::HashMismatch {
                seq,
                stored,
                computed,
            } => write!(
                f,
                "seq {seq} was edited: stored hash {stored}, fields hash to {computed}"
            ),
            Problem::SeqOutOfOrder { expected, found } => write!(
                f,
                "expected seq {expected}, found {found} (entries removed or reordered)"
            ),
            Problem::BrokenChain {
                seq,
                expected,
                found,
            } => write!(
                f,
                "seq {seq} does not follow the previous entry: prev_hash {found}, expected {expected}"
            ),
            Problem::Incomplete => write!(f, "last line is incomplete (truncated or torn write)"),
            Problem::AnchorMissing { anchor, last_seq } => write!(
                f,
                "anchor {anchor} is missing: the log ends at seq {last_seq} (truncated)"
            ),
            Problem::AnchorMismatch { anchor, found } => write!(
                f,
                "anchor {anchor} does not match: seq {} has hash {found} (rewritten)",
                anchor.seq
            ),
        }
    }
}

/// Why a log did not verify: the first problem, with its 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {problem}")]
    Invalid {
        path: PathBuf,
        line: u64,
        problem: Problem,
    },
}

impl VerifyError {
    /// The line of the first problem, if the file could be read.
    pub fn line(&self) -> Option<u64> {
        match self {
            VerifyError::Invalid { line, .. } => Some(*line),
            VerifyError::Io { .. } => None,
        }
    }

    pub fn problem(&self) -> Option<&Problem> {
        match self {
            VerifyError::Invalid { problem, .. } => Some(problem),
            VerifyError::Io { .. } => None,
        }
    }
}

/// Verifies the log at `path` (a file, or a directory holding
/// [`super::LOG_FILE_NAME`]).
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_with(path, &VerifyOptions::default())
}

/// [`verify`] that also checks `options.anchors`.
pub fn verify_with(path: &Path, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let path = if path.is_dir() {
        path.join(super::LOG_FILE_NAME)
    } else {
        path.to_path_buf()
    };
    let io = |e| VerifyError::Io {
        path: path.clone(),
        source: e,
    };
    let invalid = |line, problem| VerifyError::Invalid {
        path: path.clone(),
        line,
        problem,
    };
    let mut reader = BufReader::new(File::open(&path).map_err(io)?);
    let mut anchors: Vec<&Anchor> = options.anchors.iter().collect();
    anchors.sort_by_key(|a| a.seq);
    let mut anchors = anchors.into_iter().peekable();

    let mut head = Anchor {
        seq: 0,
        hash: GENESIS_HASH.to_string(),
    };
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            break;
        }
        line_no += 1;
        if buf.pop() != Some(b'\n') {
            return Err(invalid(line_no, Problem::Incomplete));
        }
        let event = parse_line(&buf).map_err(|p| invalid(line_no, p))?;
        if event.seq != head.seq + 1 {
            return Err(invalid(
                line_no,
                Problem::SeqOutOfOrder {
                    expected: head.seq + 1,
                    found: event.seq,
                },
            ));
        }
        if event.prev_hash != head.hash {
            return Err(invalid(
                line_no,
                Problem::BrokenChain {
                    seq: event.seq,
                    expected: head.hash,
                    found: event.prev_hash,
                },
            ));
        }
        while let Some(a) = anchors.next_if(|a| a.seq <= event.seq) {
            // seqs are consecutive from 1, so an anchor at or below this seq
            // is this entry (lower ones were checked on earlier lines, except seq 0).
            if a.seq == event.seq && a.hash != event.hash {
                return Err(invalid(
                    line_no,
                    Problem::AnchorMismatch {
                        anchor: a.clone(),
                        found: event.hash.clone(),
                    },
                ));
            }
        }
        head = Anchor {
            seq: event.seq,
            hash: event.hash,
        };
    }
    if let Some(a) = anchors.next() {
        return Err(invalid(
            line_no + 1,
            Problem::AnchorMissing {
                anchor: a.clone(),
                last_seq: head.seq,
            },
        ));
    }
    Ok(VerifyReport {
        entries: line_no,
        head,
    })
}
