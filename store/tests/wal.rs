//! Write-ahead log behaviour: round trips, seqs, group commit, segments and
//! their deletion, faults (full disk), damaged and foreign segments.
mod common;
use common::{segment_files, small_batch};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use arrow::array::Int64Array;
use bulkhead_rules::TenantId;
use bulkhead_store::wal::{RecoveryReport, WalError, SIDE_DIR};
use bulkhead_store::{Signal, Wal, WalBody, WalConfig, WalEntry, WriteFaults};

const HEADER_LEN: u64 = 52;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn config(dir: &Path, segment_bytes: u64, faults: Option<Arc<WriteFaults>>) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        side_zero_fill_bytes: WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES,
        compress: true,
        faults,
    }
}

fn open(config: WalConfig) -> (Wal, Vec<WalEntry>, RecoveryReport) {
    Wal::open(config).unwrap()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Segment files of both lanes: the main lane's (in `dir`) and the side
/// lane's.
fn all_segment_files(dir: &Path) -> Vec<PathBuf> {
    [segment_files(dir), segment_files(&dir.join(SIDE_DIR))].concat()
}

fn disk_bytes(dir: &Path) -> u64 {
    all_segment_files(dir).iter().map(|p| file_len(p)).sum()
}

fn seqs(entries: &[WalEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

struct Appended {
    entry: WalEntry,
}

fn append(wal: &Wal, t: &str, signal: Signal, pv: &str, rows: &[(i64, &str)]) -> Appended {
    let b = small_batch(rows);
    let seq = wal.append(&tenant(t), signal, pv, &b).unwrap();
    Appended {
        entry: WalEntry {
            seq,
            tenant: tenant(t),
            signal,
            policy_version: pv.to_string(),
            body: WalBody::Batch(b),
        },
    }
}

/// Bytes one entry of `rows` takes (for sizing segments), measured.
fn entry_len(rows: &[(i64, &str)]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(config(dir.path(), u64::MAX, None));
    let before = wal
        .stats()
        .bytes_on_disk
        .load(std::sync::atomic::Ordering::SeqCst);
    append(&wal, "acme", Signal::Logs, "v1", rows);
    wal.stats()
        .bytes_on_disk
        .load(std::sync::atomic::Ordering::SeqCst)
        - before
}

fn stat(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::SeqCst)
}

/// `n` appends for tenant acme from threads of their own (thread `i`
/// appends row `i`), queued while writes are held; `held` runs once all are
/// queued, then the hold is released. The appends' results in thread
/// order, and what `held` returned.
fn append_while_held<R>(
    wal: &Wal,
    faults: &WriteFaults,
    n: i64,
    held: impl FnOnce() -> R,
) -> (Vec<Result<u64, WalError>>, R) {
    std::thread::scope(|s| {
        let hold = faults.hold_writes();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                s.spawn(move || {
                    wal.append(
                        &tenant("acme"),
                        Signal::Logs,
                        "v1",
                        &small_batch(&[(i, "x")]),
                    )
                })
            })
            .collect();
        // The first appender leads and waits for the hold; the others queue.
        while wal.queued() < n as usize {
            std::thread::yield_now();
        }
        let r = held();
        drop(hold);
        (handles.into_iter().map(|h| h.join().unwrap()).collect(), r)
    })
}

/// The first value of an entry's first column (the row id of `small_batch`).
fn first_id(e: &WalEntry) -> i64 {
    e.batch()
        .expect("in the clear")
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[test]
fn append_and_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, recovered, report) = open(WalConfig::new(dir.path()));
    assert!(recovered.is_empty());
    assert_eq!(report, RecoveryReport::default());
    let id = wal.id().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let written = vec![
        append(&wal, "acme", Signal::Logs, "v1", &[(1, "a"), (2, "b")]).entry,
        append(&wal, "globex", Signal::Spans, "", &[]).entry,
        append(&wal, "t-1_x", Signal::Metrics, "sha256:abc", &[(-5, "ü")]).entry,
        append(&wal, "acme", Signal::Anomalies, "v2", &[(7, "")]).entry,
    ];
    assert!(
        seqs(&written).windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        seqs(&written)
    );
    assert_eq!(stat(&wal.stats().appends), 4);
    assert_eq!(stat(&wal.stats().bytes_on_disk), disk_bytes(dir.path()));
    assert_eq!(wal.outstanding(), seqs(&written));
    drop(wal);

    let (wal, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(recovered, written);
    assert_eq!(report.entries, 4);
    assert_eq!(
        report.segments, 2,
        "the main lane's and the side lane's (empty)"
    );
    assert!(report.truncated.is_empty());
    assert_eq!(wal.id(), id, "the id survives a reopen");
    assert_eq!(
        wal.outstanding(),
        seqs(&written),
        "recovered entries stay outstanding"
    );
    let next = append(&wal, "acme", Signal::Logs, "v1", &[(3, "c")]).entry;
    assert!(next.seq > written.last().unwrap().seq);
    drop(wal);

    let (_, recovered, _) = open(WalConfig::new(dir.path()));
    assert_eq!(seqs(&recovered), [seqs(&written), vec![next.seq]].concat());
}

