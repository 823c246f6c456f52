//! OTLP/HTTP conformance (shared/CONFORMANCE.md items 1-8 and 10-13) over
//! raw HTTP: status codes, content types, response bodies, partial success,
//! compression, size limits, authentication and the OTLP/JSON quirks.
use crate::common;

use bulkhead_e2e::TestServer;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse as LogsResp;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse as MetricsResp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse as TraceResp;
use prost::Message;
use serde_json::{json, Value};

const PATHS: [&str; 3] = ["/v1/logs", "/v1/traces", "/v1/metrics"];

/// Tenant `a` with an ingest+query key, a query-only key and an ingest-only key.
async fn server() -> (TestServer, String) {
    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("a", "query")
        .tenant("a", "ingest")
        .max_body_size(1 << 20)
        .start()
        .await;
    let key = srv.key("a", "ingest,query");
    (srv, key)
}

/// Asserts a 200 JSON answer with `partial_success` unset.
fn assert_json_full_success(a: &Answer, what: &str) {
    assert_eq!(a.status, 200, "{what}: {}", a.text());
    assert_eq!(a.content_type, JSON, "{what}");
    assert_eq!(a.json(), json!({}), "{what}");
}

/// The `partialSuccess` object of a 200 JSON answer.
fn json_partial(a: &Answer) -> Value {
    assert_eq!(
        (a.status, a.content_type.as_str()),
        (200, JSON),
        "{}",
        a.text()
    );
    a.json()["partialSuccess"].clone()
}

fn logs_pb(bodies: &[&str]) -> ExportLogsServiceRequest {
    logs_request(bodies.iter().map(|b| log(b, 0)).collect(), vec![])
}

/// Item 1: protobuf on all three routes -> 200, protobuf Export*ServiceResponse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_export_on_all_three_routes() {
    let (srv, key) = server().await;
    let a = post_pb(&srv, "/v1/logs", &key, &logs_pb(&["pb-1", "pb-2"])).await;
    assert_eq!(decode_ok::<LogsResp>(&a).partial_success, None);
    let spans = traces_request(vec![span("pb-span", id(16, 1), id(8, 2))]);
    let a = post_pb(&srv, "/v1/traces", &key, &spans).await;
    assert_eq!(decode_ok::<TraceResp>(&a).partial_success, None);
    let metrics = metrics_request(vec![gauge("pb.gauge", &[1.5, 2.5])]);
    let a = post_pb(&srv, "/v1/metrics", &key, &metrics).await;
    assert_eq!(decode_ok::<MetricsResp>(&a).partial_success, None);

    let bodies = texts(&srv, &key, "SELECT body FROM logs ORDER BY body").await;
    assert_eq!(bodies, ["pb-1", "pb-2"]);
    let r = rows(
        &srv,
        &key,
        "SELECT name, trace_id, span_id, kind FROM spans",
    )
    .await;
    let (t, s) = (hex(&id(16, 1)), hex(&id(8, 2)));
    assert_eq!(
        r,
        [json!({"name": "pb-span", "trace_id": t, "span_id": s, "kind": "Server"})]
    );
    let r = rows(
        &srv,
        &key,
        "SELECT metric_name, sum(value) AS v FROM metrics GROUP BY 1",
    )
    .await;
    assert_eq!(r, [json!({"metric_name": "pb.gauge", "v": 4.0})]);
}

/// Item 2: JSON on all three routes -> JSON answer; `charset=utf-8` accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_export_on_all_three_routes() {
    let (srv, key) = server().await;
    let gauge = r#"{"name":"js.gauge","gauge":{"dataPoints":[{"asDouble":3.5}]}}"#;
    let bodies = [
        json_logs(r#"{"body":{"stringValue":"js-1"}}"#),
        json_spans(&json_span("js-span", TRACE)),
        json_metrics(gauge),
    ];
    for (path, body) in PATHS.into_iter().zip(bodies) {
        let a = post(&srv, path, &key, JSON, body.clone()).await;
        assert_json_full_success(&a, path);
        // With a charset parameter: accepted, answered as JSON (the media
        // type is the request's; the server does not echo the parameter).
        let a = post(&srv, path, &key, "application/json; charset=utf-8", body).await;
        assert_json_full_success(&a, path);
    }
    let sql = "SELECT body, service_name, count(*) AS n FROM logs GROUP BY 1, 2";
    let r = rows(&srv, &key, sql).await;
    assert_eq!(r, [json!({"body": "js-1", "service_name": "json", "n": 2})]);
    let sql = format!("SELECT count(*) FROM spans WHERE trace_id = '{TRACE}' AND name = 'js-span'");
    assert_eq!(count(&srv, &key, &sql).await, 2);
    let sql = "SELECT sum(value) FROM metrics WHERE metric_name = 'js.gauge'";
    assert_eq!(srv.scalar(&key, sql).await, json!(7.0));
}

