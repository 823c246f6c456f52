//! Arrow Flight SQL with a real client (the ADBC Flight SQL driver from
//! PyPI): the caller's tables only, under the HTTP API's sandbox, with the
//! same keys (bearer, or basic auth with the key as password).
mod common;

use bulkhead_e2e::TestServer;
use common::{kv, log, logs_request, post_pb};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_reads_its_own_tenant_and_nothing_else() {
    let mut srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .tenant("a", "ingest")
        .start()
        .await;
    let (a, b, a_ingest) = (
        srv.key("a", "ingest,query"),
        srv.key("b", "ingest,query"),
        srv.key("a", "ingest"),
    );
    for (key, bodies, service) in [
        (&a, vec!["a-1", "a-2", "a-3"], "checkout"),
        (&b, vec!["b-secret"], "billing"),
    ] {
        let records = bodies
            .iter()
            .enumerate()
            .map(|(i, t)| log(t, i as u64))
            .collect();
        let r = post_pb(
            &srv,
            "/v1/logs",
            key,
            &logs_request(records, vec![kv("service.name", service)]),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/flight_sql_client.py");
    let uri = srv.flight_endpoint();
    let out = bulkhead_e2e::run_python(script, &[&uri, &a, &b, &a_ingest]).await;
    let seen: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    assert_eq!(seen["count"], json!(3), "{seen}");
    assert_eq!(seen["bodies"], json!(["a-1", "a-2", "a-3"]), "{seen}");
    assert_eq!(
        seen["prepared"],
        json!([[["checkout", 3]], [["checkout", 3]]]),
        "{seen}"
    );
    assert_eq!(seen["catalogs"], json!(["tenant"]), "{seen}");
    assert_eq!(
        seen["tables"],
        json!(["anomalies", "audit", "logs", "metrics", "spans"]),
        "{seen}"
    );
    assert_eq!(
        seen["logs_columns"],
        json!(["tenant", "timestamp", "observed_timestamp"]),
        "{seen}"
    );
    assert_eq!(seen["table_types"], json!(["TABLE"]), "{seen}");
    assert_eq!(seen["vendor"], json!("Bulkhead"), "{seen}");
    assert!(
        seen["ddl"].as_str().unwrap().contains("only read queries"),
        "{seen}"
    );
    assert_ne!(seen["file"], json!("allowed"), "{seen}");
    assert_ne!(seen["other_tenant"], json!("allowed"), "{seen}");
    assert_eq!(seen["basic_count"], json!(3), "{seen}");
    assert_eq!(seen["other_count"], json!(1), "{seen}");
    assert!(
        seen["ingest_only"].as_str().unwrap().contains("query"),
        "{seen}"
    );
    assert!(
        seen["bad_key"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("unauthenticated")
            || seen["bad_key"].as_str().unwrap().contains("unknown key"),
        "{seen}"
    );

    // every query is on a's record, and the refusals are summed up
    let dir = srv.data_dir().join("audit");
    srv.shutdown().await;
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |tenant: &str, kind: &str| {
        events
            .iter()
            .filter(|e| e["tenant"] == tenant && e["kind"] == kind)
            .count()
    };
    assert!(of("a", "query") >= 5, "{text}");
    assert!(of("a", "query_refused") >= 2, "{text}");
    assert_eq!(of("b", "query"), 1, "{text}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "scope_refused" && e["details"]["interface"] == "flight_sql"),
        "{text}"
    );
}
