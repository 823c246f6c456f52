//! Metrics: every kind and temporality, exemplars, quantiles, and the
//! per-point validation.
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt64Type};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};

use super::*;
use crate::convert::metrics as convert_metrics;

fn metric(name: &str, data: Option<Data>) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name} description"),
        unit: "ms".into(),
        metadata: vec![kv("origin", s("test"))],
        data,
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(Some("svc")),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("meter"),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn number(v: Option<number_data_point::Value>) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: 2_000,
        start_time_unix_nano: 1_000,
        attributes: vec![kv("host", s("a"))],
        value: v,
        ..NumberDataPoint::default()
    }
}

fn sum(temporality: i32, monotonic: bool, v: f64) -> Data {
    Data::Sum(Sum {
        data_points: vec![number(Some(number_data_point::Value::AsDouble(v)))],
        aggregation_temporality: temporality,
        is_monotonic: monotonic,
    })
}

fn histogram_point(counts: Vec<u64>, bounds: Vec<f64>) -> HistogramDataPoint {
    HistogramDataPoint {
        time_unix_nano: 3_000,
        count: counts.iter().sum(),
        bucket_counts: counts,
        explicit_bounds: bounds,
        ..HistogramDataPoint::default()
    }
}

#[test]
fn numbers_and_temporalities() {
    use number_data_point::Value::{AsDouble, AsInt};
    let gauge = Data::Gauge(Gauge {
        data_points: vec![
            number(Some(AsDouble(1.5))),
            number(Some(AsInt(i64::MAX))),
            number(None),
        ],
    });
    let metrics = vec![
        metric("g", Some(gauge)),
        metric("cum", Some(sum(2, true, 10.0))),
        metric("delta", Some(sum(1, false, -3.0))),
        metric("unspecified", Some(sum(0, false, 0.0))),
        metric("future", Some(sum(7, false, 0.0))),
    ];
    let c = convert_metrics(&request(metrics), &STAMP);
    assert_eq!((c.accepted, c.rejected), (7, 0), "{:?}", c.errors);
    let b = batch(&c);
    let types: Vec<_> = strs(b, "metric_type").into_iter().flatten().collect();
    assert_eq!(
        types,
        ["gauge", "gauge", "gauge", "sum", "sum", "sum", "sum"]
    );
    let temporality = strs(b, "aggregation_temporality");
    let expect = [
        None,
        None,
        None,
        Some("cumulative"),
        Some("delta"),
        Some("unspecified"),
        Some("7"),
    ];
    assert_eq!(temporality, expect.map(|s| s.map(String::from)));
    let monotonic: Vec<_> = column(b, "is_monotonic").as_boolean().iter().collect();
    assert_eq!(
        monotonic,
        [
            None,
            None,
            None,
            Some(true),
            Some(false),
            Some(false),
            Some(false)
        ]
    );
    let values = prims::<Float64Type>(b, "value");
    assert_eq!(
        values[..5],
        [
            Some(1.5),
            Some(i64::MAX as f64),
            None,
            Some(10.0),
            Some(-3.0)
        ]
    );
    assert_eq!(
        prims::<Int64Type>(b, "value_int")[..3],
        [None, Some(i64::MAX), None]
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "timestamp")[0],
        Some(2_000)
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "start_timestamp")[0],
        Some(1_000)
    );
    assert_eq!(
        str_at(b, "metric_description", 3).as_deref(),
        Some("cum description")
    );
    assert_eq!(str_at(b, "metric_unit", 3).as_deref(), Some("ms"));
    assert_eq!(
        map_at(b, "metric_metadata", 3),
        pairs(&[("origin", "test")])
    );
    assert_eq!(map_at(b, "attributes", 3), pairs(&[("host", "a")]));
    assert_eq!(list_at::<UInt64Type>(b, "bucket_counts", 0), None);
    assert_eq!(list_at::<Float64Type>(b, "quantiles", 0), None);
    assert_eq!(prims::<UInt64Type>(b, "count")[0], None);
}