/// Recovered batches hold their own memory: each one's size is about what
/// it was when appended, not the segment it was read from (which the
/// store's buffer accounting would otherwise count once per array).
#[test]
fn recovered_batches_count_their_own_memory_not_the_segments() {
    for compress in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || WalConfig {
            compress,
            ..WalConfig::new(dir.path())
        };
        let (wal, _, _) = open(cfg());
        let mut appended = 0;
        for i in 0..200 {
            let b = small_batch(&[(i, "some log line"), (i + 1, "another one")]);
            appended += b.get_array_memory_size();
            wal.append(&tenant("acme"), Signal::Logs, "v1", &b).unwrap();
        }
        drop(wal);
        let (_, recovered, _) = open(cfg());
        assert_eq!(recovered.len(), 200);
        let counted: usize = recovered
            .iter()
            .map(|e| e.batch().unwrap().get_array_memory_size())
            .sum();
        assert!(
            counted <= appended * 2,
            "compress {compress}: recovered batches count {counted} bytes, appended {appended}"
        );
    }
}

/// `compress` changes how new entries are written, not what can be read:
/// a log written plain, then compressed, then plain again recovers whole,
/// compressed entries take fewer bytes on disk, and segments written with
/// it off are in the format builds before it read.
#[test]
fn compressed_and_plain_entries_recover_alike_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(i64, String)> = (0..500)
        .map(|i| (i, format!("GET /api/items/{} 200", i % 10)))
        .collect();
    let rows: Vec<(i64, &str)> = rows.iter().map(|(i, s)| (*i, s.as_str())).collect();
    let mut written = Vec::new();
    let mut grew = Vec::new();
    for compress in [false, true, false] {
        let (wal, recovered, _) = open(WalConfig {
            compress,
            ..WalConfig::new(dir.path())
        });
        assert_eq!(recovered, written, "compress {compress}: recovered");
        let before = stat(&wal.stats().bytes_on_disk);
        written.push(append(&wal, "acme", Signal::Logs, "v1", &rows).entry);
        grew.push(stat(&wal.stats().bytes_on_disk) - before);
        // a segment that may hold compressed entries says so in its format
        // version, so that a build reading only plain ones refuses it
        // instead of cutting what it cannot decode
        let active = segment_files(dir.path()).pop().unwrap();
        let magic = &fs::read(&active).unwrap()[..8];
        let version = if compress { 2 } else { 1 };
        assert_eq!(magic, [b"BHWAL\0\0".as_slice(), &[version]].concat());
    }
    let (_, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(recovered, written);
    assert!(report.truncated.is_empty());
    assert!(
        grew[1] * 3 < grew[0] && grew[1] * 3 < grew[2],
        "a compressed entry is under a third of a plain one here: {grew:?}"
    );
}

#[test]
fn seqs_are_never_reused_even_when_everything_was_completed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(dir.path(), 1, None);
    let mut last = 0;
    for round in 0..3 {
        let (wal, recovered, _) = open(cfg());
        for e in &recovered {
            wal.complete(e.seq);
        }
        for i in 0..3 {
            let seq = append(&wal, "acme", Signal::Logs, "v1", &[(i, "x")])
                .entry
                .seq;
            assert!(seq > last, "round {round}: {seq} after {last}");
            last = seq;
            wal.complete(seq);
        }
        // Each entry had its own segment; all but the active one are gone.
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
    let (wal, _, _) = open(cfg());
    let id = wal.id().to_string();
    drop(wal);
    // Without any segment nothing carries the seqs forward: a new identity.
    for f in all_segment_files(dir.path()) {
        fs::remove_file(f).unwrap();
    }
    let (wal, recovered, _) = open(cfg());
    assert!(recovered.is_empty());
    assert_ne!(wal.id(), id);
}

#[test]
fn wal_id_is_stable_and_a_wiped_directory_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("nested/wal");
    let (wal, _, _) = open(WalConfig::new(&wal_dir));
    let first = wal.id().to_string();
    drop(wal);
    let (wal, _, _) = open(WalConfig::new(&wal_dir));
    assert_eq!(wal.id(), first);
    drop(wal);
    assert_eq!(
        fs::read_to_string(wal_dir.join("wal.id")).unwrap().trim(),
        first
    );
    fs::remove_dir_all(&wal_dir).unwrap();
    let (wal, _, _) = open(WalConfig::new(&wal_dir));
    assert_ne!(wal.id(), first);
}

