//! OTLP log records to the `logs` table.

use arrow::array::{Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bulkhead_store::schema::{logs_schema, LogColumns, TIME_ZONE};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::attrs::{self, AttrsBuilder};
use super::common::Context;
use super::{append_id, check_id, finish, nanos, Converted, Rejections, Stamp};

/// The trace-flags bits of `LogRecord.flags` (`LOG_RECORD_FLAGS_TRACE_FLAGS_MASK`).
const TRACE_FLAGS_MASK: u32 = 0xff;

#[derive(Debug)]
struct Columns {
    timestamp: TimestampNanosecondBuilder,
    observed_timestamp: TimestampNanosecondBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_flags: UInt32Builder,
    severity_text: StringBuilder,
    severity_number: Int32Builder,
    body: StringBuilder,
    body_type: StringBuilder,
    event_name: StringBuilder,
    attributes: AttrsBuilder,
    dropped_attributes_count: UInt32Builder,
    flags: UInt32Builder,
    scratch: String,
}

impl Columns {
    fn new() -> Self {
        Self {
            timestamp: TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE),
            observed_timestamp: TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_flags: UInt32Builder::new(),
            severity_text: StringBuilder::new(),
            severity_number: Int32Builder::new(),
            body: StringBuilder::new(),
            body_type: StringBuilder::new(),
            event_name: StringBuilder::new(),
            attributes: AttrsBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
            flags: UInt32Builder::new(),
            scratch: String::new(),
        }
    }

    fn append(&mut self, r: &LogRecord, times: Times) {
        self.timestamp.append_value(times.event);
        self.observed_timestamp.append_option(times.observed);
        append_id(&mut self.trace_id, &r.trace_id);
        append_id(&mut self.span_id, &r.span_id);
        self.trace_flags.append_value(r.flags & TRACE_FLAGS_MASK);
        self.severity_text.append_value(&r.severity_text);
        self.severity_number.append_value(r.severity_number);
        match attrs::render_body(r.body.as_ref(), &mut self.scratch) {
            Some((text, kind)) => {
                self.body.append_value(text);
                self.body_type.append_value(kind);
            }
            None => {
                self.body.append_null();
                self.body_type.append_null();
            }
        }
        self.event_name.append_value(&r.event_name);
        self.attributes.append(&r.attributes);
        self.dropped_attributes_count
            .append_value(r.dropped_attributes_count);
        self.flags.append_value(r.flags);
    }
}

#[derive(Debug, Clone, Copy)]
struct Times {
    event: i64,
    observed: Option<i64>,
}

/// Checks a record and picks its event time: `time_unix_nano`, else
/// `observed_time_unix_nano`, else the receive time (the spec allows either
/// time to be unset; the row still needs a partition).
fn validate(r: &LogRecord, stamp: &Stamp<'_>) -> Result<Times, String> {
    check_id(&r.trace_id, 16, "trace_id", false)?;
    check_id(&r.span_id, 8, "span_id", false)?;
    let time = nanos(r.time_unix_nano, "time_unix_nano")?;
    let observed = nanos(r.observed_time_unix_nano, "observed_time_unix_nano")?;
    let observed = (observed != 0).then_some(observed);
    let (event, field) = match (time, observed) {
        (t, _) if t != 0 => (t, "time_unix_nano"),
        (_, Some(o)) => (o, "observed_time_unix_nano"),
        _ => (stamp.received_at_nanos, "receive time"),
    };
    stamp.window.check(event, field)?;
    Ok(Times { event, observed })
}

pub(crate) fn convert(req: &ExportLogsServiceRequest, stamp: &Stamp<'_>) -> Converted {
    let schema = logs_schema();
    let mut ctx = Context::new(&schema);
    let mut cols = Columns::new();
    let mut rejections = Rejections::default();
    for (ri, rl) in req.resource_logs.iter().enumerate() {
        ctx.resource(rl.resource.as_ref(), &rl.schema_url);
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            ctx.scope(sl.scope.as_ref(), &sl.schema_url);
            for (li, record) in sl.log_records.iter().enumerate() {
                match validate(record, stamp) {
                    Ok(times) => {
                        cols.append(record, times);
                        ctx.row();
                    }
                    Err(e) => rejections.add(1, || {
                        format!("log record {li} of scope {si} of resource {ri}: {e}")
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
    LogColumns {
        tenant: shared.tenant,
        timestamp: cols.timestamp.finish(),
        observed_timestamp: cols.observed_timestamp.finish(),
        trace_id: cols.trace_id.finish(),
        span_id: cols.span_id.finish(),
        trace_flags: cols.trace_flags.finish(),
        severity_text: cols.severity_text.finish(),
        severity_number: cols.severity_number.finish(),
        service_name: shared.service_name,
        body: cols.body.finish(),
        body_type: cols.body_type.finish(),
        event_name: cols.event_name.finish(),
        attributes: cols.attributes.finish(),
        dropped_attributes_count: cols.dropped_attributes_count.finish(),
        flags: cols.flags.finish(),
        tail: shared.tail,
    }
    .into_batch()
}
