//! The detector's alert contract: calibrated scores, silence during warm-up,
//! one alert per incident, adaptation to a new normal within a bounded time,
//! steps measured in time; with property tests for the invariants.
use bulkhead_rules::anomaly::synth::{generate, place_broad, AnomalyKind, SeriesSpec, Shape};
use bulkhead_rules::anomaly::{score_of_z, Detector, DetectorSettings, Score, Seasonality};
use proptest::prelude::*;

const T0: i64 = 1_767_225_600;

fn plain() -> DetectorSettings {
    DetectorSettings {
        seasonality: Seasonality::None,
        ..DetectorSettings::default()
    }
}

/// A steady series with a little deterministic jitter around 100.
fn steady(i: i64) -> f64 {
    100.0 + [0.0, 1.5, -1.0, 2.0, -2.0, 0.5, -0.5, 1.0][(i % 8) as usize] + 0.1 * (i % 3) as f64
}

fn trained(settings: &DetectorSettings, points: i64, step: i64) -> Detector {
    let mut d = Detector::new(settings);
    for i in 0..points {
        assert!(!d.observe(T0 + step * i, steady(i)).anomaly, "point {i}");
    }
    d
}

#[test]
fn the_score_is_a_calibrated_tail_probability() {
    // −log10 of the two-sided Gaussian tail, over 16 decades.
    for (z, p) in [(1.0, 0.3173), (2.0, 0.0455), (3.0, 0.0027), (5.0, 5.733e-7)] {
        let expected = -f64::log10(p) / 16.0;
        assert!(
            (score_of_z(z) - expected).abs() < 0.002,
            "z {z}: {} vs {expected}",
            score_of_z(z)
        );
    }
    assert_eq!(score_of_z(0.0), 0.0);
    assert_eq!(score_of_z(9.0), 1.0);
    assert_eq!(score_of_z(f64::INFINITY), 1.0);
    assert_eq!(score_of_z(f64::NAN), 0.0);
    // The threshold is the sensitivity setting.
    for (sensitivity, threshold) in [(0.0, 0.8), (0.5, 0.5), (1.0, 0.2)] {
        let s = DetectorSettings {
            sensitivity,
            ..DetectorSettings::default()
        };
        assert!((s.threshold_score() - threshold).abs() < 1e-12);
        assert!((score_of_z(s.threshold_z()) - threshold).abs() < 1e-9);
    }
}

#[test]
fn scores_are_monotone_in_the_deviation_and_decide_exactly() {
    let settings = plain();
    let d = trained(&settings, 600, 60);
    let threshold = settings.threshold_score();
    let expected = d.clone().observe(T0 + 60 * 600, 100.0).expected;
    let mut last = -1.0;
    for step in 0..400 {
        let dev = f64::from(step) * 0.25;
        let s = d.clone().observe(T0 + 60 * 600, expected + dev);
        assert!((0.0..=1.0).contains(&s.score), "{s:?}");
        assert!(s.score >= last, "deviation {dev}: {} < {last}", s.score);
        assert_eq!(s.anomaly, s.score >= threshold, "deviation {dev}: {s:?}");
        assert_eq!(
            s.anomaly,
            s.observed > s.upper,
            "the band is the threshold: {s:?}"
        );
        last = s.score;
    }
    assert_eq!(last, 1.0);
}

#[test]
fn warm_up_scores_zero_and_never_alerts() {
    let settings = DetectorSettings::default();
    let mut d = Detector::new(&settings);
    for i in 0..i64::from(settings.warmup_points) {
        let v = if i % 2 == 0 { 1.0 } else { 1e9 };
        let s = d.observe(T0 + 60 * i, v);
        assert!(
            s.warming_up && s.score == 0.0 && !s.anomaly,
            "point {i}: {s:?}"
        );
    }
}

#[test]
fn missing_data_scores_zero() {
    let mut d = trained(&plain(), 600, 60);
    for v in [f64::NAN, f64::INFINITY, -1e300] {
        let s = d.observe(T0 + 60 * 600, v);
        assert!(s.score == 0.0 && !s.anomaly, "{v}: {s:?}");
    }
    let late = d.observe(T0, 1e6);
    assert!(late.score == 0.0 && !late.anomaly, "{late:?}");
}

