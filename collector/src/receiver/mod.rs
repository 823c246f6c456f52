//! OTLP receivers: gRPC ([`grpc`]) and HTTP ([`http`]). Both check the key
//! and the tenant's admission before reading the body, read it with a size
//! bound, and hand decompression, decoding and ingest to the
//! [`Pipeline`](crate::pipeline::Pipeline)'s worker pool.

pub mod grpc;
pub mod http;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

use std::io::Read;

use bytes::Bytes;

use crate::error::ReceiveError;
use crate::pipeline::Outcome;

/// Undoes a compression (`None`: identity; `gzip`, `zstd`), refusing a body
/// that inflates past `limit` without ever holding more than `limit + 1`
/// bytes. Blocking: call it on the worker pool.
pub(crate) fn decompress(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, ReceiveError> {
    let read_limited = |reader: &mut dyn Read, name: &str| -> Result<Bytes, ReceiveError> {
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                ReceiveError::BadRequest(format!("{name} body could not be decompressed: {e}"))
            })?;
        if out.len() > limit {
            return Err(ReceiveError::TooLarge { limit });
        }
        Ok(Bytes::from(out))
    };
    match encoding {
        None => {
            if body.len() > limit {
                return Err(ReceiveError::TooLarge { limit });
            }
            Ok(body)
        }
        Some("gzip") => read_limited(&mut flate2::read::GzDecoder::new(&body[..]), "gzip"),
        Some("zstd") => {
            let mut decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                ReceiveError::BadRequest(format!("zstd body could not be decompressed: {e}"))
            })?;
            read_limited(&mut decoder, "zstd")
        }
        Some(other) => Err(ReceiveError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding {other:?}: use gzip, zstd or none"
        ))),
    }
}

// Partial success is set only when something was rejected: OTLP clients read
// an unset field as full success.

pub(crate) fn logs_response(o: Outcome) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (o.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: o.rejected as i64,
            error_message: o.error_message,
        }),
    }
}

pub(crate) fn traces_response(o: Outcome) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (o.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: o.rejected as i64,
            error_message: o.error_message,
        }),
    }
}

pub(crate) fn metrics_response(o: Outcome) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (o.rejected > 0).then_some(ExportMetricsPartialSuccess {
            rejected_data_points: o.rejected as i64,
            error_message: o.error_message,
        }),
    }
}
