//! OTLP/gRPC: the three collector services. Credentials are checked by an
//! interceptor, before the request body is decoded.
use std::sync::Arc;

use bulkhead_rules::{Authenticator, Principal, Scope};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::ReceiveError;
use crate::pipeline::{Export, Outcome, Pipeline};
use crate::receiver::{logs_response, metrics_response, traces_response};
use bulkhead_rules::keys::bearer_token;

/// The gRPC receiver; one value serves all three services.
#[derive(Clone, Debug)]
pub struct GrpcReceiver {
    pipeline: Arc<Pipeline>,
}

/// Authenticates from the `authorization` metadata and requires `ingest`.
#[derive(Clone)]
pub struct Authenticate(Arc<dyn Authenticator>, Arc<Pipeline>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = bearer_token(value);
        let principal = token
            .clone()
            .and_then(|t| self.0.authenticate(t))
            .and_then(|p| p.require(Scope::Ingest).map(|_| p))
            .map_err(|e| {
                self.1.refused_auth(&e, token.ok(), "otlp_grpc");
                let e = ReceiveError::Auth(e);
                self.1.refused(&e);
                e.grpc_status()
            })?;
        // Runs before the message is decoded: a tenant over its limit costs
        // no decoding.
        self.1
            .admit(&principal)
            .and_then(|()| self.1.check_in_flight())
            .map_err(|e| {
                self.1.refused(&e);
                e.grpc_status()
            })?;
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

pub type Service<S> = InterceptedService<S, Authenticate>;

impl GrpcReceiver {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }

    /// The three services, with size limit and compression configured.
    #[allow(clippy::type_complexity)]
    pub fn services(
        self,
        max_message_size: usize,
    ) -> (
        Service<LogsServiceServer<GrpcReceiver>>,
        Service<TraceServiceServer<GrpcReceiver>>,
        Service<MetricsServiceServer<GrpcReceiver>>,
    ) {
        let auth = Authenticate(
            self.pipeline.tenants().clone() as Arc<dyn Authenticator>,
            self.pipeline.clone(),
        );
        let logs = LogsServiceServer::new(self.clone())
            .max_decoding_message_size(max_message_size)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
        let traces = TraceServiceServer::new(self.clone())
            .max_decoding_message_size(max_message_size)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
        let metrics = MetricsServiceServer::new(self)
            .max_decoding_message_size(max_message_size)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
        (
            InterceptedService::new(logs, auth.clone()),
            InterceptedService::new(traces, auth.clone()),
            InterceptedService::new(metrics, auth),
        )
    }

    async fn run<T: prost::Message>(
        &self,
        req: Request<T>,
        wrap: impl FnOnce(T) -> Export,
    ) -> Result<Outcome, Status> {
        let principal = req
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ReceiveError::Internal("request without principal".into()).grpc_status()
            })?;
        let span =
            tracing::info_span!("otlp_grpc", tenant = %principal.tenant, key = %principal.key_id);
        let message = req.into_inner();
        let size = message.encoded_len() as u64;
        let held = self
            .pipeline
            .charge_bytes(&principal, size)
            .and_then(|()| self.pipeline.charge(size))
            .map_err(|e| {
                self.pipeline.refused(&e);
                e.grpc_status()
            })?;
        let mut export = wrap(message);
        let pipeline = self.pipeline.clone();
        self.pipeline
            .offload(move || {
                let _held = held;
                pipeline.ingest(&principal, &mut export)
            })
            .instrument(span)
            .await
            .map_err(|e| {
                self.pipeline.refused(&e);
                e.grpc_status()
            })
    }
}

/// Corrects two status codes tonic gives before a handler runs, to what
/// OTLP asks for: an undecodable message is `INVALID_ARGUMENT` (tonic says
/// `INTERNAL`, which clients may retry), and a message over the size limit
/// is `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`). Both are
/// trailers-only responses, so the status is in the headers.
pub fn otlp_status_codes<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(resp.headers()) else {
        return resp;
    };
    let code = match status.code() {
        tonic::Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            tonic::Code::InvalidArgument
        }
        tonic::Code::OutOfRange if status.message().contains("message length too large") => {
            tonic::Code::ResourceExhausted
        }
        _ => return resp,
    };
    let fixed = Status::new(code, status.message().to_string());
    let headers = resp.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    if fixed.add_header(headers).is_err() {
        tracing::debug!("could not rewrite a gRPC status header");
    }
    resp
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let o = self.run(request, Export::Logs).await?;
        Ok(Response::new(logs_response(o)))
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let o = self.run(request, Export::Traces).await?;
        Ok(Response::new(traces_response(o)))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let o = self.run(request, Export::Metrics).await?;
        Ok(Response::new(metrics_response(o)))
    }
}
