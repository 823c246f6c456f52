//! The official OTLP/JSON examples (`tests/fixtures/otlp-examples/`, copied
//! from opentelemetry-proto) parsed with opentelemetry-proto's serde support,
//! converted, and checked cell by cell: against golden files for every
//! column, and with typed assertions on the values that matter most.
mod common;

use arrow::datatypes::{
    Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt32Type, UInt64Type,
};
use bulkhead_collector::convert;
use bulkhead_store::schema::{logs_schema, metrics_schema, spans_schema};
use common::{batch, golden, list_at, map_at, pairs, prim_at, render, str_at, STAMP};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// 2018-12-13T14:51:00.3Z, the time of most example records.
const T: i64 = 1_544_712_660_300_000_000;

fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/tests/fixtures/otlp-examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

fn check_shared(b: &arrow::array::RecordBatch, row: usize) {
    assert_eq!(str_at(b, "tenant", row).as_deref(), Some("acme"));
    assert_eq!(
        str_at(b, "service_name", row).as_deref(),
        Some("my.service")
    );
    assert_eq!(
        map_at(b, "resource_attributes", row),
        pairs(&[("service.name", "my.service")])
    );
    assert_eq!(
        prim_at::<UInt32Type>(b, "resource_dropped_attributes_count", row),
        Some(0)
    );
    assert_eq!(str_at(b, "resource_schema_url", row).as_deref(), Some(""));
    assert_eq!(str_at(b, "scope_name", row).as_deref(), Some("my.library"));
    assert_eq!(str_at(b, "scope_version", row).as_deref(), Some("1.0.0"));
    assert_eq!(
        map_at(b, "scope_attributes", row),
        pairs(&[("my.scope.attribute", "some scope attribute")])
    );
    assert_eq!(
        str_at(b, "policy_version", row).as_deref(),
        Some("policy-v7")
    );
    assert_eq!(str_at(b, "received_by", row).as_deref(), Some("node-a"));
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "received_at", row),
        Some(STAMP.received_at_nanos)
    );
}

