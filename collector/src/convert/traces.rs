//! OTLP spans to the `spans` table.
use std::sync::Arc;

use arrow::array::ListArray;
use arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::datatypes::{FieldRef, Fields};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bulkhead_store::schema::{spans_schema, SpanColumns, TIME_ZONE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::attrs::AttrsBuilder;
use super::common::{list_of_structs, list_struct_fields, push_offset, Context};
use super::{append_id, check_id, finish, nanos, Converted, Rejections, Stamp};

/// `Span.kind` as stored; values outside the enum are stored as their number.
fn kind_name(kind: i32) -> Option<&'static str> {
    Some(match kind {
        0 => "Unspecified",
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => return None,
    })
}

/// `Status.code` as stored; values outside the enum are stored as their number.
fn status_name(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "Unset",
        1 => "Ok",
        2 => "Error",
        _ => return None,
    })
}

fn append_enum(b: &mut StringBuilder, name: Option<&'static str>, raw: i32) {
    match name {
        Some(n) => b.append_value(n),
        None => b.append_value(raw.to_string()),
    }
}

#[derive(Debug)]
struct Columns {
    timestamp: TimestampNanosecondBuilder,
    end_timestamp: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: AttrsBuilder,
    dropped_attributes_count: UInt32Builder,
    events: Events,
    dropped_events_count: UInt32Builder,
    links: Links,
    dropped_links_count: UInt32Builder,
}

/// Times of a span checked to fit Arrow's `i64` nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Times {
    start: i64,
    end: Option<i64>,
}

impl Columns {
    fn new(events: (FieldRef, Fields), links: (FieldRef, Fields)) -> Self {
        let ts = || TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE);
        Self {
            timestamp: ts(),
            end_timestamp: ts(),
            duration_ns: Int64Builder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            attributes: AttrsBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
            events: Events::new(events),
            dropped_events_count: UInt32Builder::new(),
            links: Links::new(links),
            dropped_links_count: UInt32Builder::new(),
        }
    }

    fn append(&mut self, s: &Span, t: Times, received_at: i64) {
        // An unset start time would file the span under 1970; use the
        // receive time for partitioning and leave the duration unknown.
        let start = if t.start != 0 { t.start } else { received_at };
        self.timestamp.append_value(start);
        self.end_timestamp.append_option(t.end);
        self.duration_ns.append_option(match (t.start, t.end) {
            (0, _) | (_, None) => None,
            (start, Some(end)) => Some(end.saturating_sub(start)),
        });
        append_id(&mut self.trace_id, &s.trace_id);
        append_id(&mut self.span_id, &s.span_id);
        append_id(&mut self.parent_span_id, &s.parent_span_id);
        self.trace_state.append_value(&s.trace_state);
        self.flags.append_value(s.flags);
        self.name.append_value(&s.name);
        append_enum(&mut self.kind, kind_name(s.kind), s.kind);
        let (code, message) = s
            .status
            .as_ref()
            .map_or((0, ""), |st| (st.code, st.message.as_str()));
        append_enum(&mut self.status_code, status_name(code), code);
        self.status_message.append_value(message);
        self.attributes.append(&s.attributes);
        self.dropped_attributes_count
            .append_value(s.dropped_attributes_count);
        self.events.append(&s.events);
        self.dropped_events_count
            .append_value(s.dropped_events_count);
        self.links.append(&s.links);
        self.dropped_links_count.append_value(s.dropped_links_count);
    }
}

/// The `events` column: `List<Struct{timestamp, name, attributes,
/// dropped_attributes_count}>`.
#[derive(Debug)]
struct Events {
    item: FieldRef,
    fields: Fields,
    timestamp: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttrsBuilder,
    dropped_attributes_count: UInt32Builder,
    offsets: Vec<i32>,
}

impl Events {
    fn new((item, fields): (FieldRef, Fields)) -> Self {
        Self {
            item,
            fields,
            timestamp: TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE),
            name: StringBuilder::new(),
            attributes: AttrsBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
            offsets: vec![0],
        }
    }

    /// Appends a span's events; their times were checked by `validate`.
    fn append(&mut self, events: &[Event]) {
        for e in events {
            self.timestamp.append_value(e.time_unix_nano as i64);
            self.name.append_value(&e.name);
            self.attributes.append(&e.attributes);
            self.dropped_attributes_count
                .append_value(e.dropped_attributes_count);
        }
        push_offset(&mut self.offsets, events.len());
    }

    fn finish(mut self) -> Result<ListArray, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
        ];
        list_of_structs(self.item, self.fields, children, self.offsets, None)
    }
}

