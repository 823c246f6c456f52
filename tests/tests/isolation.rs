//! Tenant isolation (shared/SECURITY.md): forged tenant hints, key scopes,
//! SQL that tries to leave the tenant's sandbox, and a seeded property test
//! where every result row must belong to the caller.
use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bulkhead_e2e::TestServer;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Request;

async fn channel(srv: &TestServer) -> Channel {
    Channel::from_shared(srv.grpc_endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect")
}

fn grpc_req<T>(msg: T, key: &str, extra: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(msg);
    let md = req.metadata_mut();
    md.insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    for (k, v) in extra {
        md.insert(*k, v.parse().expect("ascii"));
    }
    req
}

/// SECURITY row 1: a tenant-B header and resource attribute sent with A's key
/// store data under A only, over OTLP/HTTP (protobuf, JSON) and gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tenant_hints_store_under_the_sender() {
    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .start()
        .await;
    let (ka, kb) = (srv.key("a", "ingest,query"), srv.key("b", "ingest,query"));
    let forged = vec![kv("tenant.id", "b"), kv("service.name", "forger")];
    let req = logs_request(vec![log("pb", 0)], forged.clone());
    let a = Post::new("/v1/logs", &ka, PROTOBUF, req.encode_to_vec())
        .header("X-Scope-OrgID", "b")
        .header("X-Tenant", "b")
        .send(&srv)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let req = logs_request(vec![log("json", 1)], forged.clone());
    let body = serde_json::to_vec(&req).expect("OTLP/JSON");
    let a = Post::new("/v1/logs", &ka, JSON, body)
        .header("X-Scope-OrgID", "b")
        .send(&srv)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let ch = channel(&srv).await;
    let req = logs_request(vec![log("grpc", 2)], forged.clone());
    LogsServiceClient::new(ch.clone())
        .export(grpc_req(req, &ka, &[("x-scope-orgid", "b")]))
        .await
        .expect("gRPC logs");
    let mut spans = traces_request(vec![span("forged-span", id(16, 1), id(8, 1))]);
    spans.resource_spans[0].resource = resource(forged);
    TraceServiceClient::new(ch)
        .export(grpc_req(spans, &ka, &[("x-scope-orgid", "b")]))
        .await
        .expect("gRPC traces");

    // B sees nothing at all.
    for table in ["logs", "spans", "metrics"] {
        let n = count(&srv, &kb, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "B sees A's {table}");
    }
    // A sees all of it, as tenant a.
    let r = srv
        .query(
            &ka,
            "SELECT tenant, body, service_name FROM logs ORDER BY body",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![
            json!({"tenant": "a", "body": "grpc", "service_name": "forger"}),
            json!({"tenant": "a", "body": "json", "service_name": "forger"}),
            json!({"tenant": "a", "body": "pb", "service_name": "forger"}),
        ]
    );
    let r = srv.query(&ka, "SELECT tenant, name FROM spans").await;
    assert_eq!(
        r.rows(),
        &vec![json!({"tenant": "a", "name": "forged-span"})]
    );
    // Even filtering on the forged attribute, B finds nothing.
    let n = count(
        &srv,
        &kb,
        "SELECT count(*) FROM logs WHERE resource_attributes['tenant.id'] = 'b'",
    )
    .await;
    assert_eq!(n, 0);
    // and the forged field itself was pinned to the caller in A's data
    let n = count(
        &srv,
        &ka,
        "SELECT count(*) FROM logs WHERE resource_attributes['tenant.id'] = 'a'",
    )
    .await;
    assert_eq!(n, 3);
}

