//! Spans: events, links, status, kind, flags, trace state, dropped counts,
//! and id validation.
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::convert::spans as convert_spans;

fn span(name: &str) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        name: name.into(),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 1_500,
        ..Span::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(Some("svc")),
            scope_spans: vec![ScopeSpans {
                scope: scope("lib"),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[test]
fn full_span() {
    let s = Span {
        parent_span_id: vec![0x11; 8],
        trace_state: "vendor=a,other=b".into(),
        flags: 0x301,
        kind: 3,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.status_code", Value::IntValue(503)),
        ],
        dropped_attributes_count: 1,
        events: vec![
            Event {
                time_unix_nano: 1_100,
                name: "exception".into(),
                attributes: vec![kv("exception.type", s("IOError"))],
                dropped_attributes_count: 2,
            },
            Event {
                time_unix_nano: 1_200,
                name: "retry".into(),
                ..Event::default()
            },
        ],
        dropped_events_count: 3,
        links: vec![Link {
            trace_id: vec![0x22; 16],
            span_id: vec![0x33; 8],
            trace_state: "k=v".into(),
            attributes: vec![kv("link.kind", s("follows"))],
            dropped_attributes_count: 5,
            flags: 0x100,
        }],
        dropped_links_count: 4,
        status: Some(Status {
            message: "upstream down".into(),
            code: 2,
        }),
        ..span("GET /")
    };
    let c = convert_spans(&request(vec![s]), &STAMP);
    assert_eq!((c.accepted, c.rejected), (1, 0), "{:?}", c.errors);
    let b = batch(&c);
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "timestamp"),
        [Some(1_000)]
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "end_timestamp"),
        [Some(1_500)]
    );
    assert_eq!(prims::<Int64Type>(b, "duration_ns"), [Some(500)]);
    assert_eq!(str_at(b, "parent_span_id", 0), Some("11".repeat(8)));
    assert_eq!(
        str_at(b, "trace_state", 0).as_deref(),
        Some("vendor=a,other=b")
    );
    assert_eq!(prims::<UInt32Type>(b, "flags"), [Some(0x301)]);
    assert_eq!(str_at(b, "kind", 0).as_deref(), Some("Client"));
    assert_eq!(str_at(b, "status_code", 0).as_deref(), Some("Error"));
    assert_eq!(
        str_at(b, "status_message", 0).as_deref(),
        Some("upstream down")
    );
    assert_eq!(str_at(b, "service_name", 0).as_deref(), Some("svc"));
    assert_eq!(
        map_at(b, "attributes", 0),
        pairs(&[("http.method", "GET"), ("http.status_code", "503")])
    );
    assert_eq!(
        prims::<UInt32Type>(b, "dropped_attributes_count"),
        [Some(1)]
    );
    assert_eq!(prims::<UInt32Type>(b, "dropped_events_count"), [Some(3)]);
    assert_eq!(prims::<UInt32Type>(b, "dropped_links_count"), [Some(4)]);

    let events = struct_list_at(b, "events", 0).expect("events");
    assert_eq!(events.len(), 2);
    let times: Vec<_> = events
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .iter()
        .collect();
    assert_eq!(times, [Some(1_100), Some(1_200)]);
    let names: Vec<_> = events.column(1).as_string::<i32>().iter().collect();
    assert_eq!(names, [Some("exception"), Some("retry")]);
    assert_eq!(
        map_entries(events.column(2), 0),
        pairs(&[("exception.type", "IOError")])
    );
    assert_eq!(map_entries(events.column(2), 1), []);
    let dropped: Vec<_> = events
        .column(3)
        .as_primitive::<UInt32Type>()
        .iter()
        .collect();
    assert_eq!(dropped, [Some(2), Some(0)]);

    let links = struct_list_at(b, "links", 0).expect("links");
    assert_eq!(links.len(), 1);
    assert_eq!(links.column(0).as_string::<i32>().value(0), "22".repeat(16));
    assert_eq!(links.column(1).as_string::<i32>().value(0), "33".repeat(8));
    assert_eq!(links.column(2).as_string::<i32>().value(0), "k=v");
    assert_eq!(links.column(3).as_primitive::<UInt32Type>().value(0), 0x100);
    assert_eq!(
        map_entries(links.column(4), 0),
        pairs(&[("link.kind", "follows")])
    );
    assert_eq!(links.column(5).as_primitive::<UInt32Type>().value(0), 5);
}

#[test]
fn kinds_and_status_codes() {
    let spans: Vec<Span> = (0..7)
        .map(|k| Span {
            kind: k,
            status: (k < 4).then(|| Status {
                code: k,
                message: String::new(),
            }),
            ..span("s")
        })
        .collect();
    let c = convert_spans(&request(spans), &STAMP);
    let b = batch(&c);
    let kinds: Vec<_> = strs(b, "kind").into_iter().flatten().collect();
    assert_eq!(
        kinds,
        [
            "Unspecified",
            "Internal",
            "Server",
            "Client",
            "Producer",
            "Consumer",
            "6"
        ]
    );
    let codes: Vec<_> = strs(b, "status_code").into_iter().flatten().collect();
    assert_eq!(
        codes,
        ["Unset", "Ok", "Error", "3", "Unset", "Unset", "Unset"]
    );
}

#[test]
fn missing_times_keep_a_partition_and_an_unknown_duration() {
    let spans = vec![
        Span {
            start_time_unix_nano: 0,
            ..span("no start")
        },
        Span {
            end_time_unix_nano: 0,
            ..span("no end")
        },
    ];
    let c = convert_spans(&request(spans), &STAMP);
    let b = batch(&c);
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "timestamp"),
        [Some(STAMP.received_at_nanos), Some(1_000)]
    );
    assert_eq!(
        prims::<TimestampNanosecondType>(b, "end_timestamp"),
        [Some(1_500), None]
    );
    assert_eq!(prims::<Int64Type>(b, "duration_ns"), [None, None]);
    assert!(column(b, "events").is_valid(0));
}

#[test]
fn bad_ids_reject_only_their_span() {
    let spans = vec![
        Span {
            trace_id: vec![],
            ..span("no trace id")
        },
        Span {
            span_id: vec![1; 4],
            ..span("short span id")
        },
        span("good"),
        Span {
            parent_span_id: vec![1; 16],
            ..span("long parent")
        },
        Span {
            links: vec![Link {
                trace_id: vec![1; 5],
                span_id: SPAN_ID.to_vec(),
                ..Link::default()
            }],
            ..span("bad link")
        },
        Span {
            links: vec![Link {
                trace_id: TRACE_ID.to_vec(),
                span_id: vec![],
                ..Link::default()
            }],
            ..span("link without span")
        },
        Span {
            parent_span_id: vec![],
            ..span("root")
        },
    ];
    let c = convert_spans(&request(spans), &STAMP);
    assert_eq!((c.accepted, c.rejected), (2, 5));
    assert_eq!(
        c.errors,
        [
            "span 0 of scope 0 of resource 0: trace_id is required",
            "span 1 of scope 0 of resource 0: span_id must be 8 bytes, got 4",
            "span 3 of scope 0 of resource 0: parent_span_id must be 8 bytes, got 16",
            "span 4 of scope 0 of resource 0: link 0: trace_id must be 16 bytes, got 5",
            "span 5 of scope 0 of resource 0: link 0: span_id is required",
        ]
    );
    let b = batch(&c);
    assert_eq!(
        strs(b, "name"),
        [Some("good".to_string()), Some("root".to_string())]
    );
    assert_eq!(strs(b, "parent_span_id"), [None, None]);
}