#[test]
fn concurrent_appends_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let (wal, _, _) = open(config(dir.path(), u64::MAX, Some(faults.clone())));
    let threads = 16;
    let seqs: Vec<u64> = append_while_held(&wal, &faults, threads, || ())
        .0
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), threads as usize);
    assert_eq!(stat(&wal.stats().appends), threads as u64);
    assert_eq!(
        stat(&wal.stats().fsyncs),
        1,
        "one write and fsync for the group"
    );
    drop(wal);
    let (_, recovered, _) = open(WalConfig::new(dir.path()));
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(seqs_of(&recovered), sorted);
    for e in &recovered {
        assert_eq!(
            e.seq,
            seqs[first_id(e) as usize],
            "entry and seq belong together"
        );
    }
}

fn seqs_of(entries: &[WalEntry]) -> Vec<u64> {
    seqs(entries)
}

#[test]
fn many_threads_appending_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(WalConfig::new(dir.path()));
    let (threads, per_thread) = (16_i64, 50_i64);
    let barrier = Barrier::new(threads as usize);
    let mut all: Vec<(u64, i64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (wal, barrier) = (&wal, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut out = Vec::new();
                    let mut last = 0;
                    for i in 0..per_thread {
                        let id = t * 1000 + i;
                        let seq = wal
                            .append(
                                &tenant("acme"),
                                Signal::Logs,
                                "v1",
                                &small_batch(&[(id, "x")]),
                            )
                            .unwrap();
                        assert!(seq > last, "seqs increase for each appender");
                        last = seq;
                        out.push((seq, id));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = (threads * per_thread) as u64;
    all.sort_unstable();
    all.dedup_by_key(|(seq, _)| *seq);
    assert_eq!(all.len() as u64, total, "seqs are unique");
    let stats = wal.stats();
    assert_eq!(stat(&stats.appends), total);
    let fsyncs = stat(&stats.fsyncs);
    assert!(fsyncs < total, "{fsyncs} fsyncs for {total} appends");
    assert!(fsyncs >= 1);
    drop(wal);
    let (_, recovered, _) = open(WalConfig::new(dir.path()));
    let got: Vec<(u64, i64)> = recovered
        .iter()
        .map(|e| {
            let n = e
                .batch()
                .expect("in the clear")
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            (e.seq, n.value(0))
        })
        .collect();
    assert_eq!(got, all);
}

#[test]
fn segments_roll_over_and_go_once_all_their_entries_are_completed() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [(1, "x")];
    let len = entry_len(&rows);
    // two entries fill a segment
    let cfg = || config(dir.path(), HEADER_LEN + 2 * len, None);
    let (wal, _, _) = open(cfg());
    let s: Vec<u64> = (0..5)
        .map(|_| append(&wal, "acme", Signal::Logs, "v1", &rows).entry.seq)
        .collect();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3, "[s0 s1] [s2 s3] [s4]: {files:?}");
    assert_eq!(
        files.iter().map(|f| file_len(f)).collect::<Vec<_>>(),
        vec![HEADER_LEN + 2 * len, HEADER_LEN + 2 * len, HEADER_LEN + len]
    );
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names[1], format!("{:020}.wal", s[2]));
    assert_eq!(names[2], format!("{:020}.wal", s[4]));
    assert_eq!(stat(&wal.stats().segments), 4, "and the side lane's");
    assert_eq!(stat(&wal.stats().bytes_on_disk), disk_bytes(dir.path()));

    wal.complete(s[0]);
    assert_eq!(segment_files(dir.path()).len(), 3, "s1 still outstanding");
    wal.complete(s[1]);
    assert_eq!(segment_files(dir.path()), files[1..], "first segment done");
    wal.complete(s[4]);
    assert_eq!(
        segment_files(dir.path()),
        files[1..],
        "the active segment stays"
    );
    wal.complete(s[2]);
    wal.complete(s[2]);
    wal.complete(999_999);
    wal.complete(0);
    assert_eq!(segment_files(dir.path()), files[1..]);
    assert_eq!(wal.outstanding(), vec![s[3]]);
    assert_eq!(stat(&wal.stats().segments), 3);
    assert_eq!(stat(&wal.stats().bytes_on_disk), disk_bytes(dir.path()));
    drop(wal);

    // s3 is outstanding; s4 was completed but its segment was the active one.
    let (wal, recovered, report) = open(cfg());
    assert_eq!(seqs(&recovered), vec![s[2], s[3], s[4]]);
    assert_eq!(report.segments, 3, "and the side lane's, empty");
    assert_eq!(
        segment_files(dir.path()).len(),
        3,
        "two recovered and a new active one"
    );
    wal.complete(s[4]);
    assert_eq!(segment_files(dir.path()).len(), 2, "now sealed: deleted");
    wal.complete(s[2]);
    assert_eq!(segment_files(dir.path()).len(), 2, "s3 keeps its segment");
    wal.complete(s[3]);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(wal.outstanding().is_empty());
    let next = append(&wal, "acme", Signal::Logs, "v1", &rows).entry.seq;
    assert!(next > s[4]);
    assert_eq!(stat(&wal.stats().segments), 2);
    assert_eq!(stat(&wal.stats().bytes_on_disk), disk_bytes(dir.path()));
}