/// SECURITY row 2: scopes. An ingest key cannot query; a query key cannot ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_separate_ingest_and_query() {
    let srv = TestServer::builder()
        .tenant("a", "ingest")
        .tenant("a", "query")
        .start()
        .await;
    let (ingest, query) = (srv.key("a", "ingest"), srv.key("a", "query"));
    let body = logs_request(vec![log("x", 0)], vec![]).encode_to_vec();
    let a = Post::new("/v1/logs", &ingest, PROTOBUF, body.clone())
        .send(&srv)
        .await;
    assert_eq!(a.status, 200);

    let r = srv.query(&ingest, "SELECT body FROM logs").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("query"), "{}", r.body);
    for bad in ["", "bhk_0000000000000000_00", "not-a-key"] {
        let r = srv.query(bad, "SELECT 1").await;
        assert_eq!(r.status, 401, "{bad:?}: {}", r.body);
    }

    let a = Post::new("/v1/logs", &query, PROTOBUF, body.clone())
        .send(&srv)
        .await;
    assert_eq!(a.status, 403);
    let s = RpcStatus::decode(&a.body[..]).expect("google.rpc.Status");
    assert!(s.message.contains("ingest"), "{s:?}");
    let e = LogsServiceClient::new(channel(&srv).await)
        .export(grpc_req(
            logs_request(vec![log("y", 0)], vec![]),
            &query,
            &[],
        ))
        .await
        .expect_err("query key on gRPC");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // Only the ingest key's record is there.
    let r = srv.query(&query, "SELECT body, tenant FROM logs").await;
    assert_eq!(r.rows(), &vec![json!({"body": "x", "tenant": "a"})]);
}

