//! The audit trail records queries, refusals and policy changes; each tenant
//! reads only its own events as the `audit` table; the log verifies.
use std::time::{Duration, Instant};

use bulkhead_e2e::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_refusals_are_on_the_record_of_their_tenant_only() {
    let mut srv = TestServer::builder()
        .tenant("a", "query")
        .tenant("a", "ingest")
        .tenant("b", "query")
        .start()
        .await;
    let (qa, ia, qb) = (
        srv.key("a", "query"),
        srv.key("a", "ingest"),
        srv.key("b", "query"),
    );

    assert_eq!(
        srv.query(&qa, "SELECT count(*) AS n FROM logs")
            .await
            .status,
        200
    );
    assert_eq!(
        srv.query(&qa, "CREATE TABLE t AS SELECT 1").await.status,
        400
    );
    assert_eq!(srv.query(&ia, "SELECT 1").await.status, 403);
    assert_eq!(
        srv.query("bhk_00000000000000aa_00", "SELECT 1")
            .await
            .status,
        401
    );
    // refused credentials are summed up and written by housekeeping; write now
    srv.server().flush_refusals().await;

    let r = srv
        .query(&qa, "SELECT tenant, kind, key_id, details['rows'] AS rows_returned, details['scope'] AS scope, details['sql_sha256'] IS NOT NULL AS hashed FROM audit ORDER BY seq")
        .await;
    let rows = r.rows();
    let a_query_id = &qa[4..20];
    let a_ingest_id = &ia[4..20];
    assert_eq!(
        rows,
        &vec![
            json!({"tenant": "a", "kind": "query", "key_id": a_query_id, "rows_returned": "1", "scope": null, "hashed": true}),
            json!({"tenant": "a", "kind": "query_refused", "key_id": a_query_id, "rows_returned": null, "scope": null, "hashed": true}),
            json!({"tenant": "a", "kind": "scope_refused", "key_id": a_ingest_id, "rows_returned": null, "scope": "query", "hashed": false}),
        ],
        "{rows:?}"
    );
    // the SQL text itself is not on the record
    let text = serde_json::to_string(&srv.query(&qa, "SELECT * FROM audit").await.body).unwrap();
    assert!(!text.contains("CREATE TABLE"), "{text}");

    // b sees its own (this very query's predecessors: none) and nothing of a's
    let r = srv
        .query(&qb, "SELECT count(*) AS n FROM audit WHERE tenant <> 'b'")
        .await;
    assert_eq!(r.rows()[0]["n"], json!(0));

    // a policy change is recorded with both versions, in a's trail
    let policies = srv.data_dir().join("policies");
    let mut text = std::fs::read_to_string(policies.join("a.toml")).unwrap();
    text.push_str("\n[anomaly]\nseries_limit = 10\n");
    std::fs::write(policies.join("a.toml"), text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let changed = loop {
        let r = srv
            .query(&qa, "SELECT details['old_version'] AS old, details['new_version'] AS new FROM audit WHERE kind = 'policy_changed'")
            .await;
        let rows = r.rows().clone();
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_ne!(changed[0]["old"], changed[0]["new"]);

    let dir = srv.data_dir().join("audit");
    srv.shutdown().await;
    let report = bulkhead_store::audit::verify(&dir).expect("the trail verifies");
    assert!(report.entries >= 6, "{report:?}");
}

/// The periodic look at the policy directory is due on the injected clock:
/// housekeeping runs on and on without finding the change while the clock
/// stands still, and finds it (and audits it) once the clock moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_are_looked_for_on_the_injected_clock() {
    use std::sync::Arc;
    let clock = Arc::new(bulkhead_rules::ManualClock::new(1_748_822_400_000_000_000));
    let srv = TestServer::builder()
        .tenant("a", "query")
        .clock(clock.clone())
        .flush_max_age(Duration::from_millis(100))
        .start()
        .await;
    let qa = srv.key("a", "query");
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0)
    };
    let policies = srv.data_dir().join("policies");
    let mut text = std::fs::read_to_string(policies.join("a.toml")).unwrap();
    text.push_str("\n[anomaly]\nseries_limit = 10\n");
    std::fs::write(policies.join("a.toml"), text).unwrap();

    // ten housekeeping runs with the clock standing still: no look
    let start = metric(
        &srv.metrics_text().await,
        "bulkhead_housekeeping_runs_total",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = srv.metrics_text().await;
        assert_eq!(metric(&m, "bulkhead_policy_checks_total"), 0, "{m}");
        assert_eq!(metric(&m, "bulkhead_policy_reloads_total"), 0, "{m}");
        if metric(&m, "bulkhead_housekeeping_runs_total") >= start + 10 {
            break;
        }
        assert!(Instant::now() < deadline, "housekeeping does not run: {m}");
        tokio::task::yield_now().await;
    }

    clock.advance(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = srv.metrics_text().await;
        if metric(&m, "bulkhead_policy_reloads_total") == 1 {
            assert_eq!(metric(&m, "bulkhead_policy_checks_total"), 1, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the change was not taken: {m}");
        tokio::task::yield_now().await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = srv
            .query(
                &qa,
                "SELECT count(*) AS n FROM audit WHERE kind = 'policy_changed'",
            )
            .await;
        if r.rows()[0]["n"] == json!(1) {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", r.body);
        tokio::task::yield_now().await;
    }
}
