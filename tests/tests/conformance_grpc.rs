//! OTLP/gRPC conformance (shared/CONFORMANCE.md items 15-17, 19, 20) with the
//! opentelemetry-proto tonic clients: unary and concurrent exports on all
//! three services, compression, credentials and scopes, bad data, partial
//! success and the message size limit.
use crate::common;

use bulkhead_e2e::TestServer;
use bytes::{Buf, BufMut};
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::json;
use tonic::codec::{CompressionEncoding, DecodeBuf, EncodeBuf};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

async fn server(max_body: u64) -> (TestServer, String, Channel) {
    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("a", "query")
        .max_body_size(max_body)
        .start()
        .await;
    let key = srv.key("a", "ingest,query");
    let channel = Channel::from_shared(srv.grpc_endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    (srv, key, channel)
}

/// `msg` with `authorization: <value>` metadata (none when `value` is None).
fn with_auth<T>(msg: T, value: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(v) = value {
        req.metadata_mut()
            .insert("authorization", v.parse().expect("ascii metadata"));
    }
    req
}

fn authed<T>(msg: T, key: &str) -> Request<T> {
    with_auth(msg, Some(&format!("Bearer {key}")))
}

/// Item 15: unary Export on the three services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_export_on_all_three_services() {
    let (srv, key, ch) = server(1 << 20).await;
    let r = LogsServiceClient::new(ch.clone())
        .export(authed(
            logs_request(vec![log("g-1", 0), log("g-2", 1)], vec![]),
            &key,
        ))
        .await
        .expect("logs export")
        .into_inner();
    assert_eq!(r.partial_success, None);
    let r = TraceServiceClient::new(ch.clone())
        .export(authed(
            traces_request(vec![span("g-span", id(16, 3), id(8, 4))]),
            &key,
        ))
        .await
        .expect("trace export")
        .into_inner();
    assert_eq!(r.partial_success, None);
    let r = MetricsServiceClient::new(ch)
        .export(authed(metrics_request(vec![gauge("g.g", &[0.5])]), &key))
        .await
        .expect("metrics export")
        .into_inner();
    assert_eq!(r.partial_success, None);

    let r = srv.query(&key, "SELECT body FROM logs ORDER BY body").await;
    assert_eq!(
        r.rows(),
        &vec![json!({"body": "g-1"}), json!({"body": "g-2"})]
    );
    let r = srv
        .query(&key, "SELECT name, trace_id, service_name FROM spans")
        .await;
    assert_eq!(
        r.rows(),
        &vec![json!({"name": "g-span", "trace_id": hex(&id(16, 3)), "service_name": "e2e"})]
    );
    let r = srv
        .query(&key, "SELECT metric_name, value FROM metrics")
        .await;
    assert_eq!(r.rows(), &vec![json!({"metric_name": "g.g", "value": 0.5})]);
}

/// Item 15: concurrent calls on one channel, all three services at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls() {
    let (srv, key, ch) = server(1 << 20).await;
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let (ch, key) = (ch.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lc, mut tc, mut mc) = (
                LogsServiceClient::new(ch.clone()),
                TraceServiceClient::new(ch.clone()),
                MetricsServiceClient::new(ch),
            );
            let records = (0..=i).map(|j| log(&format!("c{i}-{j}"), j)).collect();
            let logs = lc.export(authed(logs_request(records, vec![]), &key));
            let spans = (0..=i)
                .map(|j| span(&format!("s{i}"), id(16, i as u8), id(8, j as u8)))
                .collect();
            let traces = tc.export(authed(traces_request(spans), &key));
            let values: Vec<f64> = (0..=i).map(|j| j as f64).collect();
            let metrics = mc.export(authed(metrics_request(vec![gauge("c", &values)]), &key));
            let (l, t, m) = tokio::join!(logs, traces, metrics);
            assert_eq!(l.expect("logs").into_inner().partial_success, None);
            assert_eq!(t.expect("traces").into_inner().partial_success, None);
            assert_eq!(m.expect("metrics").into_inner().partial_success, None);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // 1 + 2 + ... + 12 records of each signal, every one distinct.
    assert_eq!(
        count(&srv, &key, "SELECT count(DISTINCT body) FROM logs").await,
        78
    );
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 78);
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM spans").await, 78);
    assert_eq!(
        count(&srv, &key, "SELECT count(DISTINCT name) FROM spans").await,
        12
    );
    // sum over i in 0..12 of (0 + 1 + ... + i) = C(13, 3)
    assert_eq!(
        srv.scalar(&key, "SELECT sum(value) FROM metrics").await,
        json!(286.0)
    );
}

