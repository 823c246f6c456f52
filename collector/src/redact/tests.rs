//! Batches built by the converter, redacted, read back cell by cell.
use arrow::array::{Array, AsArray, RecordBatch};
use bulkhead_rules::redact::{Detector, RedactionPolicy, Redactor, Report};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, Exemplar, Gauge, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

use super::*;
use crate::convert::{self, Stamp};

const STAMP: Stamp<'static> = Stamp {
    tenant: "acme",
    policy_version: "p1",
    node: "n1",
    received_at_nanos: 1_700_000_000_000_000_000,
    window: crate::convert::EventWindow::ANY,
};

const CARD: &str = "4111 1111 1111 1111";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n-----END PRIVATE KEY-----";

fn kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        key_strindex: 0,
    }
}

fn any(v: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn resource(attrs: Vec<KeyValue>) -> Option<Resource> {
    Some(Resource {
        attributes: attrs,
        ..Resource::default()
    })
}

fn scope(attrs: Vec<KeyValue>) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        attributes: attrs,
        ..InstrumentationScope::default()
    })
}

fn logs(res: Vec<KeyValue>, records: Vec<LogRecord>) -> RecordBatch {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(res),
            scope_logs: vec![ScopeLogs {
                scope: scope(vec![kv("scope.k", "v")]),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    match convert::logs(&req, &STAMP).batch {
        Some(b) => b,
        None => panic!("no batch"),
    }
}

fn log(body: Value, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000,
        body: any(body),
        attributes: attrs,
        ..LogRecord::default()
    }
}

fn spans(s: Vec<Span>) -> RecordBatch {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(vec![kv("service.name", "api")]),
            scope_spans: vec![ScopeSpans {
                scope: scope(vec![]),
                spans: s,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    match convert::spans(&req, &STAMP).batch {
        Some(b) => b,
        None => panic!("no batch"),
    }
}

fn metrics(points: Vec<NumberDataPoint>, metadata: Vec<KeyValue>) -> RecordBatch {
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(vec![kv("service.name", "api")]),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(vec![]),
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    metadata,
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Metric::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    match convert::metrics(&req, &STAMP).batch {
        Some(b) => b,
        None => panic!("no batch"),
    }
}

fn redactor(toml_text: &str) -> Redactor {
    #[derive(serde::Deserialize)]
    struct File {
        redaction: RedactionPolicy,
    }
    let file: File = match toml::from_str(toml_text) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    match Redactor::compile(&file.redaction) {
        Ok(r) => r,
        Err(e) => panic!("{e:?}"),
    }
}

fn run(signal: Signal, b: &RecordBatch, r: &Redactor, rep: &mut Report) -> RecordBatch {
    match redact_batch(signal, b, r, rep) {
        Ok(Some(b)) => b,
        other => panic!("{other:?}"),
    }
}

/// The entries of a map column's row, as (key, value).
fn entries(b: &RecordBatch, column: &str, row: usize) -> Vec<(String, Option<String>)> {
    let map = b.column_by_name(column).map(|c| c.as_map().value(row));
    map.map(|e| {
        let (k, v) = (
            e.column(0).as_string::<i32>(),
            e.column(1).as_string::<i32>(),
        );
        (0..e.len())
            .map(|i| {
                (
                    k.value(i).to_owned(),
                    v.is_valid(i).then(|| v.value(i).to_owned()),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

fn text(b: &RecordBatch, column: &str, row: usize) -> Option<String> {
    let a = b.column_by_name(column)?.as_string::<i32>();
    a.is_valid(row).then(|| a.value(row).to_owned())
}

fn same(a: &RecordBatch, b: &RecordBatch, column: &str) -> bool {
    match (a.column_by_name(column), b.column_by_name(column)) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

#[test]
fn defaults_mask_logs_and_leave_untouched_columns_shared() {
    let body = Value::KvlistValue(KeyValueList {
        values: vec![
            kv("msg", &format!("key {AWS}")),
            KeyValue {
                key: "n".into(),
                value: any(Value::IntValue(1)),
                key_strindex: 0,
            },
        ],
    });
    let b = logs(
        vec![kv("service.name", "svc"), kv("auth", "Bearer abcdefghijk")],
        vec![
            log(
                Value::StringValue("login Bearer abcdefghijk ok".into()),
                vec![kv("card", CARD), kv("user", "bob")],
            ),
            log(body, vec![kv("plain", "x")]),
            log(Value::IntValue(4_111_111_111_111_111), vec![]),
        ],
    );
    let mut rep = Report::default();
    let out = run(Signal::Logs, &b, &Redactor::default_for_tenant(), &mut rep);
    assert_eq!(
        entries(&out, "resource_attributes", 0),
        pairs(&[
            ("service.name", "svc"),
            ("auth", "Bearer [REDACTED:bearer_token]")
        ])
    );
    assert_eq!(
        text(&out, "body", 0).as_deref(),
        Some("login Bearer [REDACTED:bearer_token] ok")
    );
    assert_eq!(
        entries(&out, "attributes", 0),
        pairs(&[("card", "[REDACTED:payment_card]"), ("user", "bob")])
    );
    assert_eq!(
        text(&out, "body", 1).as_deref(),
        Some(r#"{"msg":"key [REDACTED:cloud_key]","n":1}"#)
    );
    assert_eq!(text(&out, "body_type", 1).as_deref(), Some("kvlist"));
    assert_eq!(
        text(&out, "body", 2).as_deref(),
        Some("[REDACTED:payment_card]")
    );
    assert_eq!(text(&out, "body_type", 2).as_deref(), Some("string"));
    assert_eq!(text(&out, "service_name", 0).as_deref(), Some("svc"));
    for untouched in [
        "scope_attributes",
        "tenant",
        "timestamp",
        "severity_text",
        "trace_id",
    ] {
        assert!(same(&b, &out, untouched), "{untouched} was copied");
    }
    assert_eq!(rep.get("default:bearer_token").values_masked, 3 + 1);
    assert_eq!(rep.get("default:payment_card").values_masked, 2);
    assert_eq!(rep.get("default:cloud_key").values_masked, 1);
    // A second pass finds nothing and copies nothing.
    let mut again = Report::default();
    let twice = run(
        Signal::Logs,
        &out,
        &Redactor::default_for_tenant(),
        &mut again,
    );
    assert!(again.is_empty(), "{again:?}");
    for c in ["resource_attributes", "attributes", "body", "body_type"] {
        assert!(same(&out, &twice, c), "{c}");
    }
}

#[test]
fn record_drops_allow_lists_and_service_name() {
    let r = redactor(
        r#"
[redaction]
[[redaction.rules]]
name = "health"
action = "drop_record"
match = { pattern = "^/healthz$" }
keys = ["url.path"]
[[redaction.rules]]
name = "resource-allow"
action = "allow_keys"
keys = ["host.*"]
applies_to = ["resource_attributes"]
"#,
    );
    let b = logs(
        vec![kv("service.name", "svc"), kv("host.name", "h1")],
        vec![
            log(
                Value::StringValue("a".into()),
                vec![kv("url.path", "/healthz")],
            ),
            log(Value::StringValue("b".into()), vec![kv("url.path", "/api")]),
        ],
    );
    let mut rep = Report::default();
    let out = run(Signal::Logs, &b, &r, &mut rep);
    assert_eq!(out.num_rows(), 1);
    assert_eq!(text(&out, "body", 0).as_deref(), Some("b"));
    assert_eq!(
        entries(&out, "resource_attributes", 0),
        pairs(&[("host.name", "h1")])
    );
    assert_eq!(text(&out, "service_name", 0), None);
    assert_eq!(rep.get("health").records_dropped, 1);
    assert_eq!(rep.get("resource-allow").attributes_dropped, 1);
    let only_health = logs(
        vec![],
        vec![log(
            Value::StringValue("a".into()),
            vec![kv("url.path", "/healthz")],
        )],
    );
    assert_eq!(
        redact_batch(Signal::Logs, &only_health, &r, &mut rep).ok(),
        Some(None)
    );
    assert_eq!(rep.get("health").records_dropped, 2);
}

#[test]
fn spans_names_events_and_links() {
    let s = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: format!("auth {JWT}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        status: Some(opentelemetry_proto::tonic::trace::v1::Status {
            message: format!("denied for {AWS}"),
            code: 2,
        }),
        events: vec![span::Event {
            name: format!("retry with {JWT}"),
            attributes: vec![kv("card", CARD), kv("ok", "1")],
            ..span::Event::default()
        }],
        links: vec![span::Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            attributes: vec![kv("key", AWS)],
            ..span::Link::default()
        }],
        ..Span::default()
    };
    let plain = Span {
        name: "GET /".into(),
        status: None,
        events: vec![],
        links: vec![],
        ..s.clone()
    };
    let b = spans(vec![s, plain]);
    let mut rep = Report::default();
    let out = run(Signal::Spans, &b, &Redactor::default_for_tenant(), &mut rep);
    assert_eq!(
        text(&out, "name", 0).as_deref(),
        Some("auth [REDACTED:jwt]")
    );
    assert_eq!(text(&out, "name", 1).as_deref(), Some("GET /"));
    assert_eq!(
        text(&out, "status_message", 0).as_deref(),
        Some("denied for [REDACTED:cloud_key]")
    );
    let names = out
        .column_by_name("events")
        .map(|c| c.as_list::<i32>().values().as_struct().column(1).clone());
    let Some(names) = names else {
        panic!("no events")
    };
    assert_eq!(
        names.as_string::<i32>().value(0),
        "retry with [REDACTED:jwt]"
    );
    let events = out
        .column_by_name("events")
        .map(|c| c.as_list::<i32>().value(0));
    let event = events.as_ref().map(|e| {
        e.as_struct()
            .column_by_name("attributes")
            .map(|m| m.as_map().value(0))
    });
    let Some(Some(attrs)) = event else {
        panic!("no event")
    };
    let (k, v) = (
        attrs.column(0).as_string::<i32>(),
        attrs.column(1).as_string::<i32>(),
    );
    assert_eq!(
        (k.value(0), v.value(0)),
        ("card", "[REDACTED:payment_card]")
    );
    assert_eq!((k.value(1), v.value(1)), ("ok", "1"));
    let links = out
        .column_by_name("links")
        .map(|c| c.as_list::<i32>().value(0));
    let link = links.as_ref().map(|l| {
        l.as_struct()
            .column_by_name("attributes")
            .map(|m| m.as_map().value(0))
    });
    let Some(Some(attrs)) = link else {
        panic!("no link")
    };
    assert_eq!(
        attrs.column(1).as_string::<i32>().value(0),
        "[REDACTED:cloud_key]"
    );
    assert_eq!(
        out.column_by_name("events")
            .map(|c| c.as_list::<i32>().value_length(1)),
        Some(0)
    );
    assert!(same(&b, &out, "resource_attributes") && same(&b, &out, "attributes"));
}

#[test]
fn metrics_points_metadata_and_exemplars() {
    let r = redactor("[redaction]\ndetectors = [\"email\"]\n");
    let point = NumberDataPoint {
        time_unix_nano: 1_700_000_000_000_000_000,
        attributes: vec![kv("user", "ann@example.com")],
        value: Some(number_data_point::Value::AsInt(3)),
        exemplars: vec![Exemplar {
            time_unix_nano: 1_700_000_000_000_000_000,
            filtered_attributes: vec![kv("q", "password=hunter2x")],
            value: Some(exemplar::Value::AsInt(1)),
            ..Exemplar::default()
        }],
        ..NumberDataPoint::default()
    };
    let b = metrics(vec![point], vec![kv("owner", "ops@example.com")]);
    let mut rep = Report::default();
    let out = run(Signal::Metrics, &b, &r, &mut rep);
    assert_eq!(
        entries(&out, "attributes", 0),
        pairs(&[("user", "[REDACTED:email]")])
    );
    assert_eq!(
        entries(&out, "metric_metadata", 0),
        pairs(&[("owner", "[REDACTED:email]")])
    );
    let ex = out
        .column_by_name("exemplars")
        .map(|c| c.as_list::<i32>().value(0));
    let attrs = ex.as_ref().and_then(|e| {
        e.as_struct()
            .column_by_name("filtered_attributes")
            .map(|m| m.as_map().value(0))
    });
    let Some(attrs) = attrs else {
        panic!("no exemplar")
    };
    assert_eq!(
        attrs.column(1).as_string::<i32>().value(0),
        "password=[REDACTED:secret_assignment]"
    );
    assert_eq!(rep.get("detector:email").values_masked, 2);
    assert!(same(&b, &out, "resource_attributes"));
}

#[test]
fn tenant_fields_are_pinned_to_the_authenticated_tenant() {
    let b = logs(
        vec![kv("tenant.id", "globex"), kv("service.name", "svc")],
        vec![
            log(
                Value::StringValue("a".into()),
                vec![kv("X-Scope-OrgID", "initech"), kv("org_id", "acme")],
            ),
            log(Value::StringValue("b".into()), vec![kv("other", "globex")]),
        ],
    );
    let (out, n) = match enforce_tenant_fields(&b, "acme", &TENANT_KEYS) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(n, 2 + 1);
    assert_eq!(
        entries(&out, "resource_attributes", 1),
        pairs(&[("tenant.id", "acme"), ("service.name", "svc")])
    );
    assert_eq!(
        entries(&out, "attributes", 0),
        pairs(&[("X-Scope-OrgID", "acme"), ("org_id", "acme")])
    );
    assert_eq!(
        entries(&out, "attributes", 1),
        pairs(&[("other", "globex")])
    );
    assert!(same(&b, &out, "scope_attributes"));
    let (again, n) = match enforce_tenant_fields(&out, "acme", &TENANT_KEYS) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(n, 0);
    assert!(same(&out, &again, "attributes"));
}

/// Every string anywhere in an array, nested lists, structs and maps included.
fn strings(a: &dyn Array, out: &mut Vec<String>) {
    match a.data_type() {
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            out.extend(
                (0..s.len())
                    .filter(|&i| s.is_valid(i))
                    .map(|i| s.value(i).to_owned()),
            );
        }
        DataType::List(_) => strings(a.as_list::<i32>().values().as_ref(), out),
        DataType::Struct(_) => a
            .as_struct()
            .columns()
            .iter()
            .for_each(|c| strings(c.as_ref(), out)),
        DataType::Map(_, _) => strings(a.as_map().entries(), out),
        _ => {}
    }
}

#[test]
fn planted_credentials_leave_no_trace_in_any_column() {
    let planted = [
        CARD,
        AWS,
        JWT,
        PEM,
        "Bearer zyxwvut98765",
        "password=swordfish1",
    ];
    let attrs = || {
        planted
            .iter()
            .enumerate()
            .map(|(i, p)| kv(&format!("k{i}"), &format!("x {p} y")))
            .collect::<Vec<_>>()
    };
    let json_body = Value::ArrayValue(ArrayValue {
        values: planted
            .iter()
            .map(|p| AnyValue {
                value: Some(Value::StringValue(p.to_string())),
            })
            .collect(),
    });
    let l = logs(
        attrs(),
        vec![
            log(Value::StringValue(planted.join(" | ")), attrs()),
            log(json_body, attrs()),
        ],
    );
    let s = spans(vec![Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: planted.join(" "),
        attributes: attrs(),
        events: vec![span::Event {
            attributes: attrs(),
            ..span::Event::default()
        }],
        links: vec![span::Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            attributes: attrs(),
            ..span::Link::default()
        }],
        ..Span::default()
    }]);
    let m = metrics(
        vec![NumberDataPoint {
            attributes: attrs(),
            value: Some(number_data_point::Value::AsDouble(1.0)),
            exemplars: vec![Exemplar {
                filtered_attributes: attrs(),
                ..Exemplar::default()
            }],
            ..NumberDataPoint::default()
        }],
        attrs(),
    );
    let r = Redactor::default_for_tenant();
    for (signal, b) in [(Signal::Logs, l), (Signal::Spans, s), (Signal::Metrics, m)] {
        let mut all = Vec::new();
        strings(&arrow::array::StructArray::from(b.clone()), &mut all);
        assert!(
            planted.iter().all(|p| all.iter().any(|s| s.contains(p))),
            "{signal:?} not planted"
        );
        let out = run(signal, &b, &r, &mut Report::default());
        let mut all = Vec::new();
        strings(&arrow::array::StructArray::from(out), &mut all);
        for s in &all {
            for p in planted {
                assert!(!s.contains(p), "{signal:?}: {p:?} survives in {s:?}");
            }
            for d in Detector::DEFAULTS {
                assert!(d.find(s).is_empty(), "{signal:?}: {} in {s:?}", d.name());
            }
        }
    }
}

#[test]
fn sliced_batches_give_the_rows_of_the_whole() {
    let b = spans(
        (0..4)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: vec![i + 1; 8],
                name: format!("op {i} Bearer abcdefgh{i}"),
                attributes: vec![kv("card", CARD), kv("i", &i.to_string())],
                events: vec![span::Event {
                    attributes: vec![kv("k", AWS)],
                    ..span::Event::default()
                }],
                ..Span::default()
            })
            .collect(),
    );
    let r = Redactor::default_for_tenant();
    let whole = run(Signal::Spans, &b, &r, &mut Report::default());
    let part = run(Signal::Spans, &b.slice(1, 2), &r, &mut Report::default());
    assert_eq!(part, whole.slice(1, 2));
}
