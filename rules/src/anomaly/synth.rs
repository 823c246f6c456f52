//! Deterministic labelled synthetic series for evaluating detectors.
//!
//! The classic shape ([`Shape::Seasonal`]) is `mean(t) × (1 + noise × e_t)`
//! where `mean` has a base level, a linear trend, a daily shape (fundamental
//! plus second harmonic, peaking at a chosen hour) and a weekend factor, and
//! `e_t` is unit-variance AR(1) noise. The other [`Shape`]s are what
//! operational series look like beyond that: no seasonality, random walks,
//! sparse counts, heavy-tailed noise, slow drift; any of them at 1-minute,
//! 5-minute or hourly steps and with intermittent gaps
//! ([`SeriesSpec::broad`]). Anomalies of each [`AnomalyKind`] are then
//! injected with their `[start, end)` point labels. Everything is drawn from a
//! seeded SplitMix64 generator, so a seed reproduces a series exactly.
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

    /// Student's t with `df` (≥ 3) degrees of freedom, scaled to unit
    /// variance.
    pub fn student_t(&mut self, df: u32) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..df).map(|_| self.normal().powi(2)).sum();
        let t = z / (chi2 / f64::from(df)).max(1e-12).sqrt();
        t * ((f64::from(df) - 2.0) / f64::from(df)).sqrt()
    }

    /// Poisson with mean `lambda` (Knuth's product of uniforms; for small
    /// means, capped at 1000 draws).
    pub fn poisson(&mut self, lambda: f64) -> f64 {
        if lambda <= 0.0 {
            return 0.0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0);
        }
        let limit = (-lambda).exp();
        let mut p = 1.0;
        let mut k = 0.0;
        for _ in 0..1000 {
            p *= self.uniform();
            if p < limit {
                break;
            }
            k += 1.0;
        }
        k
    }
}

/// The base process of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// Daily (sometimes weekly) rhythm with trend and AR(1) noise; a fifth
    /// of them flat.
    Seasonal,
    /// No rhythm at all: a level with trend and AR(1) noise.
    Flat,
    /// A random walk: each step adds independent noise to the level.
    RandomWalk,
    /// Poisson counts with a small mean (mostly 0, 1, 2).
    SparseCounts,
    /// Student-t noise (3 to 5 degrees of freedom): frequent large outliers
    /// that are not incidents.
    HeavyTail,
    /// Slow drift: a strong trend and a wander over days.
    Drift,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Seasonal,
        Shape::Flat,
        Shape::RandomWalk,
        Shape::SparseCounts,
        Shape::HeavyTail,
        Shape::Drift,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Seasonal => "seasonal",
            Shape::Flat => "flat",
            Shape::RandomWalk => "random_walk",
            Shape::SparseCounts => "sparse_counts",
            Shape::HeavyTail => "heavy_tail",
            Shape::Drift => "drift",
        }
    }

    /// Whether an anomaly of `kind` is meaningful on this shape (a dip, a
    /// frozen value or a drop to zero in a series that is mostly 0 is not;
    /// a seasonality break needs a season).
    pub fn allows(self, kind: AnomalyKind) -> bool {
        match kind {
            AnomalyKind::SeasonalityBreak => self == Shape::Seasonal,
            AnomalyKind::Dip | AnomalyKind::FlatLine | AnomalyKind::DropToZero => {
                self != Shape::SparseCounts
            }
            _ => true,
        }
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
    /// The level moves by several σ and stays there: a new normal. Labelled
    /// for its first hour (at least 6 points); alerts after that are false.
    NewLevel,
}