#[test]
fn logs_example() {
    let req: ExportLogsServiceRequest = parse("logs.json");
    let c = convert::logs(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (1, 0), "{:?}", c.errors);
    let b = batch(&c);
    assert_eq!(b.schema(), logs_schema());
    check_shared(b, 0);
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "timestamp", 0),
        Some(T)
    );
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "observed_timestamp", 0),
        Some(T)
    );
    // Upper-case hex in the JSON, lower-case hex in the table.
    assert_eq!(
        str_at(b, "trace_id", 0).as_deref(),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(str_at(b, "span_id", 0).as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(prim_at::<Int32Type>(b, "severity_number", 0), Some(10));
    assert_eq!(
        str_at(b, "severity_text", 0).as_deref(),
        Some("Information")
    );
    assert_eq!(str_at(b, "body", 0).as_deref(), Some("Example log record"));
    assert_eq!(str_at(b, "body_type", 0).as_deref(), Some("string"));
    assert_eq!(
        map_at(b, "attributes", 0),
        pairs(&[
            ("string.attribute", "some string"),
            ("boolean.attribute", "true"),
            ("int.attribute", "10"),
            ("double.attribute", "637.704"),
            ("array.attribute", r#"["many","values"]"#),
            ("map.attribute", r#"{"some.map.key":"some value"}"#),
        ])
    );
    golden("logs", &render(&c));
}

#[test]
fn events_example() {
    let req: ExportLogsServiceRequest = parse("events.json");
    let c = convert::logs(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (1, 0), "{:?}", c.errors);
    let b = batch(&c);
    check_shared(b, 0);
    assert_eq!(
        str_at(b, "event_name", 0).as_deref(),
        Some("browser.page_view")
    );
    assert_eq!(prim_at::<Int32Type>(b, "severity_number", 0), Some(9));
    assert_eq!(str_at(b, "trace_id", 0), None);
    assert_eq!(str_at(b, "span_id", 0), None);
    assert_eq!(str_at(b, "body_type", 0).as_deref(), Some("kvlist"));
    let body: serde_json::Value =
        serde_json::from_str(&str_at(b, "body", 0).expect("body")).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({
            "type": 0,
            "url": "https://www.guidgenerator.com/online-guid-generator.aspx",
            "referrer": "https://wwww.google.com",
            "title": "Free Online GUID Generator"
        })
    );
    assert_eq!(
        map_at(b, "attributes", 0),
        pairs(&[("event.attribute", "some event attribute")])
    );
    golden("events", &render(&c));
}

#[test]
fn trace_example() {
    let req: ExportTraceServiceRequest = parse("trace.json");
    let c = convert::spans(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (1, 0), "{:?}", c.errors);
    let b = batch(&c);
    assert_eq!(b.schema(), spans_schema());
    check_shared(b, 0);
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "timestamp", 0),
        Some(1_544_712_660_000_000_000)
    );
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "end_timestamp", 0),
        Some(1_544_712_661_000_000_000)
    );
    assert_eq!(
        prim_at::<Int64Type>(b, "duration_ns", 0),
        Some(1_000_000_000)
    );
    assert_eq!(
        str_at(b, "trace_id", 0).as_deref(),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(str_at(b, "span_id", 0).as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(
        str_at(b, "parent_span_id", 0).as_deref(),
        Some("eee19b7ec3c1b173")
    );
    assert_eq!(str_at(b, "name", 0).as_deref(), Some("I'm a server span"));
    assert_eq!(str_at(b, "kind", 0).as_deref(), Some("Server"));
    assert_eq!(str_at(b, "status_code", 0).as_deref(), Some("Unset"));
    assert_eq!(
        map_at(b, "attributes", 0),
        pairs(&[("my.span.attr", "some value")])
    );
    golden("trace", &render(&c));
}

#[test]
fn metrics_example() {
    let req: ExportMetricsServiceRequest = parse("metrics.json");
    let c = convert::metrics(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (4, 0), "{:?}", c.errors);
    let b = batch(&c);
    assert_eq!(b.schema(), metrics_schema());
    let names: Vec<_> = (0..4)
        .map(|r| str_at(b, "metric_name", r).expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "my.counter",
            "my.gauge",
            "my.histogram",
            "my.exponential.histogram"
        ]
    );
    let types: Vec<_> = (0..4)
        .map(|r| str_at(b, "metric_type", r).expect("type"))
        .collect();
    assert_eq!(
        types,
        ["sum", "gauge", "histogram", "exponential_histogram"]
    );
    for row in 0..4 {
        check_shared(b, row);
        assert_eq!(
            prim_at::<TimestampNanosecondType>(b, "timestamp", row),
            Some(T)
        );
        assert_eq!(str_at(b, "metric_unit", row).as_deref(), Some("1"));
    }
    // The counter: a monotonic delta sum of 5.
    assert_eq!(
        str_at(b, "metric_description", 0).as_deref(),
        Some("I am a Counter")
    );
    assert_eq!(
        str_at(b, "aggregation_temporality", 0).as_deref(),
        Some("delta")
    );
    assert_eq!(prim_at::<Float64Type>(b, "value", 0), Some(5.0));
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "start_timestamp", 0),
        Some(T)
    );
    assert_eq!(
        map_at(b, "attributes", 0),
        pairs(&[("my.counter.attr", "some value")])
    );
    // The gauge: no temporality, no start time.
    assert_eq!(prim_at::<Float64Type>(b, "value", 1), Some(10.0));
    assert_eq!(str_at(b, "aggregation_temporality", 1), None);
    assert_eq!(
        prim_at::<TimestampNanosecondType>(b, "start_timestamp", 1),
        None
    );
    // The histogram: two buckets around bound 1.
    assert_eq!(prim_at::<UInt64Type>(b, "count", 2), Some(2));
    assert_eq!(prim_at::<Float64Type>(b, "sum", 2), Some(2.0));
    assert_eq!(prim_at::<Float64Type>(b, "min", 2), Some(0.0));
    assert_eq!(prim_at::<Float64Type>(b, "max", 2), Some(2.0));
    assert_eq!(
        list_at::<UInt64Type>(b, "bucket_counts", 2),
        Some(vec![1, 1])
    );
    assert_eq!(
        list_at::<Float64Type>(b, "explicit_bounds", 2),
        Some(vec![1.0])
    );
    assert_eq!(prim_at::<Float64Type>(b, "value", 2), None);
    // The exponential histogram.
    assert_eq!(prim_at::<UInt64Type>(b, "count", 3), Some(3));
    assert_eq!(prim_at::<Float64Type>(b, "sum", 3), Some(10.0));
    assert_eq!(prim_at::<Int32Type>(b, "scale", 3), Some(0));
    assert_eq!(prim_at::<UInt64Type>(b, "zero_count", 3), Some(1));
    assert_eq!(prim_at::<Float64Type>(b, "zero_threshold", 3), Some(0.0));
    assert_eq!(prim_at::<Int32Type>(b, "positive_offset", 3), Some(1));
    assert_eq!(
        list_at::<UInt64Type>(b, "positive_bucket_counts", 3),
        Some(vec![0, 2])
    );
    assert_eq!(
        list_at::<UInt64Type>(b, "negative_bucket_counts", 3),
        Some(vec![])
    );
    assert_eq!(list_at::<UInt64Type>(b, "bucket_counts", 3), None);
    assert_eq!(
        map_at(b, "attributes", 3),
        pairs(&[("my.exponential.histogram.attr", "some value")])
    );
    golden("metrics", &render(&c));
}
