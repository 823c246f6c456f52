//! The audit log: chain, tamper detection, recovery, concurrency, the
//! per-tenant view.
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bulkhead_rules::{ManualClock, TenantId};
use bulkhead_store::audit::{
    self, detail, verify, verify_with, Anchor, AuditError, AuditEvent, AuditLog, EventKind,
    NewEvent, Problem, VerifyError, VerifyOptions, GENESIS_HASH,
};
use bulkhead_store::TimeRange;
use proptest::prelude::*;

const T0: i64 = 1_750_000_000_000_000_000;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

/// A log of `n` mixed events one second apart; returns the file path.
fn write_log(dir: &Path, n: usize) -> PathBuf {
    let clock = clock();
    let log = AuditLog::open(dir, clock.clone()).unwrap();
    let acme = tenant("acme");
    let globex = tenant("globex");
    for i in 0..n {
        let e = match i % 5 {
            0 => NewEvent::query(&acme, "k1", &format!("SELECT {i}"), i as u64),
            1 => NewEvent::auth_failure(Some("kx"), "unknown key")
                .detail(detail::REMOTE, "10.0.0.9:5555"),
            2 => NewEvent::policy_changed(&globex, Some("v1"), "v2"),
            3 => NewEvent::scope_refused(&acme, "k2", "query"),
            _ => NewEvent::query_refused(&globex, "k3", "DROP TABLE logs", "read-only"),
        };
        log.append(e).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    log.path().to_path_buf()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    fs::write(path, s).unwrap();
}

fn event(line: &str) -> AuditEvent {
    serde_json::from_str(line).unwrap()
}

/// The line and problem of the first failure.
fn failure(path: &Path) -> (u64, Problem) {
    failure_with(path, &VerifyOptions::default())
}

fn failure_with(path: &Path, options: &VerifyOptions) -> (u64, Problem) {
    match verify_with(path, options) {
        Ok(r) => panic!("log verified ({} entries) but should not", r.entries),
        Err(e @ VerifyError::Io { .. }) => panic!("{e}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("line {}", e.line().unwrap())),
                "{msg}"
            );
            (e.line().unwrap(), e.problem().unwrap().clone())
        }
    }
}

#[test]
fn a_fresh_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 12);
    let report = verify(&path).unwrap();
    assert_eq!(report.entries, 12);
    assert_eq!(report.head.seq, 12);
    let all = lines(&path);
    let first = event(&all[0]);
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(first.time_nanos, T0);
    assert_eq!(event(&all[1]).time_nanos, T0 + 1_000_000_000);
    assert_eq!(event(&all[11]).hash, report.head.hash);
    // The directory works as well as the file.
    assert_eq!(verify(dir.path()).unwrap(), report);
}

#[test]
fn an_empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    let report = verify(log.path()).unwrap();
    assert_eq!(report.entries, 0);
    assert_eq!(report.head, log.head());
    assert_eq!(report.head.hash, GENESIS_HASH);
}

