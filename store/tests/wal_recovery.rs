//! Recovery of damaged write-ahead logs, checked against a model: a segment
//! cut at any byte, and bytes flipped anywhere, give back exactly the entries
//! that lie whole before the damage, and the file is cut right after them.
mod common;
use common::{segment_files, small_batch};
use std::fs;
use std::path::{Path, PathBuf};

use bulkhead_rules::TenantId;
use bulkhead_store::{Signal, Wal, WalBody, WalConfig, WalEntry, WriteFaults};
use proptest::prelude::*;

const HEADER_LEN: u64 = 52;

#[derive(Clone, Debug)]
struct Spec {
    tenant: &'static str,
    signal: Signal,
    policy_version: String,
    rows: Vec<(i64, String)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec!["acme", "globex", "t-1"]),
        prop::sample::select(Signal::ALL.to_vec()),
        "[a-z0-9]{0,6}",
        prop::collection::vec((any::<i64>(), "[a-zé]{0,4}"), 0..3),
    )
        .prop_map(|(tenant, signal, policy_version, rows)| Spec {
            tenant,
            signal,
            policy_version,
            rows,
        })
}

/// fsyncs skipped: these tests only simulate damage, never power loss.
fn config(dir: &Path, segment_bytes: u64) -> WalConfig {
    let faults = WriteFaults::new();
    faults.set_skip_sync(true);
    WalConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        side_zero_fill_bytes: WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES,
        compress: true,
        faults: Some(faults),
    }
}

/// An entry as written, with the segment file it went to and where it ends.
struct Written {
    entry: WalEntry,
    segment: PathBuf,
    end: u64,
}

/// Writes `specs` into a fresh WAL in `dir`; the WAL is closed again.
fn write_all(dir: &Path, segment_bytes: u64, specs: &[Spec]) -> Vec<Written> {
    let (wal, _, _) = Wal::open(config(dir, segment_bytes)).unwrap();
    let mut out = Vec::new();
    for s in specs {
        let tenant = TenantId::new(s.tenant).unwrap();
        let b = small_batch(&s.rows);
        let seq = wal
            .append(&tenant, s.signal, &s.policy_version, &b)
            .unwrap();
        let segment = segment_files(dir).pop().unwrap();
        let end = fs::metadata(&segment).unwrap().len();
        out.push(Written {
            entry: WalEntry {
                seq,
                tenant,
                signal: s.signal,
                policy_version: s.policy_version.clone(),
                body: WalBody::Batch(b),
            },
            segment,
            end,
        });
    }
    out
}

/// A copy of the WAL in `from` in a new directory, each segment passed
/// through `damage`.
fn damaged_copy(from: &Path, damage: impl Fn(&Path, Vec<u8>) -> Vec<u8>) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    fs::copy(from.join("wal.id"), to.path().join("wal.id")).unwrap();
    for seg in segment_files(from) {
        let bytes = damage(&seg, fs::read(&seg).unwrap());
        fs::write(to.path().join(seg.file_name().unwrap()), bytes).unwrap();
    }
    to
}

