//! Helpers shared by the end-to-end test binaries: raw OTLP/HTTP posts,
//! protobuf request builders, `google.rpc.Status`, and a seeded RNG.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::io::Write;

use bulkhead_e2e::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{json, Value};

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

/// 2018-12-13T14:51:00.3Z in nanoseconds.
pub const T0: u64 = 1_544_712_660_300_000_000;

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// An HTTP answer: status, content type and body bytes.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The `Retry-After` header, when there was one.
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw OTLP/HTTP request.
pub struct Post<'a> {
    pub path: &'a str,
    pub key: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub encoding: Option<&'a str>,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Vec<u8>,
}

impl<'a> Post<'a> {
    pub fn new(path: &'a str, key: &'a str, content_type: &'a str, body: Vec<u8>) -> Self {
        Self {
            path,
            key: Some(key),
            content_type: Some(content_type),
            encoding: None,
            headers: Vec::new(),
            body,
        }
    }

    pub fn encoding(mut self, e: &'a str) -> Self {
        self.encoding = Some(e);
        self
    }

    pub fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }

    pub fn no_key(mut self) -> Self {
        self.key = None;
        self
    }

    pub async fn send(self, srv: &TestServer) -> Answer {
        let mut req = reqwest::Client::new()
            .post(format!("{}{}", srv.http_endpoint(), self.path))
            .body(self.body);
        if let Some(k) = self.key {
            req = req.bearer_auth(k);
        }
        if let Some(ct) = self.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(e) = self.encoding {
            req = req.header("content-encoding", e);
        }
        for (k, v) in self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("OTLP/HTTP request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().expect("ascii").to_string())
            .unwrap_or_default();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_string());
        let body = resp.bytes().await.expect("response body").to_vec();
        Answer {
            status,
            content_type,
            body,
            retry_after,
        }
    }
}

/// POSTs `body` to `path` with `key` and content type `ct`.
pub async fn post(srv: &TestServer, path: &str, key: &str, ct: &str, body: Vec<u8>) -> Answer {
    Post::new(path, key, ct, body).send(srv).await
}

