//! Real OpenTelemetry SDK clients (the `opentelemetry-otlp` exporters) send
//! logs, spans and metrics over gRPC, HTTP/protobuf and HTTP/JSON for two
//! tenants; SQL reads back exact counts and values, and neither tenant sees
//! the other's rows.
use std::collections::HashMap;

use bulkhead_e2e::TestServer;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    Http(Protocol),
}

struct Target {
    grpc: String,
    http: String,
    key: String,
    transport: Transport,
}

impl Target {
    fn metadata(&self) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
        let mut md = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
        md.insert(
            "authorization",
            format!("Bearer {}", self.key).parse().unwrap(),
        );
        md
    }
    fn headers(&self) -> HashMap<String, String> {
        HashMap::from([("authorization".to_string(), format!("Bearer {}", self.key))])
    }
    fn logs(&self) -> LogExporter {
        match self.transport {
            Transport::Grpc => LogExporter::builder()
                .with_tonic()
                .with_endpoint(&self.grpc)
                .with_metadata(self.metadata())
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build(),
            Transport::Http(p) => LogExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/logs", self.http))
                .with_protocol(p)
                .with_headers(self.headers())
                .build(),
        }
        .unwrap()
    }
    fn spans(&self) -> SpanExporter {
        match self.transport {
            Transport::Grpc => SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&self.grpc)
                .with_metadata(self.metadata())
                .build(),
            Transport::Http(p) => SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", self.http))
                .with_protocol(p)
                .with_headers(self.headers())
                .build(),
        }
        .unwrap()
    }
    fn metrics(&self) -> MetricExporter {
        match self.transport {
            Transport::Grpc => MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&self.grpc)
                .with_metadata(self.metadata())
                .build(),
            Transport::Http(p) => MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/metrics", self.http))
                .with_protocol(p)
                .with_headers(self.headers())
                .build(),
        }
        .unwrap()
    }
}

/// Sends `n` log records, `n` spans (one of them an error with an event) and
/// two metrics as service `service`, through the real SDK.
fn send_everything(target: Target, service: &'static str, n: i64) {
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .build();

    let logs = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(target.logs())
        .build();
    let logger = logs.logger("e2e-logger");
    for i in 0..n {
        let mut rec = logger.create_log_record();
        rec.set_body(AnyValue::String(format!("log-{i}").into()));
        rec.set_severity_number(Severity::Warn);
        rec.set_severity_text("WARN");
        rec.add_attribute("i", i);
        logger.emit(rec);
    }
    logs.shutdown().unwrap();

    let traces = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(target.spans())
        .build();
    let tracer = traces.tracer("e2e-tracer");
    for i in 0..n {
        let mut span = tracer
            .span_builder(format!("op-{i}"))
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("i", i)])
            .start(&tracer);
        if i == 0 {
            span.add_event("boom", vec![KeyValue::new("why", "test")]);
            span.set_status(Status::error("failed on purpose"));
        }
        span.end();
    }
    traces.shutdown().unwrap();

    let metrics = SdkMeterProvider::builder()
        .with_resource(resource)
        // The SDK's default reader runs on a plain thread; tonic needs Tokio.
        .with_reader(
            PeriodicReader::builder(target.metrics(), opentelemetry_sdk::runtime::Tokio).build(),
        )
        .build();
    let meter = metrics.meter("e2e-meter");
    let counter = meter.u64_counter("requests").build();
    let histogram = meter.f64_histogram("latency").with_unit("ms").build();
    for i in 0..n {
        counter.add(1, &[KeyValue::new("route", "/x")]);
        histogram.record(i as f64, &[]);
    }
    // shutdown exports the final (cumulative) collection once
    metrics.shutdown().unwrap();
}

async fn send(srv: &TestServer, tenant: &str, transport: Transport, service: &'static str, n: i64) {
    let target = Target {
        grpc: srv.grpc_endpoint(),
        http: srv.http_endpoint(),
        key: srv.key(tenant, "ingest"),
        transport,
    };
    // The SDK's simple processors block; keep them off the async workers.
    tokio::task::spawn_blocking(move || send_everything(target, service, n))
        .await
        .unwrap();
}

