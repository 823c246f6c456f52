//! Erasure requests and offboarding through the API: a tenant key with the
//! `admin` scope asks for the erasure of one user's log records in a time
//! range; once the job is done the predicate matches nothing there, every
//! other row is still there (counts before and after), the other tenant is
//! untouched, and the request, start and end are on the audit trail with
//! the rows removed. Bad requests are refused with the reason, a legal hold
//! blocks erasure, a pending job can be cancelled, another tenant's job is
//! not found. An operator offboards a tenant: nothing of it stays in
//! storage and its keys stop working.
use std::path::{Path, PathBuf};

use bulkhead_e2e::TestServer;
use bulkhead_rules::ApiKey;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::{json, Value};

const HOUR: u64 = 3_600_000_000_000;

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn rfc3339(nanos: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos as i64).to_rfc3339()
}

/// `n` records, one a minute back from `end`, of users u0..u4 in turn.
fn records(end: u64, n: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: end - i * 60_000_000_000,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("record {i}"))),
                        }),
                        attributes: vec![KeyValue {
                            key: "user.id".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(format!("u{}", i % 5))),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn count(srv: &TestServer, key: &str, filter: &str) -> u64 {
    srv.scalar(
        key,
        &format!("SELECT count(*) AS n FROM logs WHERE {filter}"),
    )
    .await
    .as_u64()
    .unwrap()
}

struct Api<'a> {
    srv: &'a TestServer,
    http: reqwest::Client,
}