/// Item 3: unsupported or missing content type -> 415; other methods -> 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_content_type_and_method() {
    let (srv, key) = server().await;
    let client = reqwest::Client::new();
    for path in PATHS {
        for ct in ["text/plain", "application/xml", "application/grpc"] {
            let a = post(&srv, path, &key, ct, b"{}".to_vec()).await;
            // The request's encoding is unknown: the Status comes as JSON.
            assert_json_error(&a, 415, 3, ct);
        }
        let mut p = Post::new(path, &key, JSON, b"{}".to_vec());
        p.content_type = None;
        assert_json_error(&p.send(&srv).await, 415, 3, "Content-Type");

        let url = format!("{}{path}", srv.http_endpoint());
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let resp = client
                .request(method.clone(), &url)
                .bearer_auth(&key)
                .send()
                .await;
            let status = resp.expect("request").status().as_u16();
            assert_eq!(status, 405, "{method} {path}");
        }
    }
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 0);
}

/// Item 4: gzip, zstd, identity and none accepted; unknown encodings refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encodings() {
    let (srv, key) = server().await;
    let pb = |body: &str| logs_pb(&[body]).encode_to_vec();
    let js = |body: &str| json_logs(&format!(r#"{{"body":{{"stringValue":"{body}"}}}}"#));
    let cases = [
        (Some("gzip"), gzip(&pb("gzip-pb")), PROTOBUF),
        (Some("zstd"), zstd(&pb("zstd-pb")), PROTOBUF),
        (Some("identity"), pb("identity-pb"), PROTOBUF),
        (None, pb("none-pb"), PROTOBUF),
        (Some("gzip"), gzip(&js("gzip-js")), JSON),
        (Some("zstd"), zstd(&js("zstd-js")), JSON),
    ];
    for (enc, body, ct) in cases {
        let mut p = Post::new("/v1/logs", &key, ct, body);
        p.encoding = enc;
        let a = p.send(&srv).await;
        let got = (a.status, a.content_type.as_str());
        assert_eq!(got, (200, ct), "{enc:?}: {}", a.text());
    }
    let bodies = texts(&srv, &key, "SELECT body FROM logs ORDER BY body").await;
    let expected = [
        "gzip-js",
        "gzip-pb",
        "identity-pb",
        "none-pb",
        "zstd-js",
        "zstd-pb",
    ];
    assert_eq!(bodies, expected);

    // Unknown encodings: refused with a message naming them (415 here).
    for enc in ["br", "deflate", "compress"] {
        let a = post_enc(&srv, enc, "/v1/logs", &key, PROTOBUF, pb("x")).await;
        assert_pb_error(&a, 415, 3, &format!("{enc:?}"));
        let a = post_enc(&srv, enc, "/v1/traces", &key, JSON, b"{}".to_vec()).await;
        assert_json_error(&a, 415, 3, &format!("{enc:?}"));
    }
    // A body that is not what its encoding claims -> 400.
    let a = post_enc(&srv, "gzip", "/v1/logs", &key, PROTOBUF, pb("x")).await;
    assert_pb_error(&a, 400, 3, "gzip");
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 6);
}