/// Every file under `dir` with its size and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.modified().expect("mtime")));
        }
    }
    out
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// SECURITY row 3: with A's query key, statements that would write, change
/// settings, or read outside A's catalog are refused with a clear 400, return
/// no data and touch no file. B's data is on disk in Parquet files, so the
/// paths named are real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cannot_leave_the_tenant_sandbox() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = TestServer::builder()
        .data_dir(dir.path())
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .start()
        .await;
    for t in ["a", "b"] {
        let req = logs_request(vec![log(&format!("{t}-secret"), 0)], vec![]);
        let key = first.key(t, "ingest,query");
        let a = Post::new("/v1/logs", &key, PROTOBUF, req.encode_to_vec())
            .send(&first)
            .await;
        assert_eq!(a.status, 200);
    }
    first.shutdown().await; // flushes both tenants to Parquet
    let srv = TestServer::builder()
        .data_dir(dir.path())
        .tenant("a", "query")
        .tenant("b", "query")
        .start()
        .await;
    let (ka, kb) = (srv.key("a", "query"), srv.key("b", "query"));
    let b_dir = srv.store_dir().join("tenant=b");
    let b_files = parquet_files(&b_dir);
    assert_eq!(b_files.len(), 1, "{b_files:?}");
    let b_file = b_files[0].display().to_string();
    let b_logs = b_dir.join("signal=logs").display().to_string();
    // B reads its own file back: the target is real.
    let r = srv.query(&kb, "SELECT tenant, body FROM logs").await;
    assert_eq!(r.rows(), &vec![json!({"tenant": "b", "body": "b-secret"})]);

    let out = tempfile::tempdir().expect("temp dir");
    let copy_to = out.path().join("x.parquet").display().to_string();
    let tmp_x = Path::new("/tmp/x.parquet");
    let tmp_x_before = tmp_x.metadata().ok().map(|m| m.modified().expect("mtime"));
    // The audit trail is the one file that must change: a line per refusal.
    let untouched = |d: &Path| {
        let mut t = tree(d);
        t.retain(|p, _| !p.starts_with(d.join("audit")));
        t
    };
    let before = untouched(dir.path());

    let not_allowed = "only read queries are allowed";
    let cases: Vec<(String, &str)> = vec![
        (
            format!(
                "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{}'",
                b_dir.display()
            ),
            "DDL not supported: CreateExternalTable",
        ),
        (
            format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{b_file}'"),
            "DDL not supported",
        ),
        (
            "COPY (SELECT 1) TO '/tmp/x.parquet'".into(),
            "DML not supported: COPY",
        ),
        (
            format!("COPY (SELECT * FROM logs) TO '{copy_to}'"),
            "DML not supported: COPY",
        ),
        (
            format!("COPY logs TO '{b_logs}/evil.parquet'"),
            "DML not supported: COPY",
        ),
        (
            "INSERT INTO logs (tenant, body) VALUES ('b', 'x')".into(),
            "DML not supported: Insert Into",
        ),
        (
            "INSERT INTO logs SELECT * FROM logs".into(),
            "DML not supported: Insert Into",
        ),
        ("DELETE FROM logs".into(), "DML not supported"),
        ("UPDATE logs SET tenant = 'b'".into(), "DML not supported"),
        (
            "CREATE VIEW v AS SELECT 1".into(),
            "DDL not supported: CreateView",
        ),
        ("CREATE TABLE t AS SELECT 1".into(), "DDL not supported"),
        ("DROP TABLE logs".into(), "DDL not supported: DropTable"),
        (
            "SET datafusion.execution.batch_size = 1".into(),
            "Statement not supported: SetVariable",
        ),
        (
            "SET datafusion.catalog.default_catalog = 'b'".into(),
            "Statement not supported: SetVariable",
        ),
        // DataFusion plans EXPLAIN of DDL as the DDL itself: refused, not read.
        (
            "EXPLAIN CREATE TABLE t AS SELECT 1".into(),
            "DDL not supported",
        ),
        (
            "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1".into(),
            "DDL not supported",
        ),
        (
            format!("EXPLAIN COPY (SELECT 1) TO '{copy_to}'"),
            "DML not supported: COPY",
        ),
        (
            "PREPARE p AS SELECT 1".into(),
            "Statement not supported: Prepare",
        ),
    ];
    for (sql, needle) in &cases {
        let r = srv.query(&ka, sql).await;
        assert_eq!(r.status, 400, "{sql}: {}", r.body);
        assert!(r.error().starts_with(not_allowed), "{sql}: {}", r.body);
        assert!(r.error().contains(needle), "{sql}: {}", r.body);
    }
    let reads: Vec<(String, &str)> = vec![
        (format!("SELECT * FROM '{b_file}'"), "not found"),
        (format!("SELECT * FROM '{b_logs}'"), "not found"),
        (
            format!("SELECT * FROM read_parquet('{b_file}')"),
            "table function 'read_parquet' not found",
        ),
        (
            format!("SELECT * FROM read_csv('{b_file}')"),
            "table function 'read_csv' not found",
        ),
        (
            format!("SELECT * FROM read_json('{b_file}')"),
            "table function 'read_json' not found",
        ),
        (
            "SELECT * FROM b.public.logs".into(),
            "table 'b.public.logs' not found",
        ),
        (
            "SELECT * FROM datafusion.public.logs".into(),
            "table 'datafusion.public.logs' not found",
        ),
        (
            "SELECT * FROM logs UNION ALL SELECT * FROM b.public.logs".into(),
            "not found",
        ),
        ("SELECT 1; SELECT 2".into(), "single SQL statement"),
        (
            "SELECT body FROM logs; DROP TABLE logs".into(),
            "single SQL statement",
        ),
    ];
    for (sql, needle) in &reads {
        let r = srv.query(&ka, sql).await;
        assert_eq!(r.status, 400, "{sql}: {}", r.body);
        assert!(r.error().contains(needle), "{sql}: {}", r.body);
        assert!(!r.body.to_string().contains("b-secret"), "{sql}");
    }
    // Nothing was written anywhere.
    assert_eq!(untouched(dir.path()), before, "the data directory changed");
    let refused = count(
        &srv,
        &ka,
        "SELECT count(*) FROM audit WHERE kind = 'query_refused'",
    )
    .await;
    assert_eq!(
        refused as usize,
        cases.len() + reads.len(),
        "one audit line per refused attempt"
    );
    assert!(!Path::new(&copy_to).exists());
    assert_eq!(
        tmp_x.metadata().ok().map(|m| m.modified().expect("mtime")),
        tmp_x_before,
        "/tmp/x.parquet was written"
    );

    // information_schema lists only A's catalog: its own tables (logs,
    // spans, metrics, and any table the server adds for every tenant) and
    // the information_schema views.
    let sql = "SELECT table_catalog AS c, table_schema AS s, table_name AS t \
               FROM information_schema.tables ORDER BY s, t";
    let listed = rows(&srv, &ka, sql).await;
    assert!(
        listed.iter().all(|r| r["c"] == json!("tenant")),
        "{listed:?}"
    );
    let names = |schema: &str| -> Vec<String> {
        let of = listed.iter().filter(|r| r["s"] == json!(schema));
        of.map(|r| r["t"].as_str().expect("name").to_string())
            .collect()
    };
    let views = [
        "columns",
        "df_settings",
        "parameters",
        "routines",
        "schemata",
        "tables",
        "views",
    ];
    assert_eq!(names("information_schema"), views);
    let public = names("public");
    for t in ["logs", "metrics", "spans"] {
        assert!(public.iter().any(|p| p == t), "{t} not in {public:?}");
    }
    assert_eq!(
        names("public").len() + views.len(),
        listed.len(),
        "{listed:?}"
    );
    // DataFusion resolves `<any catalog>.information_schema` to the session's
    // own: another catalog's name still lists only A's tables.
    for catalog in ["b", "datafusion"] {
        let sql =
            format!("SELECT DISTINCT table_catalog AS c FROM {catalog}.information_schema.tables");
        let r = srv.query(&ka, &sql).await;
        assert_eq!(r.rows(), &vec![json!({"c": "tenant"})], "{sql}");
    }
    let r = srv
        .query(
            &ka,
            "SELECT DISTINCT catalog_name, schema_name FROM information_schema.schemata ORDER BY 2",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![json!({"catalog_name": "tenant", "schema_name": "public"})]
    );
    // The qualified name of A's own table is A's data, and only A's.
    let r = srv
        .query(
            &ka,
            "SELECT tenant, body FROM tenant.public.logs UNION ALL SELECT tenant, body FROM logs",
        )
        .await;
    assert_eq!(
        r.rows(),
        &vec![
            json!({"tenant": "a", "body": "a-secret"}),
            json!({"tenant": "a", "body": "a-secret"})
        ]
    );
}