/// The `links` column: `List<Struct{trace_id, span_id, trace_state, flags,
/// attributes, dropped_attributes_count}>`.
#[derive(Debug)]
struct Links {
    item: FieldRef,
    fields: Fields,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    attributes: AttrsBuilder,
    dropped_attributes_count: UInt32Builder,
    offsets: Vec<i32>,
}

impl Links {
    fn new((item, fields): (FieldRef, Fields)) -> Self {
        Self {
            item,
            fields,
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: AttrsBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
            offsets: vec![0],
        }
    }

    /// Appends a span's links; their ids were checked by `validate`.
    fn append(&mut self, links: &[Link]) {
        for l in links {
            append_id(&mut self.trace_id, &l.trace_id);
            append_id(&mut self.span_id, &l.span_id);
            self.trace_state.append_value(&l.trace_state);
            self.flags.append_value(l.flags);
            self.attributes.append(&l.attributes);
            self.dropped_attributes_count
                .append_value(l.dropped_attributes_count);
        }
        push_offset(&mut self.offsets, links.len());
    }

    fn finish(mut self) -> Result<ListArray, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
        ];
        list_of_structs(self.item, self.fields, children, self.offsets, None)
    }
}

/// Checks a span: ids of the right length (trace and span id required),
/// times that fit, link ids likewise.
fn validate(s: &Span, stamp: &Stamp<'_>) -> Result<Times, String> {
    check_id(&s.trace_id, 16, "trace_id", true)?;
    check_id(&s.span_id, 8, "span_id", true)?;
    check_id(&s.parent_span_id, 8, "parent_span_id", false)?;
    let start = nanos(s.start_time_unix_nano, "start_time_unix_nano")?;
    let end = nanos(s.end_time_unix_nano, "end_time_unix_nano")?;
    if start != 0 {
        stamp.window.check(start, "start_time_unix_nano")?;
    } else {
        stamp.window.check(
            stamp.received_at_nanos,
            "receive time (start_time_unix_nano unset)",
        )?;
    }
    if start != 0 && end != 0 && end < start {
        return Err(format!(
            "end_time_unix_nano {end} is before start_time_unix_nano {start}"
        ));
    }
    for (i, e) in s.events.iter().enumerate() {
        nanos(e.time_unix_nano, "time_unix_nano").map_err(|m| format!("event {i}: {m}"))?;
    }
    for (i, l) in s.links.iter().enumerate() {
        check_id(&l.trace_id, 16, "trace_id", true)
            .and_then(|()| check_id(&l.span_id, 8, "span_id", true))
            .map_err(|m| format!("link {i}: {m}"))?;
    }
    Ok(Times {
        start,
        end: (end != 0).then_some(end),
    })
}

pub(crate) fn convert(req: &ExportTraceServiceRequest, stamp: &Stamp<'_>) -> Converted {
    let schema = spans_schema();
    let mut ctx = Context::new(&schema);
    let mut cols = Columns::new(
        list_struct_fields(&schema, "events"),
        list_struct_fields(&schema, "links"),
    );
    let mut rejections = Rejections::default();
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        ctx.resource(rs.resource.as_ref(), &rs.schema_url);
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            ctx.scope(ss.scope.as_ref(), &ss.schema_url);
            for (pi, span) in ss.spans.iter().enumerate() {
                match validate(span, stamp) {
                    Ok(times) => {
                        cols.append(span, times, stamp.received_at_nanos);
                        ctx.row();
                    }
                    Err(e) => rejections.add(1, || {
                        format!("span {pi} of scope {si} of resource {ri}: {e}")
                    }),
                }
            }
        }
    }
    let accepted = ctx.rows() as u64;
    finish(columns(ctx, cols, stamp), accepted, rejections)
}

fn columns(ctx: Context, mut cols: Columns, stamp: &Stamp<'_>) -> Result<RecordBatch, ArrowError> {
    let shared = ctx.finish(stamp)?;
    SpanColumns {
        tenant: shared.tenant,
        timestamp: cols.timestamp.finish(),
        end_timestamp: cols.end_timestamp.finish(),
        duration_ns: cols.duration_ns.finish(),
        trace_id: cols.trace_id.finish(),
        span_id: cols.span_id.finish(),
        parent_span_id: cols.parent_span_id.finish(),
        trace_state: cols.trace_state.finish(),
        flags: cols.flags.finish(),
        name: cols.name.finish(),
        kind: cols.kind.finish(),
        status_code: cols.status_code.finish(),
        status_message: cols.status_message.finish(),
        service_name: shared.service_name,
        attributes: cols.attributes.finish(),
        dropped_attributes_count: cols.dropped_attributes_count.finish(),
        events: cols.events.finish()?,
        dropped_events_count: cols.dropped_events_count.finish(),
        links: cols.links.finish()?,
        dropped_links_count: cols.dropped_links_count.finish(),
        tail: shared.tail,
    }
    .into_batch()
}