/// Item 5: empty requests and full success leave `partial_success` unset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_requests_have_no_partial_success() {
    let (srv, key) = server().await;
    // A zero-length protobuf body is a valid, empty message; so is the answer.
    let a = post(&srv, "/v1/logs", &key, PROTOBUF, vec![]).await;
    assert_eq!(decode_ok::<LogsResp>(&a).partial_success, None);
    assert_eq!(a.body, b"", "an empty response message");
    let a = post(&srv, "/v1/traces", &key, PROTOBUF, vec![]).await;
    assert_eq!(decode_ok::<TraceResp>(&a).partial_success, None);
    let a = post(&srv, "/v1/metrics", &key, PROTOBUF, vec![]).await;
    assert_eq!(decode_ok::<MetricsResp>(&a).partial_success, None);
    // Resources and scopes without records.
    let a = post_pb(&srv, "/v1/logs", &key, &logs_request(vec![], vec![])).await;
    assert_eq!(decode_ok::<LogsResp>(&a).partial_success, None);
    for (path, body) in [
        ("/v1/logs", b"{}".to_vec()),
        ("/v1/traces", br#"{"resourceSpans":[]}"#.to_vec()),
        (
            "/v1/metrics",
            br#"{"resourceMetrics":[{"scopeMetrics":[]}]}"#.to_vec(),
        ),
        ("/v1/logs", json_logs("")),
    ] {
        assert_json_full_success(&post(&srv, path, &key, JSON, body).await, path);
    }
    for table in ["logs", "spans", "metrics"] {
        let n = count(&srv, &key, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{table}");
    }
}

/// Item 6 over protobuf: rejected counts and a message; the rest is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_protobuf() {
    let (srv, key) = server().await;
    let mut records: Vec<_> = (0..5).map(|i| log(&format!("ok-{i}"), i)).collect();
    for i in [1, 3] {
        records[i].trace_id = id(5, 9);
    }
    let a = post_pb(&srv, "/v1/logs", &key, &logs_request(records, vec![])).await;
    let p = decode_ok::<LogsResp>(&a).partial_success.expect("partial");
    assert_eq!(p.rejected_log_records, 2);
    let m = &p.error_message;
    assert!(
        m.contains("log record 1 of scope 0 of resource 0: trace_id must be 16 bytes, got 5"),
        "{m}"
    );
    assert!(m.contains("log record 3 of"), "{m}");
    let bodies = texts(&srv, &key, "SELECT body FROM logs ORDER BY body").await;
    assert_eq!(bodies, ["ok-0", "ok-2", "ok-4"]);

    let spans = vec![
        span("good-1", id(16, 1), id(8, 1)),
        span("bad", id(5, 2), id(8, 2)),
        span("good-2", id(16, 3), id(8, 3)),
    ];
    let a = post_pb(&srv, "/v1/traces", &key, &traces_request(spans)).await;
    let p = decode_ok::<TraceResp>(&a).partial_success.expect("partial");
    assert_eq!(p.rejected_spans, 1);
    let m = &p.error_message;
    assert_eq!(
        m,
        "span 1 of scope 0 of resource 0: trace_id must be 16 bytes, got 5"
    );
    let names = texts(&srv, &key, "SELECT name FROM spans ORDER BY name").await;
    assert_eq!(names, ["good-1", "good-2"]);

    let metrics = metrics_request(vec![gauge("g", &[1.0, 2.0]), empty_metric("nothing")]);
    let a = post_pb(&srv, "/v1/metrics", &key, &metrics).await;
    let p = decode_ok::<MetricsResp>(&a)
        .partial_success
        .expect("partial");
    assert_eq!(p.rejected_data_points, 1);
    assert!(p.error_message.contains("nothing"), "{}", p.error_message);
    let r = rows(
        &srv,
        &key,
        "SELECT metric_name, count(*) AS n FROM metrics GROUP BY 1",
    )
    .await;
    assert_eq!(r, [json!({"metric_name": "g", "n": 2})]);
}

