//! Byte layout of segment headers and entries (see the module docs of
//! [`crate::wal`]), and the scan that finds the valid prefix of a segment.
use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::TenantId;
use uuid::Uuid;

use super::{WalBody, WalEntry, WalError};
use crate::crypto::{self, DataKey};
use crate::Signal;

/// First 8 bytes of every segment: name and format version 1.
/// Magic and format version 1: entries' Arrow buffers are never compressed.
pub(super) const MAGIC: [u8; 8] = *b"BHWAL\0\0\x01";
/// Version 2: entries' Arrow buffers may be LZ4-compressed. A build that
/// knows only version 1 refuses such a segment (`Unknown`, never cut as
/// torn) instead of failing to decode its entries and cutting them away.
pub(super) const MAGIC_COMPRESSED: [u8; 8] = *b"BHWAL\0\0\x02";
/// magic 8 + WAL id 16 + first seq 8 + previous first seq 8 + previous length 8 + crc 4.
pub(super) const HEADER_LEN: u64 = 52;
const HEADER_BODY_LEN: usize = 48;
/// `payload_len` and `crc` in front of every payload.
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// Longer payloads are refused when appending and invalid when reading.
pub(super) const MAX_PAYLOAD_LEN: usize = 1 << 30;
const SEQ_LEN: usize = 8;
/// seq, tenant length, one tenant byte, signal, policy version length, one IPC byte.
const MIN_PAYLOAD_LEN: usize = SEQ_LEN + 2 + 1 + 1 + 2 + 1;
/// Set in the signal byte of an entry whose body is encrypted: the data
/// key's id (16 bytes), a nonce, the Arrow IPC stream sealed with
/// AES-256-GCM, its tag.
const SEALED: u8 = 0x80;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SEALED_OVERHEAD: usize = 16 + NONCE_LEN + TAG_LEN;

/// What a sealed body is bound to besides its key.
fn sealed_aad(tenant: &str, signal_code: u8) -> Vec<u8> {
    format!("bulkhead-wal|{tenant}|{signal_code}").into_bytes()
}

/// What a later segment's header says about the segment before it: how far
/// that one was durable when it was sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PreviousSegment {
    pub(super) first_seq: u64,
    pub(super) durable_len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub(super) wal_id: Uuid,
    pub(super) first_seq: u64,
    pub(super) previous: Option<PreviousSegment>,
    /// Written as version 2 ([`MAGIC_COMPRESSED`]): its entries may be
    /// compressed.
    pub(super) compressed: bool,
}

