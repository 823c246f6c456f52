//! The per-series detector: three robust predictors, scoring, incidents.
use super::{score_of_z, DetectorSettings, Direction, Score, Seasonality, Severity};

const DAY_SECS: i64 = 86_400;
const WEEK_SECS: i64 = 7 * DAY_SECS;
const SLOT_SECS: i64 = 3_600;
pub(crate) const DAILY_SLOTS: usize = 24;
pub(crate) const WEEKLY_SLOTS: usize = 168;

/// Residuals are clipped (and values winsorised) at this many σ before
/// they are learned: one outlier moves a baseline by at most `3σ·α`.
const CLIP: f64 = 3.0;
/// Mean |N(0, σ)| is σ·√(2/π); multiply a mean absolute residual by this to
/// get σ.
const MEAN_ABS_TO_SIGMA: f64 = 1.253_314_137;
/// Memory (points) of the non-seasonal level: short, it is the fallback that
/// follows whatever the series does.
const NONE_LEVEL_MEMORY: f64 = 60.0;
/// Memory of the residual level on top of a profile: long enough that a
/// phase-shifted day is not absorbed, short enough to follow day-to-day
/// level changes and trends.
const SEASONAL_LEVEL_MEMORY: f64 = 240.0;
/// Memory of each predictor's recent overall spread (the non-seasonal
/// predictor's band).
const SIGMA_MEMORY: f64 = 720.0;
/// Memory of each predictor's overall spread as `Auto` compares it: a week,
/// so a daily profile is judged on weekends too.
const FIT_MEMORY: f64 = 10_080.0;
/// Memory of the rate of exactly repeated values.
const REPEAT_MEMORY: f64 = 1440.0;
/// Learning-rate factor while an incident is open.
const INCIDENT_RATE: f64 = 0.25;
/// Points a seasonal predictor must have scored before `Auto` compares it.
const AUTO_MIN_USABLE: u32 = 360;
/// `Auto` moves to a richer predictor only if its spread is this much smaller.
const AUTO_GAIN: f64 = 0.9;
/// Shortest run of identical values reported as a flat line.
const FLAT_MIN_RUN: u32 = 10;
/// A run is reported once its probability under the usual repeat rate is below this.
const FLAT_MAX_PROB: f64 = 1e-6;
/// σ never falls below this fraction of |expected|: a constant series does
/// not alarm on float noise.
const REL_FLOOR: f64 = 1e-4;
/// Values beyond ±this are treated like non-finite ones (they would
/// overflow `f32` state).
pub(crate) const VALUE_LIMIT: f64 = 1e30;

/// A seasonal profile: per-slot mean and σ, and how many points each slot
/// has learned from (saturating): all points for the mean, the profile's own
/// residuals for σ.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Profile<const N: usize> {
    pub(crate) mean: [f32; N],
    pub(crate) sigma: [f32; N],
    pub(crate) count: [u8; N],
    pub(crate) own: [u8; N],
}

impl<const N: usize> Profile<N> {
    fn new() -> Self {
        Self {
            mean: [0.0; N],
            sigma: [0.0; N],
            count: [0; N],
            own: [0; N],
        }
    }

    /// Interpolated (mean, σ) at a position once both slots have a mean
    /// (`min_count` points), and whether σ is trusted too (`min_count` own
    /// residuals in at least one of the slots).
    #[inline]
    fn read(&self, pos: SlotPos, min_count: u8) -> Option<(f64, f64, bool)> {
        let (a, b) = (pos.lo, pos.hi);
        if self.count[a] < min_count || self.count[b] < min_count {
            return None;
        }
        let w = pos.frac;
        let mean = f64::from(self.mean[a]) * (1.0 - w) + f64::from(self.mean[b]) * w;
        let (sa, sb) = (f64::from(self.sigma[a]), f64::from(self.sigma[b]));
        // While the profile's first own cycle runs, one trusted slot σ
        // serves alone rather than waiting a whole further cycle.
        let (sigma, trusted) = match (self.own[a] >= min_count, self.own[b] >= min_count) {
            (true, true) => (sa * (1.0 - w) + sb * w, true),
            (true, false) => (sa, true),
            (false, true) => (sb, true),
            (false, false) => (sa * (1.0 - w) + sb * w, false),
        };
        Some((mean, sigma, trusted))
    }