/// Item 6 over JSON: counts are int64 strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_json() {
    let (srv, key) = server().await;
    let records = concat!(
        r#"{"body":{"stringValue":"kept"}},"#,
        r#"{"traceId":"0102030405","body":{"stringValue":"bad"}},"#,
        r#"{"spanId":"010203","body":{"stringValue":"bad"}}"#
    );
    let p = json_partial(&post(&srv, "/v1/logs", &key, JSON, json_logs(records)).await);
    assert_eq!(p["rejectedLogRecords"], json!("2"), "{p}");
    let msg = p["errorMessage"].as_str().expect("message");
    assert!(msg.contains("trace_id") && msg.contains("span_id"), "{msg}");
    assert_eq!(texts(&srv, &key, "SELECT body FROM logs").await, ["kept"]);

    let spans = format!(
        "{},{}",
        json_span("short", "0102030405"),
        json_span("fine", TRACE)
    );
    let p = json_partial(&post(&srv, "/v1/traces", &key, JSON, json_spans(&spans)).await);
    let message = "span 0 of scope 0 of resource 0: trace_id must be 16 bytes, got 5";
    assert_eq!(p, json!({"rejectedSpans": "1", "errorMessage": message}));
    assert_eq!(texts(&srv, &key, "SELECT name FROM spans").await, ["fine"]);

    let metrics = concat!(
        r#"{"name":"h","histogram":{"dataPoints":[{"count":"3","bucketCounts":["1","2"],"#,
        r#""explicitBounds":[1,2]}]}},{"name":"ok","gauge":{"dataPoints":[{"asInt":"7"}]}}"#
    );
    let p = json_partial(&post(&srv, "/v1/metrics", &key, JSON, json_metrics(metrics)).await);
    assert_eq!(p["rejectedDataPoints"], json!("1"), "{p}");
    assert!(
        p["errorMessage"].as_str().unwrap().contains("bucket"),
        "{p}"
    );
    let r = rows(&srv, &key, "SELECT metric_name, value_int FROM metrics").await;
    assert_eq!(r, [json!({"metric_name": "ok", "value_int": 7})]);
}

/// Item 7: an undecodable body -> 400 with google.rpc.Status in its encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bodies_get_status_in_request_encoding() {
    let (srv, key) = server().await;
    for path in PATHS {
        let a = post(&srv, path, &key, PROTOBUF, vec![0xff; 16]).await;
        assert_pb_error(&a, 400, 3, "protobuf");
        for body in [&b"{\"resourceLogs\": ["[..], b"[1, 2]", b"", b"null"] {
            let a = post(&srv, path, &key, JSON, body.to_vec()).await;
            assert_json_error(&a, 400, 3, "JSON");
        }
        // Protobuf sent as JSON is undecodable too.
        let a = post(&srv, path, &key, JSON, logs_pb(&["x"]).encode_to_vec()).await;
        assert_json_error(&a, 400, 3, "JSON");
    }
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 0);
}

/// Item 8: bodies over the limit after decompression -> 413, bombs included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_after_decompression() {
    let (srv, key) = server().await;
    // Just under the limit once inflated: accepted.
    let big = logs_pb(&[&"x".repeat(1000 << 10)]).encode_to_vec();
    assert!(big.len() < 1 << 20);
    let a = post_enc(&srv, "gzip", "/v1/logs", &key, PROTOBUF, gzip(&big)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // Small compressed, over the limit inflated.
    let over = logs_pb(&[&"y".repeat(1100 << 10)]).encode_to_vec();
    let a = post_enc(&srv, "gzip", "/v1/logs", &key, PROTOBUF, gzip(&over)).await;
    assert_pb_error(&a, 413, 8, "limit of 1048576 bytes");
    let a = post_enc(&srv, "zstd", "/v1/logs", &key, PROTOBUF, zstd(&over)).await;
    assert_pb_error(&a, 413, 8, "limit of 1048576 bytes");

    // ~260 KiB of gzip inflating to 256 MiB.
    let bomb = gzip_bomb(256);
    assert!(bomb.len() < 300 << 10, "{}", bomb.len());
    let started = std::time::Instant::now();
    let a = post_enc(&srv, "gzip", "/v1/traces", &key, JSON, bomb).await;
    assert_json_error(&a, 413, 8, "as sent or decompressed");
    // zstd frames concatenate: well under 200 KiB inflating to 1 GiB.
    let frame = zstd(&vec![0u8; 1 << 20]);
    let zbomb: Vec<u8> = std::iter::repeat_n(frame, 1024).flatten().collect();
    assert!(zbomb.len() < 200 << 10, "{}", zbomb.len());
    let a = post_enc(&srv, "zstd", "/v1/metrics", &key, PROTOBUF, zbomb).await;
    assert_pb_error(&a, 413, 8, "as sent or decompressed");
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");

    // An uncompressed body over the limit: 413 with a google.rpc.Status too.
    let a = post(&srv, "/v1/logs", &key, PROTOBUF, over).await;
    assert_pb_error(&a, 413, 8, "limit of 1048576 bytes");
    let a = post(&srv, "/v1/logs", &key, JSON, vec![b' '; (1 << 20) + 1]).await;
    assert_json_error(&a, 413, 8, "limit of 1048576 bytes");
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 1);
}