/// Where the valid prefix of a segment damaged from `first_bad` on ends:
/// nothing if the header is hit, else the end of the last entry before it.
fn valid_end(written: &[&Written], first_bad: u64) -> Option<u64> {
    (first_bad >= HEADER_LEN).then(|| {
        written
            .iter()
            .map(|w| w.end)
            .filter(|&e| e <= first_bad)
            .max()
            .unwrap_or(HEADER_LEN)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Every byte offset of a segment: cut there, reopen, compare.
    #[test]
    fn truncation_at_every_byte_offset(specs in prop::collection::vec(spec(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path(), u64::MAX, &specs);
        let segment = written[0].segment.clone();
        prop_assert!(written.iter().all(|w| w.segment == segment));
        let name = segment.file_name().unwrap().to_owned();
        let total = fs::metadata(&segment).unwrap().len();
        let all: Vec<&Written> = written.iter().collect();

        for offset in 0..=total {
            let copy = damaged_copy(dir.path(), |_, mut b| {
                b.truncate(offset as usize);
                b
            });
            let cut = copy.path().join(&name);
            let (wal, recovered, report) = Wal::open(config(copy.path(), u64::MAX)).unwrap();
            let expected: Vec<WalEntry> =
                written.iter().filter(|w| w.end <= offset).map(|w| w.entry.clone()).collect();
            prop_assert_eq!(&recovered, &expected, "offset {}", offset);
            let end = valid_end(&all, offset);
            let cut_bytes = offset - end.unwrap_or(0);
            if cut_bytes > 0 {
                prop_assert_eq!(report.truncated.len(), 1, "offset {}", offset);
                prop_assert_eq!(report.truncated[0].bytes_cut, cut_bytes);
                prop_assert_eq!(report.truncated[0].offset, end.unwrap_or(0));
            } else {
                prop_assert!(report.truncated.is_empty(), "offset {}: {:?}", offset, report);
            }
            if expected.is_empty() {
                prop_assert!(!cut.exists(), "offset {}: a segment without entries is deleted", offset);
            } else {
                prop_assert_eq!(fs::metadata(&cut).unwrap().len(), end.unwrap());
            }
            // The WAL goes on after the cut, above every recovered seq.
            let seq = wal
                .append(&TenantId::new("acme").unwrap(), Signal::Logs, "v", &small_batch::<&str>(&[]))
                .unwrap();
            prop_assert!(expected.iter().all(|e| e.seq < seq));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random bytes flipped in one segment: the entries before the first
    /// damaged byte come back, nothing else of it, never a damaged entry.
    #[test]
    fn random_corruption_recovers_exactly_the_clean_prefix(
        specs in prop::collection::vec(spec(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path(), u64::MAX, &specs);
        let total = fs::metadata(&written[0].segment).unwrap().len() as usize;
        let offsets: Vec<(usize, u8)> = flips.iter().map(|(i, x)| (i.index(total), *x)).collect();
        let first_bad = offsets.iter().map(|o| o.0).min().unwrap() as u64;
        let copy = damaged_copy(dir.path(), |_, mut b| {
            for &(at, x) in &offsets {
                b[at] ^= x;
            }
            b
        });
        let (_, recovered, _) = Wal::open(config(copy.path(), u64::MAX)).unwrap();
        let all: Vec<&Written> = written.iter().collect();
        let end = valid_end(&all, first_bad);
        let expected: Vec<WalEntry> = written
            .iter()
            .filter(|w| end.is_some_and(|e| w.end <= e))
            .map(|w| w.entry.clone())
            .collect();
        prop_assert_eq!(&recovered, &expected);
        let seg = copy.path().join(written[0].segment.file_name().unwrap());
        if expected.is_empty() {
            prop_assert!(!seg.exists());
        } else {
            prop_assert_eq!(fs::metadata(&seg).unwrap().len(), end.unwrap());
        }
    }

    /// The same across several segments, each damaged or not: every segment
    /// gives back its clean prefix, later segments are still read.
    #[test]
    fn random_corruption_across_segments(
        specs in prop::collection::vec(spec(), 1..10),
        segment_bytes in 200..2_000u64,
        damage in prop::collection::vec(
            prop::option::of((any::<prop::sample::Index>(), 1..=255u8)), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path(), segment_bytes, &specs);
        let segments = segment_files(dir.path());
        // segment -> first damaged offset
        let mut first_bad = std::collections::HashMap::new();
        for (seg, d) in segments.iter().zip(damage.iter().cycle()) {
            if let Some((i, _)) = d {
                let len = fs::metadata(seg).unwrap().len() as usize;
                first_bad.insert(seg.clone(), i.index(len) as u64);
            }
        }
        let copy = damaged_copy(dir.path(), |seg, mut b| {
            if let Some(d) = segments.iter().position(|s| s == seg).and_then(|i| damage[i % damage.len()]) {
                let at = d.0.index(b.len());
                b[at] ^= d.1;
            }
            b
        });
        let (_, recovered, report) = Wal::open(config(copy.path(), segment_bytes)).unwrap();
        let mut expected = Vec::new();
        for seg in &segments {
            let here: Vec<&Written> = written.iter().filter(|w| &w.segment == seg).collect();
            let end = match first_bad.get(seg) {
                Some(&bad) => valid_end(&here, bad),
                None => Some(u64::MAX),
            };
            let kept: Vec<&&Written> = here.iter().filter(|w| end.is_some_and(|e| w.end <= e)).collect();
            let copied = copy.path().join(seg.file_name().unwrap());
            match kept.last() {
                Some(last) => prop_assert_eq!(fs::metadata(&copied).unwrap().len(), last.end),
                None => prop_assert!(!copied.exists(), "{:?} has no entries left", copied),
            }
            expected.extend(kept.iter().map(|w| w.entry.clone()));
        }
        prop_assert_eq!(&recovered, &expected);
        prop_assert_eq!(report.entries, expected.len());
        prop_assert!(report.truncated.len() <= first_bad.len());
    }
}