#[test]
fn editing_any_field_of_any_line_is_found_on_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let orig = lines(&path);
    type Edit = fn(&mut AuditEvent);
    let edits: [(&str, Edit); 8] = [
        ("seq", |e| e.seq += 10),
        ("time_nanos", |e| e.time_nanos -= 1),
        ("tenant", |e| {
            e.tenant = Some(
                if e.tenant.as_deref() == Some("acme") {
                    "globex"
                } else {
                    "acme"
                }
                .into(),
            )
        }),
        ("key_id", |e| {
            e.key_id = match e.key_id {
                Some(_) => None,
                None => Some("kz".into()),
            }
        }),
        ("kind", |e| e.kind = EventKind::KeyCreated),
        ("details", |e| {
            e.details.insert("rows".into(), "999".into());
        }),
        ("prev_hash", |e| e.prev_hash = "f".repeat(64)),
        ("hash", |e| e.hash = "e".repeat(64)),
    ];
    for i in 0..orig.len() {
        for (field, edit) in &edits {
            let mut e = event(&orig[i]);
            edit(&mut e);
            let mut tampered = orig.clone();
            tampered[i] = e.to_line();
            write_lines(&path, &tampered);
            let (line, problem) = failure(&path);
            assert_eq!(line, i as u64 + 1, "{field} on line {}", i + 1);
            assert!(
                matches!(problem, Problem::HashMismatch { .. }),
                "{field}: {problem:?}"
            );

            // Recomputing the edited entry's own hash moves the evidence to
            // the chain: the entry itself (seq, prev_hash) or the next one.
            if *field == "hash" {
                continue;
            }
            e.hash = e.compute_hash();
            tampered[i] = e.to_line();
            write_lines(&path, &tampered);
            let last = i + 1 == orig.len();
            let self_evident = matches!(*field, "seq" | "prev_hash");
            if last && !self_evident {
                // Only an anchor shows a rewritten last entry.
                assert!(verify(&path).is_ok());
                let anchor = Anchor {
                    seq: i as u64 + 1,
                    hash: event(&orig[i]).hash,
                };
                let options = VerifyOptions {
                    anchors: vec![anchor],
                };
                let (line, problem) = failure_with(&path, &options);
                assert_eq!(line, i as u64 + 1);
                assert!(
                    matches!(problem, Problem::AnchorMismatch { .. }),
                    "{problem:?}"
                );
                continue;
            }
            let (line, problem) = failure(&path);
            let want = if self_evident { i + 1 } else { i + 2 } as u64;
            assert_eq!(line, want, "rehashed {field} on line {}", i + 1);
            match *field {
                "seq" => assert!(matches!(problem, Problem::SeqOutOfOrder { .. })),
                _ => assert!(
                    matches!(problem, Problem::BrokenChain { .. }),
                    "{problem:?}"
                ),
            }
        }
    }
}

#[test]
fn a_deleted_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 6);
    let orig = lines(&path);
    for i in 0..orig.len() - 1 {
        let mut tampered = orig.clone();
        tampered.remove(i);
        write_lines(&path, &tampered);
        let (line, problem) = failure(&path);
        assert_eq!(line, i as u64 + 1);
        assert_eq!(
            problem,
            Problem::SeqOutOfOrder {
                expected: i as u64 + 1,
                found: i as u64 + 2
            }
        );
    }
}

#[test]
fn a_deleted_last_line_is_found_by_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 6);
    let head = verify(&path).unwrap().head;
    let mut tampered = lines(&path);
    tampered.pop();
    write_lines(&path, &tampered);
    // The chain of what is left is intact: only outside knowledge helps.
    assert!(verify(&path).is_ok());
    let options = VerifyOptions {
        anchors: vec![head.to_string().parse().unwrap()],
    };
    let (line, problem) = failure_with(&path, &options);
    assert_eq!(line, 6);
    assert!(
        matches!(problem, Problem::AnchorMissing { last_seq: 5, .. }),
        "{problem:?}"
    );
}

#[test]
fn swapped_lines_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 6);
    let orig = lines(&path);
    for i in 0..orig.len() - 1 {
        let mut tampered = orig.clone();
        tampered.swap(i, i + 1);
        write_lines(&path, &tampered);
        let (line, problem) = failure(&path);
        assert_eq!(line, i as u64 + 1);
        assert!(
            matches!(problem, Problem::SeqOutOfOrder { .. }),
            "{problem:?}"
        );
    }
}

#[test]
fn a_truncated_last_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 4);
    let bytes = fs::read(&path).unwrap();
    for cut in [1, 2, 30, 100] {
        fs::write(&path, &bytes[..bytes.len() - cut]).unwrap();
        let (line, problem) = failure(&path);
        assert_eq!((line, problem), (4, Problem::Incomplete), "cut {cut}");
    }
}

#[test]
fn a_forged_line_with_a_wrong_prev_hash_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 4);
    let mut tampered = lines(&path);
    let mut forged = event(&tampered[3]);
    forged.seq = 5;
    forged.prev_hash = event(&tampered[2]).hash; // plausible but wrong
    forged.hash = forged.compute_hash();
    tampered.push(forged.to_line());
    write_lines(&path, &tampered);
    let (line, problem) = failure(&path);
    assert_eq!(line, 5);
    assert!(
        matches!(problem, Problem::BrokenChain { seq: 5, .. }),
        "{problem:?}"
    );
}