#[test]
fn histogram_with_exemplars() {
    let mut p = histogram_point(vec![1, 2, 3], vec![10.0, 100.0]);
    p.sum = Some(250.5);
    p.min = Some(0.5);
    p.max = Some(180.0);
    p.flags = 1;
    p.exemplars = vec![
        Exemplar {
            time_unix_nano: 2_900,
            trace_id: TRACE_ID.to_vec(),
            span_id: SPAN_ID.to_vec(),
            filtered_attributes: vec![kv("user", s("u1"))],
            value: Some(exemplar::Value::AsDouble(42.0)),
        },
        Exemplar {
            time_unix_nano: 2_950,
            value: Some(exemplar::Value::AsInt(-7)),
            ..Exemplar::default()
        },
    ];
    let no_sum = histogram_point(vec![], vec![]);
    let h = Data::Histogram(Histogram {
        data_points: vec![p, no_sum],
        aggregation_temporality: 2,
    });
    let c = convert_metrics(&request(vec![metric("latency", Some(h))]), &STAMP);
    assert_eq!((c.accepted, c.rejected), (2, 0), "{:?}", c.errors);
    let b = batch(&c);
    assert_eq!(prims::<UInt64Type>(b, "count"), [Some(6), Some(0)]);
    assert_eq!(prims::<Float64Type>(b, "sum"), [Some(250.5), None]);
    assert_eq!(prims::<Float64Type>(b, "min"), [Some(0.5), None]);
    assert_eq!(prims::<Float64Type>(b, "max"), [Some(180.0), None]);
    assert_eq!(
        list_at::<UInt64Type>(b, "bucket_counts", 0),
        Some(vec![1, 2, 3])
    );
    assert_eq!(
        list_at::<Float64Type>(b, "explicit_bounds", 0),
        Some(vec![10.0, 100.0])
    );
    assert_eq!(list_at::<UInt64Type>(b, "bucket_counts", 1), Some(vec![]));
    assert_eq!(
        prims::<arrow::datatypes::UInt32Type>(b, "flags"),
        [Some(1), Some(0)]
    );
    assert_eq!(
        str_at(b, "aggregation_temporality", 0).as_deref(),
        Some("cumulative")
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "start_timestamp"),
        [None, None]
    );

    let ex = struct_list_at(b, "exemplars", 0).expect("exemplars");
    assert_eq!(ex.len(), 2);
    let times: Vec<_> = ex
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .iter()
        .collect();
    assert_eq!(times, [Some(2_900), Some(2_950)]);
    let values: Vec<_> = ex.column(1).as_primitive::<Float64Type>().iter().collect();
    assert_eq!(values, [Some(42.0), Some(-7.0)]);
    let ints: Vec<_> = ex.column(2).as_primitive::<Int64Type>().iter().collect();
    assert_eq!(ints, [None, Some(-7)]);
    let spans: Vec<_> = ex.column(3).as_string::<i32>().iter().collect();
    assert_eq!(spans, [Some("cd".repeat(8).as_str()), None]);
    let traces: Vec<_> = ex.column(4).as_string::<i32>().iter().collect();
    assert_eq!(traces, [Some("ab".repeat(16).as_str()), None]);
    assert_eq!(map_entries(ex.column(5), 0), pairs(&[("user", "u1")]));
    assert_eq!(struct_list_at(b, "exemplars", 1).map(|e| e.len()), Some(0));
}

