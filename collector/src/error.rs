//! Errors of the receivers, and the one place each becomes an HTTP or gRPC status.
use std::time::Duration;

use axum::http::StatusCode;
use bulkhead_rules::AuthError;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// Why an OTLP request was not (wholly) accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The body could not be decoded or is otherwise invalid as a whole.
    #[error("{0}")]
    BadRequest(String),
    #[error("request too large: over the limit of {limit} bytes, as sent or decompressed")]
    TooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A transient condition: the client should retry after `retry_after`.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// The tenant is over its ingest limit: retry after `retry_after`.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Duration,
    },
    /// The tenant may not send data any more (its keys were shredded): a
    /// permanent refusal, not to be retried.
    #[error("{0}")]
    Refused(String),
    /// Details are logged; the client gets a short message.
    #[error("internal error")]
    Internal(String),
}

impl ReceiveError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            ReceiveError::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ReceiveError::Auth(_) => StatusCode::UNAUTHORIZED,
            ReceiveError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ReceiveError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ReceiveError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReceiveError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ReceiveError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ReceiveError::Refused(_) => StatusCode::FORBIDDEN,
            ReceiveError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> Code {
        match self {
            ReceiveError::Auth(AuthError::Forbidden { .. }) => Code::PermissionDenied,
            ReceiveError::Auth(_) => Code::Unauthenticated,
            ReceiveError::BadRequest(_) | ReceiveError::UnsupportedMediaType(_) => {
                Code::InvalidArgument
            }
            ReceiveError::TooLarge { .. } => Code::ResourceExhausted,
            ReceiveError::Unavailable { .. } => Code::Unavailable,
            ReceiveError::Throttled { .. } => Code::ResourceExhausted,
            ReceiveError::Refused(_) => Code::PermissionDenied,
            ReceiveError::Internal(_) => Code::Internal,
        }
    }

    /// The gRPC status; retryable conditions carry `google.rpc.RetryInfo`.
    pub fn grpc_status(&self) -> tonic::Status {
        self.log();
        match self {
            ReceiveError::Unavailable { retry_after, .. }
            | ReceiveError::Throttled { retry_after, .. } => tonic::Status::with_error_details(
                self.grpc_code(),
                self.to_string(),
                ErrorDetails::with_retry_info(Some(*retry_after)),
            ),
            _ => tonic::Status::new(self.grpc_code(), self.to_string()),
        }
    }

    /// A fixed label for the self-metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReceiveError::Auth(AuthError::Forbidden { .. }) => "forbidden",
            ReceiveError::Auth(_) => "unauthenticated",
            ReceiveError::BadRequest(_) => "bad_request",
            ReceiveError::TooLarge { .. } => "too_large",
            ReceiveError::UnsupportedMediaType(_) => "unsupported_media_type",
            ReceiveError::Unavailable { .. } => "unavailable",
            ReceiveError::Throttled { .. } => "throttled",
            ReceiveError::Refused(_) => "refused",
            ReceiveError::Internal(_) => "internal",
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ReceiveError::Unavailable { retry_after, .. }
            | ReceiveError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Internal errors are logged in full; the rest at debug (clients see them).
    pub fn log(&self) {
        match self {
            ReceiveError::Internal(detail) => tracing::error!(error = %detail, "request failed"),
            other => tracing::debug!(error = %other, "request refused"),
        }
    }
}
