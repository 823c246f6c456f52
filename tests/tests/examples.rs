//! CONFORMANCE item 14: the official OTLP/JSON examples
//! (`collector/tests/fixtures/otlp-examples/`) posted over OTLP/HTTP are
//! accepted with full success, and every field reads back through SQL with
//! the right value and Arrow type.
use crate::common;

use bulkhead_e2e::TestServer;
use common::{Post, JSON};
use serde_json::{json, Map, Value};

const T: i64 = 1_544_712_660_300_000_000;
const MAP: &str =
    r#"Map("entries": non-null Struct("keys": non-null Utf8, "values": Utf8), unsorted)"#;
const TS: &str = r#"Timestamp(ns, "UTC")"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../collector/tests/fixtures/otlp-examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A server with tenant `a`, and the examples in `files` posted with full success.
async fn server_with(files: &[(&str, &str)]) -> (TestServer, String) {
    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .start()
        .await;
    let key = srv.key("a", "ingest,query");
    for (file, path) in files {
        let a = Post::new(path, &key, JSON, fixture(file)).send(&srv).await;
        assert_eq!(a.status, 200, "{file}: {}", a.text());
        assert_eq!(a.content_type, JSON, "{file}");
        // Full success: `partial_success` unset.
        assert_eq!(a.json(), json!({}), "{file}");
    }
    (srv, key)
}

/// The resource, scope, tenant and lineage columns every example row shares.
fn shared() -> Map<String, Value> {
    let v = json!({
        "tenant": "a",
        "service_name": "my.service",
        "resource_attributes": {"service.name": "my.service"},
        "resource_dropped_attributes_count": 0,
        "resource_entity_refs": [],
        "resource_schema_url": "",
        "scope_name": "my.library",
        "scope_version": "1.0.0",
        "scope_attributes": {"my.scope.attribute": "some scope attribute"},
        "scope_dropped_attributes_count": 0,
        "scope_schema_url": "",
        "received_by": "test-node",
    });
    v.as_object().expect("object").clone()
}

/// Compares a whole row with `shared() + own`, after checking the lineage
/// values that vary between runs.
fn assert_row(row: &Value, own: Value) {
    let mut row = row.as_object().expect("row object").clone();
    let received_at = row.remove("received_at").expect("received_at");
    let received_at = received_at.as_str().expect("received_at is a timestamp");
    assert!(
        received_at.starts_with("20") && received_at.ends_with('Z'),
        "{received_at}"
    );
    let policy = row.remove("policy_version").expect("policy_version");
    assert!(!policy.as_str().expect("policy_version text").is_empty());
    let mut expected = shared();
    expected.extend(own.as_object().expect("object").clone());
    assert_eq!(Value::Object(row), Value::Object(expected));
}

/// Asserts the Arrow type of each column of `table`.
async fn assert_types(srv: &TestServer, key: &str, table: &str, types: &[(&str, &str)]) {
    let select: Vec<String> = types
        .iter()
        .map(|(c, _)| format!("arrow_typeof({c}) AS \"{c}\""))
        .collect();
    let sql = format!("SELECT {} FROM {table} LIMIT 1", select.join(", "));
    let r = srv.query(key, &sql).await;
    let row = &r.rows()[0];
    for (c, t) in types {
        assert_eq!(row[*c], json!(t), "type of {table}.{c}");
    }
}

fn common_types() -> Vec<(&'static str, &'static str)> {
    vec![
        ("tenant", "Utf8"),
        ("timestamp", TS),
        ("service_name", "Utf8"),
        ("attributes", MAP),
        ("resource_attributes", MAP),
        ("resource_dropped_attributes_count", "UInt32"),
        ("resource_schema_url", "Utf8"),
        ("scope_name", "Utf8"),
        ("scope_version", "Utf8"),
        ("scope_attributes", MAP),
        ("scope_dropped_attributes_count", "UInt32"),
        ("scope_schema_url", "Utf8"),
        ("policy_version", "Utf8"),
        ("received_by", "Utf8"),
        ("received_at", TS),
    ]
}

