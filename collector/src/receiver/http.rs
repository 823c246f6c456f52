//! OTLP/HTTP: `POST /v1/logs`, `/v1/traces`, `/v1/metrics`, protobuf or JSON,
//! uncompressed, gzip or zstd. Responses use the request's encoding.
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bulkhead_rules::{Authenticator, Principal, Scope};
use prost::Message;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::ReceiveError;
use crate::pipeline::{Export, Outcome, Pipeline};
use crate::receiver::{decompress, logs_response, metrics_response, traces_response};
use bulkhead_rules::keys::bearer_token;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The body encodings OTLP/HTTP allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Logs,
    Traces,
    Metrics,
}

struct HttpState {
    pipeline: Arc<Pipeline>,
    max_body: usize,
}

/// The OTLP/HTTP routes. Other methods on these paths get 405.
pub fn router(pipeline: Arc<Pipeline>, max_body: usize) -> Router {
    let state = Arc::new(HttpState { pipeline, max_body });
    Router::new()
        .route("/v1/logs", post(|s, h, b| export(s, h, b, Kind::Logs)))
        .route("/v1/traces", post(|s, h, b| export(s, h, b, Kind::Traces)))
        .route(
            "/v1/metrics",
            post(|s, h, b| export(s, h, b, Kind::Metrics)),
        )
        // The compressed body is bounded in `read_body`; the decompressed one in `decompress`.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error_response(err: &ReceiveError, encoding: Encoding) -> Response {
    err.log();
    let status = RpcStatus {
        code: err.grpc_code() as i32,
        message: err.to_string(),
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": status.code,
            "message": status.message,
        }))
        .unwrap_or_default(),
    };
    let mut resp = (
        err.http_status(),
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(after) = err.retry_after() {
        // whole seconds, rounded up: retrying early would only be refused again
        let secs = after.as_millis().div_ceil(1000).max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, ReceiveError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        "" => Err(ReceiveError::UnsupportedMediaType(
            "missing Content-Type: use application/x-protobuf or application/json".into(),
        )),
        other => Err(ReceiveError::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: use application/x-protobuf or application/json"
        ))),
    }
}

/// Undoes `Content-Encoding` (see [`decompress`]).
fn decompress_body(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ReceiveError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => decompress(None, body, limit),
        Some("x-gzip") => decompress(Some("gzip"), body, limit),
        Some(other) => decompress(Some(other), body, limit),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, ReceiveError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| super::protobuf_error("body", &e)),
        Encoding::Json => {
            // JSON text may start with a byte order mark (RFC 8259 lets a
            // parser ignore it; some writers on Windows add one)
            let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
            // serde would also take a struct from an array of its fields in
            // order: `[]` would be an empty request, acknowledged
            match body.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => {}
                first => {
                    return Err(ReceiveError::BadRequest(format!(
                        "body is not a valid OTLP JSON message: expected a JSON object, found {}",
                        match first {
                            None => "an empty body".to_string(),
                            Some(b'[') => "an array".to_string(),
                            Some(b) if b.is_ascii() => format!("{:?}", char::from(*b)),
                            Some(b) => format!("the byte 0x{b:02X}"),
                        }
                    )))
                }
            }
            super::lenient::from_slice(body).map_err(|e| {
                ReceiveError::BadRequest(format!("body is not a valid OTLP JSON message: {e}"))
            })
        }
    }
}

fn authenticate(state: &HttpState, headers: &HeaderMap) -> Result<Principal, ReceiveError> {
    let token = bulkhead_rules::keys::authorization_value(
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes()),
    )
    .and_then(bearer_token);
    let checked = token
        .clone()
        .and_then(|t| state.pipeline.tenants().authenticate(t))
        .and_then(|p| p.require(Scope::Ingest).map(|_| p));
    checked.map_err(|e| {
        state.pipeline.refused_auth(&e, token.ok(), "otlp_http");
        ReceiveError::Auth(e)
    })
}

async fn export(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Response {
    let encoding = match request_encoding(&headers) {
        Ok(e) => e,
        Err(e) => {
            state.pipeline.refused(&e);
            return error_response(&e, Encoding::Json);
        }
    };
    let result = async {
        // The key is checked before a byte of the body is read.
        let principal = authenticate(&state, &headers)?;
        // ... and so is the tenant's limit: over it, nothing more is done
        state.pipeline.admit(&principal)?;
        state.pipeline.check_in_flight()?;
        let span =
            tracing::info_span!("otlp_http", tenant = %principal.tenant, key = %principal.key_id);
        let body = read_body(body, state.max_body)
            .instrument(span.clone())
            .await?;
        let pipeline = state.pipeline.clone();
        let max_body = state.max_body;
        let compressed = body.len() as u64;
        // charged before any decompression or decoding
        state.pipeline.charge_bytes(&principal, compressed)?;
        let held = state.pipeline.charge(&principal.tenant, compressed)?;
        let tenant = principal.tenant.clone();
        state
            .pipeline
            .offload(&tenant, move |turn| {
                let body = decompress_body(&headers, body, max_body)?;
                // the decompressed body is what takes memory from here on
                let more =
                    pipeline.charge_more(&held, (body.len() as u64).saturating_sub(compressed))?;
                let _held = (held, more);
                let mut export = match kind {
                    Kind::Logs => Export::Logs(decode(encoding, &body)?),
                    Kind::Traces => Export::Traces(decode(encoding, &body)?),
                    Kind::Metrics => Export::Metrics(decode(encoding, &body)?),
                };
                pipeline.ingest(&principal, &mut export, turn)
            })
            .instrument(span)
            .await
    }
    .await;
    match result {
        Ok(outcome) => success_response(kind, encoding, outcome),
        Err(e) => {
            state.pipeline.refused(&e);
            error_response(&e, encoding)
        }
    }
}

/// Reads the (still compressed) body, refusing it as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReceiveError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ReceiveError::TooLarge { limit };
            }
            source = s.source();
        }
        ReceiveError::BadRequest(format!("request body could not be read: {e}"))
    })
}