/// Asserts a 401 (UNAUTHENTICATED) or 403 (PERMISSION_DENIED) answer with
/// a google.rpc.Status in the request's encoding.
fn check_auth(a: &Answer, ct: &str, status: u16, what: &str) {
    let code = if status == 401 { 16 } else { 7 };
    assert_eq!(a.status, status, "{what}: {}", a.text());
    match ct {
        PROTOBUF => assert_pb_error(a, status, code, ""),
        _ => assert_json_error(a, status, code, ""),
    }
    let message = match ct {
        PROTOBUF => RpcStatus::decode(&a.body[..]).expect("status").message,
        _ => a.json()["message"].as_str().expect("message").to_string(),
    };
    assert!(!message.is_empty(), "{what}");
}

/// Item 10: missing, wrong or malformed credentials -> 401; no scope -> 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_401_and_forbidden_403() {
    let (srv, key) = server().await;
    let body = logs_pb(&["nope"]).encode_to_vec();
    let (id_part, _) = key.rsplit_once('_').expect("key shape");
    let bad = [
        format!("Bearer {id_part}_{}", "0".repeat(64)),
        format!("Bearer bhk_{}_{}", "0".repeat(16), "0".repeat(64)),
        format!("Bearer {}", &key[..key.len() - 1]),
        "Bearer hello".to_string(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        String::new(),
        key.clone(),
        format!("Basic {key}"),
    ];
    for (ct, body) in [(PROTOBUF, body.clone()), (JSON, json_logs(""))] {
        let p = Post::new("/v1/logs", &key, ct, body.clone()).no_key();
        check_auth(&p.send(&srv).await, ct, 401, "no Authorization");
        for h in &bad {
            let p = Post::new("/v1/logs", &key, ct, body.clone()).no_key();
            check_auth(&p.header("authorization", h).send(&srv).await, ct, 401, h);
        }
    }
    // Two Authorization headers, each with a working key: refused, and
    // neither picked (nothing is stored), with a message that says why.
    let second = srv.key("a", "ingest");
    let p = Post::new("/v1/logs", &key, JSON, json_logs("")).header("authorization", &second);
    let bearer = format!("Bearer {second}");
    let p2 = Post::new("/v1/logs", &key, JSON, json_logs("")).header("authorization", &bearer);
    for a in [p.send(&srv).await, p2.send(&srv).await] {
        check_auth(&a, JSON, 401, "two Authorization headers");
        let message = a.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("more than one Authorization header"),
            "{message}"
        );
    }
    // A query-only key is authenticated but not allowed to ingest.
    let query_only = srv.key("a", "query");
    let spans = json_spans(&json_span("x", TRACE));
    let cases = [(PROTOBUF, body.clone()), (JSON, spans), (PROTOBUF, vec![])];
    for (path, (ct, body)) in PATHS.into_iter().zip(cases) {
        let a = post(&srv, path, &query_only, ct, body).await;
        check_auth(&a, ct, 403, "query-only key");
    }
    for table in ["logs", "spans", "metrics"] {
        let n = count(&srv, &key, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{table}");
    }
    // The ingest-only key works.
    let a = post(&srv, "/v1/logs", &srv.key("a", "ingest"), PROTOBUF, body).await;
    assert_eq!(a.status, 200);
}