impl Api<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.srv.api_endpoint()))
            .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Job `id` as the operator of `key` sees it.
    async fn job(&self, key: &str, id: &str) -> Value {
        let path = format!("/api/v1/admin/jobs/{id}");
        self.send(reqwest::Method::GET, &path, key, None).await.1
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_request_removes_what_it_names_and_nothing_else() {
    let operator = ApiKey::from_random([0xad; 8], [0x17; 32]);
    let mut srv = TestServer::builder()
        .tenant("acme", "ingest,query,admin")
        .tenant("acme", "ingest,query")
        .tenant("other", "ingest,query,admin")
        .tenant("held", "ingest,query,admin")
        .policy("held", "[retention]\nlegal_hold = true\n")
        .admin("ops", &operator)
        .start()
        .await;
    let admin = srv.key("acme", "ingest,query,admin");
    let plain = srv.key("acme", "ingest,query");
    let other = srv.key("other", "ingest,query,admin");
    let held = srv.key("held", "ingest,query,admin");
    let api = Api {
        srv: &srv,
        http: reqwest::Client::new(),
    };
    use reqwest::Method;

    // three hours of records a minute apart, in three requests
    let end = now_nanos();
    for key in [&admin, &other] {
        for h in 0..3 {
            srv.post_logs(key, records(end - h * HOUR, 60)).await;
        }
    }
    let user = "attr(attributes, 'user.id') = 'u1'";
    let total = count(&srv, &admin, "true").await;
    assert_eq!(total, 180);
    let (from, to) = (end - 2 * HOUR + 1, end - HOUR + 1);
    let in_range =
        format!("timestamp >= to_timestamp_nanos({from}) AND timestamp < to_timestamp_nanos({to})");
    let targeted = count(&srv, &admin, &format!("{user} AND {in_range}")).await;
    let u1_total = count(&srv, &admin, user).await;
    assert!(
        targeted >= 10 && targeted < u1_total,
        "{targeted} of {u1_total}"
    );
    let request = json!({
        "table": "logs",
        "from": rfc3339(from),
        "to": rfc3339(to),
        "where": user,
    });

    // without the admin scope: refused
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/erasures",
            &plain,
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // bad requests say what is wrong
    for (change, says) in [
        (json!({"table": "nope"}), "no table"),
        (json!({"where": "nosuch = 1"}), "nosuch"),
        (json!({"where": "body = (SELECT 1)"}), "subquery"),
        (json!({"from": "yesterday"}), "RFC 3339"),
        (json!({"to": rfc3339(from - 1)}), "empty"),
    ] {
        let mut r = request.clone();
        for (k, v) in change.as_object().unwrap() {
            r[k] = v.clone();
        }
        let (status, body) = api
            .send(Method::POST, "/api/v1/erasures", &admin, Some(r))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    // a legal hold blocks erasure
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/erasures",
            &held,
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("legal hold"),
        "{body}"
    );

    // the request
    let (status, job) = api
        .send(
            Method::POST,
            "/api/v1/erasures",
            &admin,
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["status"], "pending");
    srv.server().run_jobs().await.unwrap();
    let (status, job) = api
        .send(Method::GET, &format!("/api/v1/erasures/{id}"), &admin, None)
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["counts"]["rows_removed"], targeted, "{job}");
    assert!(
        job.get("predicate").is_none(),
        "the predicate is dropped: {job}"
    );
    assert_eq!(job["predicate_sha256"].as_str().unwrap().len(), 64);

    // gone where named, everything else still there
    assert_eq!(
        count(&srv, &admin, &format!("{user} AND {in_range}")).await,
        0
    );
    assert_eq!(count(&srv, &admin, user).await, u1_total - targeted);
    assert_eq!(count(&srv, &admin, "true").await, total - targeted);
    assert_eq!(
        count(&srv, &other, user).await,
        u1_total,
        "the other tenant is untouched"
    );
    assert_eq!(count(&srv, &other, "true").await, 180);

    // another tenant does not see the job
    let (status, _) = api
        .send(Method::GET, &format!("/api/v1/erasures/{id}"), &other, None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = api
        .send(Method::GET, "/api/v1/erasures", &other, None)
        .await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    let (_, list) = api
        .send(Method::GET, "/api/v1/erasures", &admin, None)
        .await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);

    // on the audit trail, with the rows removed
    let r = srv
        .query(
            &admin,
            &format!("SELECT kind, details['rows_removed'] AS rows FROM audit WHERE details['job'] = '{id}' ORDER BY seq"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let kinds: Vec<&str> = r
        .rows()
        .iter()
        .map(|row| row["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["erasure_requested", "erasure_started", "erasure_done"]
    );
    assert_eq!(r.rows()[2]["rows"], targeted.to_string());

    // a pending job can be cancelled, a finished one not
    let paused = srv.server().pause_jobs();
    let (_, pending) = api
        .send(
            Method::POST,
            "/api/v1/erasures",
            &admin,
            Some(request.clone()),
        )
        .await;
    let pid = pending["id"].as_str().unwrap();
    let (status, cancelled) = api
        .send(
            Method::POST,
            &format!("/api/v1/erasures/{pid}/cancel"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // at most 8 unfinished jobs per tenant
    let mut queued = Vec::new();
    for _ in 0..8 {
        let (status, job) = api
            .send(
                Method::POST,
                "/api/v1/erasures",
                &admin,
                Some(request.clone()),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        queued.push(job["id"].as_str().unwrap().to_string());
    }
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/erasures",
            &admin,
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 8"),
        "{body}"
    );
    for q in &queued {
        let (status, _) = api
            .send(
                Method::POST,
                &format!("/api/v1/erasures/{q}/cancel"),
                &admin,
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    drop(paused);
    srv.server().run_jobs().await.unwrap();
    let (_, still) = api
        .send(
            Method::GET,
            &format!("/api/v1/erasures/{pid}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(still["status"], "cancelled");
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/api/v1/erasures/{id}/cancel"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // offboarding: a tenant key may not, the operator may; what was
    // committed and what is still buffered both go
    srv.server().store().flush_all().unwrap();
    srv.post_logs(&other, records(end, 7)).await;
    let (status, _) = api
        .send(
            Method::POST,
            "/api/v1/admin/tenants/other/offboard",
            &other,
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/admin/tenants/held/offboard",
            &operator.expose(),
            None,
        )
        .await;
    assert_eq!(status, 409, "a legal hold blocks offboarding too: {body}");
    // a name nothing is known of is not marked shredded for good
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/admin/tenants/nosuch/offboard",
            &operator.expose(),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("no tenant nosuch"), "{body}");
    let paused = srv.server().pause_jobs();
    let (status, job) = api
        .send(
            Method::POST,
            "/api/v1/admin/tenants/other/offboard",
            &operator.expose(),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let oid = job["id"].as_str().unwrap().to_string();
    // the tenant's own admin key neither sees nor cancels it
    let (status, _) = api
        .send(
            Method::POST,
            &format!("/api/v1/erasures/{oid}/cancel"),
            &other,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, list) = api
        .send(Method::GET, "/api/v1/erasures", &other, None)
        .await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    drop(paused);
    srv.server().run_jobs().await.unwrap();
    let oid = oid.as_str();
    let (_, job) = api
        .send(
            Method::GET,
            &format!("/api/v1/admin/jobs/{oid}"),
            &operator.expose(),
            None,
        )
        .await;
    assert_eq!(job["status"], "done", "{job}");
    assert!(
        job["counts"]["objects_deleted"].as_u64().unwrap() > 3,
        "{job}"
    );
    assert_eq!(job["counts"]["buffered_rows_dropped"], 7, "{job}");
    assert_eq!(job["counts"]["data_keys_destroyed"], 1, "{job}");
    let mut files = Vec::new();
    files_under(&srv.store_dir(), &mut files);
    assert!(
        !files
            .iter()
            .any(|f| f.to_string_lossy().contains("tenant=other")),
        "something of the offboarded tenant is left"
    );
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().contains("tenant=acme")));
    let r = srv.query(&other, "SELECT count(*) FROM logs").await;
    assert_eq!(r.status, 401, "its keys stopped: {}", r.body);
    assert_eq!(count(&srv, &admin, "true").await, total - targeted);
    // its name is not given out again: a key under it could neither write
    // (the keys are shredded) nor read
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/admin/tenants",
            &operator.expose(),
            Some(json!({"tenant": "other", "key_scopes": "ingest"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("offboarded"), "{body}");
    // a job id that is no UUID names no job (a long one was a storage
    // error naming the server's path)
    for id in ["a".repeat(300), "ABC".into(), oid.to_uppercase()] {
        let (status, body) = api
            .send(
                Method::GET,
                &format!("/api/v1/admin/jobs/{id}"),
                &operator.expose(),
                None,
            )
            .await;
        assert_eq!(status, 404, "{id}: {body}");
        assert!(
            !body
                .to_string()
                .contains(&srv.store_dir().display().to_string()),
            "{body}"
        );
    }

    // lifting the hold is audited, and erasure is allowed again
    let policy = srv.server_config().policy_dir().join("held.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("legal_hold = true", "legal_hold = false"),
    )
    .unwrap();
    srv.server().check_policies().await;
    let r = srv
        .query(
            &held,
            "SELECT details['legal_hold'] AS held FROM audit WHERE kind = 'legal_hold_changed'",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.rows().len(), 1, "{}", r.body);
    assert_eq!(r.rows()[0]["held"], "false");
    let (status, body) = api
        .send(
            Method::POST,
            "/api/v1/erasures",
            &held,
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    srv.shutdown().await;
}

/// A job left `running` by a node that never came back is taken over by
/// another node once the lease (an hour) has passed, and finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_abandoned_by_its_node_is_taken_over_after_the_lease() {
    use bulkhead::jobs::{self, ErasureRequest, Job, Status};
    let now = now_nanos();
    let clock = std::sync::Arc::new(bulkhead_rules::ManualClock::new(now as i64));
    let mut srv = TestServer::builder()
        .tenant("acme", "ingest,query,admin")
        .clock(clock.clone())
        .start()
        .await;
    let key = srv.key("acme", "ingest,query,admin");
    srv.post_logs(&key, records(now, 10)).await;
    let storage = srv.server().store().storage();
    let tenant = bulkhead_rules::TenantId::new("acme").unwrap();
    let job = Job::erasure(
        &tenant,
        &ErasureRequest {
            table: "logs".into(),
            from: rfc3339(now - HOUR),
            to: rfc3339(now + HOUR),
            predicate: "attr(attributes, 'user.id') = 'u1'".into(),
        },
        "k",
        "api",
        now as i64,
    )
    .unwrap();
    jobs::submit(storage, &job).unwrap();
    // another node took it, and died
    let taken = jobs::advance(storage, &job, |j| {
        j.status = Status::Running;
        j.node = Some("dead-node".into());
        j.started_at = Some(rfc3339(now));
    })
    .unwrap()
    .unwrap();
    srv.server().run_jobs().await.unwrap();
    assert_eq!(
        jobs::get(storage, &job.id).unwrap(),
        taken,
        "within the lease"
    );
    clock.advance(bulkhead::jobs::JOB_LEASE);
    srv.server().run_jobs().await.unwrap();
    srv.server().run_jobs().await.unwrap();
    let done = jobs::get(storage, &job.id).unwrap();
    assert_eq!(done.status, Status::Done, "{done:?}");
    assert_eq!(done.node.as_deref(), Some("test-node"));
    assert_eq!(done.counts["rows_removed"], 2);
    assert_eq!(
        count(&srv, &key, "attr(attributes, 'user.id') = 'u1'").await,
        0
    );
    srv.shutdown().await;
}

/// The `audit` table of a tenant created under the name of one that was
/// offboarded (encryption off, so the name may be given out again) holds
/// nothing of the tenant that was there before: not its queries, not its
/// offboarding; nor does its list of erasures show the earlier tenant's. The same holds when the offboarding ran on another node,
/// whose audit log this node does not have: the store's mark of when it ran
/// cuts the entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_under_an_offboarded_name_reads_none_of_the_old_tenants_audit_entries() {
    let operator = ApiKey::from_random([0xae; 8], [0x18; 32]);
    let srv = TestServer::builder()
        .tenant("gone", "ingest,query,admin")
        .tenant("moved", "ingest,query")
        .admin("ops", &operator)
        .encryption(false)
        .start()
        .await;
    let api = Api {
        srv: &srv,
        http: reqwest::Client::new(),
    };
    let (gone, moved) = (
        srv.key("gone", "ingest,query,admin"),
        srv.key("moved", "ingest,query"),
    );
    let max_seq = |key: String| {
        let srv = &srv;
        async move {
            srv.scalar(&key, "SELECT coalesce(max(seq), 0) AS s FROM audit")
                .await
                .as_u64()
                .unwrap()
        }
    };

    // offboarded on another node: only the store's mark says so here
    srv.post_logs(&moved, records(now_nanos(), 3)).await;
    count(&srv, &moved, "true").await;
    let seen = max_seq(moved.clone()).await;
    assert!(seen > 0, "the tenant's query was audited");
    let store = srv.server().store().clone();
    let t = bulkhead_rules::TenantId::new("moved").unwrap();
    tokio::task::spawn_blocking(move || store.offboard(&t).unwrap())
        .await
        .unwrap();
    let old = srv
        .scalar(
            &moved,
            &format!("SELECT count(*) AS n FROM audit WHERE seq <= {seen}"),
        )
        .await;
    assert_eq!(old, json!(0), "entries from before the offboarding");

    // offboarded here, through the API, and the name given out again
    srv.post_logs(&gone, records(now_nanos(), 3)).await;
    count(&srv, &gone, "true").await;
    let (status, erasure) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/erasures",
            &gone,
            Some(json!({
                "table": "logs",
                "from": rfc3339(now_nanos() - HOUR),
                "to": rfc3339(now_nanos()),
                "where": "attr(attributes, 'user.id') = 'u1'",
            })),
        )
        .await;
    assert_eq!(status, 202, "{erasure}");
    srv.server().run_jobs().await.unwrap();
    let before = max_seq(gone.clone()).await;
    assert!(before > 0, "the tenant's query was audited");
    // the server's own job loop waits, so the two jobs below run in order
    let paused = srv.server().pause_jobs();
    let (status, job) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/tenants/gone/offboard",
            &operator.expose(),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    // an erasure asked for after the offboarding (its keys still work until
    // the job runs) is cancelled by it: it would run on the next tenant's data
    let (status, late) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/erasures",
            &gone,
            Some(json!({
                "table": "logs",
                "from": rfc3339(now_nanos() - HOUR),
                "to": rfc3339(now_nanos() + HOUR),
                "where": "true",
            })),
        )
        .await;
    assert_eq!(status, 202, "{late}");
    drop(paused);
    srv.server().run_jobs().await.unwrap();
    let done = api
        .job(&operator.expose(), job["id"].as_str().unwrap())
        .await;
    assert_eq!(done["counts"]["erasures_cancelled"], 1, "{done}");
    let late = api
        .job(&operator.expose(), late["id"].as_str().unwrap())
        .await;
    assert_eq!(late["status"], "cancelled", "{late}");
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/tenants",
            &operator.expose(),
            Some(json!({"tenant": "gone", "key_scopes": "query,admin"})),
        )
        .await;
    assert_eq!(
        status, 201,
        "encryption off: the name is free again: {body}"
    );
    let again = body["key"].as_str().unwrap().to_string();
    let r = srv
        .query(
            &again,
            "SELECT seq, kind, key_id, details['job'] AS job FROM audit ORDER BY seq",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let job_id = job["id"].as_str().unwrap();
    let old_key_id = &gone[4..20];
    for row in r.rows() {
        assert_ne!(
            row["key_id"],
            json!(old_key_id),
            "the old tenant's key: {row}"
        );
        assert!(
            row["seq"].as_u64().unwrap() > before,
            "the old tenant's: {row}"
        );
        assert_ne!(
            row["job"],
            json!(job_id),
            "the old tenant's offboarding: {row}"
        );
    }
    // nor its erasure jobs: not listed, not found
    let (status, list) = api
        .send(reqwest::Method::GET, "/api/v1/erasures", &again, None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["jobs"], json!([]), "the old tenant's erasures");
    let old_id = erasure["id"].as_str().unwrap();
    let (status, body) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/erasures/{old_id}"),
            &again,
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // an erasure of the old tenant that came in while the offboarding ran
    // (made after its mark, before its end) fails when it comes to run: it
    // would run on what the new tenant sends
    let store = srv.server().store().clone();
    let racing = tokio::task::spawn_blocking(move || {
        let t = bulkhead_rules::TenantId::new("gone").unwrap();
        let mark = store.offboarded_before(&t).unwrap().unwrap();
        let request = bulkhead::jobs::ErasureRequest {
            table: "logs".into(),
            from: rfc3339(now_nanos() - HOUR),
            to: rfc3339(now_nanos() + HOUR),
            predicate: "true".into(),
        };
        let job = bulkhead::jobs::Job::erasure(&t, &request, "old-key", "api", mark + 1).unwrap();
        bulkhead::jobs::submit(store.storage(), &job).unwrap();
        job.id
    })
    .await
    .unwrap();
    srv.server().run_jobs().await.unwrap();
    let ended = api.job(&operator.expose(), &racing).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("offboarded"),
        "{ended}"
    );
}