/// Alerts of a detector over a series, by index.
fn alerts(settings: &DetectorSettings, ts: &[i64], values: &[f64]) -> (Vec<usize>, Vec<Score>) {
    let mut d = Detector::new(settings);
    let scores: Vec<Score> = ts
        .iter()
        .zip(values)
        .map(|(&t, &v)| d.observe(t, v))
        .collect();
    let at = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.anomaly)
        .map(|(i, _)| i)
        .collect();
    (at, scores)
}

#[test]
fn one_alert_per_injected_incident() {
    let mut checked = 0;
    for kind in [
        AnomalyKind::Spike,
        AnomalyKind::Dip,
        AnomalyKind::LevelShift,
        AnomalyKind::DropToZero,
        AnomalyKind::FlatLine,
    ] {
        for (seed, step) in [(31u64, 60u32), (32, 300), (33, 3600)] {
            let mut spec = SeriesSpec::broad(seed, Shape::Flat, step, 3000);
            spec.gaps = 0.0;
            spec.noise = 0.02;
            spec.ar = 0.0;
            let labels = place_broad(&spec, kind, 3, 600);
            assert_eq!(labels.len(), 3, "{kind:?} at {step}s");
            let s = generate(&spec, &labels);
            let (at, _) = alerts(&DetectorSettings::default(), &s.timestamps, &s.values);
            let grace = 3;
            for l in &labels {
                let inside = at
                    .iter()
                    .filter(|&&i| i >= l.start && i < l.end + grace)
                    .count();
                assert_eq!(inside, 1, "{kind:?} at {step}s, {l:?}: alerts {at:?}");
            }
            assert_eq!(
                at.len(),
                3,
                "{kind:?} at {step}s: alerts {at:?}, labels {labels:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

#[test]
fn a_new_level_is_one_alert_then_silence_within_the_adaptation_bound() {
    for step in [60i64, 300, 3600] {
        let settings = plain();
        let mut d = trained(&settings, 600, step);
        let mut at = Vec::new();
        let mut closed = None;
        for i in 600..2000 {
            let s = d.observe(T0 + step * i, steady(i) + 40.0);
            if s.anomaly {
                at.push(i);
            }
            if i > 600 && !s.in_incident && closed.is_none() {
                closed = Some(i);
            }
        }
        assert_eq!(at, vec![600], "step {step}");
        // Adapted after `adapt_points` steps, closed once the suppression that
        // follows has run out: a bound in steps, whatever their length.
        let bound = 600 + i64::from(settings.adapt_points + settings.suppress_points) + 2;
        let closed = closed.expect("the incident closes");
        assert!(
            closed <= bound,
            "step {step}: closed at {closed}, bound {bound}"
        );
        let s = d.observe(T0 + step * 2000, steady(2000) + 40.0);
        assert!(
            (s.expected - 140.0).abs() < 3.0 && s.score < 0.1,
            "step {step}: the new normal is the baseline: {s:?}"
        );
        // ... and a return to the old level is news again.
        assert!(d.observe(T0 + step * 2001, steady(2001)).anomaly);
    }
}

#[test]
fn suppression_and_step_follow_time_not_points() {
    // 5-minute points with jitter and a 2-hour gap; the detector measures
    // the step and closes an incident after 30 quiet steps of 5 minutes.
    let settings = plain();
    let mut d = Detector::new(&settings);
    let mut t = T0;
    for i in 0..600 {
        t += 300 + [0, 7, -5, 3, -4][i % 5];
        if i == 300 {
            t += 7200;
        }
        assert!(!d.observe(t, steady(i as i64)).anomaly, "point {i}");
    }
    assert!(
        (d.step_secs() - 300.0).abs() < 15.0,
        "step {}",
        d.step_secs()
    );
    t += 300;
    assert!(d.observe(t, 300.0).anomaly);
    let opened = t;
    let mut closed_after = None;
    for i in 601..700 {
        t += 300;
        let s = d.observe(t, steady(i));
        assert!(!s.anomaly);
        if !s.in_incident {
            closed_after = Some(t - opened);
            break;
        }
    }
    let closed_after = closed_after.expect("closes");
    assert!(
        (30 * 285..=31 * 315).contains(&closed_after),
        "closed after {closed_after} s"
    );
}

#[test]
fn heavy_tails_widen_the_band() {
    // Same variance, Gaussian or Student-t (3 degrees of freedom): the
    // heavy-tailed series gets a wider band (its mean absolute deviation
    // alone would make it narrower) and few alerts.
    let run = |heavy: bool| {
        let mut rng = bulkhead_rules::anomaly::synth::Rng::new(5);
        let mut d = Detector::new(&plain());
        let mut alerts = 0;
        let mut width = 0.0;
        for i in 0..6000 {
            let e = if heavy {
                rng.student_t(3)
            } else {
                rng.normal()
            };
            let s = d.observe(T0 + 60 * i, 1000.0 + 10.0 * e);
            alerts += usize::from(s.anomaly);
            width = s.upper - s.expected;
        }
        (alerts, width)
    };
    let (gaussian_alerts, gaussian_width) = run(false);
    let (heavy_alerts, heavy_width) = run(true);
    assert_eq!(gaussian_alerts, 0);
    assert!(
        heavy_width > 1.15 * gaussian_width,
        "{heavy_width} vs {gaussian_width}"
    );
    assert!(heavy_alerts <= 12, "{heavy_alerts} alerts in 6000 points");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any input, including NaN, infinities, huge values, repeated and
    /// backward timestamps: no panic, scores in [0, 1], silence and zero
    /// scores during warm-up, and the decision is the threshold after
    /// suppression.
    #[test]
    fn invariants_hold_for_any_input(
        points in prop::collection::vec(
            (
                prop_oneof![Just(0i64), Just(60), 1i64..4000, -100i64..0, Just(86_400 * 3)],
                prop_oneof![
                    4 => -1e3f64..1e3,
                    1 => Just(f64::NAN),
                    1 => Just(f64::INFINITY),
                    1 => Just(f64::NEG_INFINITY),
                    1 => Just(1e308),
                    1 => Just(-1e31),
                    1 => Just(0.0),
                    1 => any::<f64>(),
                ],
            ),
            1..400,
        ),
        warmup in 0u32..50,
        sensitivity in 0.0f64..=1.0,
        seasonality in prop_oneof![
            Just(Seasonality::None), Just(Seasonality::Daily),
            Just(Seasonality::Weekly), Just(Seasonality::Auto)
        ],
    ) {
        let settings = DetectorSettings {
            warmup_points: warmup,
            sensitivity,
            seasonality,
            // never adapts here, so no return to an old normal is suppressed
            adapt_points: 1_000_000,
            ..DetectorSettings::default()
        };
        let threshold = settings.threshold_score();
        let mut d = Detector::new(&settings);
        let mut t = T0;
        let mut prev_in_incident = false;
        for (i, (dt, v)) in points.into_iter().enumerate() {
            t = t.saturating_add(dt);
            let learned_before = d.points_seen();
            let s = d.observe(t, v);
            prop_assert!((0.0..=1.0).contains(&s.score), "{:?}", s);
            if learned_before < warmup {
                prop_assert!(s.score == 0.0 && !s.anomaly, "warm-up {}: {:?}", i, s);
            }
            if s.anomaly {
                prop_assert!(s.score >= threshold && s.in_incident, "{:?}", s);
            }
            let learned = d.points_seen() > learned_before;
            if learned && s.score >= threshold {
                prop_assert!(s.in_incident, "{:?}", s);
            }
            if learned && s.score >= threshold && !prev_in_incident {
                prop_assert!(s.anomaly, "unsuppressed but silent: {:?}", s);
            }
            if !learned {
                prop_assert!(s.score == 0.0 && !s.anomaly);
            }
            prev_in_incident = s.in_incident;
            let bytes = d.checkpoint();
            prop_assert_eq!(&Detector::restore(&settings, &bytes).unwrap(), &d);
        }
    }

    /// The score map is monotone and bounded.
    #[test]
    fn score_of_z_is_monotone(a in 0.0f64..50.0, b in 0.0f64..50.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(score_of_z(lo) <= score_of_z(hi));
        prop_assert!((0.0..=1.0).contains(&score_of_z(hi)));
    }
}
