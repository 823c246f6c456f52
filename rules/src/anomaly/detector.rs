//! The per-series detector: three robust predictors, scoring, incidents.
use super::profile::{ewma, slot_pos, Profile, SlotPos, SLOT_SECS};
use super::{score_of_z, z_of_score, DetectorSettings, Direction, Score, Seasonality, Severity};

const DAY_SECS: i64 = 86_400;
const WEEK_SECS: i64 = 7 * DAY_SECS;
pub(crate) const DAILY_SLOTS: usize = 24;
pub(crate) const WEEKLY_SLOTS: usize = 168;

/// Residuals are clipped (and values winsorised) at this many σ before
/// they are learned: one outlier moves a baseline by at most `3σ·α`.
pub(crate) const CLIP: f64 = 3.0;
/// Mean |N(0, σ)| is σ·√(2/π); multiply a mean absolute residual by this to
/// get σ.
pub(crate) const MEAN_ABS_TO_SIGMA: f64 = 1.253_314_137;
/// Memory (points) of the non-seasonal level: short, it is the fallback that
/// follows whatever the series does.
const NONE_LEVEL_MEMORY: f64 = 20.0;
/// Memory (in time) of the residual level on top of a profile: long enough
/// that a phase-shifted day is not absorbed, short enough to follow
/// day-to-day level changes and trends.
const SEASONAL_LEVEL_SECS: f64 = 4.0 * 3600.0;
/// ... but never fewer points than this.
const SEASONAL_LEVEL_MIN_POINTS: f64 = 12.0;
/// Memory of each predictor's recent overall spread (the non-seasonal
/// predictor's band).
const SIGMA_MEMORY: f64 = 720.0;
/// Memory of each predictor's overall spread as `Auto` compares it: a week,
/// so a daily profile is judged on weekends too.
const FIT_MEMORY: f64 = 10_080.0;
/// Memory of the rate of exactly repeated values.
const REPEAT_MEMORY: f64 = 1440.0;
/// The 99th percentile of |N(0, 1)|: a series whose |z| exceeds this more
/// than 1 % of the time has heavier tails than the Gaussian model.
const Z_Q99: f64 = 2.575_829;
/// Step of the tail-quantile tracker (in log units).
const TAIL_RATE: f64 = 0.02;
/// The tail factor never stretches the band more than this.
const TAIL_MAX: f64 = 4.0;
/// Learning-rate factor while an incident is open (and not yet adapted).
const INCIDENT_RATE: f64 = 0.25;
/// Relative step of the series' step-length tracker.
const STEP_RATE: f32 = 1.02;
/// A return to the old baseline within this many adaptation times of
/// taking a new normal ends that incident instead of opening one.
const RETURN_WINDOW: f64 = 8.0;
/// Incident residuals beyond this many σ are clipped before the new normal
/// is estimated from them.
const ADAPT_CLIP: f64 = 50.0;
/// Points a seasonal predictor must have scored before `Auto` compares it.
const AUTO_MIN_USABLE: u16 = 360;
/// `Auto` moves to a richer predictor only if its spread is this much smaller.
const AUTO_GAIN: f64 = 0.9;
/// Shortest run of identical values reported as a flat line.
const FLAT_MIN_RUN: u16 = 10;
/// σ never falls below this fraction of |expected|: a constant series does
/// not alarm on float noise.
const REL_FLOOR: f64 = 1e-4;
/// Values beyond ±this are treated like non-finite ones (they would
/// overflow `f32` state).
pub(crate) const VALUE_LIMIT: f64 = 1e30;

/// Settings as the hot path uses them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Params {
    /// The score at which a point is anomalous, and the z it takes to get
    /// there (for the band). f32 keeps the per-series state within 2 KiB.
    threshold: f32,
    k: f32,
    warmup: u32,
    suppress_steps: u32,
    adapt_steps: u16,
    /// The configured step, used until the series has shown its own.
    step_secs: u16,
    seasonality: Seasonality,
    direction: Direction,
    flatline: bool,
    min_spread: f32,
}

impl Params {
    fn new(s: &DetectorSettings) -> Self {
        let threshold = s.threshold_score();
        Self {
            threshold: threshold as f32,
            k: z_of_score(threshold) as f32,
            warmup: s.warmup_points,
            suppress_steps: s.suppress_points,
            adapt_steps: s.adapt_points.clamp(1, u32::from(u16::MAX)) as u16,
            step_secs: s.step_secs.clamp(1, 3600) as u16,
            seasonality: s.seasonality,
            direction: s.direction,
            flatline: s.detect_flatline,
            min_spread: if s.min_spread.is_finite() {
                s.min_spread.clamp(0.0, VALUE_LIMIT) as f32
            } else {
                0.0
            },
        }
    }
}