#[test]
fn a_full_disk_fails_appends_without_leaving_them_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let cfg = || config(dir.path(), u64::MAX, Some(faults.clone()));
    let (wal, _, _) = open(cfg());
    let ok1 = append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")]).entry;
    let before = disk_bytes(dir.path());

    faults.set_failing(true);
    assert!(faults.is_failing());
    let mut failed = Vec::new();
    for i in 0..3 {
        let err = wal
            .append(
                &tenant("acme"),
                Signal::Logs,
                "v1",
                &small_batch(&[(10 + i, "lost")]),
            )
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let WalError::Io { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{err}");
        assert_eq!(
            disk_bytes(dir.path()),
            before,
            "nothing of a failed append on disk"
        );
        failed.push(i);
    }
    assert_eq!(wal.outstanding(), vec![ok1.seq]);
    assert!(stat(&wal.stats().write_errors) >= 3);
    assert_eq!(stat(&wal.stats().appends), 1);

    faults.set_failing(false);
    let ok2 = append(&wal, "acme", Signal::Spans, "v1", &[(2, "b")]).entry;
    assert!(ok2.seq > ok1.seq);
    assert_eq!(wal.outstanding(), vec![ok1.seq, ok2.seq]);
    assert_eq!(stat(&wal.stats().bytes_on_disk), disk_bytes(dir.path()));
    drop(wal);

    let (_, recovered, report) = open(cfg());
    assert_eq!(recovered, vec![ok1, ok2]);
    assert!(report.truncated.is_empty(), "{report:?}");
}

#[test]
fn a_write_that_cannot_be_cut_back_is_cut_off_by_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let cfg = || config(dir.path(), u64::MAX, Some(faults.clone()));
    let (wal, _, _) = open(cfg());
    let ok1 = append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")]).entry;
    let first_segment = segment_files(dir.path()).pop().unwrap();
    let durable = file_len(&first_segment);

    faults.set_failing(true);
    faults.set_cut_back_failing(true);
    let err = wal
        .append(
            &tenant("acme"),
            Signal::Logs,
            "v1",
            &small_batch(&[(2, "lost")]),
        )
        .unwrap_err();
    assert!(err.is_transient());
    let stuck = file_len(&first_segment) - durable;
    assert!(stuck > 0, "the failed entry is still in the file");
    faults.set_failing(false);
    faults.set_cut_back_failing(false);

    let ok3 = append(&wal, "acme", Signal::Logs, "v1", &[(3, "c")]).entry;
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "sealed, a new segment started"
    );
    drop(wal);

    let (_, recovered, report) = open(cfg());
    assert_eq!(
        recovered,
        vec![ok1, ok3],
        "the failed entry is never recovered"
    );
    assert_eq!(report.truncated.len(), 1, "{report:?}");
    let cut = &report.truncated[0];
    assert_eq!(cut.segment, first_segment);
    assert_eq!((cut.offset, cut.bytes_cut), (durable, stuck));
    assert!(cut.reason.contains("durable length"), "{}", cut.reason);
    assert_eq!(file_len(&first_segment), durable);
}

#[test]
fn every_entry_of_a_failed_group_fails() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let (wal, _, _) = open(config(dir.path(), u64::MAX, Some(faults.clone())));
    let before = disk_bytes(dir.path());
    faults.set_failing(true);
    let (results, ()) = append_while_held(&wal, &faults, 8, || ());
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.is_transient())));
    assert_eq!(stat(&wal.stats().fsyncs), 1);
    assert_eq!(disk_bytes(dir.path()), before);
    faults.set_failing(false);
    let ok = append(&wal, "acme", Signal::Logs, "v1", &[(9, "ok")]).entry;
    drop(wal);
    let (_, recovered, _) = open(config(dir.path(), u64::MAX, None));
    assert_eq!(recovered, vec![ok]);
}

#[test]
fn oversized_fields_are_refused_and_not_transient() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(WalConfig::new(dir.path()));
    let err = wal
        .append(
            &tenant("acme"),
            Signal::Logs,
            &"v".repeat(70_000),
            &small_batch::<&str>(&[]),
        )
        .unwrap_err();
    assert!(matches!(err, WalError::Invalid(_)), "{err}");
    assert!(!err.is_transient());
    assert_eq!(stat(&wal.stats().appends), 0);
    assert!(wal.outstanding().is_empty());
}