    /// Learns a (winsorised) value in the slot containing the point, and the
    /// profile's own residual there once it can predict.
    #[inline]
    fn learn(&mut self, slot: usize, value: f64, residual: Option<f64>, cap: u8, rate: f64) {
        // Running means for the first `cap` points, then EWMAs over `cap`;
        // a slot's first point is its whole estimate, whatever the rate.
        let n = self.count[slot];
        let a = if n == 0 {
            1.0
        } else {
            rate / (f64::from(n.min(cap)) + 1.0)
        };
        ewma(&mut self.mean[slot], value, a);
        self.count[slot] = n.saturating_add(1);
        if let Some(r) = residual {
            let m = self.own[slot];
            let a = if m == 0 {
                1.0
            } else {
                rate / (f64::from(m.min(cap)) + 1.0)
            };
            let sigma = f64::from(self.sigma[slot]);
            let abs = MEAN_ABS_TO_SIGMA * r.abs();
            let abs = if m >= 10 { abs.min(CLIP * sigma) } else { abs };
            ewma(&mut self.sigma[slot], abs, a);
            self.own[slot] = m.saturating_add(1);
        }
    }
}

/// Where a timestamp falls in a profile: the slot containing it (learning)
/// and the two slot centres around it (reading).
#[derive(Clone, Copy, Debug)]
struct SlotPos {
    slot: usize,
    lo: usize,
    hi: usize,
    frac: f64,
}

#[inline]
fn slot_pos(ts: i64, period: i64, slots: usize) -> SlotPos {
    let within = ts.rem_euclid(period);
    let slot = (within / SLOT_SECS) as usize;
    // Slot centres sit at half past each hour.
    let mut p = within as f64 / SLOT_SECS as f64 - 0.5;
    if p < 0.0 {
        p += slots as f64;
    }
    let lo = (p as usize).min(slots - 1);
    SlotPos {
        slot,
        lo,
        hi: (lo + 1) % slots,
        frac: p - lo as f64,
    }
}

#[inline]
fn ewma(v: &mut f32, target: f64, alpha: f64) {
    let cur = f64::from(*v);
    *v = (cur + alpha * (target - cur)) as f32;
}

/// Settings as the hot path uses them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Params {
    /// f32 keeps the per-series state within 2 KiB.
    k: f32,
    warmup: u32,
    suppress_secs: i64,
    seasonality: Seasonality,
    direction: Direction,
    flatline: bool,
    min_spread: f32,
    daily_cap: u8,
    weekly_cap: u8,
    min_count: u8,
}

impl Params {
    fn new(s: &DetectorSettings) -> Self {
        let step = i64::from(s.step_secs.clamp(1, 3600));
        let per_slot = (SLOT_SECS / step).max(1) as u32;
        Self {
            k: s.threshold_z() as f32,
            warmup: s.warmup_points,
            suppress_secs: i64::from(s.suppress_points) * step,
            seasonality: s.seasonality,
            direction: s.direction,
            flatline: s.detect_flatline,
            min_spread: if s.min_spread.is_finite() {
                s.min_spread.clamp(0.0, VALUE_LIMIT) as f32
            } else {
                0.0
            },
            // Profiles remember about 4 days / 3 weeks of their slot.
            daily_cap: (4 * per_slot).min(255) as u8,
            weekly_cap: (3 * per_slot).min(255) as u8,
            // A slot is trusted after half an hour of points.
            min_count: (per_slot / 2).clamp(1, 255) as u8,
        }
    }
}

