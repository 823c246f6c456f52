//! Per-minute aggregation of a tenant's records into the series the
//! detectors watch, by event time. Works on the Arrow batches the pipeline
//! has just converted, column by column.
use std::collections::HashMap;

use arrow::array::{Array, AsArray, MapArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampNanosecondType};
use bulkhead_rules::{AnomalyPolicy, SeriesKind};
use bulkhead_store::Signal;

const NANOS_PER_MINUTE: i64 = 60_000_000_000;
/// Severity numbers from ERROR (17) up count as errors.
const ERROR_SEVERITY: i32 = 17;
/// Latency samples kept per series and minute; past this the p95 is taken
/// over the first ones (bounded memory under a flood).
const MAX_SAMPLES: usize = 4_096;

/// One watched series of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub(crate) kind: SeriesKind,
    pub(crate) signal: Signal,
    pub(crate) service: Option<String>,
    /// Span name for latency; metric name with its attributes for metrics.
    pub(crate) name: Option<String>,
}

impl SeriesKey {
    /// Readable identity, stored in the `series` column.
    pub(crate) fn label(&self) -> String {
        let mut s = format!("{} {}", self.signal.name(), self.kind.as_str());
        if let Some(svc) = &self.service {
            s.push_str(&format!(" service={svc}"));
        }
        if let Some(n) = &self.name {
            let what = if self.kind == SeriesKind::Metric {
                "metric"
            } else {
                "span"
            };
            s.push_str(&format!(" {what}={n}"));
        }
        s
    }
}

/// What one minute of one series accumulated.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Acc {
    Count(u64),
    Ratio {
        errors: u64,
        total: u64,
    },
    Samples(Vec<f64>),
    /// Gauge-like values: their mean.
    Mean {
        sum: f64,
        n: u64,
    },
    /// A monotonic cumulative sum: its last point in the minute.
    Cumulative {
        at_nanos: i64,
        value: f64,
    },
    /// Delta sums: their total.
    Total(f64),
}

impl Acc {
    /// The minute's value; `prev` is the series' previous cumulative point,
    /// updated here. None when the minute yields no value.
    pub(crate) fn value(&self, prev: &mut Option<(i64, f64)>) -> Option<f64> {
        match self {
            Acc::Count(n) => Some(*n as f64),
            Acc::Ratio { errors, total } => (*total > 0).then(|| *errors as f64 / *total as f64),
            Acc::Samples(v) if v.is_empty() => None,
            Acc::Samples(v) => {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                let rank = ((v.len() as f64) * 0.95).ceil() as usize;
                Some(v[rank.clamp(1, v.len()) - 1])
            }
            Acc::Mean { sum, n } => (*n > 0).then(|| sum / *n as f64),
            Acc::Total(t) => Some(*t),
            Acc::Cumulative { at_nanos, value } => {
                let rate = match *prev {
                    Some((t0, v0)) if *at_nanos > t0 && *value >= v0 => {
                        Some((value - v0) / ((at_nanos - t0) as f64 / 1e9))
                    }
                    _ => None, // first point, or a counter reset
                };
                *prev = Some((*at_nanos, *value));
                rate
            }
        }
    }

    fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Ratio { errors, total },
                Acc::Ratio {
                    errors: e,
                    total: t,
                },
            ) => {
                *errors += e;
                *total += t;
            }
            (Acc::Samples(a), Acc::Samples(b)) => {
                let room = MAX_SAMPLES.saturating_sub(a.len());
                a.extend(b.into_iter().take(room));
            }
            (Acc::Mean { sum, n }, Acc::Mean { sum: s, n: m }) => {
                *sum += s;
                *n += m;
            }
            (Acc::Total(a), Acc::Total(b)) => *a += b,
            (
                Acc::Cumulative { at_nanos, value },
                Acc::Cumulative {
                    at_nanos: t,
                    value: v,
                },
            ) => {
                if t >= *at_nanos {
                    *at_nanos = t;
                    *value = v;
                }
            }
            (a, b) => *a = b, // a series never changes shape; keep the newest
        }
    }
}

/// Accumulators by minute (epoch seconds of its start) and series.
pub(crate) type Minutes = std::collections::BTreeMap<i64, HashMap<SeriesKey, Acc>>;

pub(crate) fn add(out: &mut Minutes, minute: i64, key: SeriesKey, acc: Acc) {
    let series = out.entry(minute).or_default();
    match series.get_mut(&key) {
        Some(a) => a.merge(acc),
        None => {
            series.insert(key, acc);
        }
    }
}

