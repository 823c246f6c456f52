//! Deterministic labelled synthetic series for evaluating detectors.
//!
//! A series is `mean(t) × (1 + noise × e_t)` where `mean` has a base level, a
//! linear trend, a daily shape (fundamental plus second harmonic, peaking at
//! a chosen hour) and a weekend factor, and `e_t` is unit-variance AR(1)
//! Gaussian noise. Anomalies of each [`AnomalyKind`] are then injected with
//! their `[start, end)` point labels. Everything is drawn from a seeded
//! SplitMix64 generator, so a seed reproduces a series exactly.
use std::f64::consts::TAU;

/// SplitMix64: tiny, fast, good enough for test data; not cryptographic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `[lo, hi]`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// The kinds of injected anomalies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// 1–3 points far above normal.
    Spike,
    /// 1–3 points far below normal.
    Dip,
    /// The level moves by several σ for 1–6 hours, then returns.
    LevelShift,
    /// Noise grows 3–6× for 1–6 hours.
    VarianceChange,
    /// The daily pattern runs 6–12 hours out of phase for 6–24 hours.
    SeasonalityBreak,
    /// The value freezes at its last reading for 30 minutes to 6 hours.
    FlatLine,
    /// The value is 0 for 10 minutes to 3 hours (data stopped arriving and
    /// the caller filled explicit zeros).
    DropToZero,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::Spike,
        AnomalyKind::Dip,
        AnomalyKind::LevelShift,
        AnomalyKind::VarianceChange,
        AnomalyKind::SeasonalityBreak,
        AnomalyKind::FlatLine,
        AnomalyKind::DropToZero,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::Dip => "dip",
            AnomalyKind::LevelShift => "level_shift",
            AnomalyKind::VarianceChange => "variance_change",
            AnomalyKind::SeasonalityBreak => "seasonality_break",
            AnomalyKind::FlatLine => "flat_line",
            AnomalyKind::DropToZero => "drop_to_zero",
        }
    }

    /// Random (length in points, magnitude) for this kind; magnitude is in
    /// local noise σ for spikes, dips and shifts, a noise factor for variance
    /// changes and a phase shift in hours for seasonality breaks.
    fn draw(self, rng: &mut Rng) -> (usize, f64) {
        match self {
            AnomalyKind::Spike | AnomalyKind::Dip => (rng.int(1, 3), rng.range(8.0, 16.0)),
            AnomalyKind::LevelShift => {
                let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                (rng.int(60, 360), sign * rng.range(6.0, 12.0))
            }
            AnomalyKind::VarianceChange => (rng.int(60, 360), rng.range(3.0, 6.0)),
            AnomalyKind::SeasonalityBreak => (rng.int(360, 1440), rng.range(6.0, 12.0)),
            AnomalyKind::FlatLine => (rng.int(30, 360), 0.0),
            AnomalyKind::DropToZero => (rng.int(10, 180), 0.0),
        }
    }
}

/// The shape of one synthetic series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSpec {
    /// Timestamp of point 0 (seconds; 0 is a Thursday midnight UTC).
    pub start_ts: i64,
    pub step_secs: u32,
    pub points: usize,
    pub base: f64,
    /// Relative daily swing: the mean ranges over about `base × (1 ± a)`.
    pub daily_amplitude: f64,
    /// Hour of day (UTC) of the daily peak.
    pub peak_hour: f64,
    /// Multiplier on Saturdays and Sundays (1 = no weekly pattern).
    pub weekend_factor: f64,
    /// Relative change of the mean per day (0.01 = +1 % a day).
    pub trend_per_day: f64,
    /// Relative noise σ.
    pub noise: f64,
    /// AR(1) coefficient of the noise, in `[0, 1)`.
    pub ar: f64,
    /// Round values to integers (counts).
    pub integer: bool,
    pub seed: u64,
}