/// What one tenant sent in the property test.
#[derive(Default)]
struct Sent {
    /// (body, severity, trace id seed) per log record.
    logs: Vec<(String, i32, u8)>,
    span_traces: Vec<u8>,
}

/// Random tenants, random data, several allowed queries: every row is the
/// caller's and every count is what the caller sent. All tenants draw trace
/// ids from one small pool and claim random `tenant.id`s, so a join or a
/// filter that crossed tenants would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_every_row_belongs_to_the_caller() {
    let tenants = ["alpha", "bravo", "charlie"];
    let (mut total_logs, mut total_pairs) = (0, 0);
    for seed in [7_u64, 1234, 99_991, 4_242_424] {
        let mut b = TestServer::builder();
        for t in tenants {
            b = b.tenant(t, "ingest,query");
        }
        let srv = b.start().await;
        let ch = channel(&srv).await;
        let mut rng = Rng::new(seed);
        let mut sent: BTreeMap<&str, Sent> =
            tenants.iter().map(|t| (*t, Sent::default())).collect();
        for _ in 0..rng.range(4, 12) {
            let t = tenants[rng.range(0, 2) as usize];
            let key = srv.key(t, "ingest,query");
            let s = sent.get_mut(t).expect("tenant");
            let mut records = Vec::new();
            for i in 0..rng.range(0, 25) {
                let body = rng.word();
                let mut r = log(&body, i);
                r.severity_number = rng.range(1, 24) as i32;
                let trace = rng.range(0, 3) as u8;
                r.trace_id = id(16, trace);
                s.logs.push((body, r.severity_number, trace));
                records.push(r);
            }
            let spans: Vec<_> = (0..rng.range(0, 4))
                .map(|i| {
                    let trace = rng.range(0, 3) as u8;
                    s.span_traces.push(trace);
                    span(&format!("{t}-{i}"), id(16, trace), id(8, i as u8))
                })
                .collect();
            let claimed = tenants[rng.range(0, 2) as usize];
            let req = logs_request(records, vec![kv("tenant.id", claimed)]);
            send_logs(&srv, &ch, &key, req, rng.range(0, 2)).await;
            if !spans.is_empty() {
                TraceServiceClient::new(ch.clone())
                    .export(grpc_req(traces_request(spans), &key, &[]))
                    .await
                    .expect("spans");
            }
        }
        for t in tenants {
            // A body some other tenant sent (if any), to look for by value.
            let foreign: Vec<&String> = sent
                .iter()
                .filter(|(o, _)| **o != t)
                .flat_map(|(_, s)| s.logs.iter().map(|l| &l.0))
                .collect();
            let probe = if foreign.is_empty() {
                "nothing".to_string()
            } else {
                foreign[rng.range(0, foreign.len() as u64 - 1) as usize].clone()
            };
            total_pairs += check_tenant(&srv, t, &sent[t], &probe).await;
            total_logs += sent[t].logs.len();
        }
    }
    // The seeds exercise something: many records, and joins that match.
    assert!(
        total_logs > 200 && total_pairs > 50,
        "{total_logs} {total_pairs}"
    );
}

