//! `anomaly_eval`: accuracy and cost of the per-series anomaly detector.
//!
//! Generates labelled synthetic per-minute series (`bulkhead_rules::anomaly::synth`),
//! reports per-kind recall, precision and mean detection delay and the
//! false-positive rate on anomaly-free series, then the cost: nanoseconds
//! per observed point and bytes of state per series. Results are recorded in
//! `docs/anomaly.md`. Run it in release:
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin anomaly_eval
//! ```
use std::hint::black_box;
use std::time::Instant;

use bulkhead_rules::anomaly::eval::{table, Suite};
use bulkhead_rules::anomaly::synth::{generate, SeriesSpec};
use bulkhead_rules::anomaly::{Detector, DetectorSettings, Seasonality};

fn main() {
    let suite = Suite {
        series_per_kind: 48,
        clean_series: 96,
        days: 28,
        anomalies_per_series: 4,
        first_day: 9,
        grace_points: 30,
        seed: 2026,
    };
    let settings = DetectorSettings::default();
    println!("settings: {}", settings.describe());
    println!(
        "suite: {} series/kind, {} clean series, {} days each, {} anomalies/series from day {}, grace {} points, scored from day 7",
        suite.series_per_kind,
        suite.clean_series,
        suite.days,
        suite.anomalies_per_series,
        suite.first_day,
        suite.grace_points
    );
    let started = Instant::now();
    let results = suite.run(&settings);
    println!("{}", table(&results));
    let clean = &results[&None];
    println!(
        "false positives on clean series: {:.4} per 1000 points = {:.3} per series-day ({} in {} points)",
        clean.false_per_1000(),
        clean.false_per_1000() * 1.44,
        clean.false_alarms,
        clean.points
    );
    println!("evaluation took {:.1} s\n", started.elapsed().as_secs_f64());

    // Cost: a fixed set of pre-generated series, replayed to ~6.5 M points per mode.
    let series: Vec<_> = (0..8)
        .map(|i| {
            let spec = SeriesSpec::random_seasonal(900 + i, 28);
            generate(&spec, &[])
        })
        .collect();
    for seasonality in [
        Seasonality::None,
        Seasonality::Daily,
        Seasonality::Weekly,
        Seasonality::Auto,
    ] {
        let s = DetectorSettings {
            seasonality,
            ..DetectorSettings::default()
        };
        let mut points = 0u64;
        let mut anomalies = 0u64;
        let started = Instant::now();
        for _ in 0..20 {
            for one in &series {
                let mut det = Detector::new(&s);
                for (i, &v) in one.values.iter().enumerate() {
                    let score = det.observe(black_box(one.spec.timestamp(i)), black_box(v));
                    anomalies += u64::from(black_box(score).anomaly);
                }
                points += one.values.len() as u64;
                black_box(&det);
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / points as f64;
        let det = Detector::new(&s);
        println!(
            "seasonality={:<7} {:>6.1} ns/point over {} points; state {} B, checkpoint {} B ({} anomalies)",
            format!("{seasonality:?}").to_lowercase(),
            ns,
            points,
            det.state_size_bytes(),
            det.checkpoint().len(),
            anomalies
        );
    }
}