fn success_response(kind: Kind, encoding: Encoding, o: Outcome) -> Response {
    let partial = o.rejected > 0;
    let body = match encoding {
        Encoding::Protobuf => match kind {
            Kind::Logs => logs_response(o).encode_to_vec(),
            Kind::Traces => traces_response(o).encode_to_vec(),
            Kind::Metrics => metrics_response(o).encode_to_vec(),
        },
        Encoding::Json => {
            let value = if partial {
                // int64 counts are strings in OTLP/JSON.
                let field = match kind {
                    Kind::Logs => "rejectedLogRecords",
                    Kind::Traces => "rejectedSpans",
                    Kind::Metrics => "rejectedDataPoints",
                };
                serde_json::json!({ "partialSuccess": { field: o.rejected.to_string(), "errorMessage": o.error_message } })
            } else {
                serde_json::json!({})
            };
            serde_json::to_vec(&value).unwrap_or_default()
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_types_are_recognised() {
        let enc = |ct| request_encoding(&headers(&[("content-type", ct)]));
        assert_eq!(enc("application/x-protobuf").unwrap(), Encoding::Protobuf);
        assert_eq!(
            enc("application/json; charset=utf-8").unwrap(),
            Encoding::Json
        );
        assert!(enc("text/plain")
            .unwrap_err()
            .to_string()
            .contains("text/plain"));
        assert!(request_encoding(&HeaderMap::new()).is_err());
    }

    #[test]
    fn a_json_body_must_be_an_object() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest as Logs;
        for (body, named) in [
            (&b"[]"[..], "found an array"),
            (b" \n[{}]", "found an array"),
            (b"", "found an empty body"),
            (b"null", "found 'n'"),
            (b"\"resourceLogs\"", "found '\"'"),
            (b"\xFE\xFF{}", "found the byte 0xFE"),
            (b"\xEF\xBB\xBF\xEF\xBB\xBF{}", "found the byte 0xEF"),
        ] {
            let err = decode::<Logs>(Encoding::Json, body).unwrap_err();
            assert!(
                matches!(&err, ReceiveError::BadRequest(m) if m.contains(named)),
                "{body:?}: {err}"
            );
        }
        let empty: Logs = decode(Encoding::Json, b" {}").unwrap();
        assert!(empty.resource_logs.is_empty());
    }

    #[test]
    fn a_json_body_may_start_with_a_byte_order_mark() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest as Logs;
        let body = b"\xEF\xBB\xBF {\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":\"hi\"}}]}]}]}";
        let req: Logs = decode(Encoding::Json, body).unwrap();
        assert_eq!(req.resource_logs[0].scope_logs[0].log_records.len(), 1);
    }

    #[test]
    fn a_gzip_bomb_is_refused_with_bounded_memory() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&chunk).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 128 << 10);
        let err = decompress_body(
            &headers(&[("content-encoding", "gzip")]),
            Bytes::from(bomb),
            1 << 20,
        )
        .unwrap_err();
        assert!(matches!(err, ReceiveError::TooLarge { limit } if limit == 1 << 20));
    }

    #[test]
    fn zstd_and_identity_bodies_pass_and_unknown_encodings_are_named() {
        let data = b"hello otlp".to_vec();
        let z = zstd::encode_all(&data[..], 3).unwrap();
        let out = decompress_body(
            &headers(&[("content-encoding", "zstd")]),
            Bytes::from(z),
            1024,
        )
        .unwrap();
        assert_eq!(&out[..], &data[..]);
        let out = decompress_body(&HeaderMap::new(), Bytes::from(data.clone()), 1024).unwrap();
        assert_eq!(&out[..], &data[..]);
        let err = decompress_body(
            &headers(&[("content-encoding", "br")]),
            Bytes::from(data),
            1024,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"br\""));
        let err = decompress_body(
            &headers(&[("content-encoding", "gzip")]),
            Bytes::from_static(b"not gzip"),
            1024,
        )
        .unwrap_err();
        assert!(matches!(err, ReceiveError::BadRequest(_)));
    }
}