/// Sends logs over HTTP protobuf (0), HTTP JSON (1) or gRPC (2).
async fn send_logs(
    srv: &TestServer,
    ch: &Channel,
    key: &str,
    req: ExportLogsServiceRequest,
    how: u64,
) {
    match how {
        0 => {
            let a = Post::new("/v1/logs", key, PROTOBUF, req.encode_to_vec())
                .send(srv)
                .await;
            assert_eq!(a.status, 200, "{}", a.text());
            assert_eq!(a.body, b"");
        }
        1 => {
            let body = serde_json::to_vec(&req).expect("OTLP/JSON");
            let a = Post::new("/v1/logs", key, JSON, body).send(srv).await;
            assert_eq!((a.status, a.json()), (200, json!({})));
        }
        _ => {
            let r = LogsServiceClient::new(ch.clone())
                .export(grpc_req(req, key, &[]))
                .await
                .expect("gRPC logs");
            assert_eq!(r.into_inner().partial_success, None);
        }
    }
}

/// One tenant's queries and what they must return.
/// Returns how many log-span pairs the join found.
async fn check_tenant(srv: &TestServer, t: &str, s: &Sent, probe: &str) -> usize {
    let key = srv.key(t, "ingest,query");
    let q = |sql: String| {
        let key = key.clone();
        async move { srv.query(&key, &sql).await }
    };
    let own = |rows: usize, row: Value| if rows == 0 { vec![] } else { vec![row] };
    // Every row, with its tenant and body.
    let r = q("SELECT tenant, body FROM logs ORDER BY body".into()).await;
    let mut bodies: Vec<&str> = s.logs.iter().map(|l| l.0.as_str()).collect();
    bodies.sort();
    assert!(
        r.rows().iter().all(|r| r["tenant"] == json!(t)),
        "{t}: {}",
        r.body
    );
    let got: Vec<&str> = r
        .rows()
        .iter()
        .map(|r| r["body"].as_str().expect("body"))
        .collect();
    assert_eq!(got, bodies, "{t}");
    // Group by tenant, and by a claimed tenant in the payload.
    let r = q("SELECT tenant, count(*) AS n FROM logs GROUP BY tenant".into()).await;
    let n = s.logs.len();
    assert_eq!(r.rows(), &own(n, json!({"tenant": t, "n": n})), "{t}");
    let r = q(
        "SELECT DISTINCT tenant FROM logs WHERE resource_attributes['tenant.id'] <> tenant".into(),
    )
    .await;
    assert!(r.rows().iter().all(|r| r["tenant"] == json!(t)), "{t}");
    // Group by severity.
    let r = q("SELECT severity_number AS s, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1".into())
        .await;
    let mut sev: BTreeMap<i32, u64> = BTreeMap::new();
    for l in &s.logs {
        *sev.entry(l.1).or_default() += 1;
    }
    let expected: Vec<Value> = sev.iter().map(|(k, v)| json!({"s": k, "n": v})).collect();
    assert_eq!(r.rows(), &expected, "{t}");
    // Filters, including on a value another tenant sent.
    let n = count(
        srv,
        &key,
        "SELECT count(*) FROM logs WHERE body LIKE '%a%' AND severity_number > 12",
    )
    .await;
    let expected = s
        .logs
        .iter()
        .filter(|l| l.0.contains('a') && l.1 > 12)
        .count();
    assert_eq!(n, expected as u64, "{t}");
    let sql = format!(
        "SELECT count(*) FROM logs WHERE body = '{}'",
        probe.replace('\'', "''")
    );
    let expected = s.logs.iter().filter(|l| l.0 == probe).count();
    assert_eq!(count(srv, &key, &sql).await, expected as u64, "{t}: {sql}");
    // Logs joined with spans on trace id: only the tenant's own pairs.
    let r = q("SELECT count(*) AS n, count(DISTINCT l.tenant) AS lt, \
               count(DISTINCT s.tenant) AS st, min(s.tenant) AS who \
               FROM logs l JOIN spans s ON l.trace_id = s.trace_id"
        .into())
    .await;
    let pairs: usize = s
        .logs
        .iter()
        .map(|l| s.span_traces.iter().filter(|st| **st == l.2).count())
        .sum();
    let who = if pairs == 0 { Value::Null } else { json!(t) };
    let d = usize::from(pairs > 0);
    assert_eq!(
        r.rows(),
        &vec![json!({"n": pairs, "lt": d, "st": d, "who": who})],
        "{t}"
    );
    // UNION of both tables.
    let r = q("SELECT tenant, count(*) AS n FROM \
               (SELECT tenant FROM logs UNION ALL SELECT tenant FROM spans) GROUP BY tenant"
        .into())
    .await;
    let total = s.logs.len() + s.span_traces.len();
    assert_eq!(
        r.rows(),
        &own(total, json!({"tenant": t, "n": total})),
        "{t}"
    );
    let r = q(
        "SELECT tenant FROM logs UNION SELECT tenant FROM spans UNION SELECT tenant FROM metrics"
            .into(),
    )
    .await;
    assert_eq!(r.rows(), &own(total, json!({"tenant": t})), "{t}");
    // Spans: all the caller's, named by the caller.
    let r = q(
        "SELECT tenant, split_part(name, '-', 1) AS owner, count(*) AS n FROM spans GROUP BY 1, 2"
            .into(),
    )
    .await;
    let n = s.span_traces.len();
    assert_eq!(
        r.rows(),
        &own(n, json!({"tenant": t, "owner": t, "n": n})),
        "{t}"
    );
    pairs
}

