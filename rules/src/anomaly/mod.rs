//! Per-series baseline anomaly detection: is this minute's value out of line
//! with the series' own normal?
//!
//! One [`Detector`] per series (tenant × signal), fed one aggregate per step
//! (per-minute counts, ratios, p95s, metric values) in time order through
//! [`Detector::observe`], which returns a [`Score`]. The method, its settings
//! and measured accuracy are in `docs/anomaly.md`; in short:
//!
//! * **Baselines.** Up to three predictors run side by side: a robust
//!   exponentially weighted level (no seasonality); an hour-of-day profile
//!   (24 slots) plus a slow residual level; an hour-of-week profile
//!   (168 slots) plus a slow residual level. Profiles hold the per-slot mean
//!   and spread as `f32`, are read with linear interpolation between slot
//!   centres, and a profile is only used at a timestamp once both slots around
//!   it have seen half an hour of data, so daily seasonality switches on during
//!   the second day and weekly during the second week. [`Seasonality::Auto`]
//!   picks, per point, the simplest available predictor whose recent spread is
//!   clearly (10 %) smaller than the simpler one's.
//! * **Robustness.** Before anything is learned the value is winsorised to the
//!   current band (expected ± 3σ), residuals are clipped at 3σ, and while an
//!   incident is open learning runs at a quarter of its usual rate, so an
//!   incident does not become the new normal within minutes.
//! * **Spread** is the mean absolute residual scaled to a Gaussian σ
//!   (× √(π/2)), per profile slot for the seasonal predictors, so a quiet
//!   night gets a narrow band of its own.
//! * **Score.** `z = |observed − expected| / σ`, `score = z² / (z² + 16)`
//!   (0.5 at z = 4); a point is anomalous when `z ≥ k`, with `k` set by
//!   [`DetectorSettings::sensitivity`]. A frozen value (an unusually long run
//!   of identical values) is anomalous too.
//! * **Suppression.** The first anomalous point opens an incident and is the
//!   only one with [`Score::anomaly`] set; the incident stays open
//!   ([`Score::in_incident`]) until `suppress_points` steps pass without an
//!   anomalous point.
//!
//! Strictly causal: a point's score depends only on the points observed before
//! it. State is a fixed-size value (no heap), 2040 bytes with every
//! profile present, and round-trips exactly through [`Detector::checkpoint`] /
//! [`Detector::restore`].
//!
//! [`synth`] generates labelled synthetic series and [`eval`] scores a
//! detector against them; both are public so other crates' tests and the
//! benchmark reuse them.

mod checkpoint;
mod detector;
pub mod eval;
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

/// How far outside the band a point is, relative to the threshold `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Inside the band (or not scored).
    None,
    /// `k ≤ z < 1.5k` (or a frozen value).
    Low,
    /// `1.5k ≤ z < 2.5k`.
    Medium,
    /// `z ≥ 2.5k`.
    High,
}

/// Settings of one detector; stored with each anomaly via [`Self::describe`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSettings {
    /// In `[0, 1]`; higher reports smaller departures. Maps linearly to the
    /// z threshold `k = 8 − 5 × sensitivity` (0 → 8σ, 0.5 → 5.5σ, 1 → 3σ).
    pub sensitivity: f64,
    /// Points observed before any anomaly may be reported.
    pub warmup_points: u32,
    pub seasonality: Seasonality,
    /// Nominal spacing of the series in seconds (60 for per-minute
    /// aggregates); sets how many points a profile slot remembers.
    pub step_secs: u32,
    /// An incident closes after this many steps without an anomalous point;
    /// anomalous points while it is open are not new anomalies.
    pub suppress_points: u32,
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

    /// The z threshold `k` (in σ) implied by the sensitivity.
    pub fn threshold_z(&self) -> f64 {
        8.0 - 5.0 * self.sensitivity.clamp(0.0, 1.0)
    }

    /// The [`Score::score`] at which a point becomes anomalous.
    pub fn threshold_score(&self) -> f64 {
        score_of_z(self.threshold_z())
    }

    /// Compact, stable text identifying the method and settings, e.g.
    /// `robust-seasonal/1 k=5.50 season=auto warmup=120 step=60s suppress=30 dir=both flat=on min_spread=0`.
    pub fn describe(&self) -> String {
        format!(
            "robust-seasonal/1 k={:.2} season={} warmup={} step={}s suppress={} dir={} flat={} min_spread={}",
            self.threshold_z(),
            match self.seasonality {
                Seasonality::None => "none",
                Seasonality::Daily => "daily",
                Seasonality::Weekly => "weekly",
                Seasonality::Auto => "auto",
            },
            self.warmup_points,
            self.step_secs,
            self.suppress_points,
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
    /// `expected − kσ`: below it a point is anomalous (unless `direction` is `up`).
    pub lower: f64,
    /// `expected + kσ`: above it a point is anomalous (unless `direction` is `down`).
    pub upper: f64,
    /// `z² / (z² + 16)` of the robust z-score in the alerting direction, in
    /// `[0, 1]`; 0 for ignored points.
    pub score: f64,
    /// A new incident starts at this point: the one event to alert on.
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

/// The map of a robust z-score to `[0, 1]`: smooth, monotone, 0.5 at z = 4.
pub(crate) fn score_of_z(z: f64) -> f64 {
    let z2 = z * z;
    if z2.is_finite() {
        z2 / (z2 + 16.0)
    } else {
        1.0
    }
}