/// Three segments of two entries each: [a0 a1] [b0 b1] [c0 c1] (+ empty active).
fn three_segments(dir: &Path) -> (Vec<WalEntry>, Vec<PathBuf>, u64) {
    let rows = [(1, "x")];
    let len = entry_len(&rows);
    let (wal, _, _) = open(config(dir, HEADER_LEN + 2 * len, None));
    let entries: Vec<WalEntry> = (0..6)
        .map(|i| append(&wal, "acme", Signal::ALL[i % 4], "v1", &rows).entry)
        .collect();
    drop(wal);
    let files = segment_files(dir);
    assert_eq!(files.len(), 3);
    (entries, files, len)
}

#[test]
fn a_torn_header_loses_that_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, files, _) = three_segments(dir.path());
    let f = fs::OpenOptions::new().write(true).open(&files[1]).unwrap();
    f.set_len(HEADER_LEN - 1).unwrap();
    drop(f);
    let (_, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(
        recovered,
        [&entries[0..2], &entries[4..6]].concat(),
        "later segments are still read"
    );
    assert_eq!(report.segments, 4, "and the side lane's, empty");
    assert_eq!(report.truncated.len(), 1);
    assert_eq!(report.truncated[0].segment, files[1]);
    assert_eq!(report.truncated[0].offset, 0);
    assert!(!files[1].exists(), "a segment without entries is deleted");
}

#[test]
fn a_corrupt_entry_cuts_its_segment_and_later_segments_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, files, len) = three_segments(dir.path());
    let mut bytes = fs::read(&files[1]).unwrap();
    let in_second_entry = (HEADER_LEN + len + len / 2) as usize;
    bytes[in_second_entry] ^= 0x01;
    fs::write(&files[1], &bytes).unwrap();
    let (wal, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(recovered, [&entries[0..3], &entries[4..6]].concat());
    assert_eq!(report.truncated.len(), 1);
    let cut = &report.truncated[0];
    assert_eq!((cut.offset, cut.bytes_cut), (HEADER_LEN + len, len));
    assert!(cut.reason.contains("checksum"), "{}", cut.reason);
    assert_eq!(file_len(&files[1]), HEADER_LEN + len);
    assert_eq!(stat(&wal.stats().truncated_bytes), len);
}

#[test]
fn a_log_open_in_one_place_is_refused_to_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(WalConfig::new(dir.path()));
    append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")]);
    let err = Wal::open(WalConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, WalError::Locked(_)), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    assert!(!err.is_transient());
    // the first is untouched, and once it is closed the log opens with its
    // entry
    append(&wal, "acme", Signal::Logs, "v1", &[(2, "b")]);
    drop(wal);
    let (_, recovered, _) = open(WalConfig::new(dir.path()));
    assert_eq!(recovered.len(), 2);
}

#[test]
fn segments_of_another_wal_or_without_an_id_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(WalConfig::new(dir.path()));
    append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")]);
    drop(wal);
    let (wal, _, _) = open(WalConfig::new(other.path()));
    append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")]);
    drop(wal);
    let foreign = segment_files(other.path()).pop().unwrap();
    let planted = dir.path().join(format!("{:020}.wal", 1_000_000));
    let mut bytes = fs::read(&foreign).unwrap();
    // Give it a name that matches its header: rewrite first seq and checksum.
    bytes[24..32].copy_from_slice(&1_000_000u64.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..48]);
    bytes[48..52].copy_from_slice(&crc.to_le_bytes());
    fs::write(&planted, &bytes).unwrap();
    let err = Wal::open(WalConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("belongs to WAL"), "{err}");
    assert!(!err.is_transient());
    assert!(planted.exists(), "not ours to delete");
    fs::remove_file(&planted).unwrap();
    Wal::open(WalConfig::new(dir.path())).unwrap();

    fs::remove_file(other.path().join("wal.id")).unwrap();
    let err = Wal::open(WalConfig::new(other.path())).unwrap_err();
    assert!(err.to_string().contains("id file is missing"), "{err}");
}

#[test]
fn unrelated_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let keep = ["notes.txt", "00000000000000000001.wal.bak", "1.wal"];
    let (wal, _, _) = open(WalConfig::new(dir.path()));
    drop(wal);
    for name in keep {
        fs::write(dir.path().join(name), b"hello").unwrap();
    }
    let (wal, recovered, report) = open(WalConfig::new(dir.path()));
    assert!(recovered.is_empty());
    assert!(report.truncated.is_empty());
    for name in keep {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "1.wal and the active segment"
    );
    assert_eq!(
        stat(&wal.stats().segments),
        2,
        "a lane's active segment each"
    );
}