impl SeriesSpec {
    /// A per-minute series of `days` with a shape drawn from `seed`: a mix of
    /// flat, daily and daily+weekly series, counts and continuous values.
    pub fn random(seed: u64, days: u32) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed_0f5e_12e5);
        let pattern = rng.uniform();
        let (daily_amplitude, weekend_factor) = if pattern < 0.2 {
            (0.0, 1.0)
        } else if pattern < 0.6 {
            (rng.range(0.2, 0.7), 1.0)
        } else {
            (rng.range(0.2, 0.7), rng.range(0.4, 0.85))
        };
        Self {
            start_ts: 1_767_225_600, // 2026-01-01T00:00:00Z
            step_secs: 60,
            points: days as usize * 1440,
            base: 10f64.powf(rng.range(2.5, 5.0)),
            daily_amplitude,
            peak_hour: rng.range(0.0, 24.0),
            weekend_factor,
            trend_per_day: rng.range(-0.01, 0.02),
            noise: rng.range(0.01, 0.05),
            ar: rng.range(0.0, 0.6),
            integer: rng.uniform() < 0.5,
            seed,
        }
    }

    /// The same, but always with a daily pattern (for seasonality breaks).
    pub fn random_seasonal(seed: u64, days: u32) -> Self {
        let mut s = Self::random(seed, days);
        if s.daily_amplitude == 0.0 {
            s.daily_amplitude = 0.4;
        }
        s
    }

    /// Timestamp of point `i`.
    pub fn timestamp(&self, i: usize) -> i64 {
        self.start_ts + i as i64 * i64::from(self.step_secs)
    }

    /// The noiseless mean at point `i`, with the daily phase moved by
    /// `shift_hours`.
    pub fn mean_at(&self, i: usize, shift_hours: f64) -> f64 {
        let ts = self.timestamp(i);
        let day = ts.div_euclid(86_400);
        let hour = ts.rem_euclid(86_400) as f64 / 3600.0 + shift_hours;
        let theta = TAU * (hour - self.peak_hour) / 24.0;
        let daily = 1.0 + self.daily_amplitude * (0.75 * theta.cos() + 0.25 * (2.0 * theta).cos());
        // 1970-01-01 was a Thursday: day % 7 == 2 or 3 is Saturday or Sunday.
        let weekly = if matches!(day.rem_euclid(7), 2 | 3) {
            self.weekend_factor
        } else {
            1.0
        };
        let days = (ts - self.start_ts) as f64 / 86_400.0;
        self.base * (1.0 + self.trend_per_day * days).max(0.1) * daily * weekly
    }
}

/// One injected anomaly: points `start..end` are anomalous.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Label {
    pub kind: AnomalyKind,
    pub start: usize,
    pub end: usize,
    /// See [`AnomalyKind`]: σ units, noise factor or hours of phase shift.
    pub magnitude: f64,
}

/// A generated series with its labels (sorted by start, non-overlapping).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub spec: SeriesSpec,
    pub values: Vec<f64>,
    pub labels: Vec<Label>,
}

/// Draws `count` anomalies of `kind` at random places at or after point
/// `earliest`, at least a day apart (so each is judged on its own).
pub fn place(spec: &SeriesSpec, kind: AnomalyKind, count: usize, earliest: usize) -> Vec<Label> {
    let mut rng = Rng::new(spec.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ kind as u64);
    let gap = 1440;
    let room = spec.points.saturating_sub(earliest);
    let per = room / count.max(1);
    let mut labels = Vec::new();
    for c in 0..count {
        let (len, magnitude) = kind.draw(&mut rng);
        let lo = earliest + c * per;
        if per <= len + gap {
            break;
        }
        let start = lo + rng.int(0, per - len - gap);
        labels.push(Label {
            kind,
            start,
            end: (start + len).min(spec.points),
            magnitude,
        });
    }
    labels
}

/// Generates the series of `spec` with `labels` injected.
pub fn generate(spec: &SeriesSpec, labels: &[Label]) -> Series {
    let mut rng = Rng::new(spec.seed);
    let innov = (1.0 - spec.ar * spec.ar).max(0.0).sqrt();
    let mut e = rng.normal();
    let mut values = Vec::with_capacity(spec.points);
    let mut li = 0;
    for i in 0..spec.points {
        e = spec.ar * e + innov * rng.normal();
        while li < labels.len() && labels[li].end <= i {
            li += 1;
        }
        let active = labels.get(li).filter(|l| l.start <= i);
        let mut shift_hours = 0.0;
        let mut noise_factor = 1.0;
        if let Some(l) = active {
            match l.kind {
                AnomalyKind::SeasonalityBreak => shift_hours = l.magnitude,
                AnomalyKind::VarianceChange => noise_factor = l.magnitude,
                _ => {}
            }
        }
        let mean = spec.mean_at(i, shift_hours);
        let sigma = spec.noise * mean;
        let mut v = mean + sigma * noise_factor * e;
        if let Some(l) = active {
            match l.kind {
                AnomalyKind::Spike | AnomalyKind::LevelShift => v += l.magnitude * sigma,
                AnomalyKind::Dip => v -= l.magnitude * sigma,
                AnomalyKind::FlatLine => {
                    v = values.last().copied().unwrap_or(v);
                    values.push(v);
                    continue;
                }
                AnomalyKind::DropToZero => v = 0.0,
                _ => {}
            }
        }
        v = v.max(0.0);
        if spec.integer {
            v = v.round();
        }
        values.push(v);
    }
    Series {
        spec: spec.clone(),
        values,
        labels: labels.to_vec(),
    }
}
