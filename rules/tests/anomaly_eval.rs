//! The anomaly detector: accuracy on labelled synthetic series, and its
//! contracts (causality, checkpoints, bounded state, bad input, warm-up,
//! suppression).
use bulkhead_rules::anomaly::eval::{broad_table, table, Broad, Suite, TUNING_FAMILY};
use bulkhead_rules::anomaly::synth::{generate, place, AnomalyKind, SeriesSpec, Shape};
use bulkhead_rules::anomaly::{
    Detector, DetectorSettings, Direction, Score, Seasonality, Severity,
};

const T0: i64 = 1_767_225_600;

fn weekly() -> DetectorSettings {
    DetectorSettings {
        seasonality: Seasonality::Weekly,
        ..DetectorSettings::default()
    }
}

/// A noisy daily+weekly series of `days` with a few injected anomalies.
fn sample(days: u32, seed: u64) -> (SeriesSpec, Vec<f64>) {
    let mut spec = SeriesSpec::random_seasonal(seed, days);
    spec.weekend_factor = 0.6;
    let labels = place(&spec, AnomalyKind::Spike, 3, 2 * 1440);
    let s = generate(&spec, &labels);
    (spec, s.values)
}

fn run(det: &mut Detector, spec: &SeriesSpec, values: &[f64], from: usize) -> Vec<Score> {
    values
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, &v)| det.observe(spec.timestamp(i), v))
        .collect()
}

#[test]
fn accuracy_on_labelled_series_meets_floors() {
    let suite = Suite {
        series_per_kind: 16,
        clean_series: 16,
        days: 21,
        anomalies_per_series: 3,
        first_day: 9,
        grace_points: 30,
        seed: 7,
    };
    let results = suite.run(&DetectorSettings::default());
    println!("{}", table(&results));
    let floor = |kind: AnomalyKind, recall: f64, precision: f64, windowed: f64| {
        let st = &results[&Some(kind)];
        assert_eq!(st.events, 48, "{kind:?}: every injected anomaly placed");
        for (what, got, min) in [
            ("recall", st.recall(), recall),
            ("precision", st.precision(), precision),
            ("windowed score", st.windowed_score(), windowed),
        ] {
            assert!(
                got >= min,
                "{kind:?} {what} {got} < {min}\n{}",
                table(&results)
            );
        }
    };
    floor(AnomalyKind::Spike, 0.9, 0.75, 85.0);
    floor(AnomalyKind::Dip, 0.9, 0.7, 80.0);
    floor(AnomalyKind::LevelShift, 0.85, 0.6, 75.0);
    floor(AnomalyKind::DropToZero, 0.95, 0.75, 90.0);
    floor(AnomalyKind::VarianceChange, 0.7, 0.75, 65.0);
    floor(AnomalyKind::FlatLine, 0.9, 0.75, 90.0);
    floor(AnomalyKind::SeasonalityBreak, 0.75, 0.7, 65.0);
    // Abrupt kinds are caught at once; a 6–12σ shift within minutes.
    for (kind, max) in [
        (AnomalyKind::Spike, 1.0),
        (AnomalyKind::DropToZero, 1.0),
        (AnomalyKind::LevelShift, 15.0),
    ] {
        let d = results[&Some(kind)].mean_delay();
        assert!(d <= max, "{kind:?} mean delay {d} points");
    }
    let clean = &results[&None];
    assert!(clean.points > 0);
    // Under one false anomaly per series-fortnight (1000 points ≈ 0.7 days).
    assert!(
        clean.false_per_1000() <= 0.05,
        "false positives {} per 1000 points\n{}",
        clean.false_per_1000(),
        table(&results)
    );
}

#[test]
fn scores_depend_only_on_earlier_points() {
    let (spec, values) = sample(9, 11);
    let cut = 8 * 1440 + 100;
    let before = run(&mut Detector::new(&weekly()), &spec, &values, 0);
    let mut changed = values.clone();
    for (i, v) in changed.iter_mut().enumerate().skip(cut) {
        *v = if i % 2 == 0 { 0.0 } else { *v * 50.0 };
    }
    let after = run(&mut Detector::new(&weekly()), &spec, &changed, 0);
    assert_eq!(before[..cut], after[..cut]);
    let (b, a) = (before[cut], after[cut]);
    assert_eq!(
        (b.expected, b.lower, b.upper),
        (a.expected, a.lower, a.upper),
        "the first changed point is judged on the past only"
    );
    assert_ne!(
        before[cut + 1..],
        after[cut + 1..],
        "the change does matter afterwards"
    );
}