#[test]
fn exponential_histogram_and_summary() {
    let e = ExponentialHistogramDataPoint {
        time_unix_nano: 5_000,
        count: 9,
        sum: Some(-12.5),
        scale: -2,
        zero_count: 2,
        zero_threshold: 1e-9,
        positive: None,
        negative: Some(Buckets {
            offset: -3,
            bucket_counts: vec![4, 0, 3],
        }),
        ..ExponentialHistogramDataPoint::default()
    };
    let eh = Data::ExponentialHistogram(ExponentialHistogram {
        data_points: vec![e],
        aggregation_temporality: 1,
    });
    let q = SummaryDataPoint {
        time_unix_nano: 6_000,
        count: 100,
        sum: 512.0,
        quantile_values: vec![
            ValueAtQuantile {
                quantile: 0.5,
                value: 4.0,
            },
            ValueAtQuantile {
                quantile: 0.99,
                value: 40.0,
            },
        ],
        ..SummaryDataPoint::default()
    };
    let summary = Data::Summary(Summary {
        data_points: vec![q],
    });
    let c = convert_metrics(
        &request(vec![metric("exp", Some(eh)), metric("rpc", Some(summary))]),
        &STAMP,
    );
    assert_eq!((c.accepted, c.rejected), (2, 0), "{:?}", c.errors);
    let b = batch(&c);
    assert_eq!(
        strs(b, "metric_type"),
        [Some("exponential_histogram".into()), Some("summary".into())]
    );
    assert_eq!(prims::<Int32Type>(b, "scale"), [Some(-2), None]);
    assert_eq!(prims::<UInt64Type>(b, "zero_count"), [Some(2), None]);
    assert_eq!(
        prims::<Float64Type>(b, "zero_threshold"),
        [Some(1e-9), None]
    );
    assert_eq!(prims::<Int32Type>(b, "positive_offset"), [Some(0), None]);
    assert_eq!(
        list_at::<UInt64Type>(b, "positive_bucket_counts", 0),
        Some(vec![])
    );
    assert_eq!(prims::<Int32Type>(b, "negative_offset"), [Some(-3), None]);
    assert_eq!(
        list_at::<UInt64Type>(b, "negative_bucket_counts", 0),
        Some(vec![4, 0, 3])
    );
    assert_eq!(list_at::<UInt64Type>(b, "negative_bucket_counts", 1), None);
    assert_eq!(prims::<UInt64Type>(b, "count"), [Some(9), Some(100)]);
    assert_eq!(prims::<Float64Type>(b, "sum"), [Some(-12.5), Some(512.0)]);
    assert_eq!(
        strs(b, "aggregation_temporality"),
        [Some("delta".into()), None]
    );
    assert_eq!(
        list_at::<Float64Type>(b, "quantiles", 1),
        Some(vec![0.5, 0.99])
    );
    assert_eq!(
        list_at::<Float64Type>(b, "quantile_values", 1),
        Some(vec![4.0, 40.0])
    );
    assert_eq!(list_at::<Float64Type>(b, "quantiles", 0), None);
    // Summaries have no exemplars: null, not empty.
    assert!(column(b, "exemplars").is_valid(0));
    assert!(column(b, "exemplars").is_null(1));
    assert_eq!(prims::<Float64Type>(b, "value"), [None, None]);
}

#[test]
fn invalid_points_are_rejected_alone() {
    let bad_shape = histogram_point(vec![1, 2], vec![1.0, 2.0]);
    let good = histogram_point(vec![1, 2, 3], vec![1.0, 2.0]);
    let bad_exemplar = HistogramDataPoint {
        exemplars: vec![Exemplar {
            span_id: vec![1; 3],
            ..Exemplar::default()
        }],
        ..histogram_point(vec![], vec![])
    };
    let h = Data::Histogram(Histogram {
        data_points: vec![bad_shape, good, bad_exemplar],
        aggregation_temporality: 1,
    });
    let late = NumberDataPoint {
        time_unix_nano: u64::MAX,
        ..number(None)
    };
    let g = Data::Gauge(Gauge {
        data_points: vec![late, number(None)],
    });
    let metrics = vec![
        metric("h", Some(h)),
        metric("nothing", None),
        metric("g", Some(g)),
    ];
    let c = convert_metrics(&request(metrics), &STAMP);
    assert_eq!((c.accepted, c.rejected), (2, 4));
    assert_eq!(
        c.errors,
        [
            "data point 0 of metric 0 (h) of scope 0 of resource 0: histogram has 2 bucket_counts for 2 explicit_bounds, expected 3",
            "data point 2 of metric 0 (h) of scope 0 of resource 0: exemplar 0: span_id must be 8 bytes, got 3",
            "metric 1 (nothing) of scope 0 of resource 0: metric has no data (none of gauge, sum, histogram, exponential_histogram or summary)",
            "data point 0 of metric 2 (g) of scope 0 of resource 0: time_unix_nano 18446744073709551615 is out of range (after the year 2262)",
        ]
    );
    let b = batch(&c);
    assert_eq!(strs(b, "metric_name"), [Some("h".into()), Some("g".into())]);
    assert_eq!(
        list_at::<UInt64Type>(b, "bucket_counts", 0),
        Some(vec![1, 2, 3])
    );
}

#[test]
fn unset_time_uses_receive_time() {
    let p = NumberDataPoint {
        time_unix_nano: 0,
        start_time_unix_nano: 0,
        ..number(None)
    };
    let c = convert_metrics(
        &request(vec![metric(
            "g",
            Some(Data::Gauge(Gauge {
                data_points: vec![p],
            })),
        )]),
        &STAMP,
    );
    let b = batch(&c);
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "timestamp"),
        [Some(STAMP.received_at_nanos)]
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "start_timestamp"),
        [None]
    );
}
