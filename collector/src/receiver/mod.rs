//! OTLP receivers: gRPC ([`grpc`]) and HTTP ([`http`]). Both check the key
//! and the tenant's admission before reading the body, read it with a size
//! bound, and hand decompression, decoding and ingest to the
//! [`Pipeline`](crate::pipeline::Pipeline)'s worker pool.

pub mod grpc;
pub mod http;
mod lenient;

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

/// A protobuf decoding error as a request's error: `what` names the part
/// (`body`, `message`). prost names every field on the way to the fault, so
/// for a deeply nested value the text runs to kilobytes of the same two
/// fields; past a few hundred characters the middle is left out, keeping
/// where the path starts and what went wrong at its end.
pub(crate) fn protobuf_error(what: &str, e: &prost::DecodeError) -> ReceiveError {
    const HEAD: usize = 160;
    const TAIL: usize = 200;
    let text = e.to_string();
    let text = if text.len() > HEAD + TAIL + 40 {
        let head = text.floor_char_boundary(HEAD);
        let tail = text.ceil_char_boundary(text.len() - TAIL);
        format!(
            "{} [... {} characters of the field path left out ...] {}",
            &text[..head],
            tail - head,
            &text[tail..]
        )
    } else {
        text
    };
    ReceiveError::BadRequest(format!(
        "{what} is not a valid OTLP protobuf message: {text}"
    ))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    fn nested(depth: usize) -> Vec<u8> {
        let mut value = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..depth {
            value = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(value),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_deep_decoding_error_keeps_its_ends_and_leaves_out_the_middle() {
        let e = ExportLogsServiceRequest::decode(&nested(200)[..]).unwrap_err();
        let full = e.to_string();
        assert!(full.len() > 1_500, "{}", full.len());
        let ReceiveError::BadRequest(text) = protobuf_error("body", &e) else {
            panic!("a bad request")
        };
        assert!(text.len() < 500, "{} characters: {text}", text.len());
        assert!(text.starts_with("body is not a valid OTLP protobuf message: "));
        assert!(
            text.contains("ExportLogsServiceRequest.resource_logs"),
            "{text}"
        );
        assert!(text.contains("recursion limit reached"), "{text}");
        assert!(text.contains("characters of the field path left out"));
        // a short one is whole
        let e = ExportLogsServiceRequest::decode(&[0x0a, 0x05, 0x01][..]).unwrap_err();
        let ReceiveError::BadRequest(text) = protobuf_error("message", &e) else {
            panic!("a bad request")
        };
        assert_eq!(
            text,
            format!("message is not a valid OTLP protobuf message: {e}")
        );
    }
}