#[test]
fn checkpoint_restore_continues_identically() {
    let (spec, values) = sample(10, 12);
    for settings in [weekly(), DetectorSettings::default()] {
        let mut a = Detector::new(&settings);
        let half = 8 * 1440 + 333;
        run(&mut a, &spec, &values[..half], 0);
        let bytes = a.checkpoint();
        assert!(bytes.len() <= 2048, "checkpoint is {} bytes", bytes.len());
        let mut b = Detector::restore(&settings, &bytes).expect("restores");
        assert_eq!(a, b);
        let sa = run(&mut a, &spec, &values, half);
        let sb = run(&mut b, &spec, &values, half);
        assert_eq!(sa, sb);
        assert!(sa.iter().any(|s| !s.warming_up));
        // Restoring under other settings keeps the baseline, changes the band.
        let mut looser = settings.clone();
        looser.sensitivity = 0.0;
        let c = Detector::restore(&looser, &bytes).expect("restores");
        assert_eq!(c.checkpoint(), bytes);
    }
}

#[test]
fn restore_rejects_damaged_checkpoints() {
    let (spec, values) = sample(3, 13);
    let mut d = Detector::new(&weekly());
    run(&mut d, &spec, &values, 0);
    let bytes = d.checkpoint();
    assert!(Detector::restore(&weekly(), &bytes[..bytes.len() - 1]).is_err());
    assert!(Detector::restore(&weekly(), &[]).is_err());
    for at in [0, 4, 10, 500, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(
            Detector::restore(&weekly(), &bad).is_err(),
            "flipped byte {at}"
        );
    }
    let invalid = DetectorSettings {
        sensitivity: 2.0,
        ..weekly()
    };
    assert!(Detector::restore(&invalid, &bytes).is_err());
}

#[test]
fn state_is_at_most_2_kib_with_weekly_seasonality() {
    let d = Detector::new(&weekly());
    let size = d.state_size_bytes();
    assert!(size <= 2048, "state is {size} bytes");
    assert!(
        size >= 168 * 8,
        "the weekly profile is inline: {size} bytes"
    );
    assert_eq!(size, std::mem::size_of::<Detector>());
}

#[test]
fn bad_values_and_out_of_order_points_are_scored_not_learned() {
    let (spec, values) = sample(3, 14);
    let mut d = Detector::new(&DetectorSettings::default());
    let n = 2 * 1440;
    run(&mut d, &spec, &values[..n], 0);
    let snapshot = d.clone();
    let now = spec.timestamp(n);
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300] {
        let s = d.observe(now, v);
        assert!(!s.anomaly, "{v}");
        assert!(s.expected.is_finite() && s.lower.is_finite() && s.upper.is_finite());
        assert!((0.0..=1.0).contains(&s.score));
    }
    // Out of order: missing data, shown against the baseline, scored 0,
    // not learned, never a new anomaly.
    let old = d.observe(spec.timestamp(n - 100), values[n - 100] * 100.0);
    assert!(!old.anomaly && old.score == 0.0, "{old:?}");
    assert!(old.observed > old.upper, "{old:?}");
    assert_eq!(d, snapshot, "nothing was learned");
    // Extreme timestamps do not panic.
    for ts in [i64::MIN, -1, 0, i64::MAX] {
        let s = Detector::new(&weekly()).observe(ts, 1.0);
        assert!(s.warming_up);
        let mut e = Detector::new(&weekly());
        e.observe(0, 1.0);
        e.observe(ts, 2.0);
    }
    // In order again: learning resumes.
    d.observe(now, values[n]);
    assert_eq!(d.points_seen(), snapshot.points_seen() + 1);
}

#[test]
fn warm_up_reports_nothing() {
    let settings = DetectorSettings {
        warmup_points: 200,
        ..DetectorSettings::default()
    };
    let mut d = Detector::new(&settings);
    for i in 0..200 {
        // Wild values: a flat start, then alternating huge jumps.
        let v = if i < 50 {
            5.0
        } else if i % 2 == 0 {
            0.0
        } else {
            1e6
        };
        let s = d.observe(T0 + 60 * i, v);
        assert!(s.warming_up, "point {i}");
        assert!(
            !s.anomaly && !s.in_incident && s.severity == Severity::None,
            "point {i}: {s:?}"
        );
    }
    let s = d.observe(T0 + 60 * 200, 5.0);
    assert!(!s.warming_up);
}