/// Resource and scope values through map access and `attr`.
async fn assert_resource_and_scope(srv: &TestServer, key: &str, table: &str, rows: usize) {
    let r = srv
        .query(
            key,
            &format!(
                "SELECT resource_attributes['service.name'] AS s, \
                 attr(scope_attributes, 'my.scope.attribute') AS sa, \
                 scope_name, scope_version, count(*) AS n FROM {table} \
                 GROUP BY 1, 2, 3, 4"
            ),
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![json!({"s": "my.service", "sa": "some scope attribute",
            "scope_name": "my.library", "scope_version": "1.0.0", "n": rows})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_example_reads_back() {
    let (srv, key) = server_with(&[("logs.json", "/v1/logs")]).await;
    let r = srv.query(&key, "SELECT * FROM logs").await;
    assert_eq!(r.rows().len(), 1);
    assert_row(
        &r.rows()[0],
        json!({
            "timestamp": "2018-12-13T14:51:00.300Z",
            "observed_timestamp": "2018-12-13T14:51:00.300Z",
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "trace_flags": 0,
            "severity_text": "Information",
            "severity_number": 10,
            "body": "Example log record",
            "body_type": "string",
            "event_name": "",
            "attributes": {
                "string.attribute": "some string",
                "boolean.attribute": "true",
                "int.attribute": "10",
                "double.attribute": "637.704",
                "array.attribute": "[\"many\",\"values\"]",
                "map.attribute": "{\"some.map.key\":\"some value\"}",
            },
            "dropped_attributes_count": 0,
            "flags": 0,
        }),
    );
    // Timestamps as exact nanoseconds, and the upper-case JSON ids as lower hex.
    let r = srv
        .query(
            &key,
            "SELECT CAST(timestamp AS BIGINT) AS t, CAST(observed_timestamp AS BIGINT) AS o \
             FROM logs WHERE trace_id = '5b8efff798038103d269b633813fc60c' \
             AND span_id = 'eee19b7ec3c1b174' AND severity_number = 10 \
             AND timestamp = TIMESTAMP '2018-12-13T14:51:00.300Z'",
        )
        .await;
    assert_eq!(r.rows(), &vec![json!({"t": T, "o": T})]);
    // Every attribute, through `attr` and through map access.
    let attrs = [
        ("string.attribute", "some string"),
        ("boolean.attribute", "true"),
        ("int.attribute", "10"),
        ("double.attribute", "637.704"),
        ("array.attribute", r#"["many","values"]"#),
        ("map.attribute", r#"{"some.map.key":"some value"}"#),
    ];
    for (k, v) in attrs {
        let r = srv
            .query(
                &key,
                &format!("SELECT attr(attributes, '{k}') AS f, attributes['{k}'] AS m FROM logs"),
            )
            .await;
        assert_eq!(r.rows(), &vec![json!({"f": v, "m": v})], "{k}");
    }
    // Typed uses of the rendered values.
    let r = srv
        .query(
            &key,
            "SELECT CAST(attributes['int.attribute'] AS BIGINT) + 1 AS i, \
             CAST(attributes['double.attribute'] AS DOUBLE) AS d, \
             CAST(attributes['boolean.attribute'] AS BOOLEAN) AS b FROM logs",
        )
        .await;
    assert_eq!(r.rows(), &vec![json!({"i": 11, "d": 637.704, "b": true})]);
    assert_resource_and_scope(&srv, &key, "logs", 1).await;
    let mut types = common_types();
    types.extend([
        ("observed_timestamp", TS),
        ("trace_id", "Utf8"),
        ("span_id", "Utf8"),
        ("trace_flags", "UInt32"),
        ("severity_text", "Utf8"),
        ("severity_number", "Int32"),
        ("body", "Utf8"),
        ("body_type", "Utf8"),
        ("event_name", "Utf8"),
        ("dropped_attributes_count", "UInt32"),
        ("flags", "UInt32"),
    ]);
    assert_types(&srv, &key, "logs", &types).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_example_reads_back() {
    let (srv, key) = server_with(&[("events.json", "/v1/logs")]).await;
    let r = srv.query(&key, "SELECT * FROM logs").await;
    assert_eq!(r.rows().len(), 1);
    let body = r.rows()[0]["body"].as_str().expect("body text").to_string();
    assert_row(
        &r.rows()[0],
        json!({
            "timestamp": "2018-12-13T14:51:00.300Z",
            "observed_timestamp": "2018-12-13T14:51:00.300Z",
            "trace_id": null,
            "span_id": null,
            "trace_flags": 0,
            "severity_text": "test severity text",
            "severity_number": 9,
            "body": body,
            "body_type": "kvlist",
            "event_name": "browser.page_view",
            "attributes": {"event.attribute": "some event attribute"},
            "dropped_attributes_count": 0,
            "flags": 0,
        }),
    );
    // The kvlist body is a JSON object, keys in sender order, the int as a number.
    assert_eq!(
        body,
        r#"{"type":0,"url":"https://www.guidgenerator.com/online-guid-generator.aspx","referrer":"https://wwww.google.com","title":"Free Online GUID Generator"}"#
    );
    let r = srv
        .query(
            &key,
            "SELECT attr(attributes, 'event.attribute') AS a, CAST(timestamp AS BIGINT) AS t \
             FROM logs WHERE event_name = 'browser.page_view' AND trace_id IS NULL \
             AND body_type = 'kvlist' AND severity_text = 'test severity text'",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![json!({"a": "some event attribute", "t": T})]
    );
    assert_resource_and_scope(&srv, &key, "logs", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_example_reads_back() {
    let (srv, key) = server_with(&[("trace.json", "/v1/traces")]).await;
    let r = srv.query(&key, "SELECT * FROM spans").await;
    assert_eq!(r.rows().len(), 1);
    assert_row(
        &r.rows()[0],
        json!({
            "timestamp": "2018-12-13T14:51:00Z",
            "end_timestamp": "2018-12-13T14:51:01Z",
            "duration_ns": 1_000_000_000,
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "parent_span_id": "eee19b7ec3c1b173",
            "trace_state": "",
            "flags": 0,
            "name": "I'm a server span",
            "kind": "Server",
            "status_code": "Unset",
            "status_message": "",
            "attributes": {"my.span.attr": "some value"},
            "dropped_attributes_count": 0,
            "events": [],
            "dropped_events_count": 0,
            "links": [],
            "dropped_links_count": 0,
        }),
    );
    let r = srv
        .query(
            &key,
            "SELECT CAST(timestamp AS BIGINT) AS s, CAST(end_timestamp AS BIGINT) AS e, \
             duration_ns, attr(attributes, 'my.span.attr') AS a, attributes['my.span.attr'] AS m, \
             array_length(events) AS ne, cardinality(links) AS nl FROM spans \
             WHERE kind = 'Server' AND status_code = 'Unset' \
             AND parent_span_id = 'eee19b7ec3c1b173' AND name = 'I''m a server span'",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![
            json!({"s": 1_544_712_660_000_000_000_i64, "e": 1_544_712_661_000_000_000_i64,
            "duration_ns": 1_000_000_000, "a": "some value", "m": "some value",
            "ne": 0, "nl": 0})
        ]
    );
    assert_resource_and_scope(&srv, &key, "spans", 1).await;
    let mut types = common_types();
    types.extend([
        ("end_timestamp", TS),
        ("duration_ns", "Int64"),
        ("trace_id", "Utf8"),
        ("span_id", "Utf8"),
        ("parent_span_id", "Utf8"),
        ("trace_state", "Utf8"),
        ("flags", "UInt32"),
        ("name", "Utf8"),
        ("kind", "Utf8"),
        ("status_code", "Utf8"),
        ("status_message", "Utf8"),
        ("dropped_attributes_count", "UInt32"),
        ("dropped_events_count", "UInt32"),
        ("dropped_links_count", "UInt32"),
    ]);
    assert_types(&srv, &key, "spans", &types).await;
    let r = srv
        .query(
            &key,
            "SELECT arrow_typeof(events) AS e, arrow_typeof(links) AS l FROM spans",
        )
        .await;
    let e = r.rows()[0]["e"].as_str().expect("type").to_string();
    let l = r.rows()[0]["l"].as_str().expect("type").to_string();
    assert!(e.starts_with(r#"List(non-null Struct("timestamp": non-null Timestamp(ns, "UTC"), "name": non-null Utf8, "attributes": non-null Map("#), "{e}");
    assert!(l.starts_with(r#"List(non-null Struct("trace_id": non-null Utf8, "span_id": non-null Utf8, "trace_state": non-null Utf8, "flags": non-null UInt32, "attributes": non-null Map("#), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_example_reads_back() {
    let (srv, key) = server_with(&[("metrics.json", "/v1/metrics")]).await;
    let r = srv
        .query(&key, "SELECT * FROM metrics ORDER BY metric_name")
        .await;
    let rows = r.rows();
    assert_eq!(rows.len(), 4);
    // Columns of the kinds a row is not, all null.
    let none = json!({
        "start_timestamp": null, "aggregation_temporality": null, "is_monotonic": null,
        "value": null, "value_int": null, "count": null, "sum": null, "min": null,
        "max": null, "bucket_counts": null, "explicit_bounds": null, "scale": null,
        "zero_count": null, "zero_threshold": null, "positive_offset": null,
        "positive_bucket_counts": null, "negative_offset": null,
        "negative_bucket_counts": null, "quantiles": null, "quantile_values": null,
        "exemplars": [], "flags": 0, "metric_metadata": {}, "metric_unit": "1",
        "timestamp": "2018-12-13T14:51:00.300Z",
    });
    let with = |own: Value| {
        let mut m = none.as_object().expect("object").clone();
        m.extend(own.as_object().expect("object").clone());
        Value::Object(m)
    };
    let start = "2018-12-13T14:51:00.300Z";
    let expected = [
        json!({"metric_name": "my.counter", "metric_description": "I am a Counter",
            "metric_type": "sum", "start_timestamp": start,
            "aggregation_temporality": "delta", "is_monotonic": true, "value": 5.0,
            "attributes": {"my.counter.attr": "some value"}}),
        json!({"metric_name": "my.exponential.histogram",
            "metric_description": "I am an Exponential Histogram",
            "metric_type": "exponential_histogram", "start_timestamp": start,
            "aggregation_temporality": "delta", "count": 3, "sum": 10.0, "scale": 0,
            "zero_count": 1, "positive_offset": 1, "positive_bucket_counts": [0, 2],
            "negative_offset": 0, "negative_bucket_counts": [], "min": 0.0, "max": 5.0,
            "zero_threshold": 0.0,
            "attributes": {"my.exponential.histogram.attr": "some value"}}),
        json!({"metric_name": "my.gauge", "metric_description": "I am a Gauge",
            "metric_type": "gauge", "value": 10.0,
            "attributes": {"my.gauge.attr": "some value"}}),
        json!({"metric_name": "my.histogram", "metric_description": "I am a Histogram",
            "metric_type": "histogram", "start_timestamp": start,
            "aggregation_temporality": "delta", "count": 2, "sum": 2.0,
            "bucket_counts": [1, 1], "explicit_bounds": [1.0], "min": 0.0, "max": 2.0,
            "attributes": {"my.histogram.attr": "some value"}}),
    ];
    for (row, own) in rows.iter().zip(expected) {
        assert_row(row, with(own));
    }
    // Values through SQL: list elements, typed arithmetic, per-kind filters.
    let r = srv
        .query(
            &key,
            "SELECT metric_name, bucket_counts[1] + bucket_counts[2] AS buckets, \
             explicit_bounds[1] AS bound, positive_bucket_counts[2] AS p2, \
             count * 2 AS c2, sum, value, \
             attr(attributes, metric_name || '.attr') AS a, \
             CAST(timestamp AS BIGINT) AS t, CAST(start_timestamp AS BIGINT) AS st, \
             cardinality(exemplars) AS ex, quantiles IS NULL AS no_q \
             FROM metrics WHERE aggregation_temporality = 'delta' OR metric_type = 'gauge' \
             ORDER BY metric_name",
        )
        .await;
    let st = json!(T);
    assert_eq!(
        r.rows(),
        &vec![
            json!({"metric_name": "my.counter", "buckets": null, "bound": null, "p2": null,
                "c2": null, "sum": null, "value": 5.0, "a": "some value", "t": T, "st": st,
                "ex": 0, "no_q": true}),
            json!({"metric_name": "my.exponential.histogram", "buckets": null, "bound": null,
                "p2": 2, "c2": 6, "sum": 10.0, "value": null, "a": "some value", "t": T,
                "st": st, "ex": 0, "no_q": true}),
            json!({"metric_name": "my.gauge", "buckets": null, "bound": null, "p2": null,
                "c2": null, "sum": null, "value": 10.0, "a": "some value", "t": T,
                "st": null, "ex": 0, "no_q": true}),
            json!({"metric_name": "my.histogram", "buckets": 2, "bound": 1.0, "p2": null,
                "c2": 4, "sum": 2.0, "value": null, "a": "some value", "t": T, "st": st,
                "ex": 0, "no_q": true}),
        ]
    );
    assert_resource_and_scope(&srv, &key, "metrics", 4).await;
    let mut types = common_types();
    types.extend([
        ("start_timestamp", TS),
        ("metric_name", "Utf8"),
        ("metric_description", "Utf8"),
        ("metric_unit", "Utf8"),
        ("metric_type", "Utf8"),
        ("metric_metadata", MAP),
        ("aggregation_temporality", "Utf8"),
        ("is_monotonic", "Boolean"),
        ("value", "Float64"),
        ("value_int", "Int64"),
        ("count", "UInt64"),
        ("sum", "Float64"),
        ("min", "Float64"),
        ("max", "Float64"),
        ("bucket_counts", "List(non-null UInt64)"),
        ("explicit_bounds", "List(non-null Float64)"),
        ("scale", "Int32"),
        ("zero_count", "UInt64"),
        ("zero_threshold", "Float64"),
        ("positive_offset", "Int32"),
        ("positive_bucket_counts", "List(non-null UInt64)"),
        ("negative_offset", "Int32"),
        ("negative_bucket_counts", "List(non-null UInt64)"),
        ("quantiles", "List(non-null Float64)"),
        ("quantile_values", "List(non-null Float64)"),
        ("flags", "UInt32"),
    ]);
    assert_types(&srv, &key, "metrics", &types).await;
}

/// All four examples into one tenant: the row counts per table add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_examples_together() {
    let (srv, key) = server_with(&[
        ("logs.json", "/v1/logs"),
        ("events.json", "/v1/logs"),
        ("trace.json", "/v1/traces"),
        ("metrics.json", "/v1/metrics"),
    ])
    .await;
    let r = srv
        .query(
            &key,
            "SELECT (SELECT count(*) FROM logs) AS l, (SELECT count(*) FROM spans) AS s, \
             (SELECT count(*) FROM metrics) AS m, \
             (SELECT count(*) FROM logs l JOIN spans s ON l.trace_id = s.trace_id \
              AND l.span_id = s.span_id) AS j",
        )
        .await;
    assert_eq!(r.rows(), &vec![json!({"l": 2, "s": 1, "m": 4, "j": 1})]);
}
