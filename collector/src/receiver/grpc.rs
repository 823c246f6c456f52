//! OTLP/gRPC: the `Export` method of the three collector services, served
//! as unary gRPC by hand rather than through generated code.
//!
//! Generated servers decompress and decode the message on the async
//! runtime. Here the runtime only checks the credentials and the tenant's
//! admission (before a byte of the body is read), reads the length-prefixed
//! frame with a size bound, and answers; decompression, protobuf decoding,
//! conversion and redaction run on the pipeline's bounded worker pool, like
//! OTLP/HTTP's.
//!
//! Wire format (gRPC over HTTP/2): one message framed as a compressed flag
//! byte and a big-endian u32 length; `grpc-encoding` names the compression
//! of a flagged frame; the outcome is in the `grpc-status` and
//! `grpc-message` trailers (in the headers of a trailers-only response).
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Bytes;
use bulkhead_rules::{Authenticator, Principal, Scope};
use http_body_util::BodyExt;
use prost::Message;
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::Status;
use tracing::Instrument;

use crate::error::ReceiveError;
use crate::pipeline::{Export, Outcome, Pipeline};
use crate::receiver::{decompress, logs_response, metrics_response, traces_response};
use bulkhead_rules::keys::bearer_token;

/// The compressions a request frame may use.
const ACCEPTED_ENCODINGS: &str = "gzip,zstd";

/// One OTLP signal's gRPC service.
pub trait Signal: Send + Sync + 'static {
    /// The fully qualified service name (the first path segment).
    const NAME: &'static str;
    /// Decodes the request message into the pipeline's export.
    fn decode(bytes: &[u8]) -> Result<Export, prost::DecodeError>;
    /// The encoded `Export*ServiceResponse` for an outcome.
    fn response(outcome: Outcome) -> Vec<u8>;
}

/// `opentelemetry.proto.collector.logs.v1.LogsService`.
#[derive(Debug)]
pub enum Logs {}
/// `opentelemetry.proto.collector.trace.v1.TraceService`.
#[derive(Debug)]
pub enum Traces {}
/// `opentelemetry.proto.collector.metrics.v1.MetricsService`.
#[derive(Debug)]
pub enum Metrics {}

impl Signal for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    fn decode(bytes: &[u8]) -> Result<Export, prost::DecodeError> {
        Message::decode(bytes).map(Export::Logs)
    }
    fn response(outcome: Outcome) -> Vec<u8> {
        logs_response(outcome).encode_to_vec()
    }
}

impl Signal for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    fn decode(bytes: &[u8]) -> Result<Export, prost::DecodeError> {
        Message::decode(bytes).map(Export::Traces)
    }
    fn response(outcome: Outcome) -> Vec<u8> {
        traces_response(outcome).encode_to_vec()
    }
}

impl Signal for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    fn decode(bytes: &[u8]) -> Result<Export, prost::DecodeError> {
        Message::decode(bytes).map(Export::Metrics)
    }
    fn response(outcome: Outcome) -> Vec<u8> {
        metrics_response(outcome).encode_to_vec()
    }
}

/// The gRPC service of signal `S`, to add to a `tonic` router.
pub struct GrpcService<S> {
    pipeline: Arc<Pipeline>,
    max_message: usize,
    signal: PhantomData<fn() -> S>,
}