fn minute_of(nanos: i64) -> i64 {
    nanos.div_euclid(NANOS_PER_MINUTE) * 60
}

/// Adds the rows of `batch` (a `signal` batch in its table schema) whose
/// minute passes `keep` to `out`.
pub(crate) fn accumulate(
    signal: Signal,
    batch: &RecordBatch,
    policy: &AnomalyPolicy,
    keep: impl Fn(i64) -> bool,
    out: &mut Minutes,
) {
    let Some(ts) = batch
        .column_by_name("timestamp")
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
    else {
        return;
    };
    let service = batch
        .column_by_name("service_name")
        .and_then(|c| c.as_string_opt::<i32>());
    let service_of = |i: usize| match service {
        Some(s) if s.is_valid(i) => Some(s.value(i).to_string()),
        _ => None,
    };
    match signal {
        Signal::Logs => {
            let severity = batch
                .column_by_name("severity_number")
                .and_then(|c| c.as_primitive_opt::<Int32Type>());
            for i in 0..batch.num_rows() {
                let minute = minute_of(ts.value(i));
                if !keep(minute) {
                    continue;
                }
                let svc = service_of(i);
                if policy.watches(SeriesKind::Volume) {
                    add(
                        out,
                        minute,
                        key(SeriesKind::Volume, signal, svc.clone(), None),
                        Acc::Count(1),
                    );
                }
                if policy.watches(SeriesKind::ErrorRatio) {
                    let is_error = severity.is_some_and(|s| s.value(i) >= ERROR_SEVERITY);
                    add(
                        out,
                        minute,
                        key(SeriesKind::ErrorRatio, signal, svc, None),
                        ratio(is_error),
                    );
                }
            }
        }
        Signal::Spans => {
            let status = batch
                .column_by_name("status_code")
                .and_then(|c| c.as_string_opt::<i32>());
            let name = batch
                .column_by_name("name")
                .and_then(|c| c.as_string_opt::<i32>());
            let duration = batch
                .column_by_name("duration_ns")
                .and_then(|c| c.as_primitive_opt::<Int64Type>());
            for i in 0..batch.num_rows() {
                let minute = minute_of(ts.value(i));
                if !keep(minute) {
                    continue;
                }
                let svc = service_of(i);
                if policy.watches(SeriesKind::Volume) {
                    add(
                        out,
                        minute,
                        key(SeriesKind::Volume, signal, svc.clone(), None),
                        Acc::Count(1),
                    );
                }
                if policy.watches(SeriesKind::ErrorRatio) {
                    let is_error = status.is_some_and(|s| s.value(i) == "Error");
                    add(
                        out,
                        minute,
                        key(SeriesKind::ErrorRatio, signal, svc.clone(), None),
                        ratio(is_error),
                    );
                }
                if let (true, Some(d), Some(n)) =
                    (policy.watches(SeriesKind::Latency), duration, name)
                {
                    if d.is_valid(i) {
                        let ms = d.value(i) as f64 / 1e6;
                        let k = key(
                            SeriesKind::Latency,
                            signal,
                            svc,
                            Some(n.value(i).to_string()),
                        );
                        add(out, minute, k, Acc::Samples(vec![ms]));
                    }
                }
            }
        }
        Signal::Metrics => accumulate_metrics(batch, ts, policy, &keep, out),
        Signal::Anomalies => {}
    }
}

fn key(
    kind: SeriesKind,
    signal: Signal,
    service: Option<String>,
    name: Option<String>,
) -> SeriesKey {
    SeriesKey {
        kind,
        signal,
        service,
        name,
    }
}

fn ratio(is_error: bool) -> Acc {
    Acc::Ratio {
        errors: u64::from(is_error),
        total: 1,
    }
}

