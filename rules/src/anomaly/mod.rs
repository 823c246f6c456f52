//! Per-series baseline anomaly detection: is this point out of line with the
//! series' own normal?
//!
//! One [`Detector`] per series (tenant × signal), fed one aggregate per step
//! (per-minute counts, ratios, p95s, metric values, or any `timestamp,value`
//! series) in time order through [`Detector::observe`], which returns a
//! [`Score`]. The method, its settings and measured accuracy are in
//! `docs/anomaly.md`; in short:
//!
//! * **Baselines.** Up to three predictors run side by side: a robust
//!   exponentially weighted level (no seasonality); an hour-of-day profile
//!   (24 slots) plus a slow residual level; an hour-of-week profile
//!   (168 slots) plus a slow residual level. [`Seasonality::Auto`] picks, per
//!   point, the simplest available predictor unless a richer one's recent
//!   spread is clearly (10 %) smaller.
//! * **Score.** The robust z-score (residual over a mean-absolute-deviation
//!   σ, widened for series whose tails are heavier than Gaussian) is turned
//!   into its two-sided Gaussian tail probability `p`, and
//!   `score = −log10(p) / 16` clipped to `[0, 1]`: a calibrated surprise on
//!   the same scale for every series, 0 during warm-up and for missing data.
//!   A point is anomalous when `score ≥ threshold`, the threshold being set
//!   by [`DetectorSettings::sensitivity`]. A frozen value scores by the
//!   probability of its run of repeats, on the same scale.
//! * **Incidents.** The first anomalous point opens an incident and is the
//!   only one with [`Score::anomaly`] set; the incident stays open until
//!   `suppress_points` of the series' own steps (measured, in time) pass
//!   without an anomalous point. Nothing is learned while an incident is
//!   open, so it does not become the baseline, unless it lasts
//!   `adapt_points` steps: then it is the new normal, the baseline jumps to
//!   it and learning resumes.
//!
//! Strictly causal: a point's score depends only on the points observed before
//! it. State is a fixed-size value (no heap), under 2 KiB with every
//! profile present, and round-trips exactly through [`Detector::checkpoint`] /
//! [`Detector::restore`].
//!
//! [`synth`] generates labelled synthetic series and [`eval`] scores a
//! detector against them (event-wise and windowed); both are public so other
//! crates' tests and the benchmark reuse them.

mod checkpoint;
mod detector;
pub mod eval;
mod profile;
pub mod synth;

pub use detector::Detector;

use serde::{Deserialize, Serialize};

/// Which seasonal profiles the detector may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seasonality {
    /// A robust level only: for series without a daily rhythm.
    None,
    /// Hour-of-day profile once the second day has started.
    Daily,
    /// Hour-of-week profile once the second week has started (hour-of-day
    /// profile before that).
    Weekly,
    /// Learns all profiles and uses the one that explains the series best.
    Auto,
}

/// Which departures count as anomalies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Above or below the band.
    Both,
    /// Above only (e.g. error ratios, latency).
    Up,
    /// Below only (e.g. throughput).
    Down,
}

/// How far above the threshold a point scores: the scores from the
/// threshold to 1 are split in three equal bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Not anomalous (or not scored).
    None,
    /// The lowest third above the threshold.
    Low,
    /// The middle third.
    Medium,
    /// The top third.
    High,
}

/// Settings of one detector; stored with each anomaly via [`Self::describe`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSettings {
    /// In `[0, 1]`; higher reports smaller departures. Sets the score
    /// threshold `0.8 − 0.6 × sensitivity` (0 → 0.8, 0.5 → 0.5, 1 → 0.2),
    /// that is a tail probability of `10^(−16 × threshold)`.
    pub sensitivity: f64,
    /// Points observed before any anomaly may be reported.
    pub warmup_points: u32,
    pub seasonality: Seasonality,
    /// Nominal spacing of the series in seconds (60 for per-minute
    /// aggregates), used until the detector has measured the series' own
    /// step (the running median of the time between points).
    pub step_secs: u32,
    /// An incident closes once this many of the series' steps (in time)
    /// pass without an anomalous point; anomalous points while it is open
    /// are not new anomalies.
    pub suppress_points: u32,
    /// An incident still open after this many steps (in time) is a new
    /// normal: the baseline moves to it and learning resumes.
    pub adapt_points: u32,
    pub direction: Direction,
    /// Report a value that stops changing for unusually long (see
    /// `docs/anomaly.md`).
    pub detect_flatline: bool,
    /// Floor of the spread σ in the series' own units. 0 leaves only a tiny
    /// relative floor; set about 1 for sparse counts (mostly 0 or 1) so a
    /// single extra event is not a 10σ spike.
    pub min_spread: f64,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            sensitivity: 0.5,
            warmup_points: 120,
            seasonality: Seasonality::Auto,
            step_secs: 60,
            suppress_points: 30,
            adapt_points: 60,
            direction: Direction::Both,
            detect_flatline: true,
            min_spread: 0.0,
        }
    }
}

