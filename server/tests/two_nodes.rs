//! Two `bulkhead serve` processes on one bucket of a real S3-compatible
//! server (moto, on loopback), configured by the scale-out configuration
//! file `deploy/compose/bulkhead.toml`: both ingest the same tenant's
//! records at once, one is killed with SIGKILL mid-load and restarted, and
//! every acknowledged record is then queryable exactly once from either
//! node.
mod common;
use common::{load, query_bodies, start_with_env, wait_for_log, Server};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_collector::tenants;
use bulkhead_rules::Scopes;
use bulkhead_testkit::{S3Server, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY};

fn node(config: &Path, name: &str, data: &Path, policies: &Path, prefix: &str) -> Server {
    let s3 = S3Server::shared();
    let any = "127.0.0.1:0".to_string();
    start_with_env(
        config,
        &[
            ("BULKHEAD_NODE_NAME", name.to_string()),
            ("BULKHEAD_DATA_DIR", data.join(name).display().to_string()),
            ("BULKHEAD_POLICY_DIR", policies.display().to_string()),
            ("BULKHEAD_S3_ENDPOINT", s3.endpoint().to_string()),
            ("BULKHEAD_S3_BUCKET", S3_BUCKET.to_string()),
            ("BULKHEAD_S3_PREFIX", prefix.to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
            ("BULKHEAD_GRPC_LISTEN", any.clone()),
            ("BULKHEAD_HTTP_LISTEN", any.clone()),
            ("BULKHEAD_API_LISTEN", any.clone()),
            ("BULKHEAD_METRICS_LISTEN", any.clone()),
            ("BULKHEAD_FLIGHT_LISTEN", any),
        ],
    )
}

/// How often each body is there, as `node` answers.
fn counts(node: &Server, key: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for b in query_bodies(&node.api, key) {
        *seen.entry(b).or_default() += 1;
    }
    seen
}

#[test]
fn two_nodes_on_one_bucket_lose_and_double_nothing_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/bulkhead.toml");
    let prefix = S3Server::shared().unique_prefix("two-nodes");
    let policies = dir.path().join("policies");
    tenants::create_tenant(&policies, "shared").unwrap();
    let key = tenants::create_key(
        &policies,
        "shared",
        Scopes::parse_list("ingest,query").unwrap(),
    )
    .unwrap()
    .expose();
    let mut a = node(&config, "node-a", dir.path(), &policies, &prefix);
    let mut b = node(&config, "node-b", dir.path(), &policies, &prefix);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let next = Arc::new(Mutex::new(HashMap::new()));
    let (mut acked, mut maybe) = (HashSet::new(), HashSet::new());
    // two clients on each node; node-b is killed after some acknowledgements
    let (tx, rx) = std::sync::mpsc::channel();
    let mut clients = Vec::new();
    for c in 0..4 {
        let http = if c % 2 == 0 { &a.http } else { &b.http };
        clients.push(rt.spawn(load(http.clone(), key.clone(), c, next.clone(), tx.clone())));
    }
    for _ in 0..60 {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("acknowledgements stopped coming");
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    // node-b's clients end with the kill; node-a's keep going while node-b
    // comes back and replays its write-ahead log
    b = node(&config, "node-b", dir.path(), &policies, &prefix);
    let mut late = Vec::new();
    for c in 4..6 {
        late.push(rt.spawn(load(
            b.http.clone(),
            key.clone(),
            c,
            next.clone(),
            tx.clone(),
        )));
    }
    drop(tx);
    for _ in 0..40 {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("acknowledgements stopped coming");
    }
    // both have passed their minutes on to anomaly detection (shared through
    // the bucket) before the kill
    for n in [&a, &b] {
        wait_for_log(n, "anomaly partials published", Duration::from_secs(30));
    }
    // stop the load: node-a last, so both nodes' clients end
    for n in [&mut b, &mut a] {
        n.child.kill().unwrap();
        n.child.wait().unwrap();
    }
    for c in clients.into_iter().chain(late) {
        let (ok, unsure) = rt.block_on(c).unwrap();
        acked.extend(ok);
        maybe.extend(unsure);
    }
    assert!(
        acked.len() >= 100 * common::RECORDS_PER_REQUEST,
        "{}",
        acked.len()
    );

    // both come back, replaying their logs, and shut down gracefully
    // (committing what they buffered); then either node answers every
    // acknowledged record exactly once
    for name in ["node-a", "node-b"] {
        common::stop(node(&config, name, dir.path(), &policies, &prefix));
    }
    let a = node(&config, "node-a", dir.path(), &policies, &prefix);
    let b = node(&config, "node-b", dir.path(), &policies, &prefix);
    for n in [&a, &b] {
        let seen = counts(n, &key);
        let missing: Vec<_> = acked
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged records lost on {}: {missing:?}",
            n.api
        );
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
        assert!(twice.is_empty(), "records stored twice: {twice:?}");
        let unknown: Vec<_> = seen
            .keys()
            .filter(|id| !acked.contains(*id) && !maybe.contains(*id))
            .take(5)
            .collect();
        assert!(unknown.is_empty(), "records never sent: {unknown:?}");
    }
    assert_eq!(counts(&a, &key), counts(&b, &key));
    // both nodes' rows are there, in the bucket
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nodes: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{}/api/v1/query", a.api))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "sql": "SELECT received_by, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1"
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["received_by"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-a", "node-b"], "{nodes}");
    assert!(S3Server::shared()
        .run_python(LIST, &[&prefix])
        .contains(".parquet"));
    // anomaly detection is shared through the bucket: both nodes published
    // their minutes, and one lease was taken
    let shared = S3Server::shared().run_python(LIST, &[&format!("{prefix}/_anomaly/")]);
    for want in ["/partials/node-a/", "/partials/node-b/", "/leader/"] {
        assert!(shared.contains(want), "{want} in {shared}");
    }
}

/// Lists the objects under a prefix of the test bucket.
const LIST: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
                  aws_secret_access_key=sys.argv[3], region_name="us-east-1")