#[test]
fn truncated_then_appended_entries_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 6);
    let head = verify(&path).unwrap().head;
    let orig = lines(&path);

    // Cut mid-line, then something appends after the torn bytes.
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 20);
    bytes.extend_from_slice(orig[5].as_bytes());
    bytes.push(b'\n');
    fs::write(&path, &bytes).unwrap();
    let (line, problem) = failure(&path);
    assert_eq!(line, 6);
    assert!(matches!(problem, Problem::Malformed(_)), "{problem:?}");

    // Cut two whole entries and let the log carry on: a consistent chain,
    // which the anchor taken before shows to be rewritten.
    write_lines(&path, &orig[..4]);
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    log.append(NewEvent::new(EventKind::TenantCreated).tenant(&tenant("acme")))
        .unwrap();
    log.append(NewEvent::new(EventKind::TenantCreated).tenant(&tenant("initech")))
        .unwrap();
    drop(log);
    assert_eq!(verify(&path).unwrap().head.seq, 6);
    let options = VerifyOptions {
        anchors: vec![head],
    };
    let (line, problem) = failure_with(&path, &options);
    assert_eq!(line, 6);
    assert!(
        matches!(problem, Problem::AnchorMismatch { .. }),
        "{problem:?}"
    );
}

#[test]
fn reopening_resumes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let clock = clock();
    clock.set(T0 + 99);
    let log = AuditLog::open(dir.path(), clock.clone()).unwrap();
    assert_eq!(log.head().seq, 3);
    let e = log
        .append(
            NewEvent::new(EventKind::KeyRevoked)
                .tenant(&tenant("acme"))
                .key_id("k1"),
        )
        .unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(e.time_nanos, T0 + 99);
    assert_eq!(e.prev_hash, event(&lines(&path)[2]).hash);
    drop(log);
    let report = verify(&path).unwrap();
    assert_eq!(report.entries, 4);
    assert_eq!(report.head.hash, e.hash);
}

#[test]
fn a_torn_tail_is_cut_and_recorded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let good_len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"seq":4,"time_nanos":17"#)
        .unwrap();
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    let head = log.head();
    assert_eq!(head.seq, 4);
    drop(log);
    verify(&path).unwrap();
    let recovered = event(&lines(&path)[3]);
    assert_eq!(recovered.kind, EventKind::LogRecovered);
    assert_eq!(recovered.details[detail::OFFSET], good_len.to_string());
    let torn = br#"{"seq":4,"time_nanos":17"#.len();
    assert_eq!(recovered.details[detail::TRUNCATED_BYTES], torn.to_string());
}

#[test]
fn a_corrupt_last_entry_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let mut all = lines(&path);
    all[2] = all[2].replace("\"v2\"", "\"v3\"");
    write_lines(&path, &all);
    match AuditLog::open(dir.path(), clock()) {
        Err(AuditError::Corrupt { problem, .. }) => {
            assert!(
                matches!(problem, Problem::HashMismatch { seq: 3, .. }),
                "{problem:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_log_is_written_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), clock()),
        Err(AuditError::Locked(_))
    ));
    drop(log);
    AuditLog::open(dir.path(), clock()).unwrap();
}

#[test]
fn concurrent_appends_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(dir.path(), clock()).unwrap());
    let threads: u64 = 8;
    let per_thread = 25;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let acme = tenant("acme");
                (0..per_thread)
                    .map(|i| {
                        log.append(NewEvent::query(&acme, &format!("k{t}"), "SELECT 1", i))
                            .unwrap()
                            .seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for h in handles {
        let mine = h.join().unwrap();
        // One thread's appends are ordered in the chain as it made them.
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        seqs.extend(mine);
    }
    let n = threads * per_thread;
    assert_eq!(seqs, (1..=n).collect::<BTreeSet<_>>());
    let report = verify(log.path()).unwrap();
    assert_eq!(report.entries, n);
    assert_eq!(report.head, log.head());
    // Every append was made durable, by its own fsync or a shared one.
    assert!((1..=n).contains(&log.fsyncs()), "{} fsyncs", log.fsyncs());
}

#[test]
fn events_for_returns_only_that_tenants_events_in_range() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 20);
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    let acme = log.events_for(&tenant("acme"), TimeRange::ALL).unwrap();
    // i % 5 in {0, 3} are acme's: 8 of 20; auth failures (no tenant) never show.
    assert_eq!(acme.len(), 8);
    assert!(acme.iter().all(|e| e.tenant.as_deref() == Some("acme")));
    assert!(acme.windows(2).all(|w| w[0].seq < w[1].seq));
    let globex = log.events_for(&tenant("globex"), TimeRange::ALL).unwrap();
    assert_eq!(globex.len(), 8);
    assert!(log
        .events_for(&tenant("initech"), TimeRange::ALL)
        .unwrap()
        .is_empty());

    // Inclusive range over seconds 5..=10: events 5, 8, 10 are acme's.
    let sec = 1_000_000_000;
    let range = TimeRange {
        start: T0 + 5 * sec,
        end: T0 + 10 * sec,
    };
    let some = log.events_for(&tenant("acme"), range).unwrap();
    assert_eq!(
        some.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 9, 11]
    );

    let batch = audit::to_batch(&acme).unwrap();
    assert_eq!(batch.num_rows(), 8);
    assert_eq!(batch.schema(), audit::audit_schema());
}

