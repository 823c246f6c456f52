//! OTLP/JSON quirks (CONFORMANCE.md items 11-13) through opentelemetry-proto's
//! serde support and the converter: hex ids in either case, 64-bit integers
//! as strings or numbers, enums as integers, unknown fields ignored, and what
//! happens to input the JSON layer itself refuses.
mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType, UInt64Type};
use bulkhead_collector::convert;
use common::{batch, list_at, map_at, pairs, prim_at, render, str_at, STAMP};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

fn spans_json(spans: &str) -> String {
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#)
}

fn parse_spans(spans: &str) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    serde_json::from_str(&spans_json(spans))
}

#[test]
fn hex_ids_in_either_case_become_lower_hex() {
    let req = parse_spans(
        r#"{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","parentSpanId":"EeE19b7eC3c1B173","name":"x"}"#,
    )
    .expect("parses");
    let c = convert::spans(&req, &STAMP);
    let b = batch(&c);
    assert_eq!(
        str_at(b, "trace_id", 0).as_deref(),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(str_at(b, "span_id", 0).as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(
        str_at(b, "parent_span_id", 0).as_deref(),
        Some("eee19b7ec3c1b173")
    );
}

#[test]
fn wrong_length_ids_reject_the_record_and_keep_the_rest() {
    let good = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"good"}"#;
    let short = r#"{"traceId":"0102030405","spanId":"eee19b7ec3c1b174","name":"short"}"#;
    let req = parse_spans(&format!("{short},{good}")).expect("parses");
    let c = convert::spans(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (1, 1));
    assert_eq!(
        c.errors,
        ["span 0 of scope 0 of resource 0: trace_id must be 16 bytes, got 5"]
    );
    assert_eq!(str_at(batch(&c), "name", 0).as_deref(), Some("good"));
}

/// The JSON layer refuses ids that are not hex (base64 as the protobuf JSON
/// mapping would write them, odd lengths, null) for the whole request, so the
/// HTTP receiver must answer 400 with the parser's message.
#[test]
fn non_hex_ids_fail_the_whole_request_at_parse_time() {
    for id in [r#""W47/95gDgQPSabYzgT/GDA==""#, r#""abc""#, "null"] {
        let err = parse_spans(&format!(r#"{{"traceId":{id},"name":"x"}}"#)).expect_err(id);
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn int64_as_string_or_number_and_enums_as_integers() {
    let as_strings = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,
        "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
        "status":{"code":1},"attributes":[{"key":"n","value":{"intValue":"-42"}}]}"#;
    let as_numbers = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,
        "startTimeUnixNano":1544712660000000000,"endTimeUnixNano":1544712661000000000,
        "status":{"code":1},"attributes":[{"key":"n","value":{"intValue":-42}}]}"#;
    let a = convert::spans(&parse_spans(as_strings).expect("strings"), &STAMP);
    let b = convert::spans(&parse_spans(as_numbers).expect("numbers"), &STAMP);
    assert_eq!(render(&a), render(&b));
    let batch = batch(&a);
    assert_eq!(
        prim_at::<TimestampNanosecondType>(batch, "timestamp", 0),
        Some(1_544_712_660_000_000_000)
    );
    assert_eq!(str_at(batch, "kind", 0).as_deref(), Some("Server"));
    assert_eq!(str_at(batch, "status_code", 0).as_deref(), Some("Ok"));
    assert_eq!(map_at(batch, "attributes", 0), pairs(&[("n", "-42")]));
}

/// Enum names are not valid OTLP/JSON (the spec requires integers); the
/// library refuses them for spans and logs.
#[test]
fn enum_names_are_refused() {
    assert!(parse_spans(r#"{"name":"x","kind":"SPAN_KIND_SERVER"}"#).is_err());
    let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_INFO"}]}]}]}"#;
    assert!(serde_json::from_str::<ExportLogsServiceRequest>(logs).is_err());
}

/// A metric's kind is a flattened oneof in opentelemetry-proto, and an error
/// inside it (here a temporality given by name) makes the library drop the
/// data silently. The converter then rejects the metric as having no data,
/// so the client still hears about it.
#[test]
fn metric_with_undecodable_data_is_rejected_not_lost() {
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"requests",
        "sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[{"asInt":"5"}]}}]}]}]}"#;
    let req: ExportMetricsServiceRequest = serde_json::from_str(json).expect("parses");
    let c = convert::metrics(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (0, 1));
    assert!(c.errors[0].contains("metric 0 (requests)") && c.errors[0].contains("no data"));
}

#[test]
fn unknown_fields_are_ignored() {
    let req = parse_spans(
        r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x",
            "futureField":{"nested":[1,2,3]},"attributes":[{"key":"k","value":{"futureValue":1},"extra":true}]}"#,
    )
    .expect("parses");
    let c = convert::spans(&req, &STAMP);
    let b = batch(&c);
    assert_eq!(str_at(b, "name", 0).as_deref(), Some("x"));
    // A value with no known kind is an empty value: the key is kept, the value is null.
    assert_eq!(map_at(b, "attributes", 0), vec![("k".to_string(), None)]);
}

#[test]
fn exemplars_and_summaries_from_json() {
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"s","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
            {"asInt":"9007199254740993","timeUnixNano":"1000","exemplars":[
                {"asInt":"7","timeUnixNano":"900","spanId":"EEE19B7EC3C1B174","traceId":"5B8EFFF798038103D269B633813FC60C",
                 "filteredAttributes":[{"key":"user","value":{"stringValue":"u1"}}]},
                {"asDouble":0.25,"timeUnixNano":950}]}]}},
        {"name":"q","summary":{"dataPoints":[{"timeUnixNano":"2000","count":"4","sum":10.5,
            "quantileValues":[{"quantile":0.5,"value":2},{"quantile":1,"value":"Infinity"}]}]}}]}]}]}"#;
    let req: ExportMetricsServiceRequest = serde_json::from_str(json).expect("parses");
    let c = convert::metrics(&req, &STAMP);
    assert_eq!((c.accepted, c.rejected), (2, 0), "{:?}", c.errors);
    let b = batch(&c);
    // value_int keeps the integer exactly; value is the nearest double.
    assert_eq!(
        prim_at::<Int64Type>(b, "value_int", 0),
        Some(9_007_199_254_740_993)
    );
    assert_eq!(
        prim_at::<Float64Type>(b, "value", 0),
        Some(9_007_199_254_740_992.0)
    );
    let ex = b
        .column_by_name("exemplars")
        .expect("exemplars")
        .as_list::<i32>()
        .value(0);
    let ex = ex.as_struct();
    let ints: Vec<_> = ex.column(2).as_primitive::<Int64Type>().iter().collect();
    assert_eq!(ints, [Some(7), None]);
    let values: Vec<_> = ex.column(1).as_primitive::<Float64Type>().iter().collect();
    assert_eq!(values, [Some(7.0), Some(0.25)]);
    assert_eq!(ex.column(3).as_string::<i32>().value(0), "eee19b7ec3c1b174");
    assert_eq!(
        ex.column(4).as_string::<i32>().value(0),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(
        common::map_entries(ex.column(5), 0),
        pairs(&[("user", "u1")])
    );
    assert_eq!(prim_at::<UInt64Type>(b, "count", 1), Some(4));
    assert_eq!(
        list_at::<Float64Type>(b, "quantiles", 1),
        Some(vec![0.5, 1.0])
    );
    assert_eq!(
        list_at::<Float64Type>(b, "quantile_values", 1),
        Some(vec![2.0, f64::INFINITY])
    );
}

/// opentelemetry-proto 0.33 has no serde default on `EntityRef`, so every
/// one of its four fields must be present in JSON or the request fails to
/// parse; complete entity refs land in `resource_entity_refs`.
#[test]
fn resource_entity_refs_need_every_field_in_json() {
    let with = |entity: &str| {
        format!(
            r#"{{"resourceLogs":[{{"resource":{{"entityRefs":[{entity}]}},"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"1"}}]}}]}}]}}"#
        )
    };
    let partial = with(r#"{"type":"service","idKeys":["service.name"]}"#);
    assert!(serde_json::from_str::<ExportLogsServiceRequest>(&partial).is_err());
    let full = with(
        r#"{"schemaUrl":"https://s","type":"service","idKeys":["service.name"],"descriptionKeys":[]}"#,
    );
    let req: ExportLogsServiceRequest = serde_json::from_str(&full).expect("parses");
    let c = convert::logs(&req, &STAMP);
    let refs = batch(&c)
        .column_by_name("resource_entity_refs")
        .expect("column");
    let refs = refs.as_list::<i32>().value(0);
    let refs = refs.as_struct();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs.column(0).as_string::<i32>().value(0), "https://s");
    assert_eq!(refs.column(1).as_string::<i32>().value(0), "service");
}
