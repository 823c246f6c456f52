//! A fault in one request or one tenant stays there: hostile event times on
//! every signal and transport are rejected one by one while every tenant
//! keeps being served; a panic in one tenant's request is that request's
//! 500 / INTERNAL alone; a full disk gives retryable errors, loses nothing
//! acknowledged, and heals without a restart.
use crate::common;

use std::sync::Arc;

use bulkhead_e2e::TestServer;
use bulkhead_store::wal::WriteFaults;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use proptest::prelude::*;
use tonic::transport::Channel;
use tonic::{Code, Request};

const HOUR: u64 = 3_600_000_000_000;

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn authed<T>(msg: T, key: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    req
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Logs,
    Spans,
    Metrics,
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    HttpProtobuf,
    Grpc,
}

/// One record's times: the event time and, for spans, the end time.
#[derive(Clone, Copy, Debug)]
struct Times {
    time: u64,
    end: u64,
}

/// Times at the edges of their types and of the accepted window.
fn extreme(now: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 - 1),
        Just(i64::MAX as u64 + 1),
        Just(u64::MAX),
        Just(now),
        Just(now + 2 * HOUR),
        Just(now - 2 * HOUR),
        Just(now - 60 * 24 * HOUR),
        any::<u64>(),
    ]
}

/// The model: is a record with these times accepted? The tenant keeps data
/// 30 days and accepts up to an hour ahead; 0 means "unset" (the receive
/// time is used). `slack` widens both bounds by the test's own duration.
fn accepted(signal: Signal, t: Times, now: u64, slack: u64) -> Option<bool> {
    let from = now - 30 * 24 * HOUR;
    let until = now + HOUR;
    let in_window = |v: u64| {
        if v == 0 {
            return Some(true);
        }
        if v > i64::MAX as u64 {
            return Some(false);
        }
        if v + slack < from || v > until + slack {
            Some(false)
        } else if v >= from + slack && v + slack <= until {
            Some(true)
        } else {
            None // too close to a bound to call
        }
    };
    // spans: the end time; data points: the start time (sent as `end`)
    let has_end = !matches!(signal, Signal::Logs);
    if has_end && t.end > i64::MAX as u64 {
        return Some(false);
    }
    if matches!(signal, Signal::Spans) && t.time != 0 && t.end != 0 && t.end < t.time {
        return Some(false);
    }
    in_window(t.time)
}

fn logs(
    times: &[Times],
) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    logs_request(
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut r = log(&format!("r{i}"), 0);
                r.time_unix_nano = t.time;
                r
            })
            .collect(),
        vec![],
    )
}

fn spans(
    times: &[Times],
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    traces_request(
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut s = span(&format!("s{i}"), id(16, i as u8 + 1), id(8, i as u8 + 1));
                s.start_time_unix_nano = t.time;
                s.end_time_unix_nano = t.end;
                s
            })
            .collect(),
    )
}

fn metrics(
    times: &[Times],
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    let mut m = gauge("edge.gauge", &vec![1.0; times.len()]);
    if let Some(metric::Data::Gauge(g)) = m.data.as_mut() {
        for (p, t) in g.data_points.iter_mut().zip(times) {
            p.time_unix_nano = t.time;
            p.start_time_unix_nano = t.end;
            p.value = Some(number_data_point::Value::AsDouble(1.0));
        }
    }
    metrics_request(vec![m])
}