impl AnomalyKind {
    /// The kinds of the classic per-minute suite.
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::Spike,
        AnomalyKind::Dip,
        AnomalyKind::LevelShift,
        AnomalyKind::VarianceChange,
        AnomalyKind::SeasonalityBreak,
        AnomalyKind::FlatLine,
        AnomalyKind::DropToZero,
    ];

    /// Every kind, the broad suite's.
    pub const BROAD: [AnomalyKind; 8] = [
        AnomalyKind::Spike,
        AnomalyKind::Dip,
        AnomalyKind::LevelShift,
        AnomalyKind::NewLevel,
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
            AnomalyKind::NewLevel => "new_level",
        }
    }

    /// Like [`Self::draw`] with durations in time for a series of
    /// `step_secs`, each at least a few points.
    fn draw_for_step(self, rng: &mut Rng, step_secs: u32) -> (usize, f64) {
        let (minutes, magnitude) = self.draw(rng);
        let per_minute = 60.0 / f64::from(step_secs.max(1));
        let points = |min: usize| ((minutes as f64 * per_minute).round() as usize).max(min);
        let len = match self {
            AnomalyKind::Spike | AnomalyKind::Dip => minutes,
            AnomalyKind::FlatLine | AnomalyKind::VarianceChange => points(12),
            AnomalyKind::SeasonalityBreak => points(6),
            AnomalyKind::NewLevel => points(6),
            _ => points(1),
        };
        (len, magnitude)
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
            AnomalyKind::NewLevel => {
                let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                (60, sign * rng.range(6.0, 12.0))
            }
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
    pub shape: Shape,
    /// Degrees of freedom of Student-t noise; 0 for Gaussian.
    pub tail_df: u32,
    /// Random-walk step σ relative to `base` ([`Shape::RandomWalk`]).
    pub walk: f64,
    /// Relative amplitude and period (days) of a slow wander of the mean.
    pub wander: f64,
    pub wander_days: f64,
    /// Fraction of points missing, in runs of 1 to 20 (intermittent gaps).
    pub gaps: f64,
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
            shape: Shape::Seasonal,
            tail_df: 0,
            walk: 0.0,
            wander: 0.0,
            wander_days: 1.0,
            gaps: 0.0,
        }
    }

    /// A series of `shape` with `points` points every `step_secs`, its
    /// parameters drawn from `seed`; three in ten have intermittent gaps.
    pub fn broad(seed: u64, shape: Shape, step_secs: u32, points: usize) -> Self {
        let mut s = Self::random(seed, 1);
        let mut rng = Rng::new(seed ^ 0xb40a_d5e7_1e55);
        s.shape = shape;
        s.step_secs = step_secs;
        s.points = points;
        s.gaps = if rng.uniform() < 0.3 {
            rng.range(0.005, 0.03)
        } else {
            0.0
        };
        let flat = |s: &mut Self| {
            s.daily_amplitude = 0.0;
            s.weekend_factor = 1.0;
        };
        match shape {
            Shape::Seasonal => {}
            Shape::Flat => flat(&mut s),
            Shape::RandomWalk => {
                flat(&mut s);
                s.trend_per_day = 0.0;
                s.base = 10f64.powf(rng.range(3.0, 5.0));
                s.walk = rng.range(0.0005, 0.003);
                s.noise = rng.range(0.0, 0.002);
                s.ar = 0.0;
            }
            Shape::SparseCounts => {
                s.base = rng.range(0.05, 3.0);
                s.integer = true;
                if rng.uniform() < 0.5 {
                    flat(&mut s);
                }
            }
            Shape::HeavyTail => {
                s.tail_df = rng.int(3, 5) as u32;
                s.noise = rng.range(0.02, 0.08);
                s.ar = rng.range(0.0, 0.3);
                if rng.uniform() < 0.5 {
                    flat(&mut s);
                }
            }
            Shape::Drift => {
                if rng.uniform() < 0.5 {
                    flat(&mut s);
                }
                // −30 % to +60 % over the series, plus a wander over a
                // fifth to a half of it
                let days = (points as f64 * f64::from(step_secs) / 86_400.0).max(0.1);
                s.trend_per_day = rng.range(-0.3, 0.6) / days;
                s.wander = rng.range(0.1, 0.3);
                s.wander_days = days * rng.range(0.2, 0.5);
            }
        }
        s
    }

    /// The local noise σ around `mean`: the unit of injected magnitudes.
    pub fn unit(&self, mean: f64) -> f64 {
        match self.shape {
            Shape::RandomWalk => self.base * (4.0 * self.walk + self.noise),
            Shape::SparseCounts => mean.max(0.0).sqrt().max(1.0),
            _ => self.noise * mean.abs(),
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
        let wander = 1.0 + self.wander * (TAU * days / self.wander_days.max(0.1)).sin();
        self.base * (1.0 + self.trend_per_day * days).max(0.1) * daily * weekly * wander
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

/// A generated series with its labels (sorted by start, non-overlapping;
/// indices into `values`).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub spec: SeriesSpec,
    /// Timestamp of each value (seconds); gaps leave holes.
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    pub labels: Vec<Label>,
}

/// Draws `count` anomalies of `kind` for a series of any step, spread over
/// `[earliest, points)` with room between them (a fifth of each share, at
/// least 60 points), so each is judged on its own.
pub fn place_broad(
    spec: &SeriesSpec,
    kind: AnomalyKind,
    count: usize,
    earliest: usize,
) -> Vec<Label> {
    let mut rng = Rng::new(spec.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (kind as u64 + 17));
    let room = spec.points.saturating_sub(earliest);
    let per = room / count.max(1);
    let guard = (per / 5).max(60);
    let mut labels = Vec::new();
    for c in 0..count {
        let (len, magnitude) = kind.draw_for_step(&mut rng, spec.step_secs);
        let lo = earliest + c * per;
        if per <= len + guard {
            break;
        }
        let start = lo + rng.int(0, per - len - guard);
        labels.push(Label {
            kind,
            start,
            end: (start + len).min(spec.points),
            magnitude,
        });
    }
    labels
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

/// Generates the series of `spec` with `labels` injected (then drops the
/// points of its gaps, outside the labelled spans).
pub fn generate(spec: &SeriesSpec, labels: &[Label]) -> Series {
    let mut rng = Rng::new(spec.seed);
    let innov = (1.0 - spec.ar * spec.ar).max(0.0).sqrt();
    let mut e = rng.normal();
    let mut walk = 0.0;
    let mut new_level = 0.0;
    let mut values = Vec::with_capacity(spec.points);
    let mut li = 0;
    for i in 0..spec.points {
        let shock = if spec.tail_df >= 3 {
            rng.student_t(spec.tail_df)
        } else {
            rng.normal()
        };
        e = spec.ar * e + innov * shock;
        if spec.shape == Shape::RandomWalk {
            walk += spec.walk * spec.base * rng.normal();
        }
        while li < labels.len() && labels[li].end <= i {
            li += 1;
        }
        let active = labels.get(li).filter(|l| l.start <= i);
        let mut shift_hours = 0.0;
        if let Some(l) = active {
            if l.kind == AnomalyKind::SeasonalityBreak {
                shift_hours = l.magnitude;
            }
        }
        let mean = spec.mean_at(i, shift_hours) + walk;
        let unit = spec.unit(mean);
        if let Some(l) = active.filter(|l| l.kind == AnomalyKind::NewLevel && l.start == i) {
            new_level += l.magnitude * unit;
        }
        let mut v = match spec.shape {
            Shape::SparseCounts => rng.poisson(mean),
            Shape::RandomWalk => mean + spec.noise * spec.base * e,
            _ => mean + spec.noise * mean * e,
        } + new_level;
        if let Some(l) = active {
            match l.kind {
                AnomalyKind::Spike | AnomalyKind::LevelShift => v += l.magnitude * unit,
                AnomalyKind::Dip => v -= l.magnitude * unit,
                AnomalyKind::VarianceChange => v += (l.magnitude - 1.0) * unit * e,
                AnomalyKind::FlatLine => {
                    v = values.last().copied().unwrap_or(v);
                    values.push(v);
                    continue;
                }
                AnomalyKind::DropToZero => v = 0.0,
                _ => {}
            }
        }
        if spec.shape != Shape::RandomWalk {
            v = v.max(0.0);
        }
        if spec.integer {
            v = v.round();
        }
        values.push(v);
    }
    let timestamps = (0..spec.points).map(|i| spec.timestamp(i)).collect();
    let series = Series {
        spec: spec.clone(),
        timestamps,
        values,
        labels: labels.to_vec(),
    };
    if spec.gaps > 0.0 {
        with_gaps(series)
    } else {
        series
    }
}

/// Removes runs of 1 to 20 points (a `spec.gaps` fraction in all) outside
/// the labelled spans and a margin after them, and re-indexes the labels.
fn with_gaps(s: Series) -> Series {
    let mut rng = Rng::new(s.spec.seed ^ 0x6a95);
    let n = s.values.len();
    let mut keep = vec![true; n];
    let runs = (s.spec.gaps * n as f64 / 10.5).round() as usize;
    for _ in 0..runs {
        let len = rng.int(1, 20);
        let at = rng.int(0, n.saturating_sub(len + 1));
        let clear = s
            .labels
            .iter()
            .all(|l| at + len + 1 < l.start || at > l.end + 60);
        if clear {
            keep[at..at + len].iter_mut().for_each(|k| *k = false);
        }
    }
    // new index of every old one (the next kept point at or after it)
    let mut new_index = vec![0; n + 1];
    let mut kept = 0;
    for i in 0..n {
        new_index[i] = kept;
        kept += usize::from(keep[i]);
    }
    new_index[n] = kept;
    let pick =
        |v: &[f64]| -> Vec<f64> { v.iter().zip(&keep).filter(|p| *p.1).map(|p| *p.0).collect() };
    let timestamps = s
        .timestamps
        .iter()
        .zip(&keep)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let labels = s
        .labels
        .iter()
        .map(|l| Label {
            start: new_index[l.start],
            end: new_index[l.end.min(n)],
            ..*l
        })
        .filter(|l| l.end > l.start)
        .collect();
    Series {
        values: pick(&s.values),
        timestamps,
        labels,
        spec: s.spec,
    }
}
