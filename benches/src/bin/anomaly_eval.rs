//! `anomaly_eval`: accuracy and cost of the per-series anomaly detector.
//!
//! Generates labelled synthetic series (`bulkhead_rules::anomaly::synth`) and
//! reports, per anomaly kind and overall, recall, precision, mean detection
//! delay, the windowed score and the false-positive rate on anomaly-free
//! series: first on the classic per-minute seasonal suite, then on the broad
//! suite (every shape, 1-minute to hourly steps, gaps) for the seed family
//! the defaults were tuned on and for the held-out family. Then the cost:
//! nanoseconds per observed point and bytes of state per series. Results are
//! recorded in `docs/anomaly.md` and `docs/performance.md`. Run it in
//! release:
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin anomaly_eval
//! ```
//!
//! `--tuning-only` leaves out the held-out family (for tuning runs).
use std::hint::black_box;
use std::time::Instant;

use bulkhead_rules::anomaly::eval::{
    broad_table, table, Broad, Suite, HELD_OUT_FAMILY, TUNING_FAMILY,
};
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

    let tuning_only = std::env::args().any(|a| a == "--tuning-only");
    let mut families = vec![("tuning", TUNING_FAMILY)];
    if !tuning_only {
        families.push(("held-out", HELD_OUT_FAMILY));
    }
    for (name, family) in families {
        let broad = Broad {
            series_per_kind: 60,
            clean_series: 120,
            anomalies_per_series: 3,
            family,
        };
        let started = Instant::now();
        let r = broad.run(&settings);
        println!(
            "broad suite, {name} family ({family:#x}): {} series/kind, {} clean series, {} anomalies/series",
            broad.series_per_kind, broad.clean_series, broad.anomalies_per_series
        );
        println!("{}", broad_table(&r));
        let clean = &r.by_kind[&None];
        println!(
            "{name}: windowed score {:.1} overall; false positives on clean series {:.2} per 10,000 points ({} in {} points); {:.1} s\n",
            r.overall().windowed_score(),
            clean.false_per_10k(),
            clean.false_alarms,
            clean.points,
            started.elapsed().as_secs_f64()
        );
    }

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