for o in s3.list_objects_v2(Bucket=sys.argv[4], Prefix=sys.argv[5]).get("Contents", []):
    print(o["Key"])
"#;

/// An erasure asked of one node covers rows another node still buffered
/// when it was asked: on shared storage the job waits `flush.max_age` (and
/// a margin) before it runs, so every node has committed them by then.
#[test]
fn an_erasure_covers_rows_another_node_still_buffered() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        "[flush]\nmax_age = \"2s\"\n[storage]\nbackend = \"s3\"\nbucket = \"x\"\nregion = \"us-east-1\"\nallow_http = true\n",
    )
    .unwrap();
    let prefix = S3Server::shared().unique_prefix("two-nodes-erasure");
    let policies = dir.path().join("policies");
    tenants::create_tenant(&policies, "shared").unwrap();
    let key = tenants::create_key(
        &policies,
        "shared",
        Scopes::parse_list("ingest,query,admin").unwrap(),
    )
    .unwrap()
    .expose();
    let a = node(&config, "node-a", dir.path(), &policies, &prefix);
    let b = node(&config, "node-b", dir.path(), &policies, &prefix);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let body = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..20u64)
                    .map(|i| LogRecord {
                        time_unix_nano: now + i,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("u{}-{i}", i % 2))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    // node-a buffers the rows; node-b is asked for the erasure at once
    let r = rt
        .block_on(
            http.post(format!("http://{}/v1/logs", a.http))
                .bearer_auth(&key)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send(),
        )
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = rt
        .block_on(
            http.post(format!("http://{}/api/v1/erasures", b.api))
                .bearer_auth(&key)
                .json(&serde_json::json!({
                    "table": "logs",
                    "from": "2000-01-01T00:00:00Z",
                    "to": "2100-01-01T00:00:00Z",
                    "where": "body LIKE 'u1-%'",
                }))
                .send(),
        )
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: serde_json::Value = rt.block_on(r.json()).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    // either node may take it; ask node-b until it is done
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job: serde_json::Value = rt
            .block_on(async {
                http.get(format!("http://{}/api/v1/erasures/{id}", b.api))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
            })
            .unwrap();
        if job["status"] == "done" {
            break;
        }
        assert_ne!(job["status"], "failed", "{job}");
        assert!(
            std::time::Instant::now() < deadline,
            "not done in 60 s: {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = query_bodies(&b.api, &key);
    assert_eq!(left.len(), 10, "{left:?}");
    assert!(left.iter().all(|b| b.starts_with("u0-")), "{left:?}");
    drop((a, b));
}