/// Why a header could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderProblem {
    /// Short or failing its checksum: a segment whose creation was cut short
    /// (it never held a durable entry) or that was damaged.
    Torn(&'static str),
    /// A whole, checksummed header this code does not understand: not ours
    /// to delete.
    Unknown(&'static str),
}

impl SegmentHeader {
    pub(super) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[0..8].copy_from_slice(if self.compressed {
            &MAGIC_COMPRESSED
        } else {
            &MAGIC
        });
        out[8..24].copy_from_slice(self.wal_id.as_bytes());
        out[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        let (prev_seq, prev_len) = self
            .previous
            .map_or((0, 0), |p| (p.first_seq, p.durable_len));
        out[32..40].copy_from_slice(&prev_seq.to_le_bytes());
        out[40..48].copy_from_slice(&prev_len.to_le_bytes());
        let crc = crc32fast::hash(&out[..HEADER_BODY_LEN]);
        out[48..52].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, HeaderProblem> {
        if bytes.len() < HEADER_LEN as usize {
            return Err(HeaderProblem::Torn("file is shorter than a segment header"));
        }
        let stored = u32::from_le_bytes(bytes[48..52].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..HEADER_BODY_LEN]) != stored {
            return Err(HeaderProblem::Torn("segment header checksum mismatch"));
        }
        let compressed = match &bytes[0..8] {
            m if m == MAGIC => false,
            m if m == MAGIC_COMPRESSED => true,
            _ => {
                return Err(HeaderProblem::Unknown(
                    "unknown magic bytes or format version in segment header",
                ))
            }
        };
        let first_seq = u64_at(bytes, 24);
        if first_seq == 0 {
            return Err(HeaderProblem::Unknown("segment header names first seq 0"));
        }
        let wal_id = Uuid::from_bytes(bytes[8..24].try_into().expect("16 bytes"));
        let prev_seq = u64_at(bytes, 32);
        let previous = (prev_seq != 0).then(|| PreviousSegment {
            first_seq: prev_seq,
            durable_len: u64_at(bytes, 40),
        });
        Ok(Self {
            wal_id,
            first_seq,
            previous,
            compressed,
        })
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Stable on-disk codes; a new signal needs a new code here.
fn signal_code(signal: Signal) -> u8 {
    match signal {
        Signal::Logs => 1,
        Signal::Spans => 2,
        Signal::Metrics => 3,
        Signal::Anomalies => 4,
    }
}

fn signal_from_code(code: u8) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| signal_code(*s) == code)
}

/// An entry encoded up to its sequence number, which is only known once it
/// is queued (so that the file order is the seq order).
#[derive(Debug)]
pub(super) struct EncodedEntry {
    /// `[len][crc][seq][rest]` with len, crc and seq still zero.
    frame: Vec<u8>,
    /// CRC of `rest`, combined with the seq's CRC when sealing.
    rest_crc: crc32fast::Hasher,
}

impl EncodedEntry {
    pub(super) fn new(
        tenant: &TenantId,
        signal: Signal,
        policy_version: &str,
        batch: &RecordBatch,
        key: Option<&DataKey>,
        compress: bool,
    ) -> Result<Self, WalError> {
        let tenant = tenant.as_str().as_bytes();
        let tenant_len = u16::try_from(tenant.len())
            .map_err(|_| WalError::Invalid("tenant id longer than 65535 bytes".into()))?;
        let pv_len = u16::try_from(policy_version.len()).map_err(|_| {
            WalError::Invalid(format!(
                "policy version is {} bytes long; at most 65535 fit a WAL entry",
                policy_version.len()
            ))
        })?;
        let mut frame = Vec::with_capacity(
            FRAME_HEADER_LEN
                + SEQ_LEN
                + 64
                + SEALED_OVERHEAD
                + policy_version.len()
                + batch.get_array_memory_size(),
        );
        frame.extend_from_slice(&[0u8; FRAME_HEADER_LEN + SEQ_LEN]);
        frame.extend_from_slice(&tenant_len.to_le_bytes());
        frame.extend_from_slice(tenant);
        let code = signal_code(signal);
        frame.push(if key.is_some() { code | SEALED } else { code });
        frame.extend_from_slice(&pv_len.to_le_bytes());
        frame.extend_from_slice(policy_version.as_bytes());
        let body_at = if let Some(key) = key {
            frame.extend_from_slice(key.id.as_bytes());
            let nonce_at = frame.len();
            frame.resize(nonce_at + NONCE_LEN, 0);
            crypto::fill_random(&mut frame[nonce_at..])
                .map_err(|e| WalError::Invalid(e.to_string()))?;
            Some(frame.len())
        } else {
            None
        };
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(compress.then_some(arrow::ipc::CompressionType::LZ4_FRAME))?;
        let mut writer =
            StreamWriter::try_new_with_options(&mut frame, batch.schema_ref().as_ref(), options)?;
        writer.write(batch)?;
        writer.finish()?;
        drop(writer);
        if let (Some(key), Some(at)) = (key, body_at) {
            let aad = sealed_aad(std::str::from_utf8(tenant).unwrap_or(""), code);
            crypto::seal_in_place(key.key(), &aad, &mut frame, at)
                .map_err(|e| WalError::Invalid(e.to_string()))?;
        }
        let payload_len = frame.len() - FRAME_HEADER_LEN;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(WalError::Invalid(format!(
                "entry of {payload_len} bytes is larger than the WAL's limit of {MAX_PAYLOAD_LEN}"
            )));
        }
        let mut rest_crc = crc32fast::Hasher::new();
        rest_crc.update(&frame[FRAME_HEADER_LEN + SEQ_LEN..]);
        Ok(Self { frame, rest_crc })
    }

    /// Bytes this entry takes in a segment.
    pub(super) fn len(&self) -> usize {
        self.frame.len()
    }

    /// Fills in `seq`, the length and the checksum; cheap (no pass over the
    /// payload), so it can run under the queue lock.
    pub(super) fn seal(self, seq: u64) -> Vec<u8> {
        let Self {
            mut frame,
            rest_crc,
        } = self;
        let payload_len = u32::try_from(frame.len() - FRAME_HEADER_LEN).expect("checked in new");
        let seq_bytes = seq.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq_bytes);
        crc.combine(&rest_crc);
        frame[0..4].copy_from_slice(&payload_len.to_le_bytes());
        frame[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        frame[8..16].copy_from_slice(&seq_bytes);
        frame
    }
}