/// Item 11: hex ids in either case; base64, odd-length or wrong-length refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_ids_hex_case_and_bad_ids() {
    let (srv, key) = server().await;
    let upper = TRACE.to_uppercase();
    let mixed = "5B8efff798038103D269b633813FC60C";
    let spans = format!(
        "{},{}",
        json_span("upper", &upper),
        json_span("mixed", mixed)
    );
    let a = post(&srv, "/v1/traces", &key, JSON, json_spans(&spans)).await;
    assert_json_full_success(&a, "upper-case ids");
    let span_upper = SPAN.to_uppercase();
    let log = format!(r#"{{"traceId":"{upper}","spanId":"{span_upper}"}}"#);
    let a = post(&srv, "/v1/logs", &key, JSON, json_logs(&log)).await;
    assert_json_full_success(&a, "upper-case ids");
    let r = rows(
        &srv,
        &key,
        "SELECT name, trace_id, span_id FROM spans ORDER BY name",
    )
    .await;
    let expected = [
        json!({"name": "mixed", "trace_id": TRACE, "span_id": SPAN}),
        json!({"name": "upper", "trace_id": TRACE, "span_id": SPAN}),
    ];
    assert_eq!(r, expected);
    let r = rows(&srv, &key, "SELECT trace_id, span_id FROM logs").await;
    assert_eq!(r, [json!({"trace_id": TRACE, "span_id": SPAN})]);

    // Not hex at all (base64 as the generic protobuf JSON mapping writes
    // them), or an odd number of digits: the request fails with a message.
    for bad in [
        "W47/95gDgQPSabYzgT/GDA==",
        "5b8efff798038103d269b633813fc60",
        "zz",
    ] {
        let a = post(
            &srv,
            "/v1/traces",
            &key,
            JSON,
            json_spans(&json_span("b", bad)),
        )
        .await;
        assert_json_error(&a, 400, 3, "JSON");
        let log = format!(r#"{{"spanId":"{bad}"}}"#);
        let a = post(&srv, "/v1/logs", &key, JSON, json_logs(&log)).await;
        assert_json_error(&a, 400, 3, "JSON");
    }
    // Valid hex of the wrong byte length: that record is rejected with a message.
    let long = format!("{TRACE}00");
    let spans = format!("{},{}", json_span("long", &long), json_span("ok", TRACE));
    let p = json_partial(&post(&srv, "/v1/traces", &key, JSON, json_spans(&spans)).await);
    assert_eq!(p["rejectedSpans"], json!("1"), "{p}");
    assert!(
        p["errorMessage"].as_str().unwrap().contains("got 17"),
        "{p}"
    );
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM spans").await, 3);
}

/// Item 12: enums as integers (names refused); int64 as strings or numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_enums_and_int64() {
    let (srv, key) = server().await;
    let span = |name: &str, time: &str, kind: u32, status: u32| {
        format!(
            r#"{{"traceId":"{TRACE}","spanId":"{SPAN}","name":"{name}","kind":{kind},
            "status":{{"code":{status}}},"startTimeUnixNano":{time},
            "attributes":[{{"key":"n","value":{{"intValue":{time}}}}}]}}"#
        )
    };
    let spans = format!(
        "{},{}",
        span("as-string", r#""1544712660000000001""#, 3, 2),
        span("as-number", "1544712660000000001", 5, 1)
    );
    let a = post(&srv, "/v1/traces", &key, JSON, json_spans(&spans)).await;
    assert_json_full_success(&a, "spans");
    let sql = "SELECT name, kind, status_code, CAST(timestamp AS BIGINT) AS t, \
               attributes['n'] AS n FROM spans ORDER BY name";
    let (t, n) = (1_544_712_660_000_000_001_i64, "1544712660000000001");
    let expected = [
        json!({"name": "as-number", "kind": "Consumer", "status_code": "Ok", "t": t, "n": n}),
        json!({"name": "as-string", "kind": "Client", "status_code": "Error", "t": t, "n": n}),
    ];
    assert_eq!(rows(&srv, &key, sql).await, expected);

    let logs = r#"{"severityNumber":17,"timeUnixNano":1544712660300000000,
        "body":{"intValue":"-9007199254740993"}},
        {"severityNumber":5,"timeUnixNano":"1544712660300000000","body":{"intValue":-42}}"#;
    let a = post(&srv, "/v1/logs", &key, JSON, json_logs(logs)).await;
    assert_json_full_success(&a, "logs");
    let sql = "SELECT severity_number AS s, body, body_type AS b, \
               CAST(timestamp AS BIGINT) AS t FROM logs ORDER BY s";
    let expected = [
        json!({"s": 5, "body": "-42", "b": "int", "t": T0}),
        json!({"s": 17, "body": "-9007199254740993", "b": "int", "t": T0}),
    ];
    assert_eq!(rows(&srv, &key, sql).await, expected);

    let metrics = r#"{"name":"s","sum":{"aggregationTemporality":2,"isMonotonic":true,
        "dataPoints":[{"asInt":"9007199254740993"},{"asInt":5}]}},
        {"name":"h","histogram":{"aggregationTemporality":1,
        "dataPoints":[{"count":3,"bucketCounts":["1",2],"explicitBounds":[1]}]}}"#;
    let a = post(&srv, "/v1/metrics", &key, JSON, json_metrics(metrics)).await;
    assert_json_full_success(&a, "metrics");
    let sql = "SELECT metric_name AS m, aggregation_temporality AS t, value_int AS v, \
               count AS c, bucket_counts AS b FROM metrics ORDER BY m, v";
    let big = 9_007_199_254_740_993_i64;
    let expected = [
        json!({"m": "h", "t": "delta", "v": null, "c": 3, "b": [1, 2]}),
        json!({"m": "s", "t": "cumulative", "v": 5, "c": null, "b": null}),
        json!({"m": "s", "t": "cumulative", "v": big, "c": null, "b": null}),
    ];
    assert_eq!(rows(&srv, &key, sql).await, expected);

    // Enum names are not OTLP/JSON: refused with a message.
    let named = json_span("named", TRACE).replace(r#""kind":2"#, r#""kind":"SPAN_KIND_SERVER""#);
    let a = post(&srv, "/v1/traces", &key, JSON, json_spans(&named)).await;
    assert_json_error(&a, 400, 3, "JSON");
    let named = json_logs(r#"{"severityNumber":"SEVERITY_NUMBER_INFO"}"#);
    let a = post(&srv, "/v1/logs", &key, JSON, named).await;
    assert_json_error(&a, 400, 3, "JSON");
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM spans").await, 2);
}

/// The protobuf JSON mapping writes a double that a JSON number cannot carry
/// as "NaN", "Infinity" or "-Infinity" (and may quote any number): taken in
/// attributes, bodies, data points and histograms, not a failed request or
/// a metric dropped for having no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_special_floats_are_numbers() {
    let (srv, key) = server().await;
    let logs = r#"{"timeUnixNano":"1544712660300000000","body":{"doubleValue":"-Infinity"},
        "attributes":[{"key":"nan","value":{"doubleValue":"NaN"}},
                      {"key":"inf","value":{"doubleValue":"Infinity"}},
                      {"key":"quoted","value":{"doubleValue":"1.5"}},
                      {"key":"text","value":{"stringValue":"NaN"}},
                      {"key":"arr","value":{"arrayValue":{"values":[{"doubleValue":"NaN"}]}}}]}"#;
    let a = post(&srv, "/v1/logs", &key, JSON, json_logs(logs)).await;
    assert_json_full_success(&a, "logs");
    let sql = "SELECT body, body_type AS b, attributes['nan'] AS n, attributes['inf'] AS i, \
               attributes['quoted'] AS q, attributes['text'] AS t, attributes['arr'] AS a FROM logs";
    // a body that is not a string is stored as JSON (docs/schema.md)
    let expected = json!({"body": r#""-Infinity""#, "b": "double", "n": "NaN", "i": "Infinity",
                          "q": "1.5", "t": "NaN", "a": r#"["NaN"]"#});
    assert_eq!(rows(&srv, &key, sql).await, [expected]);

    let metrics = r#"{"name":"g","gauge":{"dataPoints":[
            {"timeUnixNano":"1544712660300000000","asDouble":"NaN"},
            {"timeUnixNano":"1544712660300000001","asDouble":"-Infinity"},
            {"timeUnixNano":"1544712660300000002","asDouble":"2.5",
             "attributes":[{"key":"d","value":{"doubleValue":"Infinity"}}]}]}},
        {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[
            {"timeUnixNano":"1544712660300000000","count":"2","sum":"Infinity",
             "min":"-1.5","max":"NaN","bucketCounts":["1","1"],"explicitBounds":["0.5"]}]}}"#;
    let a = post(&srv, "/v1/metrics", &key, JSON, json_metrics(metrics)).await;
    assert_json_full_success(&a, "metrics");
    // JSON results carry no NaN or infinity: CSV shows what was stored
    let sql = "SELECT metric_name, value, isnan(value) AS value_nan, attributes['d'] AS d, \
               sum, min, max, isnan(max) AS max_nan, explicit_bounds FROM metrics \
               ORDER BY metric_name, timestamp";
    let csv = srv.query_csv(&key, sql).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "metric_name,value,value_nan,d,sum,min,max,max_nan,explicit_bounds",
            "g,NaN,true,,,,,,",
            "g,-inf,false,,,,,,",
            "g,2.5,false,Infinity,,,,,",
            "h,,,,inf,-1.5,NaN,true,[0.5]",
        ],
        "{csv}"
    );

    // what is not a number under a double key still names the problem
    let bad = json_logs(r#"{"attributes":[{"key":"x","value":{"doubleValue":"nan"}}]}"#);
    let a = post(&srv, "/v1/logs", &key, JSON, bad).await;
    assert_json_error(&a, 400, 3, r#"string "nan", expected f64"#);
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 1);

    // a data point's value that does not fit is refused, not stored as
    // a point without its number
    for (value, named) in [
        (
            r#""asInt":"abc""#,
            r#"string "abc", expected an integer for asInt"#,
        ),
        (
            r#""asInt":1.5"#,
            "floating point `1.5`, expected an integer for asInt",
        ),
        (
            r#""asDouble":true"#,
            "boolean `true`, expected a number for asDouble",
        ),
    ] {
        let bad = json_metrics(&format!(
            r#"{{"name":"bad","gauge":{{"dataPoints":[{{"timeUnixNano":"1544712660300000000",{value}}}]}}}}"#
        ));
        let a = post(&srv, "/v1/metrics", &key, JSON, bad).await;
        assert_json_error(&a, 400, 3, named);
    }
    let bom = [
        &b"\xEF\xBB\xBF"[..],
        &json_logs(r#"{"timeUnixNano":"1544712660300000000","body":{"stringValue":"bom"}}"#),
    ]
    .concat();
    let a = post(&srv, "/v1/logs", &key, JSON, bom).await;
    assert_json_full_success(&a, "logs");
    assert_eq!(
        count(
            &srv,
            &key,
            "SELECT count(*) FROM metrics WHERE metric_name = 'bad'"
        )
        .await,
        0
    );
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 2);
}

