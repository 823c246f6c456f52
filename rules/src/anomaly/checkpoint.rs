//! Checkpoint format of a [`Detector`]: the learned state, bit-exact.
//!
//! Layout (little-endian): magic `BHAD`, format version (u8), the scalar
//! state, the daily then the weekly profile (means, σs, counts, own-residual counts), then an
//! FNV-1a 32-bit checksum of everything before it. Settings are not stored:
//! [`Detector::restore`] takes them, so sensitivity, warm-up, suppression and
//! direction may change across a restart without losing baselines.
//!
//! Version 2 (the calibrated score, measured step, tail factor and incident
//! adaptation) added state; version 1 checkpoints are refused with an error
//! naming the version, and callers start that series afresh.
use super::detector::{State, DAILY_SLOTS, SHIFTED_SHIFT, VALUE_LIMIT, WEEKLY_SLOTS};
use super::profile::Profile;
use super::{Detector, DetectorSettings};

const MAGIC: &[u8; 4] = b"BHAD";
const VERSION: u8 = 2;
/// n, last_ts, last_value, step, tail_q, repeat_rate, flat_run, level, σ,
/// fit, usable, flags, since_anomaly, inc_secs, inc_n, inc_sum, inc_sq.
const SCALARS: usize = 4 + 8 + 8 + 4 + 4 + 4 + 2 + 4 * 3 * 3 + 2 * 3 + 1 + 4 + 4 + 2 + 4 + 4;
const fn profile_len(n: usize) -> usize {
    n * 10
}
const LEN: usize = 4 + 1 + SCALARS + profile_len(DAILY_SLOTS) + profile_len(WEEKLY_SLOTS) + 4;

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn put_profile<const N: usize>(out: &mut Vec<u8>, p: &Profile<N>) {
    for v in p.mean {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in p.sigma {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&p.count);
    out.extend_from_slice(&p.own);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const W: usize>(&mut self) -> [u8; W] {
        // Length is checked before reading starts.
        let mut a = [0u8; W];
        a.copy_from_slice(&self.bytes[self.at..self.at + W]);
        self.at += W;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn f64(&mut self) -> Result<f64, String> {
        let v = f64::from_le_bytes(self.take());
        if v.is_finite() && v.abs() <= VALUE_LIMIT {
            Ok(v)
        } else {
            Err("checkpoint holds a non-finite value".into())
        }
    }
    fn f32(&mut self) -> Result<f32, String> {
        let v = f32::from_le_bytes(self.take());
        if v.is_finite() {
            Ok(v)
        } else {
            Err("checkpoint holds a non-finite value".into())
        }
    }
    fn f32s<const N: usize>(&mut self) -> Result<[f32; N], String> {
        let mut a = [0f32; N];
        for v in &mut a {
            *v = self.f32()?;
        }
        Ok(a)
    }
    fn profile<const N: usize>(&mut self) -> Result<Profile<N>, String> {
        let mean = self.f32s()?;
        let sigma = self.f32s()?;
        let count = self.take::<N>();
        let own = self.take::<N>();
        Ok(Profile {
            mean,
            sigma,
            count,
            own,
        })
    }
}

impl Detector {
    /// The learned state as bytes (fixed length, 2046 bytes); restore
    /// with [`Detector::restore`] to continue exactly where this left off.
    pub fn checkpoint(&self) -> Vec<u8> {
        let st = &self.st;
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&st.n.to_le_bytes());
        out.extend_from_slice(&st.last_ts.to_le_bytes());
        out.extend_from_slice(&st.last_value.to_le_bytes());
        out.extend_from_slice(&st.step.to_le_bytes());
        out.extend_from_slice(&st.tail_q.to_le_bytes());
        out.extend_from_slice(&st.repeat_rate.to_le_bytes());
        out.extend_from_slice(&st.flat_run.to_le_bytes());
        for v in st.level {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in st.sigma.iter().chain(&st.fit) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in st.usable {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(st.flags);
        out.extend_from_slice(&st.since_anomaly.to_le_bytes());
        out.extend_from_slice(&st.inc_secs.to_le_bytes());
        out.extend_from_slice(&st.inc_n.to_le_bytes());
        out.extend_from_slice(&st.inc_sum.to_le_bytes());
        out.extend_from_slice(&st.inc_sq.to_le_bytes());
        put_profile(&mut out, &st.daily);
        put_profile(&mut out, &st.weekly);
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        debug_assert_eq!(out.len(), LEN);
        out
    }

    /// Rebuilds a detector from [`Detector::checkpoint`] bytes under
    /// `settings` (which may differ from the ones it was taken under).
    /// Rejects truncated, corrupted or foreign bytes.
    pub fn restore(settings: &DetectorSettings, bytes: &[u8]) -> Result<Self, String> {
        settings.validate()?;
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err("not a detector checkpoint".into());
        }
        if bytes[4] != VERSION {
            return Err(format!(
                "checkpoint version {} is not this detector's (version {VERSION}); the baseline starts afresh",
                bytes[4]
            ));
        }
        if bytes.len() != LEN {
            return Err(format!(
                "checkpoint is {} bytes, expected {LEN}",
                bytes.len()
            ));
        }
        let (body, sum) = bytes.split_at(LEN - 4);
        if fnv1a(body).to_le_bytes() != sum {
            return Err("checkpoint checksum mismatch".into());
        }
        let mut r = Reader { bytes: body, at: 5 };
        let n = r.u32();
        let last_ts = r.i64();
        let last_value = r.f64()?;
        let step = r.f32()?;
        let tail_q = r.f32()?;
        let repeat_rate = r.f32()?;
        let flat_run = r.u16();
        let level = r.f32s()?;
        let sigma = r.f32s()?;
        let fit = r.f32s()?;
        let usable = [r.u16(), r.u16(), r.u16()];
        let flags = r.u8();
        if flags >> SHIFTED_SHIFT > 2 {
            return Err(format!("bad flags {flags:#x}"));
        }
        let since_anomaly = r.u32();
        let inc_secs = r.u32();
        let inc_n = r.u16();
        let inc_sum = r.f32()?;
        let inc_sq = r.f32()?;
        let daily = r.profile()?;
        let weekly = r.profile()?;
        let st = State {
            n,
            last_ts,
            last_value,
            step,
            tail_q,
            repeat_rate,
            flat_run,
            level,
            sigma,
            fit,
            usable,
            flags,
            since_anomaly,
            inc_secs,
            inc_n,
            inc_sum,
            inc_sq,
            daily,
            weekly,
        };
        Ok(Detector::from_state(settings, st))
    }
}