/// Per-tenant query limits (`[query]` in the policy): each query over a
/// limit stops with an error naming it, while another tenant's query at the
/// same moment is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_limits_stop_one_tenants_query_and_no_one_elses() {
    let srv = TestServer::builder()
        .tenant("heavy", "query")
        .tenant("light", "query")
        .tenant("busy", "query")
        .policy("busy", "[query]\nmax_concurrent = 1\ntimeout = \"3s\"\n")
        .policy(
            "heavy",
            "[query]\nmemory = \"2MiB\"\ntimeout = \"300ms\"\nmax_rows = 10\nmax_result_size = \"4KiB\"\nmax_concurrent = 1\n",
        )
        .start()
        .await;
    let (heavy, light) = (srv.key("heavy", "query"), srv.key("light", "query"));
    let small = "SELECT count(*) AS n FROM generate_series(1, 1000)";

    // each limit, named in its error; the other tenant answered meanwhile
    for (sql, limit) in [
        // one group, no spilling: the tenant's memory limit
        (
            "SELECT array_agg(v) IS NOT NULL AS ok FROM generate_series(1, 3000000) AS t(v)",
            "query.memory",
        ),
        (
            "SELECT v FROM generate_series(1, 100) AS t(v)",
            "query.max_rows",
        ),
        (
            "SELECT lpad('x', 1000, 'x') AS s FROM generate_series(1, 10) AS t(v)",
            "query.max_result_size",
        ),
        (
            "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v)",
            "query.timeout",
        ),
    ] {
        let (h, l) = tokio::join!(srv.query(&heavy, sql), srv.query(&light, small));
        assert_eq!(h.status, 422, "{sql}: {:?}", h.body);
        assert!(h.error().contains(limit), "{sql}: {}", h.error());
        assert_eq!(l.status, 200, "{:?}", l.body);
        assert_eq!(l.rows()[0]["n"], json!(1000));
    }
    // the other tenant's own (default) limits are far above these
    let r = srv
        .query(
            &light,
            "SELECT array_agg(v) IS NOT NULL AS ok FROM generate_series(1, 3000000) AS t(v)",
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // concurrency: while one query of busy runs, a second is refused with a
    // retry hint; light is not
    let busy = srv.key("busy", "query");
    let long = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v)";
    let start_long = || {
        let (url, key) = (srv.api_endpoint(), busy.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/api/v1/query"))
                .bearer_auth(key)
                .json(&json!({ "sql": long }))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let mut running = start_long();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refused = loop {
        if running.is_finished() {
            // a probe took the one place first: the long query was refused
            assert_eq!(running.await.unwrap(), 429);
            running = start_long();
        }
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/query", srv.api_endpoint()))
            .bearer_auth(&busy)
            .json(&json!({ "sql": small }))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            break resp;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused while another query ran"
        );
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("query.max_concurrent"),
        "{body}"
    );
    assert_eq!(srv.query(&light, small).await.status, 200);
    assert_eq!(
        running.await.unwrap(),
        422,
        "the long query hit its time limit"
    );
    // and once it is over, busy may query again
    assert_eq!(srv.query(&busy, small).await.status, 200);
}