/// The valid prefix of one segment's entries.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) entries: Vec<WalEntry>,
    /// Offset just past the last valid entry (the header length if none).
    pub(super) valid_end: u64,
    /// Why the scan stopped before `limit`, if it did.
    pub(super) stop: Option<String>,
}

/// Reads entries from `HEADER_LEN` up to `limit` (at most the data's
/// length), stopping at the first invalid one. Seqs must be at least
/// `first_seq` and greater than `after` and each other. With `zeros_end`,
/// where only zeros are left before `limit` (written ahead of the next
/// entry), the scan ends there as at `limit`: `stop` is `None` and
/// `valid_end` is where they start. A torn entry followed by zeros is still
/// torn, and without `zeros_end` zeros are an invalid entry like any other.
pub(super) fn scan_entries(
    data: &Buffer,
    limit: u64,
    first_seq: u64,
    after: Option<u64>,
    zeros_end: bool,
) -> Scan {
    let limit = (limit as usize).min(data.len());
    let bytes = data.as_slice();
    let mut pos = HEADER_LEN as usize;
    let mut last = after;
    let mut entries = Vec::new();
    let stop = loop {
        if pos >= limit {
            break None;
        }
        if zeros_end && is_zeros(&bytes[pos..limit]) {
            // Zeros written ahead of the next entry: the end, not damage.
            break None;
        }
        let left = limit - pos;
        if left < FRAME_HEADER_LEN {
            break Some(format!("torn entry header ({left} bytes)"));
        }
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if !(MIN_PAYLOAD_LEN..=MAX_PAYLOAD_LEN).contains(&len) {
            break Some(format!("invalid entry length {len}"));
        }
        if len > left - FRAME_HEADER_LEN {
            break Some(format!(
                "torn entry: {len} bytes announced, {} present",
                left - FRAME_HEADER_LEN
            ));
        }
        let start = pos + FRAME_HEADER_LEN;
        if crc32fast::hash(&bytes[start..start + len]) != crc {
            break Some("entry checksum mismatch".to_string());
        }
        let entry = match decode_payload(&data.slice_with_length(start, len)) {
            Ok(entry) => entry,
            Err(reason) => break Some(reason),
        };
        if entry.seq < first_seq || last.is_some_and(|l| entry.seq <= l) {
            break Some(format!(
                "seq {} does not follow {} (segment starts at {first_seq})",
                entry.seq,
                last.map_or_else(|| "nothing".to_string(), |l| l.to_string())
            ));
        }
        last = Some(entry.seq);
        entries.push(entry);
        pos = start + len;
    };
    Scan {
        entries,
        valid_end: pos as u64,
        stop,
    }
}

/// Whether `bytes` holds only zeros.
pub(super) fn is_zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("entry too short for its {what}"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let len = self.u16(what)? as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| format!("{what} is not UTF-8"))
    }
}

fn decode_payload(payload: &Buffer) -> Result<WalEntry, String> {
    let mut r = Reader {
        bytes: payload.as_slice(),
        pos: 0,
    };
    let seq = u64::from_le_bytes(r.take(SEQ_LEN, "seq")?.try_into().expect("8 bytes"));
    let tenant = TenantId::new(r.str("tenant")?).map_err(|e| format!("invalid tenant: {e}"))?;
    let byte = r.take(1, "signal")?[0];
    let code = byte & !SEALED;
    let signal = signal_from_code(code).ok_or_else(|| format!("unknown signal code {code}"))?;
    let policy_version = r.str("policy version")?.to_string();
    let body = if byte & SEALED != 0 {
        let id = r.take(16, "data key id")?;
        let key = Uuid::from_slice(id).map_err(|e| e.to_string())?;
        if payload.len() - r.pos < NONCE_LEN + TAG_LEN + 1 {
            return Err("sealed entry too short".into());
        }
        WalBody::Sealed {
            key,
            bytes: payload.slice(r.pos),
        }
    } else {
        WalBody::Batch(decode_batch(payload.slice(r.pos))?)
    };
    Ok(WalEntry {
        seq,
        tenant,
        signal,
        policy_version,
        body,
    })
}