/// A tenant appending as fast as it can has at most a bounded share (one
/// entry, or 256 KiB) waiting for each group write; its further appends
/// wait for that group. Another tenant's entry so goes out with the first
/// group, not behind the whole backlog (seqs are given in write order).
#[test]
fn a_tenants_backlog_does_not_make_every_group_as_large() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    // shares are of the bytes written: uncompressed, 100 KB of the same
    // letter stays 100 KB
    let (wal, _, _) = open(WalConfig {
        compress: false,
        ..config(dir.path(), u64::MAX, Some(faults.clone()))
    });
    let big = "x".repeat(100_000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut flood, small) = std::thread::scope(|s| {
        let hold = faults.hold_writes();
        let floods: Vec<_> = (0..8)
            .map(|i| {
                let (wal, big) = (&wal, big.as_str());
                s.spawn(move || {
                    wal.append(
                        &tenant("flood"),
                        Signal::Logs,
                        "v1",
                        &small_batch(&[(i, big)]),
                    )
                    .unwrap()
                })
            })
            .collect();
        // two 100 KB entries fit the flood's share; the rest wait
        while wal.queued() < 2 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        let small = s.spawn(|| {
            wal.append(
                &tenant("small"),
                Signal::Logs,
                "v1",
                &small_batch(&[(0, "s")]),
            )
            .unwrap()
        });
        while wal.queued() < 3 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert_eq!(wal.queued(), 3, "the flood's share is two entries");
        drop(hold);
        let flood: Vec<u64> = floods.into_iter().map(|f| f.join().unwrap()).collect();
        (flood, small.join().unwrap())
    });
    flood.sort();
    assert!(
        small < flood[2],
        "the small entry ({small}) went out with the first group, before the flood's third ({flood:?})"
    );
    assert!(
        stat(&wal.stats().fsyncs) >= 4,
        "the flood's eight entries took four groups or more"
    );
    drop(wal);
    let (_, recovered, _) = open(config(dir.path(), u64::MAX, None));
    assert_eq!(recovered.len(), 9);
}

/// Heavy and light appenders at once, with no hold: every append returns
/// (no appender waiting for room in its tenant's share is left unwoken, no
/// light entry is held back for good), seqs are unique, and every entry is
/// recovered with its own rows.
#[test]
fn heavy_and_light_appenders_all_finish_with_their_own_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(open(WalConfig::new(dir.path())).0);
    let big = Arc::new("x".repeat(90_000));
    let (heavy, light) = (6_i64, 6_i64);
    let per_thread = 20_i64;
    let barrier = Arc::new(Barrier::new((heavy + light) as usize));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for t in 0..heavy + light {
        let (wal, big, barrier, tx) = (wal.clone(), big.clone(), barrier.clone(), tx.clone());
        // not scoped: a thread left waiting forever fails the test below
        // instead of hanging it
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let (name, text) = if t < heavy {
                ("flood".to_string(), big.as_str())
            } else {
                (format!("small-{t}"), "s")
            };
            for i in 0..per_thread {
                let id = t * 1_000 + i;
                let seq = wal
                    .append(
                        &tenant(&name),
                        Signal::Logs,
                        "v1",
                        &small_batch(&[(id, text)]),
                    )
                    .unwrap();
                tx.send((seq, id)).unwrap();
            }
        }));
    }
    drop(tx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seqs = Vec::new();
    while seqs.len() < ((heavy + light) * per_thread) as usize {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(x) => seqs.push(x),
            Err(e) => panic!(
                "{} appends of {} returned ({e})",
                seqs.len(),
                (heavy + light) * per_thread
            ),
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let wal = Arc::try_unwrap(wal).expect("every appender is done");
    let unique: HashSet<u64> = seqs.iter().map(|(s, _)| *s).collect();
    assert_eq!(unique.len(), ((heavy + light) * per_thread) as usize);
    drop(wal);
    let (_, recovered, _) = open(WalConfig::new(dir.path()));
    assert_eq!(recovered.len(), seqs.len());
    let by_seq: std::collections::HashMap<u64, i64> = seqs.into_iter().collect();
    for e in &recovered {
        assert_eq!(by_seq[&e.seq], first_id(e), "entry and seq belong together");
    }
}

/// `next_seq` is above every entry appended so far, those still queued for
/// a group included (offboarding marks the log with it: entries of the
/// tenant below it are not replayed).
#[test]
fn next_seq_is_above_entries_still_queued() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let (wal, _, _) = open(config(dir.path(), u64::MAX, Some(faults.clone())));
    let (results, mark) = append_while_held(&wal, &faults, 3, || wal.next_seq());
    let seqs: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
    assert!(seqs.iter().all(|s| *s < mark), "{seqs:?} against {mark}");
}

