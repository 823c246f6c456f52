//! Policy changes are taken into force without a restart; a broken change is
//! refused, counted, and the previous policies keep working. (Its own test
//! binary: it sends SIGHUP to this process.)
use std::time::{Duration, Instant};

use bulkhead_e2e::TestServer;

async fn metric(srv: &TestServer, name: &str) -> u64 {
    let text = srv.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0)
}

/// Waits for the server's asynchronous signal handling, bounded.
async fn until(srv: &TestServer, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = metric(srv, name).await;
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_is_refused_and_a_fix_is_taken_on_sighup() {
    let srv = TestServer::builder()
        .tenant("acme", "ingest,query")
        .start()
        .await;
    let key = srv.key("acme", "ingest,query");
    let policies = srv.data_dir().join("policies");
    let before = srv.scalar(&key, "SELECT count(*) FROM logs").await;
    assert_eq!(before, serde_json::json!(0));

    std::fs::write(
        policies.join("broken.toml"),
        "tenant = \"broken\"\nsurprise = 1\n",
    )
    .unwrap();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap()
    };
    assert!(hup().success());
    assert_eq!(
        until(&srv, "bulkhead_policy_reload_errors_total", 1).await,
        1
    );
    // the previous policies stay in force
    assert_eq!(srv.query(&key, "SELECT 1 AS one").await.status, 200);

    // the fix is taken
    std::fs::write(policies.join("broken.toml"), "tenant = \"broken\"\n").unwrap();
    assert!(hup().success());
    assert!(until(&srv, "bulkhead_policy_reloads_total", 1).await >= 1);
    assert_eq!(metric(&srv, "bulkhead_policy_reload_errors_total").await, 1);
    assert_eq!(srv.query(&key, "SELECT 1 AS one").await.status, 200);
}