fn accumulate_metrics(
    batch: &RecordBatch,
    ts: &arrow::array::PrimitiveArray<TimestampNanosecondType>,
    policy: &AnomalyPolicy,
    keep: &impl Fn(i64) -> bool,
    out: &mut Minutes,
) {
    if !policy.watches(SeriesKind::Metric) || policy.metrics.is_empty() {
        return;
    }
    let col = |n: &str| batch.column_by_name(n);
    let (Some(name), Some(kind), Some(value)) = (
        col("metric_name").and_then(|c| c.as_string_opt::<i32>()),
        col("metric_type").and_then(|c| c.as_string_opt::<i32>()),
        col("value").and_then(|c| c.as_primitive_opt::<Float64Type>()),
    ) else {
        return;
    };
    let monotonic = col("is_monotonic").and_then(|c| c.as_boolean_opt());
    let temporality = col("aggregation_temporality").and_then(|c| c.as_string_opt::<i32>());
    let attributes = col("attributes").and_then(|c| c.as_any().downcast_ref::<MapArray>());
    let service = col("service_name").and_then(|c| c.as_string_opt::<i32>());
    for i in 0..batch.num_rows() {
        let metric = name.value(i);
        if !value.is_valid(i) || !policy.selects_metric(metric) {
            continue;
        }
        let minute = minute_of(ts.value(i));
        if !keep(minute) {
            continue;
        }
        let v = value.value(i);
        let is_monotonic = monotonic.is_some_and(|m| m.is_valid(i) && m.value(i));
        let temp = temporality
            .filter(|t| t.is_valid(i))
            .map(|t| t.value(i))
            .unwrap_or("");
        let acc = match (kind.value(i), is_monotonic, temp) {
            ("sum", true, "cumulative") => Acc::Cumulative {
                at_nanos: ts.value(i),
                value: v,
            },
            ("sum", true, "delta") => Acc::Total(v),
            ("gauge", _, _) | ("sum", _, _) => Acc::Mean { sum: v, n: 1 },
            _ => continue, // histograms and summaries have no single value
        };
        let mut label = metric.to_string();
        if let Some(attrs) = attributes {
            let entries = attrs.value(i);
            let (k, vals) = (
                entries.column(0).as_string::<i32>(),
                entries.column(1).as_string::<i32>(),
            );
            let mut pairs: Vec<(&str, &str)> = (0..k.len())
                .map(|j| {
                    (
                        k.value(j),
                        if vals.is_valid(j) { vals.value(j) } else { "" },
                    )
                })
                .collect();
            pairs.sort_unstable();
            if !pairs.is_empty() {
                let inner: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}={b}")).collect();
                label.push_str(&format!("{{{}}}", inner.join(",")));
            }
        }
        let svc = service
            .filter(|s| s.is_valid(i))
            .map(|s| s.value(i).to_string());
        add(
            out,
            minute,
            key(SeriesKind::Metric, Signal::Metrics, svc, Some(label)),
            acc,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_values() {
        let mut prev = None;
        assert_eq!(Acc::Count(7).value(&mut prev), Some(7.0));
        assert_eq!(
            Acc::Ratio {
                errors: 1,
                total: 4
            }
            .value(&mut prev),
            Some(0.25)
        );
        assert_eq!(
            Acc::Ratio {
                errors: 0,
                total: 0
            }
            .value(&mut prev),
            None
        );
        let samples = Acc::Samples((1..=100).map(f64::from).collect());
        assert_eq!(samples.value(&mut prev), Some(95.0));
        assert_eq!(Acc::Mean { sum: 6.0, n: 3 }.value(&mut prev), Some(2.0));
        // cumulative sums become rates per second; a reset yields nothing
        let c = |t: i64, v: f64| Acc::Cumulative {
            at_nanos: t * 1_000_000_000,
            value: v,
        };
        assert_eq!(c(0, 100.0).value(&mut prev), None);
        assert_eq!(c(60, 220.0).value(&mut prev), Some(2.0));
        assert_eq!(c(120, 10.0).value(&mut prev), None);
        assert_eq!(c(180, 70.0).value(&mut prev), Some(1.0));
    }

    #[test]
    fn merging_adds_up_and_bounds_samples() {
        let mut a = Acc::Count(2);
        a.merge(Acc::Count(3));
        assert_eq!(a, Acc::Count(5));
        let mut s = Acc::Samples(vec![0.0; MAX_SAMPLES - 1]);
        s.merge(Acc::Samples(vec![1.0; 10]));
        assert!(matches!(&s, Acc::Samples(v) if v.len() == MAX_SAMPLES));
    }

    #[test]
    fn labels_are_readable() {
        let k = key(
            SeriesKind::Latency,
            Signal::Spans,
            Some("api".into()),
            Some("GET /x".into()),
        );
        assert_eq!(k.label(), "spans latency_p95 service=api span=GET /x");
        let k = key(SeriesKind::Volume, Signal::Logs, None, None);
        assert_eq!(k.label(), "logs volume");
    }
}