/// Everything learned; what a checkpoint holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct State {
    /// In-order finite points learned.
    pub(crate) n: u32,
    pub(crate) last_ts: i64,
    pub(crate) last_value: f64,
    /// Fraction of points equal to their predecessor (EWMA).
    pub(crate) repeat_rate: f32,
    pub(crate) flat_run: u32,
    /// Per predictor (none, daily, weekly): level (absolute for `none`,
    /// residual on top of the profile otherwise), overall σ, points usable.
    pub(crate) level: [f32; 3],
    pub(crate) sigma: [f32; 3],
    /// Overall σ over about a week, for `Auto`.
    pub(crate) fit: [f32; 3],
    pub(crate) usable: [u32; 3],
    pub(crate) in_incident: bool,
    pub(crate) last_anomaly_ts: i64,
    pub(crate) daily: Profile<DAILY_SLOTS>,
    pub(crate) weekly: Profile<WEEKLY_SLOTS>,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            n: 0,
            last_ts: 0,
            last_value: 0.0,
            repeat_rate: 0.0,
            flat_run: 0,
            level: [0.0; 3],
            sigma: [0.0; 3],
            fit: [0.0; 3],
            usable: [0; 3],
            in_incident: false,
            last_anomaly_ts: 0,
            daily: Profile::new(),
            weekly: Profile::new(),
        }
    }
}

/// The three predictions at one timestamp.
struct Predictions {
    daily_pos: SlotPos,
    weekly_pos: SlotPos,
    /// (expected, σ) per predictor, where it can predict (and so learn).
    pred: [Option<(f64, f64)>; 3],
    /// Whether each predictor's band is trusted enough to score with.
    trusted: [bool; 3],
    /// The predictor scoring this point.
    chosen: Option<usize>,
}

/// Baseline anomaly detector of one series. See the [module docs](super).
#[derive(Clone, Debug, PartialEq)]
pub struct Detector {
    params: Params,
    pub(crate) st: State,
}

impl Detector {
    /// A detector with no history. Settings are not validated here (call
    /// [`DetectorSettings::validate`] when reading them); out-of-range values
    /// are clamped.
    pub fn new(settings: &DetectorSettings) -> Self {
        Self {
            params: Params::new(settings),
            st: State::new(),
        }
    }

    pub(crate) fn from_state(settings: &DetectorSettings, st: State) -> Self {
        Self {
            params: Params::new(settings),
            st,
        }
    }