/// The same with a `Content-Encoding`.
pub async fn post_enc(
    srv: &TestServer,
    enc: &str,
    path: &str,
    key: &str,
    ct: &str,
    body: Vec<u8>,
) -> Answer {
    Post::new(path, key, ct, body).encoding(enc).send(srv).await
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub fn resource(attrs: Vec<KeyValue>) -> Option<Resource> {
    Some(Resource {
        attributes: attrs,
        ..Default::default()
    })
}

/// A log record with a string body at `T0 + i` ns.
pub fn log(body: &str, i: u64) -> LogRecord {
    LogRecord {
        time_unix_nano: T0 + i,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        ..Default::default()
    }
}

pub fn logs_request(records: Vec<LogRecord>, res: Vec<KeyValue>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(res),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A span named `name` with the given ids.
pub fn span(name: &str, trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
    Span {
        trace_id,
        span_id,
        name: name.into(),
        kind: 2,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 1_000,
        ..Default::default()
    }
}

pub fn traces_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(vec![kv("service.name", "e2e")]),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A gauge `name` with one double point per value.
pub fn gauge(name: &str, values: &[f64]) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: values
                .iter()
                .map(|v| NumberDataPoint {
                    time_unix_nano: T0,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

/// A metric with no data kind at all: rejected as one data point.
pub fn empty_metric(name: &str) -> Metric {
    Metric {
        name: name.into(),
        ..Default::default()
    }
}

pub fn metrics_request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(vec![kv("service.name", "e2e")]),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Deterministic ids: `n` bytes derived from `seed`.
pub fn id(n: usize, seed: u8) -> Vec<u8> {
    (0..n as u8).map(|i| seed.wrapping_add(i) | 1).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// xorshift64*: a small seeded RNG for property-style loops.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn word(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 '\"%_;\\";
        let len = self.range(1, 24) as usize;
        (0..len)
            .map(|_| ALPHABET[self.next() as usize % ALPHABET.len()] as char)
            .collect()
    }
}

/// The rows of a query that must succeed.
pub async fn rows(srv: &TestServer, key: &str, sql: &str) -> Vec<Value> {
    srv.query(key, sql).await.rows().clone()
}

/// The single column of each row of a query, as text.
pub async fn texts(srv: &TestServer, key: &str, sql: &str) -> Vec<String> {
    let r = srv.query(key, sql).await;
    r.rows()
        .iter()
        .map(|row| match row.as_object().expect("row").values().next() {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => panic!("no column in {sql}"),
        })
        .collect()
}

/// POSTs a protobuf message.
pub async fn post_pb(srv: &TestServer, path: &str, key: &str, msg: &impl Message) -> Answer {
    post(srv, path, key, PROTOBUF, msg.encode_to_vec()).await
}

/// Decodes a 200 protobuf answer as `T`.
pub fn decode_ok<T: Message + Default>(a: &Answer) -> T {
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.content_type, PROTOBUF);
    T::decode(&a.body[..]).expect("an Export*ServiceResponse")
}

pub async fn count(srv: &TestServer, key: &str, sql: &str) -> u64 {
    srv.scalar(key, sql).await.as_u64().expect("a count")
}

pub const TRACE: &str = "5b8efff798038103d269b633813fc60c";
pub const SPAN: &str = "eee19b7ec3c1b174";

pub fn json_logs(records: &str) -> Vec<u8> {
    format!(r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json"}}}}]}},"scopeLogs":[{{"logRecords":[{records}]}}]}}]}}"#).into_bytes()
}

pub fn json_spans(spans: &str) -> Vec<u8> {
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#).into_bytes()
}

pub fn json_metrics(metrics: &str) -> Vec<u8> {
    format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{metrics}]}}]}}]}}"#)
        .into_bytes()
}

pub fn json_span(name: &str, trace: &str) -> String {
    format!(
        r#"{{"traceId":"{trace}","spanId":"{SPAN}","name":"{name}","kind":2,"startTimeUnixNano":"1544712660000000000"}}"#
    )
}

/// Asserts a protobuf error answer: `status`, protobuf content type, and a
/// `google.rpc.Status` body with `code` and a message containing `needle`.
pub fn assert_pb_error(a: &Answer, status: u16, code: i32, needle: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.content_type, PROTOBUF);
    let s = RpcStatus::decode(&a.body[..]).expect("google.rpc.Status");
    assert_eq!(s.code, code, "{s:?}");
    assert!(s.message.contains(needle), "{needle:?} not in {s:?}");
}

/// The same for a JSON error answer: `{"code": .., "message": ..}`.
pub fn assert_json_error(a: &Answer, status: u16, code: i32, needle: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.content_type, JSON);
    let v = a.json();
    assert_eq!(v["code"], json!(code), "{v}");
    let message = v["message"].as_str().expect("message");
    assert!(message.contains(needle), "{needle:?} not in {v}");
}

/// A gzip body inflating to `mib` MiB of zeros, built cheaply: deflate blocks
/// of one sync-flushed MiB repeated, then an empty final block.
pub fn gzip_bomb(mib: usize) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut segment = Vec::with_capacity(4096);
    c.compress_vec(
        &vec![0u8; 1 << 20],
        &mut segment,
        flate2::FlushCompress::Sync,
    )
    .expect("deflate");
    assert!(segment.len() < 4096 && c.total_in() == 1 << 20);
    let mut crc = flate2::Crc::new();
    let mut one = flate2::Crc::new();
    one.update(&vec![0u8; 1 << 20]);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    for _ in 0..mib {
        out.extend_from_slice(&segment);
        crc.combine(&one);
    }
    out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&((mib as u32) << 20).to_le_bytes());
    out
}