impl DetectorSettings {
    /// Checks every field, reporting the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sensitivity) {
            return Err(format!(
                "sensitivity must be in [0, 1], got {}",
                self.sensitivity
            ));
        }
        if !(1..=3600).contains(&self.step_secs) {
            return Err(format!(
                "step_secs must be in 1..=3600, got {}",
                self.step_secs
            ));
        }
        if self.warmup_points > 1_000_000 {
            return Err(format!(
                "warmup_points must be at most 1000000, got {}",
                self.warmup_points
            ));
        }
        if !(1..=1_000_000).contains(&self.adapt_points) {
            return Err(format!(
                "adapt_points must be in 1..=1000000, got {}",
                self.adapt_points
            ));
        }
        if self.suppress_points > 1_000_000 {
            return Err(format!(
                "suppress_points must be at most 1000000, got {}",
                self.suppress_points
            ));
        }
        if !self.min_spread.is_finite() || self.min_spread < 0.0 || self.min_spread > 1e30 {
            return Err(format!(
                "min_spread must be finite, >= 0 and <= 1e30, got {}",
                self.min_spread
            ));
        }
        Ok(())
    }

    /// The [`Score::score`] at which a point becomes anomalous:
    /// `0.8 − 0.6 × sensitivity`.
    pub fn threshold_score(&self) -> f64 {
        let s = if self.sensitivity.is_nan() {
            0.5
        } else {
            self.sensitivity.clamp(0.0, 1.0)
        };
        0.8 - 0.6 * s
    }

    /// The robust z-score (for a series with Gaussian tails) at which a point
    /// reaches the threshold: 5.73 at the default sensitivity.
    pub fn threshold_z(&self) -> f64 {
        z_of_score(self.threshold_score())
    }

    /// Compact, stable text identifying the method and settings, e.g.
    /// `robust-seasonal/2 threshold=0.50 season=auto warmup=120 step=60s suppress=30 adapt=60 dir=both flat=on min_spread=0`.
    pub fn describe(&self) -> String {
        format!(
            "robust-seasonal/2 threshold={:.2} season={} warmup={} step={}s suppress={} adapt={} dir={} flat={} min_spread={}",
            self.threshold_score(),
            match self.seasonality {
                Seasonality::None => "none",
                Seasonality::Daily => "daily",
                Seasonality::Weekly => "weekly",
                Seasonality::Auto => "auto",
            },
            self.warmup_points,
            self.step_secs,
            self.suppress_points,
            self.adapt_points,
            match self.direction {
                Direction::Both => "both",
                Direction::Up => "up",
                Direction::Down => "down",
            },
            if self.detect_flatline { "on" } else { "off" },
            self.min_spread,
        )
    }
}

/// The verdict on one observed point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub observed: f64,
    /// The baseline's prediction for this point (the observed value itself
    /// for the very first point).
    pub expected: f64,
    /// Below it a point scores at or above the threshold (unless
    /// `direction` is `up`).
    pub lower: f64,
    /// Above it a point scores at or above the threshold (unless
    /// `direction` is `down`).
    pub upper: f64,
    /// In `[0, 1]`: how surprising the point is given strictly earlier
    /// points, `−log10(p) / 16` of its two-sided tail probability `p` under
    /// the series' robust model (or of its run of repeats for a frozen
    /// value). Exactly 0 during warm-up and for missing data.
    pub score: f64,
    /// A new incident starts at this point: the one event to alert on.
    /// Exactly `score ≥ threshold` and no incident already open.
    pub anomaly: bool,
    /// An incident is open after this point (true for `anomaly` points, for
    /// anomalous points inside an incident and for the quiet points of its
    /// suppression tail).
    pub in_incident: bool,
    /// How anomalous this point is; `None` inside the band.
    pub severity: Severity,
    /// Too little history to judge: never anomalous.
    pub warming_up: bool,
}

/// Decades of tail probability that make a score of 1.
pub(crate) const SCORE_DECADES: f64 = 16.0;

/// `−log10` of the two-sided Gaussian tail probability `P(|Z| ≥ z)`, for
/// `z ≥ 0`. Uses the Börjesson–Sundberg form of the upper tail
/// `Q(z) ≈ φ(z) / ((1 − a) z + a √(z² + b))` (a = 0.339, b = 5.510; under
/// 0.3 % relative error for every `z ≥ 0`), so it stays exact in the far tail
/// where `1 − Φ(z)` underflows.
pub(crate) fn tail_decades(z: f64) -> f64 {
    const A: f64 = 0.339;
    const B: f64 = 5.510;
    // ln(2) − ln(√(2π))
    const LN_2_OVER_SQRT_2PI: f64 = -0.225_791_352_644_727_4;
    if z.is_nan() || z <= 0.0 {
        return 0.0;
    }
    if !z.is_finite() {
        return f64::INFINITY;
    }
    let ln_p = LN_2_OVER_SQRT_2PI - 0.5 * z * z - ((1.0 - A) * z + A * (z * z + B).sqrt()).ln();
    (-ln_p / std::f64::consts::LN_10).max(0.0)
}

/// A score from decades of tail probability.
#[inline]
pub(crate) fn score_of_decades(decades: f64) -> f64 {
    if decades.is_nan() {
        return 0.0;
    }
    (decades / SCORE_DECADES).clamp(0.0, 1.0)
}

/// The score of a robust z-score: smooth, monotone, 0 at z = 0, 0.5 at
/// z ≈ 5.73, 1 from z ≈ 8.2.
pub fn score_of_z(z: f64) -> f64 {
    score_of_decades(tail_decades(z))
}

/// The z-score at which [`score_of_z`] reaches `score` (bisection; used once
/// per detector for its band).
pub(crate) fn z_of_score(score: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if score_of_z(mid) < score {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}
