//! Logs: bodies of every kind, time fallbacks, flags, ids, resources.
use arrow::datatypes::{Int32Type, TimestampNanosecondType, UInt32Type};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, EntityRef, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::convert::logs as convert_logs;

fn record(body: Option<Value>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_000,
        body: body.map(|v| AnyValue { value: Some(v) }),
        ..LogRecord::default()
    }
}

fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(Some("svc")),
            scope_logs: vec![ScopeLogs {
                scope: scope("lib"),
                log_records: records,
                schema_url: "https://scope".into(),
            }],
            schema_url: "https://resource".into(),
        }],
    }
}

#[test]
fn bodies_of_every_kind() {
    let nested = Value::KvlistValue(KeyValueList {
        values: vec![
            kv(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(Value::KvlistValue(KeyValueList {
                                values: vec![kv("deep", Value::BoolValue(true))],
                            })),
                        },
                    ],
                }),
            ),
            kv("bytes", Value::BytesValue(vec![0xff, 0x00])),
        ],
    });
    let bodies = vec![
        Some(s("plain \"text\"")),
        Some(Value::IntValue(-9_007_199_254_740_993)),
        Some(Value::DoubleValue(2.5)),
        Some(Value::BoolValue(false)),
        Some(Value::BytesValue(b"hi".to_vec())),
        Some(Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(s("a")),
                },
                AnyValue { value: None },
            ],
        })),
        Some(Value::KvlistValue(KeyValueList {
            values: vec![kv("k", Value::DoubleValue(1.0))],
        })),
        Some(nested),
        None,
    ];
    let mut records: Vec<LogRecord> = bodies.into_iter().map(record).collect();
    records.push(LogRecord {
        body: Some(AnyValue { value: None }),
        ..record(None)
    });
    let c = convert_logs(&request(records), &STAMP);
    assert_eq!((c.accepted, c.rejected), (10, 0));
    let b = batch(&c);
    let expect = [
        (Some("plain \"text\""), Some("string")),
        (Some("-9007199254740993"), Some("int")),
        (Some("2.5"), Some("double")),
        (Some("false"), Some("bool")),
        (Some("\"aGk=\""), Some("bytes")),
        (Some(r#"["a",null]"#), Some("array")),
        (Some(r#"{"k":1.0}"#), Some("kvlist")),
        (
            Some(r#"{"list":[1,{"deep":true}],"bytes":"/wA="}"#),
            Some("kvlist"),
        ),
        (None, None),
        (None, None),
    ];
    let bodies = strs(b, "body");
    let kinds = strs(b, "body_type");
    for (row, (body, kind)) in expect.iter().enumerate() {
        assert_eq!(bodies[row].as_deref(), *body, "row {row}");
        assert_eq!(kinds[row].as_deref(), *kind, "row {row}");
    }
}

#[test]
fn event_time_falls_back_to_observed_then_received() {
    let records = vec![
        LogRecord {
            time_unix_nano: 10,
            observed_time_unix_nano: 20,
            ..LogRecord::default()
        },
        LogRecord {
            time_unix_nano: 0,
            observed_time_unix_nano: 20,
            ..LogRecord::default()
        },
        LogRecord::default(),
    ];
    let c = convert_logs(&request(records), &STAMP);
    let b = batch(&c);
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "timestamp"),
        [Some(10), Some(20), Some(STAMP.received_at_nanos)]
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "observed_timestamp"),
        [Some(20), Some(20), None]
    );
}

#[test]
fn severity_numbers_outside_the_enum_are_kept_as_sent() {
    // SeverityNumber is an open enum: a newer exporter may send numbers this
    // receiver does not name; they are kept, not rejected or clamped.
    let records = [0, 24, 25, i32::MAX, -3]
        .into_iter()
        .map(|n| LogRecord {
            severity_number: n,
            ..record(None)
        })
        .collect();
    let c = convert_logs(&request(records), &STAMP);
    let b = batch(&c);
    assert_eq!(
        prims::<Int32Type>(b, "severity_number"),
        [Some(0), Some(24), Some(25), Some(i32::MAX), Some(-3)]
    );
}

#[test]
fn scalar_fields_and_flags() {
    let r = LogRecord {
        severity_number: 17,
        severity_text: "ERROR".into(),
        flags: 0x101,
        dropped_attributes_count: 2,
        event_name: "app.crash".into(),
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        attributes: vec![
            kv("a", s("1")),
            kv("b", Value::IntValue(2)),
            kv("a", s("3")),
        ],
        ..record(None)
    };
    let c = convert_logs(&request(vec![r]), &STAMP);
    let b = batch(&c);
    assert_eq!(prims::<Int32Type>(b, "severity_number"), [Some(17)]);
    assert_eq!(str_at(b, "severity_text", 0).as_deref(), Some("ERROR"));
    assert_eq!(prims::<UInt32Type>(b, "trace_flags"), [Some(1)]);
    assert_eq!(prims::<UInt32Type>(b, "flags"), [Some(0x101)]);
    assert_eq!(
        prims::<UInt32Type>(b, "dropped_attributes_count"),
        [Some(2)]
    );
    assert_eq!(str_at(b, "event_name", 0).as_deref(), Some("app.crash"));
    assert_eq!(str_at(b, "trace_id", 0), Some("ab".repeat(16)));
    assert_eq!(str_at(b, "span_id", 0), Some("cd".repeat(8)));
    // Duplicate keys keep the last value.
    assert_eq!(map_at(b, "attributes", 0), pairs(&[("b", "2"), ("a", "3")]));
    assert_eq!(
        str_at(b, "resource_schema_url", 0).as_deref(),
        Some("https://resource")
    );
    assert_eq!(
        str_at(b, "scope_schema_url", 0).as_deref(),
        Some("https://scope")
    );
    assert_eq!(
        prims::<UInt32Type>(b, "scope_dropped_attributes_count"),
        [Some(4)]
    );
    assert_eq!(str_at(b, "scope_version", 0).as_deref(), Some("1.2.3"));
}

#[test]
fn bad_ids_reject_only_their_record() {
    let records = vec![
        LogRecord {
            trace_id: vec![1; 5],
            ..record(Some(s("bad trace")))
        },
        record(Some(s("good"))),
        LogRecord {
            span_id: vec![1; 16],
            ..record(Some(s("bad span")))
        },
        LogRecord {
            time_unix_nano: u64::MAX,
            ..record(Some(s("bad time")))
        },
        LogRecord {
            trace_id: TRACE_ID.to_vec(),
            ..record(Some(s("good too")))
        },
    ];
    let c = convert_logs(&request(records), &STAMP);
    assert_eq!((c.accepted, c.rejected), (2, 3));
    assert_eq!(
        c.errors,
        [
            "log record 0 of scope 0 of resource 0: trace_id must be 16 bytes, got 5",
            "log record 2 of scope 0 of resource 0: span_id must be 8 bytes, got 16",
            "log record 3 of scope 0 of resource 0: time_unix_nano 18446744073709551615 is out of range (after the year 2262)",
        ]
    );
    let b = batch(&c);
    assert_eq!(
        strs(b, "body"),
        [Some("good".into()), Some("good too".into())]
    );
    assert_eq!(strs(b, "trace_id"), [None, Some("ab".repeat(16))]);
}

#[test]
fn nothing_accepted_means_no_batch() {
    let c = convert_logs(&ExportLogsServiceRequest::default(), &STAMP);
    assert!(c.batch.is_none());
    assert_eq!((c.accepted, c.rejected), (0, 0));
    assert!(c.errors.is_empty());
    let bad = LogRecord {
        span_id: vec![1],
        ..record(None)
    };
    let c = convert_logs(&request(vec![bad]), &STAMP);
    assert!(c.batch.is_none());
    assert_eq!((c.accepted, c.rejected, c.errors.len()), (0, 1, 1));
}

#[test]
fn rows_carry_their_own_resource_and_scope() {
    let scope_logs = |name: &str, n: usize| ScopeLogs {
        scope: scope(name),
        log_records: (0..n).map(|_| record(Some(s(name)))).collect(),
        schema_url: String::new(),
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: resource(Some("first")),
                scope_logs: vec![
                    scope_logs("a", 2),
                    scope_logs("empty", 0),
                    scope_logs("b", 1),
                ],
                schema_url: String::new(),
            },
            ResourceLogs {
                resource: None,
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    ..scope_logs("c", 1)
                }],
                schema_url: String::new(),
            },
            ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::IntValue(7)), kv("host", s("h"))],
                    dropped_attributes_count: 3,
                    entity_refs: vec![EntityRef {
                        schema_url: "https://entity".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec!["host".into(), "x".into()],
                    }],
                }),
                scope_logs: vec![scope_logs("d", 1)],
                schema_url: String::new(),
            },
        ],
    };
    let c = convert_logs(&req, &STAMP);
    assert_eq!(c.accepted, 5);
    let b = batch(&c);
    assert_eq!(strs(b, "tenant"), vec![Some("t1".to_string()); 5]);
    assert_eq!(strs(b, "received_by"), vec![Some("n1".to_string()); 5]);
    assert_eq!(strs(b, "policy_version"), vec![Some("p3".to_string()); 5]);
    let svc: Vec<_> = strs(b, "service_name");
    assert_eq!(
        svc,
        [Some("first"), Some("first"), Some("first"), None, Some("7")].map(|s| s.map(String::from))
    );
    let scopes = strs(b, "scope_name");
    assert_eq!(
        scopes,
        [Some("a"), Some("a"), Some("b"), Some(""), Some("d")].map(|s| s.map(String::from))
    );
    assert_eq!(
        strs(b, "body"),
        [Some("a"), Some("a"), Some("b"), Some("c"), Some("d")].map(|s| s.map(String::from))
    );
    assert_eq!(map_at(b, "scope_attributes", 3), []);
    assert_eq!(
        map_at(b, "resource_attributes", 4),
        pairs(&[("service.name", "7"), ("host", "h")])
    );
    assert_eq!(
        prims::<UInt32Type>(b, "resource_dropped_attributes_count"),
        [Some(0), Some(0), Some(0), Some(0), Some(3)]
    );
    let refs = struct_list_at(b, "resource_entity_refs", 4).expect("entity refs");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs.column(0).as_string::<i32>().value(0), "https://entity");
    assert_eq!(refs.column(1).as_string::<i32>().value(0), "service");
    let desc = refs.column(3).as_list::<i32>().value(0);
    let desc: Vec<_> = desc.as_string::<i32>().iter().flatten().collect();
    assert_eq!(desc, ["host", "x"]);
    assert_eq!(
        struct_list_at(b, "resource_entity_refs", 0).map(|r| r.len()),
        Some(0)
    );
}
