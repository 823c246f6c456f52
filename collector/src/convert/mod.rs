//! OTLP to Arrow conversion: one `RecordBatch` per export request, in the
//! schemas of [`bulkhead_store::schema`].
//!
//! Each signal walks resource -> scope -> record and appends to column
//! builders. Resource and scope columns are built once per resource/scope and
//! expanded to rows with `take` ([`common`]). A record that fails validation
//! (bad id length, out-of-range time, histogram shape, metric without data)
//! is rejected on its own; the rest of the request is kept, as OTLP partial
//! success requires.
use arrow::array::StringBuilder;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

mod attrs;
mod common;
mod logs;
mod metrics;
mod traces;

#[cfg(test)]
mod tests;

/// Who received a request, for whom, under which policy: the values of the
/// `tenant` and lineage columns of every row.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub tenant: &'a str,
    pub policy_version: &'a str,
    pub node: &'a str,
    pub received_at_nanos: i64,
    /// The event times accepted; records outside are rejected one by one.
    pub window: EventWindow,
}

/// The accepted range of event time (inclusive, nanoseconds since the epoch).
/// It keeps client clocks and hostile values out of the store: nothing far
/// in the past (older than the tenant keeps data) or in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    pub from: i64,
    pub until: i64,
}

impl EventWindow {
    /// Every time OTLP can express in Arrow's `i64` nanoseconds.
    pub const ANY: EventWindow = EventWindow {
        from: 0,
        until: i64::MAX,
    };

    /// `[now - max_age, now + max_future]`, saturating; `None` age: no
    /// lower bound.
    pub fn around(
        now_nanos: i64,
        max_age: Option<std::time::Duration>,
        max_future: std::time::Duration,
    ) -> Self {
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        EventWindow {
            from: max_age.map_or(0, |a| now_nanos.saturating_sub(nanos(a)).max(0)),
            until: now_nanos.saturating_add(nanos(max_future)),
        }
    }

    /// Checks the time a record is filed under; the message names the bound.
    pub(crate) fn check(&self, nanos: i64, field: &str) -> Result<(), String> {
        if nanos < self.from {
            Err(format!(
                "{field} {nanos} ({}) is before the accepted window, which starts at {} ({}): older data is past the tenant's retention",
                rfc3339(nanos),
                self.from,
                rfc3339(self.from)
            ))
        } else if nanos > self.until {
            Err(format!(
                "{field} {nanos} ({}) is after the accepted window, which ends at {} ({}): too far in the future",
                rfc3339(nanos),
                self.until,
                rfc3339(self.until)
            ))
        } else {
            Ok(())
        }
    }
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The outcome of converting one export request.
#[derive(Debug)]
pub struct Converted {
    /// The accepted records; `None` when none was accepted.
    pub batch: Option<RecordBatch>,
    /// Rows in `batch` (log records, spans or data points).
    pub accepted: u64,
    /// Records left out because they were invalid.
    pub rejected: u64,
    /// The first few distinct reasons for rejections, each naming where.
    pub errors: Vec<String>,
}

/// Converts logs to a batch in [`bulkhead_store::schema::logs_schema`].
pub fn logs(req: &ExportLogsServiceRequest, stamp: &Stamp<'_>) -> Converted {
    logs::convert(req, stamp)
}

/// Converts spans to a batch in [`bulkhead_store::schema::spans_schema`].
pub fn spans(req: &ExportTraceServiceRequest, stamp: &Stamp<'_>) -> Converted {
    traces::convert(req, stamp)
}

/// Converts metrics to a batch in [`bulkhead_store::schema::metrics_schema`],
/// one row per data point.
pub fn metrics(req: &ExportMetricsServiceRequest, stamp: &Stamp<'_>) -> Converted {
    metrics::convert(req, stamp)
}

/// How many distinct rejection messages a [`Converted`] carries at most.
const MAX_ERRORS: usize = 5;

/// Counts rejected records and keeps the first few distinct messages.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    count: u64,
    messages: Vec<String>,
}

impl Rejections {
    /// Rejects one or more records; `message` is only formatted while there
    /// is room for it, so a flood of bad records costs no allocations.
    pub(crate) fn add(&mut self, records: u64, message: impl FnOnce() -> String) {
        self.count += records;
        if self.messages.len() < MAX_ERRORS {
            let m = message();
            tracing::debug!(reason = %m, "rejected OTLP record");
            if !self.messages.contains(&m) {
                self.messages.push(m);
            }
        }
    }
}

/// Assembles the batch from columns in schema order.
pub(crate) fn finish(
    batch: Result<RecordBatch, ArrowError>,
    accepted: u64,
    mut rejections: Rejections,
) -> Converted {
    if accepted == 0 {
        return Converted {
            batch: None,
            accepted,
            rejected: rejections.count,
            errors: rejections.messages,
        };
    }
    match batch {
        Ok(batch) => Converted {
            batch: Some(batch),
            accepted,
            rejected: rejections.count,
            errors: rejections.messages,
        },
        // Only a bug in this module can get here; refuse the records rather
        // than store something mis-shaped, and say so.
        Err(e) => {
            tracing::error!(error = %e, "OTLP conversion built a batch that does not fit its schema");
            rejections.add(accepted, || {
                format!("internal error converting the request: {e}")
            });
            Converted {
                batch: None,
                accepted: 0,
                rejected: rejections.count,
                errors: rejections.messages,
            }
        }
    }
}

/// A time in OTLP's `u64` nanoseconds as Arrow's `i64`; times after 2262
/// do not fit.
pub(crate) fn nanos(v: u64, field: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("{field} {v} is out of range (after the year 2262)"))
}

/// Checks a trace (16 bytes) or span (8 bytes) id; empty passes unless required.
pub(crate) fn check_id(id: &[u8], len: usize, field: &str, required: bool) -> Result<(), String> {
    match id.len() {
        0 if required => Err(format!("{field} is required")),
        0 => Ok(()),
        n if n == len => Ok(()),
        n => Err(format!("{field} must be {len} bytes, got {n}")),
    }
}

/// Appends an id (already checked to be at most 16 bytes) as lower-case hex,
/// or null when empty.
pub(crate) fn append_id(b: &mut StringBuilder, id: &[u8]) {
    let mut buf = [0u8; 32];
    match id.len() {
        0 => b.append_null(),
        n if n <= 16 => {
            let out = &mut buf[..2 * n];
            // Both cannot fail: the buffer is exactly twice the input and hex is ASCII.
            if hex::encode_to_slice(id, out).is_ok() {
                if let Ok(s) = std::str::from_utf8(out) {
                    b.append_value(s);
                    return;
                }
            }
            b.append_null();
        }
        _ => b.append_value(hex::encode(id)),
    }
}
