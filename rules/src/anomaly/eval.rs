//! Event-based evaluation of a detector on labelled series.
//!
//! An injected anomaly is *detected* if a new anomaly event
//! ([`Score::anomaly`](super::Score::anomaly)) fires in `[start, end + grace)`;
//! the delay is the first such event's index minus `start`. Every event in a
//! labelled window (with grace) is a true alarm; every other event after
//! warm-up is a false alarm. Precision = true alarms / all alarms.
use std::collections::BTreeMap;

use super::synth::{generate, place, AnomalyKind, Series, SeriesSpec};
use super::{Detector, DetectorSettings};

/// Counts for one anomaly kind (or for clean series, with no events).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindStats {
    pub series: usize,
    pub points: u64,
    /// Injected anomalies, and how many of them were detected.
    pub events: usize,
    pub detected: usize,
    /// Sum of detection delays in points (over detected events).
    pub delay_sum: u64,
    pub true_alarms: u64,
    pub false_alarms: u64,
}

impl KindStats {
    pub fn recall(&self) -> f64 {
        ratio(self.detected as f64, self.events as f64)
    }
    pub fn precision(&self) -> f64 {
        let all = self.true_alarms + self.false_alarms;
        if all == 0 {
            1.0
        } else {
            self.true_alarms as f64 / all as f64
        }
    }
    /// Mean delay in points of the detected events.
    pub fn mean_delay(&self) -> f64 {
        ratio(self.delay_sum as f64, self.detected as f64)
    }
    /// False alarms per 1000 points.
    pub fn false_per_1000(&self) -> f64 {
        ratio(1000.0 * self.false_alarms as f64, self.points as f64)
    }
    fn add(&mut self, o: &KindStats) {
        self.series += o.series;
        self.points += o.points;
        self.events += o.events;
        self.detected += o.detected;
        self.delay_sum += o.delay_sum;
        self.true_alarms += o.true_alarms;
        self.false_alarms += o.false_alarms;
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Runs a fresh detector over `series` and scores its events.
/// Points before `skip` (warm-up and the first days) are fed but not scored.
pub fn score_series(
    settings: &DetectorSettings,
    series: &Series,
    grace: usize,
    skip: usize,
) -> KindStats {
    let mut det = Detector::new(settings);
    let mut first_hit: Vec<Option<usize>> = vec![None; series.labels.len()];
    let mut stats = KindStats {
        series: 1,
        points: series.values.len().saturating_sub(skip) as u64,
        events: series.labels.len(),
        ..KindStats::default()
    };
    let mut li = 0;
    for (i, &v) in series.values.iter().enumerate() {
        let s = det.observe(series.spec.timestamp(i), v);
        if !s.anomaly || i < skip {
            continue;
        }
        while li < series.labels.len() && series.labels[li].end + grace <= i {
            li += 1;
        }
        match series.labels.get(li).filter(|l| l.start <= i) {
            Some(_) => {
                stats.true_alarms += 1;
                first_hit[li].get_or_insert(i);
            }
            None => stats.false_alarms += 1,
        }
    }
    for (hit, l) in first_hit.iter().zip(&series.labels) {
        if let Some(i) = hit {
            stats.detected += 1;
            stats.delay_sum += (i - l.start) as u64;
        }
    }
    stats
}

/// The size of an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub series_per_kind: usize,
    /// Anomaly-free series for the false-positive rate.
    pub clean_series: usize,
    pub days: u32,
    /// Injected anomalies per series (a day or more apart).
    pub anomalies_per_series: usize,
    /// First day anomalies may start (gives the weekly profile time to learn).
    pub first_day: u32,
    pub grace_points: usize,
    pub seed: u64,
}

impl Default for Suite {
    fn default() -> Self {
        Self {
            series_per_kind: 24,
            clean_series: 24,
            days: 21,
            anomalies_per_series: 3,
            first_day: 9,
            grace_points: 30,
            seed: 1,
        }
    }
}

impl Suite {
    /// The labelled series of one kind (or clean ones for `None`).
    pub fn series(&self, kind: Option<AnomalyKind>) -> Vec<Series> {
        let n = if kind.is_some() {
            self.series_per_kind
        } else {
            self.clean_series
        };
        let tag = kind.map_or(0, |k| k as u64 + 1);
        (0..n)
            .map(|i| {
                let seed = self.seed.wrapping_mul(1_000_003) ^ (tag << 32) ^ i as u64;
                let spec = match kind {
                    Some(AnomalyKind::SeasonalityBreak) => {
                        SeriesSpec::random_seasonal(seed, self.days)
                    }
                    _ => SeriesSpec::random(seed, self.days),
                };
                let labels = kind.map_or_else(Vec::new, |k| {
                    place(
                        &spec,
                        k,
                        self.anomalies_per_series,
                        self.first_day as usize * 1440,
                    )
                });
                generate(&spec, &labels)
            })
            .collect()
    }

    /// Scores every kind and the clean series; `None` keys the clean ones.
    pub fn run(&self, settings: &DetectorSettings) -> BTreeMap<Option<AnomalyKind>, KindStats> {
        let skip = 7 * 1440;
        let mut out = BTreeMap::new();
        let kinds = AnomalyKind::ALL.iter().map(|&k| Some(k)).chain([None]);
        for kind in kinds {
            let mut total = KindStats::default();
            for s in self.series(kind) {
                total.add(&score_series(settings, &s, self.grace_points, skip));
            }
            out.insert(kind, total);
        }
        out
    }
}

/// A plain-text table of [`Suite::run`] results.
pub fn table(results: &BTreeMap<Option<AnomalyKind>, KindStats>) -> String {
    let mut s = String::from(
        "kind               series events recall precision mean_delay false/1000pts\n",
    );
    for (kind, st) in results {
        let (name, recall, precision, delay) = match kind {
            Some(k) => (
                k.name(),
                format!("{:.3}", st.recall()),
                format!("{:.3}", st.precision()),
                format!("{:.1}", st.mean_delay()),
            ),
            None => ("clean (no anomalies)", "-".into(), "-".into(), "-".into()),
        };
        s.push_str(&format!(
            "{name:<20} {:>4} {:>6} {recall:>6} {precision:>9} {delay:>10} {:>12.4}\n",
            st.series,
            st.events,
            st.false_per_1000()
        ));
    }
    s
}
