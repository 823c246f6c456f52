//! OTLP receivers: gRPC ([`grpc`]) and HTTP ([`http`]), both handing decoded
//! requests to the [`Pipeline`](crate::pipeline::Pipeline).

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

use crate::pipeline::Outcome;

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