/// Sends the records and returns (accepted, rejected, error message).
async fn send(
    srv: &TestServer,
    ch: &Channel,
    key: &str,
    signal: Signal,
    transport: Transport,
    times: &[Times],
) -> (u64, i64, String) {
    let n = times.len() as u64;
    match transport {
        Transport::HttpProtobuf => {
            let a = match signal {
                Signal::Logs => post_pb(srv, "/v1/logs", key, &logs(times)).await,
                Signal::Spans => post_pb(srv, "/v1/traces", key, &spans(times)).await,
                Signal::Metrics => post_pb(srv, "/v1/metrics", key, &metrics(times)).await,
            };
            assert_eq!(a.status, 200, "{}", a.text());
            let (rejected, msg) = match signal {
                Signal::Logs => {
                    let r: ExportLogsServiceResponse = decode_ok(&a);
                    r.partial_success
                        .map(|p| (p.rejected_log_records, p.error_message))
                        .unwrap_or_default()
                }
                Signal::Spans => {
                    let r: ExportTraceServiceResponse = decode_ok(&a);
                    r.partial_success
                        .map(|p| (p.rejected_spans, p.error_message))
                        .unwrap_or_default()
                }
                Signal::Metrics => {
                    let r: ExportMetricsServiceResponse = decode_ok(&a);
                    r.partial_success
                        .map(|p| (p.rejected_data_points, p.error_message))
                        .unwrap_or_default()
                }
            };
            (n - rejected as u64, rejected, msg)
        }
        Transport::Grpc => {
            let (rejected, msg) = match signal {
                Signal::Logs => LogsServiceClient::new(ch.clone())
                    .export(authed(logs(times), key))
                    .await
                    .expect("logs export")
                    .into_inner()
                    .partial_success
                    .map(|p| (p.rejected_log_records, p.error_message))
                    .unwrap_or_default(),
                Signal::Spans => TraceServiceClient::new(ch.clone())
                    .export(authed(spans(times), key))
                    .await
                    .expect("trace export")
                    .into_inner()
                    .partial_success
                    .map(|p| (p.rejected_spans, p.error_message))
                    .unwrap_or_default(),
                Signal::Metrics => MetricsServiceClient::new(ch.clone())
                    .export(authed(metrics(times), key))
                    .await
                    .expect("metrics export")
                    .into_inner()
                    .partial_success
                    .map(|p| (p.rejected_data_points, p.error_message))
                    .unwrap_or_default(),
            };
            (n - rejected as u64, rejected, msg)
        }
    }
}