/// A steady series with a little deterministic jitter around 100.
fn steady(i: i64) -> f64 {
    100.0 + [0.0, 1.5, -1.0, 2.0, -2.0, 0.5, -0.5, 1.0][(i % 8) as usize]
}

#[test]
fn a_30_minute_incident_is_one_anomaly() {
    let settings = DetectorSettings {
        seasonality: Seasonality::None,
        ..DetectorSettings::default()
    };
    let mut d = Detector::new(&settings);
    for i in 0..600 {
        assert!(!d.observe(T0 + 60 * i, steady(i)).anomaly, "point {i}");
    }
    let mut events = 0;
    for i in 600..630 {
        let s = d.observe(T0 + 60 * i, steady(i) + 60.0);
        events += usize::from(s.anomaly);
        assert!(
            s.in_incident && s.severity >= Severity::Low,
            "point {i}: {s:?}"
        );
        if i == 600 {
            assert!(s.anomaly && s.score > settings.threshold_score() && s.observed > s.upper);
        }
    }
    assert_eq!(events, 1);
    // The suppression tail: open for `suppress_points` quiet steps, then closed.
    let mut closed_at = None;
    for i in 630..700 {
        let s = d.observe(T0 + 60 * i, steady(i));
        assert!(!s.anomaly, "recovery at {i} is part of the incident: {s:?}");
        if !s.in_incident && closed_at.is_none() {
            closed_at = Some(i);
        }
    }
    assert_eq!(closed_at, Some(630 + i64::from(settings.suppress_points)));
    // A later departure is a new incident.
    assert!(d.observe(T0 + 60 * 700, 200.0).anomaly);
}

#[test]
fn without_suppression_every_departure_is_an_event() {
    let settings = DetectorSettings {
        seasonality: Seasonality::None,
        suppress_points: 0,
        ..DetectorSettings::default()
    };
    let mut d = Detector::new(&settings);
    for i in 0..600 {
        d.observe(T0 + 60 * i, steady(i));
    }
    let events = (600..605)
        .filter(|&i| d.observe(T0 + 60 * i, 300.0).anomaly)
        .count();
    assert_eq!(events, 5);
}

#[test]
fn direction_and_drop_to_zero() {
    let up = DetectorSettings {
        seasonality: Seasonality::None,
        direction: Direction::Up,
        ..DetectorSettings::default()
    };
    let mut d = Detector::new(&up);
    let mut both = Detector::new(&DetectorSettings::default());
    for i in 0..600 {
        d.observe(T0 + 60 * i, steady(i));
        both.observe(T0 + 60 * i, steady(i));
    }
    let t = T0 + 60 * 600;
    let drop_up = d.observe(t, 0.0);
    let drop_both = both.observe(t, 0.0);
    assert!(!drop_up.anomaly && drop_up.score == 0.0, "{drop_up:?}");
    assert!(
        drop_both.anomaly && drop_both.severity == Severity::High,
        "{drop_both:?}"
    );
    assert!(drop_both.expected > 95.0 && drop_both.lower > 0.0);
}

#[test]
fn a_frozen_value_is_a_flat_line() {
    let mut d = Detector::new(&DetectorSettings {
        seasonality: Seasonality::None,
        ..DetectorSettings::default()
    });
    for i in 0..600 {
        d.observe(T0 + 60 * i, steady(i) + (i % 3) as f64 * 0.1);
    }
    let stuck = steady(600);
    let first = (600..660).find(|&i| d.observe(T0 + 60 * i, stuck).anomaly);
    assert!(
        matches!(first, Some(i) if (610..620).contains(&i)),
        "{first:?}"
    );
}

