//! Model check of the write-ahead log: random sequences of appends,
//! completions, failed appends (full disk), crashes in the middle of a write
//! and reopenings, compared after every step with a simple model of the
//! segments and what must survive.
//!
//! The model: entries go to the newest segment; a new one starts at every
//! open, after a failed write, and before an append once the newest one
//! holds entries and is `segment_bytes` large. A segment that is not the
//! newest goes once all its entries are completed (or at an open, if it has
//! none). An open gives back every entry still in a segment, in order
//! (completion is only made durable by deleting the segment), and those are
//! outstanding again. Appends come one at a time, so all go to the main
//! lane; the side lane only ever holds its empty active segment.
mod common;
use common::{segment_files, small_batch};
use std::fs;
use std::sync::Arc;

use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::TenantId;
use bulkhead_store::wal::SIDE_DIR;
use bulkhead_store::{Signal, Wal, WalBody, WalConfig, WalEntry, WriteFaults};
use proptest::prelude::*;

const HEADER_LEN: u64 = 52;
const TENANTS: [&str; 3] = ["acme", "globex", "t-1"];

#[derive(Clone, Debug)]
enum Op {
    Append {
        tenant: usize,
        signal: Signal,
        pv: String,
        rows: Vec<(i64, String)>,
    },
    /// Completes the n-th outstanding entry (modulo their number).
    Complete(usize),
    CompleteUnknown(u64),
    /// An append while the disk is full.
    FailedAppend,
    /// An append that the process dies in the middle of: only `part` of its
    /// frame (in 1/256ths) reached the file. Then the WAL is reopened.
    TornCrash {
        part: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let append = (
        0..TENANTS.len(),
        prop::sample::select(Signal::ALL.to_vec()),
        "[a-z0-9]{0,5}",
        prop::collection::vec((any::<i64>(), "[a-z]{0,3}"), 0..3),
    )
        .prop_map(|(tenant, signal, pv, rows)| Op::Append {
            tenant,
            signal,
            pv,
            rows,
        });
    prop_oneof![
        6 => append,
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<u64>().prop_map(Op::CompleteUnknown),
        1 => Just(Op::FailedAppend),
        1 => any::<u8>().prop_map(|part| Op::TornCrash { part }),
        1 => Just(Op::Reopen),
    ]
}

/// Size of an entry in a segment, from the documented format.
fn frame_len(tenant: &str, pv: &str, batch: &RecordBatch) -> u64 {
    let mut ipc = Vec::new();
    // the harness writes with `compress` on, as the server does by default
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let mut w =
        StreamWriter::try_new_with_options(&mut ipc, batch.schema_ref().as_ref(), options).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    (4 + 4 + 8 + 2 + tenant.len() + 1 + 2 + pv.len() + ipc.len()) as u64
}

#[derive(Debug)]
struct ModelSegment {
    /// Entries and whether they were completed.
    entries: Vec<(WalEntry, bool)>,
    len: u64,
}

impl ModelSegment {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
            len: HEADER_LEN,
        }
    }

    fn done(&self) -> bool {
        self.entries.iter().all(|(_, completed)| *completed)
    }
}

#[derive(Debug)]
struct Model {
    segment_bytes: u64,
    /// In seq order; the last one is the active segment.
    segments: Vec<ModelSegment>,
    needs_roll: bool,
}

impl Model {
    fn new(segment_bytes: u64) -> Self {
        Self {
            segment_bytes,
            segments: vec![ModelSegment::new()],
            needs_roll: false,
        }
    }

    fn active(&mut self) -> &mut ModelSegment {
        self.segments.last_mut().unwrap()
    }

    fn append(&mut self, entry: WalEntry, len: u64) {
        let segment_bytes = self.segment_bytes;
        let active = self.active();
        let full = active.len >= segment_bytes && !active.entries.is_empty();
        if self.needs_roll || full {
            if self.active().done() {
                self.segments.pop();
            }
            self.segments.push(ModelSegment::new());
            self.needs_roll = false;
        }
        let active = self.active();
        active.entries.push((entry, false));
        active.len += len;
    }