/// Operator federation: an operator key granted tenants a and b queries
/// both at once (a `tenant` column tells them apart), may narrow to one with
/// `X-Scope-OrgID`, is refused for c, and every query is on the record of
/// each tenant it touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_queries_its_granted_tenants_and_no_other() {
    let op_key = bulkhead_rules::ApiKey::from_random([0x0f; 8], [0x42; 32]);
    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .tenant("c", "ingest,query")
        .operator("sre-team", &["a", "b"], &op_key)
        .start()
        .await;
    for (tenant, n) in [("a", 3u64), ("b", 2), ("c", 5)] {
        let key = srv.key(tenant, "ingest,query");
        let records = (0..n).map(|i| log(&format!("{tenant}-{i}"), i)).collect();
        let r = post_pb(&srv, "/v1/logs", &key, &logs_request(records, vec![])).await;
        assert_eq!(r.status, 200);
    }
    let op = op_key.expose();
    let ask = |scope: Option<&'static str>, key: String| {
        let url = format!("{}/api/v1/query", srv.api_endpoint());
        async move {
            let mut req = reqwest::Client::new().post(url).bearer_auth(key).json(
                &json!({"sql": "SELECT tenant, count(*) AS n FROM logs GROUP BY tenant ORDER BY tenant"}),
            );
            if let Some(s) = scope {
                req = req.header("X-Scope-OrgID", s);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        ask(None, op.clone()).await,
        (
            200,
            json!([{"tenant": "a", "n": 3}, {"tenant": "b", "n": 2}])
        )
    );
    assert_eq!(
        ask(Some("b"), op.clone()).await,
        (200, json!([{"tenant": "b", "n": 2}]))
    );
    let (status, body) = ask(Some("a|c"), op.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"c\""), "{body}");
    // the header twice, one naming no tenant, or one that is not text is
    // refused, not read as "every granted tenant"
    let url = format!("{}/api/v1/query", srv.api_endpoint());
    for headers in [
        vec![("x-scope-orgid", "b".as_bytes()), ("x-scope-orgid", b"a")],
        vec![("x-scope-orgid", b" | ")],
        vec![("x-scope-orgid", b"")],
        vec![("x-scope-orgid", b"b\xff")],
    ] {
        let mut req = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&op)
            .json(&json!({"sql": "SELECT count(*) AS n FROM logs"}));
        for (name, value) in &headers {
            req = req.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap();
        assert_eq!(status, 400, "{headers:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("X-Scope-OrgID"),
            "{body}"
        );
    }
    // the same id with another secret is no operator
    let forged = bulkhead_rules::ApiKey::from_random([0x0f; 8], [0x43; 32]).expose();
    assert_eq!(ask(None, forged).await.0, 401);
    // a tenant key is unchanged by federation: its own tenant only
    assert_eq!(
        ask(Some("b"), srv.key("a", "ingest,query")).await,
        (200, json!([{"tenant": "a", "n": 3}]))
    );

    // on the record of a and b (the first query touched both), never of c
    let audit_of = |tenant: &'static str| {
        let key = srv.key(tenant, "ingest,query");
        let srv = &srv;
        async move {
            srv.query(
                &key,
                "SELECT details['tenants'] AS tenants FROM audit WHERE details['operator'] = 'sre-team' ORDER BY seq",
            )
            .await
            .rows()
            .clone()
        }
    };
    assert_eq!(audit_of("a").await, vec![json!({"tenants": "a,b"})]);
    assert_eq!(
        audit_of("b").await,
        vec![json!({"tenants": "a,b"}), json!({"tenants": "b"})]
    );
    assert_eq!(audit_of("c").await, Vec::<Value>::new());
}