/// Item 16: `grpc-encoding` gzip (and zstd) and none, both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_zstd_and_uncompressed() {
    let (srv, key, ch) = server(1 << 20).await;
    let cases = [
        ("gzip", Some(CompressionEncoding::Gzip)),
        ("zstd", Some(CompressionEncoding::Zstd)),
        ("none", None),
    ];
    for (name, enc) in cases {
        let mut logs = LogsServiceClient::new(ch.clone());
        let mut traces = TraceServiceClient::new(ch.clone());
        let mut metrics = MetricsServiceClient::new(ch.clone());
        if let Some(e) = enc {
            logs = logs.send_compressed(e).accept_compressed(e);
            traces = traces.send_compressed(e).accept_compressed(e);
            metrics = metrics.send_compressed(e).accept_compressed(e);
        }
        // Compressible payloads, so compression actually matters.
        let body = format!("{name}-{}", "z".repeat(4096));
        let r = logs
            .export(authed(logs_request(vec![log(&body, 0)], vec![]), &key))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.into_inner().partial_success, None, "{name}");
        let r = traces
            .export(authed(
                traces_request(vec![span(name, id(16, 7), id(8, 7))]),
                &key,
            ))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.into_inner().partial_success, None, "{name}");
        let r = metrics
            .export(authed(metrics_request(vec![gauge(name, &[1.0])]), &key))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.into_inner().partial_success, None, "{name}");
    }
    let r = srv
        .query(
            &key,
            "SELECT substr(body, 1, 4) AS b, length(body) AS n FROM logs ORDER BY b",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![
            json!({"b": "gzip", "n": 4101}),
            json!({"b": "none", "n": 4101}),
            json!({"b": "zstd", "n": 4101}),
        ]
    );
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM spans").await, 3);
    assert_eq!(
        count(
            &srv,
            &key,
            "SELECT count(DISTINCT metric_name) FROM metrics"
        )
        .await,
        3
    );
}

fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, what: &str) {
    let s = r.expect_err(what);
    assert_eq!(s.code(), code, "{what}: {s:?}");
    assert!(!s.message().is_empty(), "{what}");
}

/// Item 19: bad credentials -> UNAUTHENTICATED; no ingest scope -> PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_scopes() {
    let (srv, key, ch) = server(1 << 20).await;
    let (id_part, _) = key.rsplit_once('_').expect("key shape");
    let wrong_secret = format!("Bearer {id_part}_{}", "0".repeat(64));
    let unknown = format!("Bearer bhk_{}_{}", "1".repeat(16), "2".repeat(64));
    let basic = format!("Basic {key}");
    let bad: [(&str, Option<&str>); 7] = [
        ("none", None),
        ("empty", Some("")),
        ("bearer only", Some("Bearer")),
        ("raw key", Some(&key)),
        ("basic", Some(&basic)),
        ("wrong secret", Some(&wrong_secret)),
        ("unknown id", Some(&unknown)),
    ];
    let mut logs = LogsServiceClient::new(ch.clone());
    let mut traces = TraceServiceClient::new(ch.clone());
    let mut metrics = MetricsServiceClient::new(ch.clone());
    for (what, value) in bad {
        let r = logs
            .export(with_auth(logs_request(vec![log("x", 0)], vec![]), value))
            .await;
        assert_status(r, Code::Unauthenticated, what);
        let r = traces
            .export(with_auth(
                traces_request(vec![span("x", id(16, 1), id(8, 1))]),
                value,
            ))
            .await;
        assert_status(r, Code::Unauthenticated, what);
        let r = metrics
            .export(with_auth(metrics_request(vec![gauge("x", &[1.0])]), value))
            .await;
        assert_status(r, Code::Unauthenticated, what);
    }
    let query_only = srv.key("a", "query");
    let r = logs
        .export(authed(logs_request(vec![log("x", 0)], vec![]), &query_only))
        .await;
    assert_status(r, Code::PermissionDenied, "query key on logs");
    let r = traces
        .export(authed(
            traces_request(vec![span("x", id(16, 1), id(8, 1))]),
            &query_only,
        ))
        .await;
    assert_status(r, Code::PermissionDenied, "query key on traces");
    let r = metrics
        .export(authed(
            metrics_request(vec![gauge("x", &[1.0])]),
            &query_only,
        ))
        .await;
    assert_status(r, Code::PermissionDenied, "query key on metrics");
    for table in ["logs", "spans", "metrics"] {
        let n = count(&srv, &key, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{table}");
    }
}