/// A tenant created under the name of one that was offboarded reads none of
/// the old tenant's entries: not its queries, not its offboarding.
#[test]
fn events_for_leaves_out_an_earlier_tenant_of_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    log.append(NewEvent::query(&acme, "old", "SELECT secret FROM logs", 3))
        .unwrap();
    let other = log
        .append(NewEvent::query(&globex, "g", "SELECT 1", 1))
        .unwrap();
    log.append(NewEvent::new(EventKind::TenantOffboarded).tenant(&acme))
        .unwrap();
    assert!(log.events_for(&acme, TimeRange::ALL).unwrap().is_empty());
    let new = log
        .append(NewEvent::query(&acme, "new", "SELECT 2", 1))
        .unwrap();
    assert_eq!(log.events_for(&acme, TimeRange::ALL).unwrap(), vec![new]);
    // the other tenant's entries are its own whatever happens to acme
    assert_eq!(
        log.events_for(&globex, TimeRange::ALL).unwrap(),
        vec![other]
    );
    // and the whole trail still holds everything
    assert_eq!(log.events_matching(|_| true).unwrap().len(), 4);
}

#[test]
fn events_written_after_open_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), clock()).unwrap();
    let acme = tenant("acme");
    let e = log
        .append(NewEvent::policy_changed(&acme, None, "v1"))
        .unwrap();
    assert_eq!(log.events_for(&acme, TimeRange::ALL).unwrap(), vec![e]);
}

#[test]
fn anchors_parse_and_print() {
    let a: Anchor = format!("12:{}", "AB".repeat(32)).parse().unwrap();
    assert_eq!(a.seq, 12);
    assert_eq!(a.to_string(), format!("12:{}", "ab".repeat(32)));
    assert!("12".parse::<Anchor>().is_err());
    assert!("x:00".parse::<Anchor>().is_err());
    assert!(format!("1:{}", "g".repeat(64)).parse::<Anchor>().is_err());
}

/// A valid log built once for the property test (appends fsync).
fn sample_log() -> &'static [u8] {
    static LOG: OnceLock<Vec<u8>> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 8);
        fs::read(path).unwrap()
    })
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Replace(usize, u8),
    Delete(usize),
    Insert(usize, u8),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let len = sample_log().len();
    prop_oneof![
        (0..len, any::<u8>()).prop_map(|(i, b)| ByteEdit::Replace(i, b)),
        (0..len).prop_map(ByteEdit::Delete),
        (0..=len, any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every line must be canonical and self-hashed, so any byte edit that
    /// changes the file is found.
    #[test]
    fn any_byte_edit_is_detected(edits in proptest::collection::vec(byte_edit(), 1..4)) {
        let orig = sample_log();
        let mut bytes = orig.to_vec();
        for edit in &edits {
            match *edit {
                ByteEdit::Replace(i, b) => {
                    let i = i % bytes.len().max(1);
                    if let Some(x) = bytes.get_mut(i) { *x = b }
                }
                ByteEdit::Delete(i) => {
                    if !bytes.is_empty() {
                        let i = i % bytes.len();
                        bytes.remove(i);
                    }
                }
                ByteEdit::Insert(i, b) => {
                    let i = i.min(bytes.len());
                    bytes.insert(i, b);
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fs::write(&path, &bytes).unwrap();
        let result = verify(&path);
        if bytes == orig {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err(), "edit {:?} went unnoticed", edits);
        }
    }
}