impl<S> Clone for GrpcService<S> {
    fn clone(&self) -> Self {
        Self {
            pipeline: self.pipeline.clone(),
            max_message: self.max_message,
            signal: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("max_message", &self.max_message)
            .finish()
    }
}

impl<S: Signal> NamedService for GrpcService<S> {
    const NAME: &'static str = S::NAME;
}

/// The three services; `max_message` bounds a message both as sent
/// (compressed) and once decompressed.
pub fn services(
    pipeline: Arc<Pipeline>,
    max_message: usize,
) -> (GrpcService<Logs>, GrpcService<Traces>, GrpcService<Metrics>) {
    (
        GrpcService::new(pipeline.clone(), max_message),
        GrpcService::new(pipeline.clone(), max_message),
        GrpcService::new(pipeline, max_message),
    )
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

impl<S: Signal> Service<Request> for GrpcService<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl<S: Signal> GrpcService<S> {
    fn new(pipeline: Arc<Pipeline>, max_message: usize) -> Self {
        Self {
            pipeline,
            max_message,
            signal: PhantomData,
        }
    }

    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path();
        let is_export = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::NAME))
            .is_some_and(|rest| rest == "/Export");
        if !is_export {
            return trailers_only(Status::unimplemented(format!(
                "{} has no method {:?}; OTLP defines Export",
                S::NAME,
                req.uri().path()
            )));
        }
        let (parts, body) = req.into_parts();
        let encoding = match frame_encoding(&parts.headers) {
            Ok(e) => e,
            Err(status) => return trailers_only(status),
        };
        match self.export(&parts.headers, encoding, body).await {
            Ok(outcome) => ok_response(S::response(outcome)),
            Err(e) => {
                self.pipeline.refused(&e);
                trailers_only(e.grpc_status())
            }
        }
    }

    async fn export(
        &self,
        headers: &http::HeaderMap,
        encoding: Option<&'static str>,
        body: tonic::body::Body,
    ) -> Result<Outcome, ReceiveError> {
        // the key and the tenant's admission are checked before the body is read
        let principal = self.authenticate(headers)?;
        self.pipeline.admit(&principal)?;
        self.pipeline.check_in_flight()?;
        let span =
            tracing::info_span!("otlp_grpc", tenant = %principal.tenant, key = %principal.key_id);
        let (compressed_flag, message) = read_frame(body, self.max_message)
            .instrument(span.clone())
            .await?;
        let sent = message.len() as u64;
        // charged before any decompression or decoding
        self.pipeline.charge_bytes(&principal, sent)?;
        let held = self.pipeline.charge(&principal.tenant, sent)?;
        let pipeline = self.pipeline.clone();
        let max_message = self.max_message;
        let tenant = principal.tenant.clone();
        self.pipeline
            .offload(&tenant, move |turn| {
                let message = if compressed_flag {
                    let Some(name) = encoding else {
                        return Err(ReceiveError::BadRequest(
                            "the message is flagged compressed but no grpc-encoding was given"
                                .into(),
                        ));
                    };
                    decompress(Some(name), message, max_message)?
                } else {
                    message
                };
                // the decompressed message is what takes memory from here on
                let more =
                    pipeline.charge_more(&held, (message.len() as u64).saturating_sub(sent))?;
                let _held = (held, more);
                let mut export =
                    S::decode(&message).map_err(|e| super::protobuf_error("message", &e))?;
                pipeline.ingest(&principal, &mut export, turn)
            })
            .instrument(span)
            .await
    }

    fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, ReceiveError> {
        let token = bulkhead_rules::keys::authorization_value(
            headers
                .get_all("authorization")
                .iter()
                .map(|v| v.as_bytes()),
        )
        .and_then(bearer_token);
        token
            .clone()
            .and_then(|t| self.pipeline.tenants().authenticate(t))
            .and_then(|p| p.require(Scope::Ingest).map(|_| p))
            .map_err(|e| {
                self.pipeline.refused_auth(&e, token.ok(), "otlp_grpc");
                ReceiveError::Auth(e)
            })
    }
}

/// The compression a flagged frame uses, from `grpc-encoding`; an unknown
/// one is `UNIMPLEMENTED` naming what is accepted, as gRPC asks.
fn frame_encoding(headers: &http::HeaderMap) -> Result<Option<&'static str>, Status> {
    let Some(value) = headers.get("grpc-encoding") else {
        return Ok(None);
    };
    match value.to_str().unwrap_or("?").trim() {
        "identity" => Ok(None),
        "gzip" => Ok(Some("gzip")),
        "zstd" => Ok(Some("zstd")),
        other => Err(Status::unimplemented(format!(
            "grpc-encoding {other:?} is not supported; use {ACCEPTED_ENCODINGS} or identity"
        ))),
    }
}

