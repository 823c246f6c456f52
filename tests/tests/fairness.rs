//! Fair turns at the ingest CPU stage, end to end over OTLP/HTTP: one
//! tenant with many requests queued cannot make a hundred small tenants wait
//! behind all of them. The order is observed, not timed: the fault hook
//! records which tenant's request enters the CPU stage, and holds the
//! flood's first one so that every other request is queued (as the
//! `bulkhead_ingest_requests_waiting` self-metric shows) before any is let
//! in. The latency this buys is measured by the `fairness` benchmark
//! (docs/performance.md).
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_e2e::TestServer;
use std::sync::Mutex;

use crate::common;
use common::{log, logs_request, post_pb};

const FLOOD_QUEUED: usize = 40;
const SMALL: usize = 100;

/// Waits (bounded) until `/metrics` shows `n` requests waiting for a turn.
async fn wait_for_waiting(srv: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = format!("bulkhead_ingest_requests_waiting {n}");
    loop {
        let text = srv.metrics_text().await;
        if text
            .lines()
            .any(|l| l.trim() == line || l.trim() == format!("{line}.0"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {n} requests waiting: {}",
            text.lines()
                .find(|l| l.starts_with("bulkhead_ingest_requests_waiting "))
                .unwrap_or("(no gauge)")
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_queued_requests_does_not_make_small_tenants_wait_behind_it() {
    // tenant, and the nice value of the thread its CPU work ran on
    let order: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let base = rustix::process::getpriority_process(None).unwrap();
    // the flood's first request holds the one slot until released
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let mut builder = TestServer::builder()
        .ingest_workers(1)
        .backlog_nice(7)
        .tenant("flood", "ingest")
        .fault_hook({
            let (order, release_rx) = (order.clone(), release_rx.clone());
            Arc::new(move |p: &bulkhead_rules::Principal| {
                let nice = rustix::process::getpriority_process(None).unwrap();
                order.lock().unwrap().push((p.tenant.to_string(), nice));
                if p.tenant.as_str() == "flood" {
                    if let Some(rx) = release_rx.lock().unwrap().take() {
                        let _ = rx.recv_timeout(Duration::from_secs(120));
                    }
                }
            })
        });
    for i in 0..SMALL {
        builder = builder.tenant(&format!("small-{i:03}"), "ingest");
    }
    let srv = Arc::new(builder.start().await);
    let send = |tenant: String, i: u64| {
        let srv = srv.clone();
        tokio::spawn(async move {
            let key = srv.key(&tenant, "ingest");
            let a = post_pb(
                &srv,
                "/v1/logs",
                &key,
                &logs_request(vec![log(&format!("{tenant} {i}"), i)], vec![]),
            )
            .await;
            assert_eq!(a.status, 200, "{tenant}: {}", a.text());
        })
    };
    let mut all = vec![send("flood".into(), 0)];
    // the first flood request is in the CPU stage, held
    let deadline = Instant::now() + Duration::from_secs(60);
    while order.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the first request never came in");
        tokio::task::yield_now().await;
    }
    for i in 1..=FLOOD_QUEUED {
        all.push(send("flood".into(), i as u64));
    }
    wait_for_waiting(&srv, FLOOD_QUEUED).await;
    for i in 0..SMALL {
        all.push(send(format!("small-{i:03}"), 0));
    }
    wait_for_waiting(&srv, FLOOD_QUEUED + SMALL).await;
    release_tx.send(()).unwrap();
    for h in all {
        h.await.unwrap();
    }
    let ran = order.lock().unwrap().clone();
    let order: Vec<String> = ran.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(order.len(), 1 + FLOOD_QUEUED + SMALL);
    // Round-robin: after the held request, the flood gets one turn, then
    // every small tenant has its turn before the flood's next one. A queue
    // in arrival order would have served all 40 flood requests first.
    let last_small = order.iter().rposition(|t| t.starts_with("small-")).unwrap();
    let flood_before = order[..last_small].iter().filter(|t| *t == "flood").count();
    assert!(
        flood_before <= 2,
        "{flood_before} flood requests were let in before the last small tenant's (at {last_small}): {order:?}"
    );
    // and the flood lost nothing
    assert_eq!(
        order.iter().filter(|t| *t == "flood").count(),
        1 + FLOOD_QUEUED
    );
    // ingest.backlog_nice: the flood's requests let in while more of its
    // own were queued ran lower; the first (a free slot), the last (nothing
    // queued behind it) and every small tenant's at the server's priority
    let lowered = (base + 7).min(19);
    let flood_nice: Vec<i32> = ran
        .iter()
        .filter(|(t, _)| t == "flood")
        .map(|(_, n)| *n)
        .collect();
    let mut expected = vec![base];
    expected.extend(std::iter::repeat_n(lowered, FLOOD_QUEUED - 1));
    expected.push(base);
    assert_eq!(flood_nice, expected);
    assert!(
        ran.iter()
            .filter(|(t, _)| t.starts_with("small-"))
            .all(|(_, n)| *n == base),
        "{ran:?}"
    );
    let metrics = srv.metrics_text().await;
    let line = format!(
        "bulkhead_ingest_backlogged_requests_total {}",
        FLOOD_QUEUED - 1
    );
    assert!(
        metrics.lines().any(|l| l.trim() == line),
        "no `{line}` in the metrics"
    );
}

/// Requests waiting for their turn still hold memory (`ingest.max_in_flight`):
/// a tenant may hold a quarter of it, so a flood is told to retry (503) once
/// its own share is queued, and other tenants still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_cannot_take_all_the_in_flight_memory() {
    let body = logs_request(vec![log("flood 0", 0)], vec![]);
    let len = prost::Message::encoded_len(&body) as u64;
    // a tenant's share holds three requests and a half
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let entered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let srv = Arc::new(
        TestServer::builder()
            .ingest_workers(1)
            .max_in_flight(4 * (3 * len + len / 2))
            .tenant("flood", "ingest")
            .tenant("small", "ingest")
            .fault_hook({
                let (release_rx, entered) = (release_rx.clone(), entered.clone());
                Arc::new(move |_: &bulkhead_rules::Principal| {
                    entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Some(rx) = release_rx.lock().unwrap().take() {
                        let _ = rx.recv_timeout(Duration::from_secs(120));
                    }
                })
            })
            .start()
            .await,
    );
    let send = |tenant: &'static str, i: u64| {
        let srv = srv.clone();
        tokio::spawn(async move {
            let key = srv.key(tenant, "ingest");
            post_pb(
                &srv,
                "/v1/logs",
                &key,
                &logs_request(vec![log(&format!("{tenant} {i}"), i)], vec![]),
            )
            .await
        })
    };
    let first = send("flood", 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the first request never came in");
        tokio::task::yield_now().await;
    }
    let queued = vec![send("flood", 1), send("flood", 2)];
    wait_for_waiting(&srv, 2).await;
    // the fourth is past the flood's share: refused at once, retryable
    let refused = send("flood", 3).await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("share"), "{}", refused.text());
    // another tenant still gets in
    let small = send("small", 0);
    wait_for_waiting(&srv, 3).await;
    release_tx.send(()).unwrap();
    assert_eq!(small.await.unwrap().status, 200);
    for h in queued.into_iter().chain([first]) {
        assert_eq!(h.await.unwrap().status, 200);
    }
}