/// Item 20: partial success means what it means over HTTP, and is a success
/// (an OK status, so clients do not retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_semantics() {
    let (srv, key, ch) = server(1 << 20).await;
    let mut records: Vec<_> = (0..4).map(|i| log(&format!("r{i}"), i)).collect();
    records[2].span_id = id(3, 1);
    let r = LogsServiceClient::new(ch.clone())
        .export(authed(logs_request(records, vec![]), &key))
        .await
        .expect("OK status")
        .into_inner();
    let p = r.partial_success.expect("partial success");
    assert_eq!(p.rejected_log_records, 1);
    assert_eq!(
        p.error_message,
        "log record 2 of scope 0 of resource 0: span_id must be 8 bytes, got 3"
    );
    let r = srv.query(&key, "SELECT body FROM logs ORDER BY body").await;
    assert_eq!(
        r.rows(),
        &vec![
            json!({"body": "r0"}),
            json!({"body": "r1"}),
            json!({"body": "r3"})
        ]
    );

    let spans = vec![
        span("bad-1", id(5, 1), id(8, 1)),
        span("good", id(16, 2), id(8, 2)),
        span("bad-2", id(16, 3), vec![]),
    ];
    let r = TraceServiceClient::new(ch.clone())
        .export(authed(traces_request(spans), &key))
        .await
        .expect("OK status")
        .into_inner();
    let p = r.partial_success.expect("partial success");
    assert_eq!(p.rejected_spans, 2);
    assert!(
        p.error_message
            .contains("span 0 of scope 0 of resource 0: trace_id must be 16 bytes, got 5"),
        "{}",
        p.error_message
    );
    assert!(p.error_message.contains("span 2 of"), "{}", p.error_message);
    let r = srv.query(&key, "SELECT name FROM spans").await;
    assert_eq!(r.rows(), &vec![json!({"name": "good"})]);

    let metrics = metrics_request(vec![
        empty_metric("none-1"),
        gauge("kept", &[1.0, 2.0, 3.0]),
        empty_metric("none-2"),
    ]);
    let r = MetricsServiceClient::new(ch)
        .export(authed(metrics, &key))
        .await
        .expect("OK status")
        .into_inner();
    let p = r.partial_success.expect("partial success");
    assert_eq!(p.rejected_data_points, 2);
    assert!(
        p.error_message.contains("none-1") && p.error_message.contains("none-2"),
        "{}",
        p.error_message
    );
    let r = srv
        .query(
            &key,
            "SELECT metric_name, count(*) AS n FROM metrics GROUP BY 1",
        )
        .await;
    assert_eq!(r.rows(), &vec![json!({"metric_name": "kept", "n": 3})]);
}

/// Item 17: a message over the size limit is RESOURCE_EXHAUSTED without
/// RetryInfo, whether it is over the limit on the wire or inflates past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_size_limit() {
    let (srv, key, ch) = server(1 << 20).await;
    let big = logs_request(vec![log(&"b".repeat(1100 << 10), 0)], vec![]);
    assert!(big.encoded_len() > 1 << 20);
    let r = LogsServiceClient::new(ch.clone())
        .export(authed(big.clone(), &key))
        .await;
    let s = r.expect_err("over the limit");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("too large"), "{s:?}");
    assert!(s.details().is_empty(), "no RetryInfo: {s:?}");

    let r = LogsServiceClient::new(ch.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .export(authed(big, &key))
        .await;
    let s = r.expect_err("inflates over the limit");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.details().is_empty(), "no RetryInfo: {s:?}");

    // Just under the limit passes.
    let fits = logs_request(vec![log(&"f".repeat(1000 << 10), 0)], vec![]);
    let r = LogsServiceClient::new(ch)
        .export(authed(fits, &key))
        .await
        .expect("under the limit");
    assert_eq!(r.into_inner().partial_success, None);
    assert_eq!(
        srv.query(&key, "SELECT length(body) AS n FROM logs")
            .await
            .rows(),
        &vec![json!({"n": 1000 << 10})]
    );
}

/// Sends raw bytes as a gRPC message, to send what no typed client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_export(
    ch: &Channel,
    service: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.expect("channel ready");
    let path = format!("/opentelemetry.proto.collector.{service}/Export");
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).expect("path");
    grpc.unary(authed(body, key), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// Item 19: bad data is INVALID_ARGUMENT (not retryable) and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_refused() {
    let (srv, key, ch) = server(1 << 20).await;
    let services = [
        "logs.v1.LogsService",
        "trace.v1.TraceService",
        "metrics.v1.MetricsService",
    ];
    // A valid message through the raw codec works (the codec is sound).
    let ok = raw_export(
        &ch,
        services[0],
        &key,
        logs_request(vec![log("raw", 0)], vec![]).encode_to_vec(),
    )
    .await;
    assert_eq!(ok.expect("raw export"), Vec::<u8>::new());
    // Field 1 with a truncated length; and a string field that is not UTF-8
    // (the service name inside a resource attribute).
    let mut not_utf8 = logs_request(vec![], vec![kv("service.name", "AB")]).encode_to_vec();
    let at = not_utf8
        .windows(2)
        .position(|w| w == b"AB")
        .expect("value bytes");
    not_utf8[at] = 0xff;
    for service in services {
        for (what, body) in [
            ("truncated", vec![0x0a, 0x20, 0x01]),
            ("not utf-8", not_utf8.clone()),
        ] {
            let s = raw_export(&ch, service, &key, body).await.expect_err(what);
            assert_eq!(s.code(), Code::InvalidArgument, "{service} {what}: {s:?}");
            assert!(s.message().contains("decode"), "{s:?}");
        }
    }
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 1);
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM spans").await, 0);
}