/// While the main lane writes a heavy group, a light tenant's entry is
/// written and synced in the side lane and acknowledged without waiting for
/// it; after a restart the entries of both lanes come back in seq order,
/// and a torn tail in the side lane is cut without touching the main lane.
#[test]
fn a_light_entry_does_not_wait_for_the_main_lanes_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let wal = Arc::new(open(config(dir.path(), u64::MAX, Some(faults.clone()))).0);
    let deadline = || std::time::Duration::from_secs(60);
    let (heavy, small, threads) = {
        let hold = faults.hold_main_lane();
        let (heavy_tx, heavy_rx) = std::sync::mpsc::channel();
        let w = wal.clone();
        let heavy_thread = std::thread::spawn(move || {
            let big = "x".repeat(100_000);
            let b = small_batch(&[(1, big.as_str())]);
            heavy_tx
                .send(w.append(&tenant("flood"), Signal::Logs, "v1", &b))
                .unwrap();
        });
        let start = std::time::Instant::now();
        while wal.lanes_writing() == 0 || wal.queued() > 0 {
            assert!(
                start.elapsed() < deadline(),
                "the flood's group never started"
            );
            std::thread::yield_now();
        }
        let (small_tx, small_rx) = std::sync::mpsc::channel();
        let w = wal.clone();
        let small_thread = std::thread::spawn(move || {
            let b = small_batch(&[(2, "s")]);
            small_tx
                .send(w.append(&tenant("small"), Signal::Logs, "v1", &b))
                .unwrap();
        });
        let small = small_rx
            .recv_timeout(deadline())
            .expect("the light entry is acknowledged while the main lane writes")
            .unwrap();
        assert!(
            heavy_rx.try_recv().is_err(),
            "the flood's group is still being written"
        );
        drop(hold);
        (
            heavy_rx.recv_timeout(deadline()).unwrap().unwrap(),
            small,
            [heavy_thread, small_thread],
        )
    };
    assert!(heavy < small, "numbered when taken: {heavy} then {small}");
    let side = segment_files(&dir.path().join(SIDE_DIR));
    assert_eq!(side.len(), 1);
    let side_len_open = file_len(&side[0]);
    assert_eq!(
        wal.stats().bytes_on_disk.load(Ordering::SeqCst),
        disk_bytes(dir.path()),
        "the gauge counts the zeros written ahead"
    );
    assert_eq!(wal.outstanding(), vec![heavy, small]);
    // a thread sends its result before it drops its handle on the log
    for t in threads {
        t.join().unwrap();
    }
    drop(Arc::try_unwrap(wal).expect("both appenders are done"));

    let (wal, recovered, report) = open(WalConfig::new(dir.path()));
    // the side lane wrote zeros ahead of its entry; they are the segment's
    // end, cut at the open without a report
    let side_len = file_len(&side[0]);
    assert!(side_len > HEADER_LEN, "the light entry is in the side lane");
    assert_eq!(
        side_len_open,
        side_len + WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES
    );
    assert_eq!(seqs(&recovered), vec![heavy, small]);
    assert_eq!(
        recovered.iter().map(first_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(report.truncated.is_empty(), "{report:?}");
    let next = append(&wal, "acme", Signal::Logs, "v1", &[(3, "c")])
        .entry
        .seq;
    assert!(next > small, "seqs continue above both lanes");
    drop(wal);

    // tear the side lane's entry: only it is lost
    let f = fs::OpenOptions::new().write(true).open(&side[0]).unwrap();
    f.set_len(side_len - 3).unwrap();
    drop(f);
    let (_, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(seqs(&recovered), vec![heavy, next]);
    assert_eq!(report.truncated.len(), 1);
    assert_eq!(report.truncated[0].segment, side[0]);
    assert_eq!(report.truncated[0].offset, HEADER_LEN);
}

/// Appends a flood's entry from another thread and waits until the main
/// lane's leader has taken it: with the main lane held, it stays there, and
/// light entries go to the side lane.
fn flood_in_the_main_lane(wal: &Arc<Wal>) -> std::thread::JoinHandle<Result<u64, WalError>> {
    let w = wal.clone();
    let heavy = std::thread::spawn(move || {
        let big = "x".repeat(100_000);
        w.append(
            &tenant("flood"),
            Signal::Logs,
            "v1",
            &small_batch(&[(1, big.as_str())]),
        )
    });
    let start = std::time::Instant::now();
    while wal.lanes_writing() == 0 || wal.queued() > 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
        std::thread::yield_now();
    }
    heavy
}

/// The side lane's zeros written ahead are counted in the gauge of bytes on
/// disk while they are there, and taken out with a failed write cut back.
#[test]
fn a_failed_side_lane_write_takes_its_zeros_out_of_the_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let wal = Arc::new(open(config(dir.path(), u64::MAX, Some(faults.clone()))).0);
    let gauge = |w: &Wal| w.stats().bytes_on_disk.load(Ordering::SeqCst);
    let hold = faults.hold_main_lane();
    let heavy = flood_in_the_main_lane(&wal);
    // the main lane is held with the flood's group: light entries go to the side
    let first = wal.append(
        &tenant("small"),
        Signal::Logs,
        "v1",
        &small_batch(&[(2, "s")]),
    );
    assert!(first.is_ok());
    let side = segment_files(&dir.path().join(SIDE_DIR));
    let side_len = file_len(&side[0]);
    assert!(
        side_len > WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES,
        "zeros written ahead"
    );
    assert_eq!(gauge(&wal), disk_bytes(dir.path()));

    faults.set_failing(true);
    let failed = wal.append(
        &tenant("small"),
        Signal::Logs,
        "v1",
        &small_batch(&[(3, "t")]),
    );
    assert!(failed.is_err());
    faults.set_failing(false);
    assert!(
        file_len(&side[0]) < side_len - WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES / 2,
        "cut back to its last entry"
    );
    assert_eq!(
        gauge(&wal),
        disk_bytes(dir.path()),
        "the gauge follows the cut"
    );
    drop(hold);
    heavy.join().unwrap().unwrap();
    assert_eq!(gauge(&wal), disk_bytes(dir.path()));
}

