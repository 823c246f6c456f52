//! `bulkhead anomaly backtest` and the collector's in-server detectors agree
//! point by point: the same per-minute series, once sent as OTLP logs
//! through the collector's conversion and anomaly runtime, once written as
//! a CSV and backtested, gives the same alerts with the same scores, bands
//! and expected values, and no alert on any other minute.
use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_collector::anomaly::AnomalyEngine;
use bulkhead_collector::convert::{self, EventWindow, Stamp};
use bulkhead_collector::telemetry::Telemetry;
use bulkhead_rules::anomaly::DetectorSettings;
use bulkhead_rules::{AnomalyPolicy, ManualClock, SeriesKind, TenantId};
use bulkhead_store::Signal;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

// 2025-06-02T00:00:00Z
const T0: i64 = 1_748_822_400;
const MINUTES: i64 = 2 * 1440;

/// Records per minute: a daily swing with deterministic noise, a burst, a
/// 90-minute tripling, 20 silent minutes and a lasting new level.
fn count(m: i64) -> u64 {
    let h = (m as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        % 9;
    let daily = 8.0 * (std::f64::consts::TAU * m as f64 / 1440.0).sin();
    let base = (30.0 + daily) as u64 + h;
    match m {
        1500 => 160,
        2000..2090 => base * 3,
        2300..2320 => 0,
        2600.. => base + 40,
        _ => base,
    }
}

fn request(minutes: std::ops::Range<i64>) -> ExportLogsServiceRequest {
    let mut records = Vec::new();
    for m in minutes {
        for i in 0..count(m) {
            records.push(LogRecord {
                time_unix_nano: ((T0 + m * 60) * 1_000_000_000 + i as i64 * 1_000_000) as u64,
                severity_number: 9,
                ..Default::default()
            });
        }
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn backtest_and_collector_agree_point_by_point() {
    // The collector: OTLP logs, converted and fed hour by hour.
    let dir = tempfile::tempdir().unwrap();
    let now = (T0 + MINUTES * 60 + 600) * 1_000_000_000;
    let engine = AnomalyEngine::new(
        dir.path().to_path_buf(),
        Arc::new(ManualClock::new(now)),
        Arc::new(Telemetry::default()),
    );
    let tenant = TenantId::new("acme").unwrap();
    let policy = AnomalyPolicy::default();
    let stamp = Stamp {
        tenant: "acme",
        policy_version: "v1",
        node: "test",
        received_at_nanos: now,
        window: EventWindow::ANY,
    };
    let mut findings = Vec::new();
    for hour in 0..MINUTES / 60 {
        let converted = convert::logs(&request(hour * 60..hour * 60 + 60), &stamp);
        assert_eq!(converted.rejected, 0, "{:?}", converted.errors);
        let batch = converted.batch.expect("records");
        findings.extend(engine.observe(&tenant, &policy, Signal::Logs, &batch));
    }
    assert!(findings.iter().all(|f| f.kind == SeriesKind::Volume));
    let by_minute: BTreeMap<i64, _> = findings.iter().map(|f| (f.minute_secs, f)).collect();
    assert_eq!(by_minute.len(), findings.len());
    let alerted: Vec<i64> = by_minute.keys().map(|t| (t - T0) / 60).collect();
    // The burst, the tripling, the silence and the new level: one alert each.
    assert_eq!(alerted, vec![1500, 2000, 2300, 2600], "{findings:?}");

    // The backtest: the same series as a CSV, with the volume family's
    // settings (one record is not news).
    let input = dir.path().join("series.csv");
    let mut text = String::from("timestamp,value\n");
    // the collector has closed every minute up to two before its newest
    let closed = MINUTES - 2;
    for m in 0..closed {
        let t = chrono::DateTime::from_timestamp(T0 + m * 60, 0).unwrap();
        text.push_str(&format!("{},{}\n", t.to_rfc3339(), count(m)));
    }
    std::fs::write(&input, text).unwrap();
    let output = dir.path().join("scores.csv");
    let settings = bulkhead::backtest::parse_settings(Some("min_spread=1")).unwrap();
    assert_eq!(
        settings,
        DetectorSettings {
            min_spread: 1.0,
            ..DetectorSettings::default()
        }
    );
    let summary = bulkhead::backtest::run(&input, &output, &settings).unwrap();
    assert_eq!(summary.points, closed as usize);
    assert!(summary.skipped.is_empty());

    let scores = std::fs::read_to_string(&output).unwrap();
    let mut rows = 0;
    for line in scores.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let t = chrono::DateTime::parse_from_rfc3339(f[0])
            .unwrap()
            .timestamp();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        let anomaly = f[3] == "true";
        match by_minute.get(&t) {
            Some(found) => {
                assert!(
                    anomaly,
                    "minute {}: the collector alerted: {line}",
                    (t - T0) / 60
                );
                assert_eq!(num(1), found.observed, "{line}");
                assert_eq!(f[2], format!("{:.6}", found.score), "{line}");
                assert_eq!(num(4), found.expected, "{line}");
                assert_eq!(num(5), found.lower, "{line}");
                assert_eq!(num(6), found.upper, "{line}");
            }
            None => assert!(
                !anomaly,
                "minute {}: only the backtest alerted: {line}",
                (t - T0) / 60
            ),
        }
        rows += 1;
    }
    assert_eq!(rows, closed);
    assert_eq!(summary.anomalies, findings.len());
}