/// Reads the one length-prefixed message of a unary call, refusing it as
/// soon as it passes `limit` (as sent). Returns the compressed flag and the
/// message bytes.
async fn read_frame(body: tonic::body::Body, limit: usize) -> Result<(bool, Bytes), ReceiveError> {
    const HEADER: usize = 5;
    let limited = http_body_util::Limited::new(body, limit.saturating_add(HEADER));
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ReceiveError::TooLarge { limit })
        }
        Err(e) => {
            return Err(ReceiveError::BadRequest(format!(
                "request body could not be read: {e}"
            )))
        }
    };
    parse_frame(bytes, limit)
}

fn parse_frame(bytes: Bytes, limit: usize) -> Result<(bool, Bytes), ReceiveError> {
    let Some(header) = bytes.get(..5) else {
        return Err(ReceiveError::BadRequest(format!(
            "a gRPC message needs a 5-byte frame header; the body has {} bytes",
            bytes.len()
        )));
    };
    let compressed = match header[0] {
        0 => false,
        1 => true,
        f => {
            return Err(ReceiveError::BadRequest(format!(
                "gRPC frame flag {f} is neither 0 (plain) nor 1 (compressed)"
            )))
        }
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > limit {
        return Err(ReceiveError::TooLarge { limit });
    }
    let rest = bytes.len() - 5;
    if rest != len {
        return Err(ReceiveError::BadRequest(format!(
            "the gRPC frame announces {len} bytes but {rest} follow (a unary call carries one message)"
        )));
    }
    Ok((compressed, bytes.slice(5..)))
}

/// An error as a trailers-only response (status in the headers).
fn trailers_only(status: Status) -> Response {
    let mut resp: Response = status.into_http();
    if let Ok(v) = http::HeaderValue::from_str(ACCEPTED_ENCODINGS) {
        resp.headers_mut().insert("grpc-accept-encoding", v);
    }
    resp
}

/// A successful unary response: one uncompressed frame, then `grpc-status: 0`.
fn ok_response(message: Vec<u8>) -> Response {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(framed))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let mut resp = http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(
        frames,
    )));
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-accept-encoding",
        http::HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, len: u32, payload: &[u8]) -> Bytes {
        let mut v = vec![flag];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(payload);
        Bytes::from(v)
    }

    #[test]
    fn a_well_formed_frame_is_split_into_flag_and_message() {
        let (c, m) = parse_frame(frame(0, 3, b"abc"), 10).unwrap();
        assert!(!c);
        assert_eq!(&m[..], b"abc");
        let (c, m) = parse_frame(frame(1, 0, b""), 10).unwrap();
        assert!(c);
        assert!(m.is_empty());
    }

    #[test]
    fn malformed_frames_are_named() {
        let e = parse_frame(Bytes::from_static(b"\0\0"), 10).unwrap_err();
        assert!(e.to_string().contains("5-byte frame header"), "{e}");
        let e = parse_frame(frame(2, 1, b"a"), 10).unwrap_err();
        assert!(e.to_string().contains("flag 2"), "{e}");
        let e = parse_frame(frame(0, 5, b"abc"), 10).unwrap_err();
        assert!(e.to_string().contains("announces 5 bytes but 3"), "{e}");
        let e = parse_frame(frame(0, 2, b"abc"), 10).unwrap_err();
        assert!(e.to_string().contains("announces 2 bytes but 3"), "{e}");
        // a length past the limit is refused from the header alone
        let e = parse_frame(frame(0, u32::MAX, b""), 10).unwrap_err();
        assert!(matches!(e, ReceiveError::TooLarge { limit: 10 }), "{e}");
    }

    #[test]
    fn unknown_encodings_are_unimplemented_and_name_the_accepted_ones() {
        let mut h = http::HeaderMap::new();
        assert_eq!(frame_encoding(&h).unwrap(), None);
        h.insert("grpc-encoding", http::HeaderValue::from_static("identity"));
        assert_eq!(frame_encoding(&h).unwrap(), None);
        h.insert("grpc-encoding", http::HeaderValue::from_static("zstd"));
        assert_eq!(frame_encoding(&h).unwrap(), Some("zstd"));
        h.insert("grpc-encoding", http::HeaderValue::from_static("snappy"));
        let s = frame_encoding(&h).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unimplemented);
        assert!(s.message().contains("\"snappy\"") && s.message().contains("gzip,zstd"));
    }
}