/// Profile memories and trust thresholds for a step length.
#[derive(Clone, Copy, Debug)]
struct Caps {
    daily: u8,
    weekly: u8,
    min_count: u8,
}

impl Caps {
    fn for_step(step_secs: f64) -> Self {
        let per_slot = (SLOT_SECS as f64 / step_secs.max(1.0)).max(1.0) as u32;
        Self {
            // Profiles remember about 4 days / 3 weeks of their slot.
            daily: (4 * per_slot).min(255) as u8,
            weekly: (3 * per_slot).min(255) as u8,
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
    /// The series' typical step in seconds (a running median of the time
    /// between points; gaps and jitter barely move it); 0 until known.
    pub(crate) step: f32,
    /// Running 99th percentile of |z| (heavy tails widen the band).
    pub(crate) tail_q: f32,
    /// Fraction of points equal to their predecessor (EWMA).
    pub(crate) repeat_rate: f32,
    pub(crate) flat_run: u16,
    /// Per predictor (none, daily, weekly): level (absolute for `none`,
    /// residual on top of the profile otherwise), overall σ, points usable.
    pub(crate) level: [f32; 3],
    pub(crate) sigma: [f32; 3],
    /// Overall σ over about a week, for `Auto`.
    pub(crate) fit: [f32; 3],
    pub(crate) usable: [u16; 3],
    /// [`INTEGRAL`], [`IN_INCIDENT`], [`ADAPTED`], [`RETURN_ARMED`],
    /// [`CHOSEN_MASK`], [`SHIFTED_MASK`].
    pub(crate) flags: u8,
    /// Seconds from the last anomalous point to `last_ts`.
    pub(crate) since_anomaly: u32,
    /// Seconds the open incident has run since it started, its points, and
    /// the sum and sum of squares of their residuals from the chosen
    /// predictor. Once the incident is taken as the new normal: seconds
    /// since then, the shift of the baseline and the σ before it.
    pub(crate) inc_secs: u32,
    pub(crate) inc_n: u16,
    pub(crate) inc_sum: f32,
    pub(crate) inc_sq: f32,
    pub(crate) daily: Profile<DAILY_SLOTS>,
    pub(crate) weekly: Profile<WEEKLY_SLOTS>,
}

/// Every value so far was a whole number (counts): σ is at least 1.
pub(crate) const INTEGRAL: u8 = 1;
/// An incident is open.
pub(crate) const IN_INCIDENT: u8 = 2;
/// The open incident has been taken as a new normal.
pub(crate) const ADAPTED: u8 = 4;
/// The baseline was moved to a new normal (by `inc_sum`) recently.
pub(crate) const RETURN_ARMED: u8 = 1 << 5;
/// Bits holding the predictor whose level was moved to the new normal.
pub(crate) const SHIFTED_SHIFT: u8 = 6;
pub(crate) const SHIFTED_MASK: u8 = 0b11 << SHIFTED_SHIFT;
/// Bits holding 1 + the richest predictor chosen so far.
pub(crate) const CHOSEN_SHIFT: u8 = 3;
pub(crate) const CHOSEN_MASK: u8 = 0b11 << CHOSEN_SHIFT;

impl State {
    #[inline]
    pub(crate) fn flag(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    #[inline]
    fn set_flag(&mut self, f: u8, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    pub(crate) fn new() -> Self {
        Self {
            n: 0,
            last_ts: 0,
            last_value: 0.0,
            step: 0.0,
            tail_q: Z_Q99 as f32,
            repeat_rate: 0.0,
            flat_run: 0,
            level: [0.0; 3],
            sigma: [0.0; 3],
            fit: [0.0; 3],
            usable: [0; 3],
            flags: INTEGRAL,
            since_anomaly: 0,
            inc_secs: 0,
            inc_n: 0,
            inc_sum: 0.0,
            inc_sq: 0.0,
            daily: Profile::new(),
            weekly: Profile::new(),
        }
    }
}

/// The three predictions at one timestamp.
struct Predictions {
    /// The series' step (seconds) at this point.
    step: f64,
    daily_pos: SlotPos,
    weekly_pos: SlotPos,
    caps: Caps,
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

    /// The series' step as the detector measures it (seconds): the running
    /// median of the time between points, or the configured `step_secs`
    /// before two points have arrived.
    pub fn step_secs(&self) -> f64 {
        if self.st.step > 0.0 {
            f64::from(self.st.step)
        } else {
            f64::from(self.params.step_secs)
        }
    }

    /// Scores a point and then learns from it.
    ///
    /// Points are expected in time order. A point whose timestamp is earlier
    /// than the last learned one, or whose value is NaN, infinite or beyond
    /// ±1e30, is missing data: it scores 0, is not learned and cannot open
    /// an incident. Equal timestamps are learned like any other point; gaps
    /// need no special handling (suppression and adaptation run on time).
    pub fn observe(&mut self, timestamp_secs: i64, value: f64) -> Score {
        let ordered = self.st.n == 0 || timestamp_secs >= self.st.last_ts;
        if !ordered || !value.is_finite() || value.abs() > VALUE_LIMIT {
            return self.passive(timestamp_secs, value);
        }
        let step = self.step_secs();
        let p = self.predict(timestamp_secs, step);
        let warming = self.st.n < self.params.warmup || p.chosen.is_none();
        let (expected, sigma) = self.band(&p, value);
        let tail = self.tail_factor();
        let r = value - expected;
        let z = if sigma > 0.0 {
            self.directional(r) / (sigma * tail)
        } else {
            0.0
        };

        // A frozen value: the run's probability under the usual repeat rate.
        let st = &mut self.st;
        let repeat = st.n > 0 && value == st.last_value;
        st.flat_run = if repeat {
            st.flat_run.saturating_add(1)
        } else {
            0
        };
        let flat_decades = if self.params.flatline && st.flat_run >= FLAT_MIN_RUN {
            -f64::from(st.repeat_rate).max(1e-3).log10() * f64::from(st.flat_run)
        } else {
            0.0
        };
        let score = if warming {
            0.0
        } else {
            score_of_z(z).max(super::score_of_decades(flat_decades))
        };

        let threshold = f64::from(self.params.threshold);
        let anomalous = !warming && score >= threshold;
        let suppress_secs = (f64::from(self.params.suppress_steps) * step) as i64;
        let dt = if st.n == 0 {
            0
        } else {
            timestamp_secs
                .saturating_sub(st.last_ts)
                .clamp(0, i64::from(u32::MAX))
        };
        let quiet = i64::from(st.since_anomaly) + dt;
        let open = st.flag(IN_INCIDENT) && quiet <= suppress_secs;
        let adapt_secs = f64::from(self.params.adapt_steps) * step;
        // The last incident was taken as a new normal by moving the baseline
        // by `inc_sum`: a point back at the old baseline soon after is that
        // incident ending, not a new one.
        let mut returned = false;
        if st.flag(RETURN_ARMED) {
            st.inc_secs = st.inc_secs.saturating_add(dt as u32);
            let shift = f64::from(st.inc_sum);
            if f64::from(st.inc_secs) > RETURN_WINDOW * adapt_secs {
                st.set_flag(RETURN_ARMED, false);
            } else if anomalous && (r + shift).abs() <= 0.5 * shift.abs() {
                returned = true;
                st.set_flag(RETURN_ARMED, false);
                let m = usize::from(st.flags >> SHIFTED_SHIFT);
                st.level[m] -= shift as f32;
                // the spread from before the incident, kept in `inc_sq`
                st.sigma[m] = st.sigma[m].min(st.inc_sq);
            }
        }
        let anomaly = anomalous && !open && !returned;
        if anomaly {
            st.inc_secs = 0;
            st.inc_n = 0;
            st.inc_sum = 0.0;
            st.inc_sq = 0.0;
            st.set_flag(ADAPTED, false);
            st.set_flag(RETURN_ARMED, false);
        } else if open && !st.flag(RETURN_ARMED) {
            st.inc_secs = st.inc_secs.saturating_add(dt as u32);
        }
        st.since_anomaly = if anomalous {
            0
        } else {
            quiet.min(i64::from(u32::MAX)) as u32
        };
        let in_incident = anomalous || open;
        st.set_flag(IN_INCIDENT, in_incident);
        if !in_incident {
            st.set_flag(ADAPTED, false);
        }
        if returned {
            // the incident is over; the restored baseline learns on
            st.set_flag(ADAPTED, true);
        }

        // While an incident is open learning runs at a quarter of its rate
        // (winsorised as always), so the incident does not become the
        // baseline; if it lasts `adapt_points` steps it is the new normal:
        // the baseline jumps to it and learning resumes at full rate.
        let full = !in_incident || st.flag(ADAPTED);
        let mut learn = true;
        if in_incident && !st.flag(ADAPTED) {
            self.accumulate(&p, r);
            if f64::from(self.st.inc_secs) >= adapt_secs && self.st.inc_n >= 2 {
                self.adapt(&p);
                learn = false;
            }
        }
        if learn {
            if let Some(m) = p.chosen.filter(|_| sigma > 0.0 && full) {
                // A richer predictor than any before has tails of its own
                // (a profile's residuals are not the plain level's): the
                // tracker starts again, neutral.
                let tag = (m as u8 + 1) << CHOSEN_SHIFT;
                if self.st.flags & CHOSEN_MASK < tag {
                    self.st.flags = (self.st.flags & !CHOSEN_MASK) | tag;
                    self.st.tail_q = Z_Q99 as f32;
                }
                self.learn_tail(r.abs() / sigma);
            }
            let rate = if full { 1.0 } else { INCIDENT_RATE };
            self.learn(timestamp_secs, value, rate, &p);
        } else {
            self.skip(timestamp_secs, value);
        }

        let k = f64::from(self.params.k) * tail;
        Score {
            observed: value,
            expected,
            lower: expected - k * sigma,
            upper: expected + k * sigma,
            score,
            anomaly,
            in_incident,
            severity: severity_of(score, threshold, anomalous),
            warming_up: warming,
        }
    }

    /// Missing data (out-of-order or unusable values): scores 0, learns
    /// nothing.
    fn passive(&self, ts: i64, value: f64) -> Score {
        let p = self.predict(ts, self.step_secs());
        let warming = self.st.n < self.params.warmup || p.chosen.is_none();
        let finite = value.is_finite() && value.abs() <= VALUE_LIMIT;
        let (expected, sigma) = self.band(&p, if finite { value } else { 0.0 });
        let k = f64::from(self.params.k) * self.tail_factor();
        let suppress_secs = (f64::from(self.params.suppress_steps) * self.step_secs()) as i64;
        let quiet = i64::from(self.st.since_anomaly) + ts.saturating_sub(self.st.last_ts);
        let open = self.st.flag(IN_INCIDENT) && (ts < self.st.last_ts || quiet <= suppress_secs);
        Score {
            observed: value,
            expected,
            lower: expected - k * sigma,
            upper: expected + k * sigma,
            score: 0.0,
            anomaly: false,
            in_incident: open,
            severity: Severity::None,
            warming_up: warming,
        }
    }

    /// How much wider than Gaussian the series' tails are (≥ 1).
    #[inline]
    fn tail_factor(&self) -> f64 {
        (f64::from(self.st.tail_q) / Z_Q99).clamp(1.0, TAIL_MAX)
    }

    /// Tracks the 99th percentile of |z| (stochastic approximation in log
    /// space: up 0.99·rate on an exceedance, down 0.01·rate otherwise).
    #[inline]
    fn learn_tail(&mut self, z: f64) {
        let q = f64::from(self.st.tail_q);
        let step = if z > q { 0.99 } else { -0.01 };
        let q = q * (TAIL_RATE * step).exp();
        self.st.tail_q = q.clamp(Z_Q99, Z_Q99 * TAIL_MAX) as f32;
    }

    /// Adds a point of the open incident to its running sums.
    fn accumulate(&mut self, p: &Predictions, r: f64) {
        let st = &mut self.st;
        let s = p.chosen.and_then(|m| p.pred[m]).map_or(0.0, |(_, s)| s);
        let lim = ADAPT_CLIP * s.max(1e-12);
        let r = r.clamp(-lim, lim);
        // f32 sums, kept finite whatever the values (up to ±1e30)
        let max = f64::from(f32::MAX);
        st.inc_sum = (f64::from(st.inc_sum) + r).clamp(-max, max) as f32;
        st.inc_sq = (f64::from(st.inc_sq) + r * r).min(max) as f32;
        st.inc_n = st.inc_n.saturating_add(1);
    }

    /// Takes the open incident as the new normal: the chosen predictor's
    /// level moves by the incident's mean residual and its σ widens to the
    /// incident's spread if that is wider (the others, which may well have
    /// predicted the change, learn on as usual). The incident's suppression
    /// still runs.
    fn adapt(&mut self, p: &Predictions) {
        let st = &mut self.st;
        let n = f64::from(st.inc_n.max(1));
        let mean = f64::from(st.inc_sum) / n;
        let spread = (f64::from(st.inc_sq) / n - mean * mean).max(0.0).sqrt();
        let m = p.chosen.unwrap_or(0);
        let before = st.sigma[m];
        st.level[m] += mean as f32;
        st.sigma[m] = st.sigma[m].max(spread as f32);
        st.flags = (st.flags & !SHIFTED_MASK) | ((m as u8) << SHIFTED_SHIFT);
        st.set_flag(ADAPTED, true);
        // `inc_sum` and `inc_sq` now hold the shift and the σ before it, for
        // a return to the old baseline
        st.set_flag(RETURN_ARMED, true);
        st.inc_secs = 0;
        st.inc_n = 0;
        st.inc_sum = mean as f32;
        st.inc_sq = before;
    }

    /// Expected value and floored σ of the chosen predictor.
    #[inline]
    fn band(&self, p: &Predictions, value: f64) -> (f64, f64) {
        match p.chosen.and_then(|m| p.pred[m]) {
            Some((e, s)) => {
                let counts = if self.st.flag(INTEGRAL) { 1.0 } else { 0.0 };
                let floor = f64::from(self.params.min_spread)
                    .max(counts)
                    .max(REL_FLOOR * e.abs())
                    .max(1e-12);
                (e, s.max(floor))
            }
            None => (value, 0.0),
        }
    }

    /// The residual in the alerting direction (0 in the other).
    #[inline]
    fn directional(&self, r: f64) -> f64 {
        match self.params.direction {
            Direction::Both => r.abs(),
            Direction::Up => r.max(0.0),
            Direction::Down => (-r).max(0.0),
        }
    }

    #[inline]
    fn predict(&self, ts: i64, step: f64) -> Predictions {
        let caps = Caps::for_step(step);
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
            if let Some((mean, sigma, ok)) = st.daily.read(daily_pos, caps.min_count) {
                pred[1] = Some((mean + f64::from(st.level[1]), sigma));
                trusted[1] = ok;
            }
        }
        if matches!(season, Seasonality::Weekly | Seasonality::Auto) {
            if let Some((mean, sigma, ok)) = st.weekly.read(weekly_pos, caps.min_count) {
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
            step,
            daily_pos,
            weekly_pos,
            caps,
            pred,
            trusted,
            chosen,
        }
    }

    /// Bookkeeping for a point that is not learned (inside an incident).
    fn skip(&mut self, ts: i64, x: f64) {
        self.track_step(ts);
        let st = &mut self.st;
        st.n = st.n.saturating_add(1);
        st.last_ts = ts;
        st.last_value = x;
    }

    /// The running median of the time between points.
    #[inline]
    fn track_step(&mut self, ts: i64) {
        let st = &mut self.st;
        if st.n == 0 || ts <= st.last_ts {
            return;
        }
        let dt = (ts - st.last_ts).min(i64::from(u32::MAX)) as f32;
        st.step = if st.step <= 0.0 {
            dt
        } else if dt > st.step {
            (st.step * STEP_RATE).min(dt)
        } else if dt < st.step {
            (st.step / STEP_RATE).max(dt)
        } else {
            st.step
        };
    }

    /// Updates every predictor with the value `x`, each winsorised to its
    /// own band (a profile's first visit to a slot learns it raw).
    fn learn(&mut self, ts: i64, x: f64, rate: f64, p: &Predictions) {
        self.track_step(ts);
        let params = &self.params;
        let st = &mut self.st;
        if st.n == 0 {
            st.level[0] = x as f32;
            st.usable[0] = 1;
        }
        if x.fract() != 0.0 {
            st.set_flag(INTEGRAL, false);
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
                (SEASONAL_LEVEL_SECS / p.step).max(SEASONAL_LEVEL_MIN_POINTS)
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
                .learn(p.daily_pos.slot, x, resid[1], p.caps.daily, rate);
        }
        if matches!(params.seasonality, Seasonality::Weekly | Seasonality::Auto) {
            let x = winsorise(2);
            st.weekly
                .learn(p.weekly_pos.slot, x, resid[2], p.caps.weekly, rate);
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

/// Severity bands split the scores above the threshold in three.
fn severity_of(score: f64, threshold: f64, anomalous: bool) -> Severity {
    if !anomalous {
        return Severity::None;
    }
    let third = (1.0 - threshold) / 3.0;
    if score < threshold + third {
        Severity::Low
    } else if score < threshold + 2.0 * third {
        Severity::Medium
    } else {
        Severity::High
    }
}