/// Plans stay ready for a distributed engine: a tenant query resolves to
/// DataFusion's own operators over explicit file lists (committed Parquet
/// files named one by one) and in-memory batches (rows still buffered), with
/// no execution node of our own; a federated query likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_plans_are_standard_scans_over_explicit_files() {
    let op_key = bulkhead_rules::ApiKey::from_random([0x0e; 8], [0x42; 32]);
    let srv = TestServer::builder()
        .tenant("a", "ingest,query")
        .tenant("b", "ingest,query")
        .operator("ops", &["a", "b"], &op_key)
        .start()
        .await;
    let key = srv.key("a", "ingest,query");
    for i in 0..2 {
        let r = post_pb(
            &srv,
            "/v1/logs",
            &key,
            &logs_request(vec![log("x", i)], vec![]),
        )
        .await;
        assert_eq!(r.status, 200);
        if i == 0 {
            // one committed file, one buffered batch
            let store = srv.server().store().clone();
            tokio::task::spawn_blocking(move || store.flush_all())
                .await
                .unwrap()
                .unwrap();
        }
    }
    // DataFusion's physical operators this engine's plans may contain
    const STANDARD: &[&str] = &[
        "AggregateExec",
        "CoalescePartitionsExec",
        "CoalesceBatchesExec",
        "DataSourceExec",
        "FilterExec",
        "ProjectionExec",
        "RepartitionExec",
        "SortExec",
        "SortPreservingMergeExec",
        "UnionExec",
        "EmptyExec",
        "PlaceholderRowExec",
        "CooperativeExec",
        "GlobalLimitExec",
        "LocalLimitExec",
    ];
    let explain = |key: String| {
        let srv = &srv;
        async move {
            let r = srv
                .query(
                    &key,
                    "EXPLAIN SELECT service_name, count(*) FROM logs WHERE body = 'x' GROUP BY service_name",
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.rows()
                .iter()
                .find(|row| row["plan_type"] == "physical_plan")
                .and_then(|row| row["plan"].as_str())
                .unwrap()
                .to_string()
        }
    };
    for plan in [explain(key.clone()).await, explain(op_key.expose()).await] {
        for line in plan.lines().filter(|l| !l.trim().is_empty()) {
            let name = line.trim().split(':').next().unwrap();
            assert!(STANDARD.contains(&name), "{name} in\n{plan}");
        }
        assert!(plan.contains("DataSourceExec: file_groups="), "{plan}");
        assert!(plan.contains(".parquet"), "explicit files: {plan}");
        assert!(
            plan.contains("partitions=1, partition_sizes=[1]"),
            "buffered rows: {plan}"
        );
    }
}