/// The batch of a sealed entry body, opened with its data key.
pub(super) fn open_sealed(
    tenant: &TenantId,
    signal: Signal,
    bytes: &Buffer,
    key: &DataKey,
) -> Result<RecordBatch, String> {
    let aad = sealed_aad(tenant.as_str(), signal_code(signal));
    let plain = crypto::open(key.key(), &aad, bytes.as_slice()).map_err(|e| e.to_string())?;
    decode_batch(Buffer::from(plain))
}

/// Decodes an Arrow IPC stream that must hold exactly one batch.
fn decode_batch(mut ipc: Buffer) -> Result<RecordBatch, String> {
    let mut decoder = StreamDecoder::new();
    let mut batch = None;
    while !ipc.is_empty() {
        match decoder.decode(&mut ipc) {
            Ok(Some(b)) if batch.is_none() => batch = Some(b),
            Ok(Some(_)) => return Err("Arrow IPC stream holds more than one batch".into()),
            Ok(None) => {}
            Err(e) => return Err(format!("invalid Arrow IPC stream: {e}")),
        }
    }
    decoder
        .finish()
        .map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    owned(batch.ok_or_else(|| "Arrow IPC stream holds no batch".to_string())?)
}

/// A copy of `batch` in buffers of its own. A decoded batch's arrays are
/// views into the buffer they were read from (a whole segment, or an
/// entry's plaintext): each would count all of it as its memory, inflating
/// the store's buffered bytes after recovery (hundreds of gigabytes for a
/// full log, refusing ingest as over budget), and would keep the segment's
/// bytes alive until the batch is flushed.
fn owned(batch: RecordBatch) -> Result<RecordBatch, String> {
    use arrow::array::{make_array, MutableArrayData};
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())
                .map_err(|e| format!("copying a decoded column: {e}"))?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let options =
        arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &options)
        .map_err(|e| format!("copying a decoded batch: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("v{i}")),
                )),
            ],
        )
        .unwrap()
    }

    fn header(first_seq: u64) -> SegmentHeader {
        SegmentHeader {
            wal_id: Uuid::now_v7(),
            first_seq,
            previous: Some(PreviousSegment {
                first_seq: 3,
                durable_len: 999,
            }),
            compressed: true,
        }
    }

    fn segment(first_seq: u64, seqs: &[u64]) -> Vec<u8> {
        let mut out = header(first_seq).encode().to_vec();
        let tenant = TenantId::new("acme").unwrap();
        for &seq in seqs {
            let e = EncodedEntry::new(&tenant, Signal::Spans, "v1", &batch(2), None, true).unwrap();
            out.extend(e.seal(seq));
        }
        out
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = header(42);
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        let none = SegmentHeader {
            previous: None,
            ..h
        };
        assert_eq!(SegmentHeader::decode(&none.encode()), Ok(none));
        // version 1 (plain entries) and 2 (compressed) both read back
        let plain = SegmentHeader {
            compressed: false,
            ..h
        };
        assert_eq!(&plain.encode()[..8], b"BHWAL\0\0\x01");
        assert_eq!(&bytes[..8], b"BHWAL\0\0\x02");
        assert_eq!(SegmentHeader::decode(&plain.encode()), Ok(plain));
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(matches!(
                SegmentHeader::decode(&bad),
                Err(HeaderProblem::Torn(_))
            ));
            assert!(matches!(
                SegmentHeader::decode(&bytes[..i]),
                Err(HeaderProblem::Torn(_))
            ));
        }
        let mut other_version = bytes;
        other_version[7] = 3;
        let crc = crc32fast::hash(&other_version[..HEADER_BODY_LEN]);
        other_version[48..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&other_version),
            Err(HeaderProblem::Unknown(_))
        ));
    }

    #[test]
    fn entries_round_trip_with_every_signal() {
        let tenant = TenantId::new("t-1").unwrap();
        let mut data = header(1).encode().to_vec();
        for (i, signal) in Signal::ALL.into_iter().enumerate() {
            let e = EncodedEntry::new(
                &tenant,
                signal,
                &format!("pv{i}"),
                &batch(i as i64),
                None,
                true,
            )
            .unwrap();
            let len = e.len();
            let frame = e.seal(i as u64 + 1);
            assert_eq!(frame.len(), len);
            data.extend(frame);
        }
        let scan = scan_entries(&Buffer::from_vec(data.clone()), u64::MAX, 1, None, false);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.valid_end, data.len() as u64);
        assert_eq!(scan.entries.len(), 4);
        for (i, e) in scan.entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.signal, Signal::ALL[i]);
            assert_eq!(e.tenant, tenant);
            assert_eq!(e.policy_version, format!("pv{i}"));
            assert_eq!(e.batch(), Some(&batch(i as i64)));
        }
    }

    #[test]
    fn compressed_and_plain_entries_read_back_alike_and_compressed_ones_are_smaller() {
        let tenant = TenantId::new("acme").unwrap();
        let key = DataKey::random(&tenant).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, false)]));
        let repetitive = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from_iter_values((0..1000).map(
                |i| {
                    format!(
                        "GET /api/v1/items/{} 200 in 12ms from 10.0.0.{}",
                        i % 50,
                        i % 7
                    )
                },
            )))],
        )
        .unwrap();
        let mut data = header(1).encode().to_vec();
        let mut sizes = Vec::new();
        for (seq, (compress, key)) in [
            (true, None),
            (false, None),
            (true, Some(&key)),
            (false, Some(&key)),
        ]
        .into_iter()
        .enumerate()
        {
            let e =
                EncodedEntry::new(&tenant, Signal::Logs, "pv", &repetitive, key, compress).unwrap();
            sizes.push(e.len());
            data.extend(e.seal(seq as u64 + 1));
        }
        assert!(
            sizes[0] * 3 < sizes[1] && sizes[2] * 3 < sizes[3],
            "compressed entries at least three times smaller: {sizes:?}"
        );
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 1, None, false);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.entries.len(), 4);
        for e in &scan.entries[..2] {
            assert_eq!(e.batch(), Some(&repetitive));
        }
        for e in &scan.entries[2..] {
            assert_eq!(e.open(Some(&key)).unwrap(), repetitive);
        }
    }

    #[test]
    fn sealed_entries_open_only_with_their_key_and_hide_their_rows() {
        let tenant = TenantId::new("acme").unwrap();
        let key = DataKey::random(&tenant).unwrap();
        let mut data = header(1).encode().to_vec();
        let e =
            EncodedEntry::new(&tenant, Signal::Logs, "pv", &batch(41), Some(&key), false).unwrap();
        let frame = e.seal(1);
        // the batch's strings are not in the clear (uncompressed, they
        // would be but for the sealing)
        assert!(
            !frame.windows(3).any(|w| w == b"v40"),
            "plaintext in a sealed entry"
        );
        data.extend(frame);
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 1, None, false);
        assert_eq!(scan.stop, None);
        let entry = &scan.entries[0];
        assert_eq!(entry.batch(), None);
        assert_eq!(entry.key_id(), Some(key.id));
        assert_eq!(entry.open(Some(&key)).unwrap(), batch(41));
        assert!(entry.open(None).is_err());
        let other = DataKey::random(&tenant).unwrap();
        assert!(entry.open(Some(&other)).is_err());
        // the same key under another tenant's name does not open it
        let mut moved = entry.clone();
        moved.tenant = TenantId::new("globex").unwrap();
        assert!(moved.open(Some(&key)).is_err());
    }

    #[test]
    fn seqs_must_increase_and_respect_the_segment_start() {
        let data = segment(5, &[5, 6, 6, 7]);
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 5, None, false);
        assert_eq!(scan.entries.len(), 2);
        assert!(scan.stop.unwrap().contains("seq 6"));

        let data = segment(5, &[4]);
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 5, None, false);
        assert!(scan.entries.is_empty());
        assert_eq!(scan.valid_end, HEADER_LEN);

        let data = segment(5, &[5, 6]);
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 5, Some(5), false);
        assert_eq!(
            scan.entries.len(),
            0,
            "5 was already seen in an earlier segment"
        );
    }

    /// Zeros written ahead of the next entry end a segment cleanly; an
    /// entry torn anywhere before them, or bytes after them, do not.
    #[test]
    fn zeros_after_the_last_entry_are_the_end_and_a_torn_entry_before_them_is_not() {
        let whole = segment(1, &[1, 2, 3]);
        let two = segment(1, &[1, 2]).len();
        let ends = [
            HEADER_LEN as usize,
            segment(1, &[1]).len(),
            two,
            whole.len(),
        ];
        for zeros in [0, 1, 7, 8, 4096] {
            let mut data = whole.clone();
            data.resize(whole.len() + zeros, 0);
            let scan = scan_entries(&Buffer::from_vec(data.clone()), u64::MAX, 1, None, true);
            assert_eq!((scan.entries.len(), scan.stop), (3, None), "{zeros} zeros");
            assert_eq!(scan.valid_end, whole.len() as u64);

            // the third entry's bytes from `at` on never reached the disk
            // (its last bytes are zeros anyway: the IPC stream's end marker)
            let last_nonzero = whole.iter().rposition(|&b| b != 0).unwrap();
            for at in two..=last_nonzero {
                let mut torn = data.clone();
                torn[at..whole.len()].fill(0);
                let scan = scan_entries(&Buffer::from_vec(torn), u64::MAX, 1, None, true);
                assert_eq!(scan.entries.len(), 2, "zeroed from {at}");
                assert_eq!(scan.valid_end, two as u64);
                assert_eq!(
                    scan.stop.is_none(),
                    at == two,
                    "zeroed from {at}: only a frame never begun is a clean end"
                );
            }
        }
        // something after the zeros: not written ahead by us
        for end in ends {
            let mut data = whole[..end].to_vec();
            data.resize(end + 64, 0);
            data.push(1);
            let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 1, None, true);
            assert_eq!(scan.valid_end, end as u64);
            assert!(scan.stop.unwrap().contains("invalid entry length 0"));
        }
        // where no zeros are written ahead (the main lane, or inside a
        // length a later segment recorded as durable), zeros are damage
        let mut data = whole.clone();
        data.resize(whole.len() + 4096, 0);
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 1, None, false);
        assert_eq!(scan.valid_end, whole.len() as u64);
        assert!(scan.stop.unwrap().contains("invalid entry length 0"));
    }

    #[test]
    fn absurd_lengths_are_invalid_not_allocated() {
        let mut data = segment(1, &[1]);
        let good_end = data.len();
        data.extend_from_slice(&u32::MAX.to_le_bytes());
        data.extend_from_slice(&[0u8; 4]);
        data.extend_from_slice(&[7u8; 64]);
        let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 1, None, false);
        assert_eq!(scan.entries.len(), 1);
        assert_eq!(scan.valid_end, good_end as u64);
        assert!(scan.stop.unwrap().contains("invalid entry length"));
    }

    #[test]
    fn payload_fields_are_validated_even_with_a_good_checksum() {
        fn frame_with(payload: &[u8]) -> Vec<u8> {
            let mut f = Vec::new();
            f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            f.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            f.extend_from_slice(payload);
            f
        }
        let good = segment(1, &[1]);
        let payload = &good[HEADER_LEN as usize + FRAME_HEADER_LEN..];
        // tenant starts at 8 (len) / 10 (bytes "acme"), signal at 14, pv len at 15.
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("invalid tenant", Box::new(|p| p[10] = b'A')),
            ("tenant", Box::new(|p| p[10] = 0xff)),
            ("unknown signal", Box::new(|p| p[14] = 9)),
            ("policy version", Box::new(|p| p[16] = 0xff)),
            ("Arrow IPC", Box::new(|p| p.truncate(p.len() - 9))),
            (
                "more than one batch",
                Box::new(|p| {
                    p.truncate(19);
                    let b = batch(1);
                    let mut w = StreamWriter::try_new(&mut *p, b.schema_ref().as_ref()).unwrap();
                    w.write(&b).unwrap();
                    w.write(&b).unwrap();
                    w.finish().unwrap();
                }),
            ),
        ];
        for (want, mutate) in cases {
            let mut p = payload.to_vec();
            mutate(&mut p);
            let mut data = header(1).encode().to_vec();
            data.extend(frame_with(&p));
            let scan = scan_entries(&Buffer::from_vec(data), u64::MAX, 1, None, false);
            assert!(scan.entries.is_empty(), "{want}");
            let stop = scan.stop.unwrap();
            assert!(stop.contains(want), "{want}: {stop}");
        }
    }
}