    fn outstanding(&self) -> Vec<u64> {
        self.segments
            .iter()
            .flat_map(|s| &s.entries)
            .filter(|(_, completed)| !completed)
            .map(|(e, _)| e.seq)
            .collect()
    }

    fn complete(&mut self, seq: u64) {
        let last = self.segments.len() - 1;
        for (i, seg) in self.segments.iter_mut().enumerate() {
            if let Some(slot) = seg.entries.iter_mut().find(|(e, _)| e.seq == seq) {
                slot.1 = true;
                if i != last && seg.done() {
                    self.segments.remove(i);
                }
                return;
            }
        }
    }

    /// What an open must give back; the model then becomes the reopened WAL.
    fn reopen(&mut self) -> Vec<WalEntry> {
        self.segments.retain(|s| !s.entries.is_empty());
        let recovered = self
            .segments
            .iter_mut()
            .flat_map(|s| &mut s.entries)
            .map(|(e, completed)| {
                *completed = false;
                e.clone()
            })
            .collect();
        self.segments.push(ModelSegment::new());
        self.needs_roll = false;
        recovered
    }
}

struct Harness {
    dir: tempfile::TempDir,
    faults: Arc<WriteFaults>,
    segment_bytes: u64,
    wal: Option<Wal>,
    model: Model,
    /// Highest seq ever acknowledged (torn ones never were).
    max_seq: u64,
}

impl Harness {
    fn open(&mut self) -> (Vec<WalEntry>, usize) {
        self.wal = None;
        let (wal, recovered, report) = Wal::open(WalConfig {
            dir: self.dir.path().to_path_buf(),
            segment_bytes: self.segment_bytes,
            side_zero_fill_bytes: WalConfig::DEFAULT_SIDE_ZERO_FILL_BYTES,
            compress: true,
            faults: Some(self.faults.clone()),
        })
        .unwrap();
        assert_eq!(report.entries, recovered.len());
        self.wal = Some(wal);
        (recovered, report.truncated.len())
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().unwrap()
    }

    fn append(
        &mut self,
        tenant: usize,
        signal: Signal,
        pv: &str,
        rows: &[(i64, String)],
    ) -> (WalEntry, u64) {
        let tenant = TenantId::new(TENANTS[tenant]).unwrap();
        let b = small_batch(rows);
        let seq = self.wal().append(&tenant, signal, pv, &b).unwrap();
        let len = frame_len(tenant.as_str(), pv, &b);
        let entry = WalEntry {
            seq,
            tenant,
            signal,
            policy_version: pv.to_string(),
            body: WalBody::Batch(b),
        };
        (entry, len)
    }

    fn check(&self, step: usize, op: &Op) {
        let files = segment_files(self.dir.path());
        let lens: Vec<u64> = files
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .collect();
        let want: Vec<u64> = self.model.segments.iter().map(|s| s.len).collect();
        assert_eq!(lens, want, "step {step} {op:?}: segment files {files:?}");
        // One appender at a time: every group goes to the main lane, and the
        // side lane holds only its active segment, empty.
        let side = segment_files(&self.dir.path().join(SIDE_DIR));
        assert_eq!(side.len(), 1, "step {step}: {side:?}");
        assert_eq!(fs::metadata(&side[0]).unwrap().len(), HEADER_LEN);
        let stats = self.wal().stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(load(&stats.segments), files.len() as u64 + 1, "step {step}");
        assert_eq!(
            load(&stats.bytes_on_disk),
            lens.iter().sum::<u64>() + HEADER_LEN,
            "step {step}"
        );
        assert_eq!(
            self.wal().outstanding(),
            self.model.outstanding(),
            "step {step} {op:?}"
        );
        // Sealed segments hold an outstanding entry; file names are first seqs.
        for (seg, file) in self.model.segments.iter().zip(&files) {
            if let Some((first, _)) = seg.entries.first() {
                let name: u64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                assert!(
                    name <= first.seq,
                    "step {step}: {file:?} holds {}",
                    first.seq
                );
            }
        }
        for seg in &self.model.segments[..self.model.segments.len() - 1] {
            assert!(!seg.done(), "step {step}: a done sealed segment is kept");
        }
    }
}