/// Item 13: unknown fields are ignored at every level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_unknown_fields_ignored() {
    let (srv, key) = server().await;
    let body = r#"{"futureTop":1,"resourceLogs":[{"futureResourceLogs":"x",
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"},
        "futureKv":true}],"futureResource":[]},
        "scopeLogs":[{"scope":{"name":"sc","futureScope":{}},"futureScopeLogs":null,
        "logRecords":[{"body":{"stringValue":"kept","futureAny":2},"futureRecord":{"a":[1,2]},
        "attributes":[{"key":"k","value":{"boolValue":false}}]}]}]}]}"#;
    let a = post(&srv, "/v1/logs", &key, JSON, body.as_bytes().to_vec()).await;
    assert_json_full_success(&a, "logs");
    let sql = "SELECT body, service_name AS s, scope_name AS sc, attributes['k'] AS k FROM logs";
    let r = rows(&srv, &key, sql).await;
    assert_eq!(
        r,
        [json!({"body": "kept", "s": "svc", "sc": "sc", "k": "false"})]
    );
    let extra = r#""kind":2,"futureSpan":{"deep":[{"x":1}]}"#;
    let spans = json_span("s", TRACE).replace(r#""kind":2"#, extra);
    let a = post(&srv, "/v1/traces", &key, JSON, json_spans(&spans)).await;
    assert_json_full_success(&a, "spans");
    let metrics = json_metrics(
        r#"{"name":"g","futureMetric":1,"gauge":{"dataPoints":[{"asDouble":1.25,"futurePoint":"y"}]}}"#,
    );
    let a = post(&srv, "/v1/metrics", &key, JSON, metrics).await;
    assert_json_full_success(&a, "metrics");
    assert_eq!(
        srv.scalar(&key, "SELECT value FROM metrics").await,
        json!(1.25)
    );
    assert_eq!(
        srv.scalar(&key, "SELECT name FROM spans").await,
        Value::from("s")
    );
}