#[test]
fn learns_daily_seasonality_and_narrows_the_band() {
    let mut spec = SeriesSpec::random_seasonal(21, 4);
    spec.weekend_factor = 1.0;
    spec.daily_amplitude = 0.5;
    spec.noise = 0.02;
    let s = generate(&spec, &[]);
    let mut d = Detector::new(&DetectorSettings {
        seasonality: Seasonality::Daily,
        ..DetectorSettings::default()
    });
    let scores = run(&mut d, &spec, &s.values, 0);
    let width = |day: usize| {
        let w: f64 = scores[day * 1440..(day + 1) * 1440]
            .iter()
            .map(|s| (s.upper - s.lower) / s.expected.abs().max(1.0))
            .sum();
        w / 1440.0
    };
    // Day 0 follows the daily swing with a plain level; by day 3 the profile
    // explains it and the band is a fraction as wide.
    assert!(
        width(3) < 0.5 * width(0),
        "day0 {} day3 {}",
        width(0),
        width(3)
    );
    assert!(scores[3 * 1440..].iter().all(|s| !s.anomaly));
}

#[test]
fn settings_validate_describe_and_parse() {
    let d = DetectorSettings::default();
    assert!(d.validate().is_ok());
    assert_eq!(d.threshold_score(), 0.5);
    assert!((d.threshold_z() - 5.73).abs() < 0.01, "{}", d.threshold_z());
    assert!(
        d.describe().contains("threshold=0.50")
            && d.describe().contains("season=auto")
            && d.describe().contains("adapt=60"),
        "{}",
        d.describe()
    );
    for bad in [
        DetectorSettings {
            sensitivity: -0.1,
            ..d.clone()
        },
        DetectorSettings {
            sensitivity: f64::NAN,
            ..d.clone()
        },
        DetectorSettings {
            step_secs: 0,
            ..d.clone()
        },
        DetectorSettings {
            min_spread: f64::INFINITY,
            ..d.clone()
        },
        DetectorSettings {
            adapt_points: 0,
            ..d.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let parsed: DetectorSettings =
        toml::from_str("sensitivity = 0.8\nseasonality = \"weekly\"\ndirection = \"up\"").unwrap();
    assert_eq!(parsed.seasonality, Seasonality::Weekly);
    assert_eq!(parsed.warmup_points, d.warmup_points);
    assert!(toml::from_str::<DetectorSettings>("sensitivty = 1").is_err());
}

#[test]
fn broad_suite_windowed_score_meets_floors() {
    // A small slice of the tuning family (the held-out family is reported
    // by the benchmark only).
    let broad = Broad {
        series_per_kind: 12,
        clean_series: 24,
        anomalies_per_series: 3,
        family: TUNING_FAMILY,
    };
    let r = broad.run(&DetectorSettings::default());
    let text = broad_table(&r);
    println!("{text}");
    assert!(r.by_shape.len() == Shape::ALL.len(), "{text}");
    assert_eq!(r.by_step.len(), 3, "{text}");
    let overall = r.overall();
    assert!(overall.events >= 250, "{text}");
    assert!(overall.windowed_score() >= 70.0, "{text}");
    let clean = &r.by_kind[&None];
    assert!(clean.points > 50_000, "{text}");
    assert!(clean.false_per_10k() <= 3.0, "{text}");
}

#[test]
fn the_windowed_score_is_0_for_silence_and_100_for_a_perfect_detector() {
    use bulkhead_rules::anomaly::eval::KindStats;
    let silent = KindStats {
        events: 10,
        ..KindStats::default()
    };
    assert_eq!(silent.windowed_score(), 0.0);
    let perfect = KindStats {
        events: 10,
        detected: 10,
        reward: 10.0,
        ..KindStats::default()
    };
    assert_eq!(perfect.windowed_score(), 100.0);
    let noisy = KindStats {
        false_alarms: 100,
        ..perfect.clone()
    };
    assert!(noisy.windowed_score() < 0.0);
    // Scored from a real run: the first alert in a window earns 1 at its
    // start, less later; alerts outside windows cost.
    let spec = SeriesSpec::broad(77, Shape::Flat, 60, 3000);
    let labels = bulkhead_rules::anomaly::synth::place_broad(&spec, AnomalyKind::Spike, 3, 600);
    let s = generate(&spec, &labels);
    let st = bulkhead_rules::anomaly::eval::score_series(&DetectorSettings::default(), &s, 3, 450);
    assert_eq!(st.detected, 3, "{st:?}");
    assert!((st.reward - 3.0).abs() < 1e-9, "{st:?}");
}