/// Zeros where a later segment recorded durable entries are damage, not
/// zeros written ahead: the loss is reported, not cut quietly.
#[test]
fn zeros_inside_a_recorded_durable_length_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let wal = Arc::new(open(config(dir.path(), u64::MAX, Some(faults.clone()))).0);
    let hold = faults.hold_main_lane();
    let heavy = flood_in_the_main_lane(&wal);
    let small = wal
        .append(
            &tenant("small"),
            Signal::Logs,
            "v1",
            &small_batch(&[(2, "s")]),
        )
        .unwrap();
    drop(hold);
    let heavy = heavy.join().unwrap().unwrap();
    drop(Arc::try_unwrap(wal).expect("both appenders are done"));
    // reopened: the side segment is sealed, its length recorded in the next
    let (_, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(seqs(&recovered), vec![heavy, small]);
    assert!(report.truncated.is_empty(), "{report:?}");
    let side = segment_files(&dir.path().join(SIDE_DIR));
    assert_eq!(side.len(), 2, "{side:?}");
    let len = file_len(&side[0]);

    // the sealed segment's entry reads back as zeros (storage lost it)
    let mut bytes = fs::read(&side[0]).unwrap();
    bytes[HEADER_LEN as usize..].fill(0);
    fs::write(&side[0], &bytes).unwrap();
    let (_, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(seqs(&recovered), vec![heavy]);
    assert_eq!(report.truncated.len(), 1, "{report:?}");
    assert_eq!(report.truncated[0].segment, side[0]);
    assert_eq!(report.truncated[0].offset, HEADER_LEN);
    assert_eq!(report.truncated[0].bytes_cut, len - HEADER_LEN);
}

/// A seq in both lanes is a mix-up (a segment copied into the other lane),
/// not a crash: the open is refused and nothing is deleted.
#[test]
fn a_seq_in_both_lanes_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(WalConfig::new(dir.path()));
    append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")]);
    drop(wal);
    let main = segment_files(dir.path()).pop().unwrap();
    let copy = dir.path().join(SIDE_DIR).join(main.file_name().unwrap());
    fs::copy(&main, &copy).unwrap();
    let err = Wal::open(WalConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("in both lanes"), "{err}");
    assert!(copy.exists() && main.exists(), "not ours to delete");
    fs::remove_file(&copy).unwrap();
    let (_, recovered, _) = open(WalConfig::new(dir.path()));
    assert_eq!(recovered.len(), 1);
}

/// A panic in the middle of a group write (a log line to a full disk did
/// that once) fails that group's appends, and the log goes on: later
/// appends are written, nothing waits for the lane forever.
#[test]
fn a_panic_while_writing_fails_the_group_not_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    let (wal, _, _) = open(config(dir.path(), u64::MAX, Some(faults.clone())));
    let first = append(&wal, "acme", Signal::Logs, "v1", &[(1, "a")])
        .entry
        .seq;
    faults.set_panicking(true);
    let b = small_batch(&[(2, "b")]);
    let err = wal
        .append(&tenant("acme"), Signal::Logs, "v1", &b)
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    faults.set_panicking(false);
    let later = append(&wal, "acme", Signal::Logs, "v1", &[(3, "c")])
        .entry
        .seq;
    assert!(later > first);
    assert_eq!(wal.outstanding(), vec![first, later]);
    drop(wal);
    let (_, recovered, report) = open(WalConfig::new(dir.path()));
    assert_eq!(seqs(&recovered), vec![first, later]);
    assert!(report.truncated.is_empty(), "{report:?}");
}