async fn grpc(srv: &TestServer) -> Channel {
    Channel::from_shared(srv.grpc_endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect")
}

/// Another tenant can still ingest and query, and so can the attacker.
async fn everyone_is_served(srv: &TestServer, round: usize) {
    let good = srv.key("good", "ingest,query");
    let a = post_pb(
        srv,
        "/v1/logs",
        &good,
        &logs_request(
            vec![{
                let mut r = log(&format!("good-{round}"), 0);
                r.time_unix_nano = now_nanos();
                r
            }],
            vec![],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let n = count(
        srv,
        &good,
        &format!("SELECT count(*) FROM logs WHERE body = 'good-{round}'"),
    )
    .await;
    assert_eq!(n, 1);
    let evil = srv.key("edge", "ingest,query");
    for table in ["logs", "spans", "metrics"] {
        let r = srv
            .query(&evil, &format!("SELECT count(*) AS n FROM {table}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        // nothing was filed in the future: time filters stay exact
        let future = count(
            srv,
            &evil,
            &format!("SELECT count(*) FROM {table} WHERE timestamp > now() + INTERVAL '2 hours'"),
        )
        .await;
        assert_eq!(future, 0, "{table}");
    }
}

#[test]
fn hostile_event_times_are_rejected_one_by_one_and_everyone_keeps_being_served() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let srv = rt.block_on(
        TestServer::builder()
            .tenant("edge", "ingest,query")
            .tenant("good", "ingest,query")
            .policy(
                "edge",
                "[retention]\nlogs = \"30d\"\nspans = \"30d\"\nmetrics = \"30d\"\n",
            )
            .start(),
    );
    let ch = rt.block_on(grpc(&srv));
    let key = srv.key("edge", "ingest,query");
    let start = now_nanos();
    let totals = std::cell::RefCell::new([0u64; 3]);
    let round = std::cell::Cell::new(0);
    let signal = prop_oneof![
        Just(Signal::Logs),
        Just(Signal::Spans),
        Just(Signal::Metrics)
    ];
    let transport = prop_oneof![Just(Transport::HttpProtobuf), Just(Transport::Grpc)];
    let times = prop::collection::vec(
        (extreme(start), extreme(start)).prop_map(|(time, end)| Times { time, end }),
        1..6,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(signal, transport, times), |(signal, transport, times)| {
            let now = now_nanos();
            let slack = now - start + 60_000_000_000;
            let model: Vec<Option<bool>> = times
                .iter()
                .map(|t| accepted(signal, *t, now, slack))
                .collect();
            let (acc, rej, msg) = rt.block_on(send(&srv, &ch, &key, signal, transport, &times));
            if model.iter().all(Option::is_some) {
                let want = model.iter().filter(|m| **m == Some(true)).count() as u64;
                prop_assert_eq!(acc, want, "{:?} {:?}: {}", signal, times, msg);
            }
            if rej > 0 {
                prop_assert!(
                    msg.contains("accepted window")
                        || msg.contains("out of range")
                        || msg.contains("before start_time_unix_nano"),
                    "the message names the bound: {}",
                    msg
                );
            }
            totals.borrow_mut()[signal as usize] += acc;
            round.set(round.get() + 1);
            rt.block_on(everyone_is_served(&srv, round.get()));
            Ok(())
        })
        .unwrap();
    // the accepted records are all there, once
    let totals = totals.into_inner();
    for (i, table) in ["logs", "spans", "metrics"].iter().enumerate() {
        let n = rt.block_on(count(&srv, &key, &format!("SELECT count(*) FROM {table}")));
        assert_eq!(n, totals[i], "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_tenants_request_leaves_every_other_tenant_served() {
    let srv = TestServer::builder()
        .tenant("evil", "ingest,query")
        .tenant("good", "ingest,query")
        .fault_hook(Arc::new(|p: &bulkhead_rules::Principal| {
            if p.tenant.as_str() == "evil" {
                panic!("injected fault for tenant evil");
            }
        }))
        .start()
        .await;
    let ch = grpc(&srv).await;
    let (evil, good) = (
        srv.key("evil", "ingest,query"),
        srv.key("good", "ingest,query"),
    );
    for i in 0..5 {
        let a = post_pb(
            &srv,
            "/v1/logs",
            &evil,
            &logs_request(vec![log("x", i)], vec![]),
        )
        .await;
        assert_eq!(a.status, 500, "{}", a.text());
        let err = LogsServiceClient::new(ch.clone())
            .export(authed(logs_request(vec![log("x", i)], vec![]), &evil))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        let a = post_pb(
            &srv,
            "/v1/logs",
            &good,
            &logs_request(vec![log(&format!("ok-{i}"), i)], vec![]),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text());
        let r = LogsServiceClient::new(ch.clone())
            .export(authed(
                logs_request(vec![log(&format!("grpc-ok-{i}"), i)], vec![]),
                &good,
            ))
            .await;
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(count(&srv, &good, "SELECT count(*) FROM logs").await, 10);
    assert_eq!(count(&srv, &evil, "SELECT count(*) FROM logs").await, 0);
    let metrics = srv.metrics_text().await;
    assert!(
        metrics.contains("bulkhead_request_panics_total 10"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_tenants_query_is_a_500_for_that_query_alone() {
    let srv = TestServer::builder()
        .tenant("evil", "ingest,query")
        .tenant("good", "ingest,query")
        .query_fault_hook(Arc::new(|t: &bulkhead_rules::TenantId| {
            if t.as_str() == "evil" {
                panic!("injected query fault for tenant evil");
            }
        }))
        .start()
        .await;
    let (evil, good) = (
        srv.key("evil", "ingest,query"),
        srv.key("good", "ingest,query"),
    );
    let a = post_pb(
        &srv,
        "/v1/logs",
        &good,
        &logs_request(vec![log("kept", 1)], vec![]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    for _ in 0..5 {
        let r = srv.query(&evil, "SELECT count(*) FROM logs").await;
        assert_eq!(r.status, 500, "{:?}", r.body);
        assert!(r.error().contains("internal error"), "{}", r.error());
        assert_eq!(count(&srv, &good, "SELECT count(*) FROM logs").await, 1);
    }
    // ingest of the faulty tenant is not affected either
    let a = post_pb(
        &srv,
        "/v1/logs",
        &evil,
        &logs_request(vec![log("x", 1)], vec![]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let metrics = srv.metrics_text().await;
    assert!(
        metrics.contains("bulkhead_request_panics_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_retryable_errors_loses_nothing_and_heals() {
    let faults = WriteFaults::new();
    let dir = tempfile::tempdir().unwrap();
    let mut srv = TestServer::builder()
        .tenant("t", "ingest,query")
        .data_dir(dir.path())
        .wal_faults(faults.clone())
        .start()
        .await;
    let ch = grpc(&srv).await;
    let key = srv.key("t", "ingest,query");
    let send = |body: &'static str| logs_request(vec![log(body, 0)], vec![]);

    let a = post_pb(&srv, "/v1/logs", &key, &send("before")).await;
    assert_eq!(a.status, 200);

    faults.set_failing(true);
    let a = post_pb(&srv, "/v1/logs", &key, &send("while-full")).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.retry_after.is_some(), "Retry-After");
    // the kind of problem, not where the server keeps its data
    assert!(
        a.text().contains("write-ahead log i/o error"),
        "{}",
        a.text()
    );
    assert!(
        !a.text().contains(&dir.path().display().to_string()),
        "{}",
        a.text()
    );
    let err = LogsServiceClient::new(ch.clone())
        .export(authed(send("while-full-grpc"), &key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let retry = tonic_types::StatusExt::get_details_retry_info(&err);
    assert!(retry.is_some(), "RetryInfo");
    assert!(
        !err.message().contains(&dir.path().display().to_string()),
        "{err:?}"
    );
    // queries still work
    assert_eq!(count(&srv, &key, "SELECT count(*) FROM logs").await, 1);

    // space is back: no restart needed
    faults.set_failing(false);
    let a = post_pb(&srv, "/v1/logs", &key, &send("after")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        texts(&srv, &key, "SELECT body FROM logs ORDER BY body").await,
        vec!["after", "before"]
    );
    srv.shutdown().await;

    let srv = TestServer::builder()
        .tenant("t", "ingest,query")
        .data_dir(dir.path())
        .start()
        .await;
    let key = srv.key("t", "ingest,query");
    assert_eq!(
        texts(&srv, &key, "SELECT body FROM logs ORDER BY body").await,
        vec!["after", "before"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_in_flight_limit_new_requests_are_told_to_retry() {
    // tenant "slow"'s requests wait inside ingest (holding their bytes in
    // flight) until the test lets them go
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new((release_rx, entered_tx)));
    let srv = TestServer::builder()
        .tenant("slow", "ingest,query")
        .tenant("other", "ingest,query")
        .max_body_size(64 << 10)
        .max_in_flight(64 << 10)
        .fault_hook(Arc::new(move |p: &bulkhead_rules::Principal| {
            if p.tenant.as_str() == "slow" {
                let g = gate.lock().unwrap();
                g.1.send(()).unwrap();
                g.0.recv_timeout(std::time::Duration::from_secs(30))
                    .unwrap();
            }
        }))
        .start()
        .await;
    let (slow, other) = (
        srv.key("slow", "ingest,query"),
        srv.key("other", "ingest,query"),
    );
    let big: Vec<_> = (0..400).map(|i| log(&"x".repeat(100), i)).collect();
    let held = {
        let (http, slow) = (srv.http_endpoint(), slow.clone());
        let body = prost::Message::encode_to_vec(&logs_request(big, vec![]));
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{http}/v1/logs"))
                .bearer_auth(slow)
                .header("content-type", PROTOBUF)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::task::spawn_blocking(move || {
        entered_rx.recv_timeout(std::time::Duration::from_secs(30))
    })
    .await
    .unwrap()
    .expect("the slow request is in flight");
    let metrics = srv.metrics_text().await;
    let in_flight: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bulkhead_ingest_in_flight_bytes "))
        .expect("in-flight gauge")
        .parse()
        .unwrap();
    assert!(in_flight > 40_000.0, "{in_flight}");
    // another tenant's large request would pass the limit: 503, retry later
    let big: Vec<_> = (0..400).map(|i| log(&"y".repeat(100), i)).collect();
    let a = post_pb(&srv, "/v1/logs", &other, &logs_request(big, vec![])).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.retry_after.is_some());
    release_tx.send(()).unwrap();
    assert_eq!(held.await.unwrap(), 200);
    // once the bytes are released, it goes through
    let a = post_pb(
        &srv,
        "/v1/logs",
        &other,
        &logs_request(vec![log("z", 0)], vec![]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(count(&srv, &slow, "SELECT count(*) FROM logs").await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_keys_is_audited_summed_up_not_one_fsync_each() {
    let mut srv = TestServer::builder()
        .tenant("t", "ingest,query")
        .start()
        .await;
    let bad =
        "bhk_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000";
    for i in 0..200 {
        let a = post_pb(
            &srv,
            "/v1/logs",
            bad,
            &logs_request(vec![log("x", i)], vec![]),
        )
        .await;
        assert_eq!(a.status, 401);
    }
    // the query API sums its refusals up the same way
    for _ in 0..100 {
        assert_eq!(srv.query(bad, "SELECT 1").await.status, 401);
    }
    let dir = srv.data_dir().join("audit");
    srv.shutdown().await;
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let refusals: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "auth_failure")
        .collect();
    assert!(
        !refusals.is_empty() && refusals.len() < 20,
        "{} entries for 200 refusals",
        refusals.len()
    );
    let counted = |interface: &str| -> u64 {
        refusals
            .iter()
            .filter(|e| e["details"]["interface"] == interface)
            .map(|e| {
                e["details"]["count"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    assert_eq!(counted("otlp_http"), 200, "{refusals:?}");
    assert_eq!(counted("query"), 100, "{refusals:?}");
    assert!(
        refusals.iter().all(|e| e["key_id"] == "0123456789abcdef"),
        "{refusals:?}"
    );
}