async fn assert_tenant_sees_exactly(srv: &TestServer, tenant: &str, service: &str, n: i64) {
    let key = srv.key(tenant, "query");
    let q = |sql: String| {
        let key = key.clone();
        async move { srv.scalar(&key, &sql).await }
    };
    // logs
    assert_eq!(q("SELECT count(*) FROM logs".into()).await, json!(n));
    assert_eq!(
        q(format!("SELECT count(*) FROM logs WHERE service_name = '{service}' AND severity_number = 13 AND severity_text = 'WARN' AND body_type = 'string'")).await,
        json!(n)
    );
    assert_eq!(
        q("SELECT sum(CAST(attr(attributes, 'i') AS BIGINT)) FROM logs".into()).await,
        json!(n * (n - 1) / 2)
    );
    assert_eq!(
        q("SELECT body FROM logs WHERE attributes['i'] = '3'".into()).await,
        json!("log-3")
    );
    assert_eq!(
        q("SELECT DISTINCT scope_name FROM logs".into()).await,
        json!("e2e-logger")
    );
    assert_eq!(
        q("SELECT DISTINCT attr(resource_attributes, 'deployment.environment') FROM logs".into())
            .await,
        json!("test")
    );
    // spans
    assert_eq!(
        q("SELECT count(*) FROM spans WHERE kind = 'Server'".into()).await,
        json!(n)
    );
    assert_eq!(
        q("SELECT name FROM spans WHERE status_code = 'Error' AND status_message = 'failed on purpose'".into()).await,
        json!("op-0")
    );
    assert_eq!(
        q("SELECT events[1]['name'] FROM spans WHERE name = 'op-0'".into()).await,
        json!("boom")
    );
    assert_eq!(
        q("SELECT count(DISTINCT trace_id) FROM spans WHERE length(trace_id) = 32 AND length(span_id) = 16 AND duration_ns >= 0".into()).await,
        json!(n)
    );
    // metrics: one cumulative point per collection; the last holds the total
    assert_eq!(
        q("SELECT max(value) FROM metrics WHERE metric_name = 'requests' AND metric_type = 'sum' AND is_monotonic AND aggregation_temporality = 'cumulative' AND attributes['route'] = '/x'".into()).await,
        json!(n as f64)
    );
    assert_eq!(
        q("SELECT max(count) FROM metrics WHERE metric_name = 'latency' AND metric_type = 'histogram' AND metric_unit = 'ms'".into()).await,
        json!(n)
    );
    assert_eq!(
        q("SELECT max(sum) FROM metrics WHERE metric_name = 'latency'".into()).await,
        json!((n * (n - 1) / 2) as f64)
    );
    // every row of every table is the caller's
    for table in ["logs", "spans", "metrics"] {
        let r = srv
            .query(
                &key,
                &format!("SELECT DISTINCT tenant, received_by FROM {table}"),
            )
            .await;
        assert_eq!(
            r.rows(),
            &vec![json!({"tenant": tenant, "received_by": "test-node"})],
            "{table}"
        );
    }
}

fn server() -> bulkhead_e2e::TestServerBuilder {
    TestServer::builder()
        .tenant("alpha", "ingest")
        .tenant("alpha", "query")
        .tenant("beta", "ingest")
        .tenant("beta", "query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_protobuf_clients_for_two_tenants() {
    let srv = server().start().await;
    send(&srv, "alpha", Transport::Grpc, "svc-alpha", 25).await;
    send(
        &srv,
        "beta",
        Transport::Http(Protocol::HttpBinary),
        "svc-beta",
        7,
    )
    .await;
    assert_tenant_sees_exactly(&srv, "alpha", "svc-alpha", 25).await;
    assert_tenant_sees_exactly(&srv, "beta", "svc-beta", 7).await;
    // a service name of the other tenant matches nothing
    let r = srv
        .query(
            &srv.key("beta", "query"),
            "SELECT count(*) AS n FROM logs WHERE service_name = 'svc-alpha'",
        )
        .await;
    assert_eq!(r.rows()[0]["n"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_client() {
    let srv = server().start().await;
    send(
        &srv,
        "beta",
        Transport::Http(Protocol::HttpJson),
        "svc-json",
        12,
    )
    .await;
    assert_tenant_sees_exactly(&srv, "beta", "svc-json", 12).await;
    let r = srv
        .query(
            &srv.key("alpha", "query"),
            "SELECT count(*) AS n FROM spans",
        )
        .await;
    assert_eq!(r.rows()[0]["n"], json!(0));
}

/// The OpenTelemetry Python SDK's own exporters: gRPC (plain and gzip) and
/// HTTP protobuf (plain and gzip), every signal, each data point kind the
/// SDK's synchronous instruments make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exporters_over_grpc_and_http() {
    let srv = server().start().await;
    let key = srv.key("alpha", "ingest");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/otel_sdk_export.py");
    let (grpc, http) = (srv.grpc_endpoint(), srv.http_endpoint());
    bulkhead_e2e::run_python(script, &[&key, grpc.trim_start_matches("http://"), &http]).await;
    let q = srv.key("alpha", "query");
    for transport in ["grpc", "grpc-gzip", "http", "http-gzip"] {
        let service = format!("py-{transport}");
        let r = srv
            .query(
                &q,
                &format!(
                    "SELECT (SELECT count(*) FROM logs WHERE service_name = '{service}') AS logs, \
                     (SELECT count(*) FROM spans WHERE service_name = '{service}') AS spans, \
                     (SELECT count(*) FROM spans WHERE service_name = '{service}' AND parent_span_id IS NOT NULL) AS children, \
                     (SELECT count(DISTINCT metric_type) FROM metrics WHERE service_name = '{service}') AS kinds, \
                     (SELECT sum(value_int) FROM metrics WHERE service_name = '{service}' AND metric_name = 'py.requests') AS requests, \
                     (SELECT sum(count) FROM metrics WHERE service_name = '{service}' AND metric_name = 'py.latency') AS latencies"
                ),
            )
            .await;
        assert_eq!(
            r.rows(),
            &vec![
                json!({"logs": 3, "spans": 2, "children": 1, "kinds": 3, "requests": 5, "latencies": 1})
            ],
            "{transport}"
        );
    }
    // beta saw nothing of it
    let r = srv
        .query(&srv.key("beta", "query"), "SELECT count(*) AS n FROM logs")
        .await;
    assert_eq!(r.rows()[0]["n"], json!(0));
}