fn run(segment_bytes: u64, ops: &[Op]) {
    let faults = WriteFaults::new();
    faults.set_skip_sync(true);
    let mut h = Harness {
        dir: tempfile::tempdir().unwrap(),
        faults,
        segment_bytes,
        wal: None,
        model: Model::new(segment_bytes),
        max_seq: 0,
    };
    let (recovered, _) = h.open();
    assert!(recovered.is_empty());
    h.check(0, &Op::Reopen);
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append {
                tenant,
                signal,
                pv,
                rows,
            } => {
                let (entry, len) = h.append(*tenant, *signal, pv, rows);
                assert!(
                    entry.seq > h.max_seq,
                    "step {step}: seq {} after {}",
                    entry.seq,
                    h.max_seq
                );
                h.max_seq = entry.seq;
                h.model.append(entry, len);
            }
            Op::Complete(n) => {
                let outstanding = h.model.outstanding();
                if !outstanding.is_empty() {
                    let seq = outstanding[n % outstanding.len()];
                    h.wal().complete(seq);
                    h.model.complete(seq);
                }
            }
            Op::CompleteUnknown(seq) => {
                let known = h
                    .model
                    .segments
                    .iter()
                    .flat_map(|s| &s.entries)
                    .any(|(e, _)| e.seq == *seq);
                if !known {
                    h.wal().complete(*seq);
                }
            }
            Op::FailedAppend => {
                h.faults.set_failing(true);
                let err = h
                    .wal()
                    .append(
                        &TenantId::new("acme").unwrap(),
                        Signal::Logs,
                        "x",
                        &small_batch::<&str>(&[]),
                    )
                    .unwrap_err();
                h.faults.set_failing(false);
                assert!(err.is_transient(), "step {step}: {err}");
                h.model.needs_roll = true;
            }
            Op::TornCrash { part } => {
                let (entry, len) = h.append(0, Signal::Spans, "torn", &[(1, "t".to_string())]);
                h.model.append(entry, len);
                h.wal = None;
                let kept = len * u64::from(*part) / 256;
                let newest = segment_files(h.dir.path()).pop().unwrap();
                let full = fs::metadata(&newest).unwrap().len();
                let f = fs::OpenOptions::new().write(true).open(&newest).unwrap();
                f.set_len(full - len + kept).unwrap();
                drop(f);
                let active = h.model.active();
                active.entries.pop();
                active.len -= len;
                let expected = h.model.reopen();
                let (recovered, cuts) = h.open();
                assert_eq!(
                    recovered, expected,
                    "step {step}: recovered after a torn write"
                );
                assert_eq!(cuts, usize::from(kept > 0), "step {step}");
            }
            Op::Reopen => {
                let expected = h.model.reopen();
                let (recovered, cuts) = h.open();
                assert_eq!(recovered, expected, "step {step}: recovered");
                assert_eq!(cuts, 0, "step {step}");
            }
        }
        h.check(step + 1, op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_its_model(
        segment_bytes in prop_oneof![Just(1u64), 300..3_000u64, Just(u64::MAX)],
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(segment_bytes, &ops);
    }
}

#[test]
fn model_scenario_with_every_kind_of_step() {
    let append = |tenant| Op::Append {
        tenant,
        signal: Signal::Logs,
        pv: "v1".into(),
        rows: vec![(tenant as i64, "r".into())],
    };
    let ops = [
        append(0),
        append(1),
        Op::FailedAppend,
        append(2),
        Op::Complete(0),
        Op::TornCrash { part: 100 },
        append(0),
        Op::Complete(1),
        Op::Reopen,
        Op::Complete(0),
        Op::Complete(0),
        append(1),
        Op::FailedAppend,
        Op::FailedAppend,
        append(2),
        Op::TornCrash { part: 0 },
        Op::Reopen,
    ];
    for segment_bytes in [1, 600, u64::MAX] {
        run(segment_bytes, &ops);
    }
}