    /// Bytes of state held per series (the detector is one fixed-size value,
    /// nothing on the heap).
    pub fn state_size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }

    /// Points learned so far.
    pub fn points_seen(&self) -> u32 {
        self.st.n
    }

    /// Scores a point and then learns from it.
    ///
    /// Points are expected in time order. A point whose timestamp is earlier
    /// than the last learned one, or whose value is NaN, infinite or beyond
    /// ±1e30, is scored against the current baseline (NaN values score 0)
    /// but neither learned nor allowed to open an incident. Equal timestamps
    /// are learned like any other point; gaps need no special handling (the
    /// caller feeds explicit zeros where a missing minute means "nothing
    /// happened").
    pub fn observe(&mut self, timestamp_secs: i64, value: f64) -> Score {
        let ordered = self.st.n == 0 || timestamp_secs >= self.st.last_ts;
        if !ordered || !value.is_finite() || value.abs() > VALUE_LIMIT {
            return self.passive(timestamp_secs, value);
        }
        let p = self.predict(timestamp_secs);
        let warming = self.st.n < self.params.warmup || p.chosen.is_none();
        let (expected, sigma) = self.band(&p, value);
        let z = self.z(value, expected, sigma);
        let k = f64::from(self.params.k);

        // A frozen value: the run's probability under the usual repeat rate.
        let st = &mut self.st;
        let repeat = st.n > 0 && value == st.last_value;
        st.flat_run = if repeat {
            st.flat_run.saturating_add(1)
        } else {
            0
        };
        let flat = self.params.flatline
            && !warming
            && st.flat_run >= FLAT_MIN_RUN
            && f64::from(st.repeat_rate)
                .max(1e-3)
                .powf(f64::from(st.flat_run))
                < FLAT_MAX_PROB;

        let exceeds = !warming && z >= k;
        let anomalous = exceeds || flat;
        let open = st.in_incident
            && timestamp_secs.saturating_sub(st.last_anomaly_ts) <= self.params.suppress_secs;
        let anomaly = anomalous && !open;
        if anomalous {
            st.last_anomaly_ts = timestamp_secs;
        }
        st.in_incident = anomalous || open;
        let mut severity = severity_of(z, k, exceeds);
        if flat {
            severity = severity.max(Severity::Low);
        }
        let mut score = score_of_z(z);
        if flat {
            score = score.max(score_of_z(k));
        }

        let rate = if self.st.in_incident {
            INCIDENT_RATE
        } else {
            1.0
        };
        self.learn(timestamp_secs, value, rate, &p);

        Score {
            observed: value,
            expected,
            lower: expected - k * sigma,
            upper: expected + k * sigma,
            score,
            anomaly,
            in_incident: self.st.in_incident,
            severity,
            warming_up: warming,
        }
    }

    /// Scores without learning (out-of-order or unusable values).
    fn passive(&self, ts: i64, value: f64) -> Score {
        let p = self.predict(ts);
        let warming = self.st.n < self.params.warmup || p.chosen.is_none();
        let finite = value.is_finite();
        let (expected, sigma) = self.band(&p, if finite { value } else { 0.0 });
        let z = if finite {
            self.z(value, expected, sigma)
        } else {
            0.0
        };
        let k = f64::from(self.params.k);
        let open = self.st.in_incident
            && (ts < self.st.last_ts
                || ts.saturating_sub(self.st.last_anomaly_ts) <= self.params.suppress_secs);
        Score {
            observed: value,
            expected,
            lower: expected - k * sigma,
            upper: expected + k * sigma,
            score: score_of_z(z),
            anomaly: false,
            in_incident: open,
            severity: severity_of(z, k, !warming && z >= k),
            warming_up: warming,
        }
    }

    /// Expected value and floored σ of the chosen predictor.
    #[inline]
    fn band(&self, p: &Predictions, value: f64) -> (f64, f64) {
        match p.chosen.and_then(|m| p.pred[m]) {
            Some((e, s)) => {
                let floor = f64::from(self.params.min_spread)
                    .max(REL_FLOOR * e.abs())
                    .max(1e-12);
                (e, s.max(floor))
            }
            None => (value, 0.0),
        }
    }

    #[inline]
    fn z(&self, value: f64, expected: f64, sigma: f64) -> f64 {
        if sigma <= 0.0 {
            return 0.0;
        }
        let r = value - expected;
        let r = match self.params.direction {
            Direction::Both => r.abs(),
            Direction::Up => r.max(0.0),
            Direction::Down => (-r).max(0.0),
        };
        r / sigma
    }

    #[inline]
    fn predict(&self, ts: i64) -> Predictions {
        let st = &self.st;
        let daily_pos = slot_pos(ts, DAY_SECS, DAILY_SLOTS);
        let weekly_pos = slot_pos(ts, WEEK_SECS, WEEKLY_SLOTS);
        let season = self.params.seasonality;
        let mut pred = [None; 3];
        let mut trusted = [false; 3];
        if st.n > 0 {
            pred[0] = Some((f64::from(st.level[0]), f64::from(st.sigma[0])));
            trusted[0] = true;
        }
        if season != Seasonality::None {
            if let Some((mean, sigma, ok)) = st.daily.read(daily_pos, self.params.min_count) {
                pred[1] = Some((mean + f64::from(st.level[1]), sigma));
                trusted[1] = ok;
            }
        }
        if matches!(season, Seasonality::Weekly | Seasonality::Auto) {
            if let Some((mean, sigma, ok)) = st.weekly.read(weekly_pos, self.params.min_count) {
                pred[2] = Some((mean + f64::from(st.level[2]), sigma));
                trusted[2] = ok;
            }
        }
        let chosen = match season {
            _ if !trusted[0] => None,
            Seasonality::None => Some(0),
            Seasonality::Daily => Some(if trusted[1] { 1 } else { 0 }),
            Seasonality::Weekly => Some((0..3).rev().find(|&m| trusted[m]).unwrap_or(0)),
            Seasonality::Auto => {
                let mut best = 0;
                for (m, &ok) in trusted.iter().enumerate().skip(1) {
                    if ok
                        && st.usable[m] >= AUTO_MIN_USABLE
                        && st.fit[m] < (AUTO_GAIN as f32) * st.fit[best]
                    {
                        best = m;
                    }
                }
                Some(best)
            }
        };
        Predictions {
            daily_pos,
            weekly_pos,
            pred,
            trusted,
            chosen,
        }
    }

    /// Updates every predictor with the value `x`, each winsorised to its
    /// own band (a profile's first visit to a slot learns it raw).
    fn learn(&mut self, ts: i64, x: f64, rate: f64, p: &Predictions) {
        let params = &self.params;
        let st = &mut self.st;
        if st.n == 0 {
            st.level[0] = x as f32;
            st.usable[0] = 1;
        }
        let resid = p.pred.map(|o| o.map(|(e, _)| x - e));
        let winsorise = |m: usize| match p.pred[m] {
            Some((e, s)) if p.trusted[m] && s > 0.0 => x.clamp(e - CLIP * s, e + CLIP * s),
            _ => x,
        };
        for (m, r) in resid.iter().enumerate() {
            let Some(r) = *r else { continue };
            let u = f64::from(st.usable[m]);
            let sigma = f64::from(st.sigma[m]);
            let r = if st.usable[m] >= 10 && sigma > 0.0 {
                r.clamp(-CLIP * sigma, CLIP * sigma)
            } else {
                r
            };
            let memory = if m == 0 {
                NONE_LEVEL_MEMORY
            } else {
                SEASONAL_LEVEL_MEMORY
            };
            // Running means at first, then EWMAs of fixed memory.
            let a_level = rate * (1.0 / (u + 1.0)).max(1.0 / memory);
            let a_sigma = rate * (1.0 / u.max(1.0)).max(1.0 / SIGMA_MEMORY);
            let a_fit = rate * (1.0 / u.max(1.0)).max(1.0 / FIT_MEMORY);
            let level = f64::from(st.level[m]);
            st.level[m] = (level + a_level * r) as f32;
            ewma(&mut st.sigma[m], MEAN_ABS_TO_SIGMA * r.abs(), a_sigma);
            ewma(&mut st.fit[m], MEAN_ABS_TO_SIGMA * r.abs(), a_fit);
            st.usable[m] = st.usable[m].saturating_add(1);
        }
        if params.seasonality != Seasonality::None {
            let x = winsorise(1);
            st.daily
                .learn(p.daily_pos.slot, x, resid[1], params.daily_cap, rate);
        }
        if matches!(params.seasonality, Seasonality::Weekly | Seasonality::Auto) {
            let x = winsorise(2);
            st.weekly
                .learn(p.weekly_pos.slot, x, resid[2], params.weekly_cap, rate);
        }
        let a_rep = rate * (1.0 / (f64::from(st.n) + 1.0)).max(1.0 / REPEAT_MEMORY);
        let rep = if st.n > 0 && x == st.last_value {
            1.0
        } else {
            0.0
        };
        ewma(&mut st.repeat_rate, rep, a_rep);
        st.n = st.n.saturating_add(1);
        st.last_ts = ts;
        st.last_value = x;
    }
}

fn severity_of(z: f64, k: f64, exceeds: bool) -> Severity {
    if !exceeds {
        Severity::None
    } else if z < 1.5 * k {
        Severity::Low
    } else if z < 2.5 * k {
        Severity::Medium
    } else {
        Severity::High
    }
}
