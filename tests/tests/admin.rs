//! The admin API over HTTP with an operator's admin key: tenants and keys
//! created, listed, revoked and removed take effect on the very next
//! request; a default policy set in bulk is inherited and overridden; tenant
//! keys and strangers are refused; every change is audited with the
//! operator's name.
use std::time::{Duration, Instant};

use bulkhead_e2e::TestServer;
use bulkhead_rules::ApiKey;
use serde_json::{json, Value};

use crate::common;
use common::{log, logs_request, post_pb};

struct Admin<'a> {
    srv: &'a TestServer,
    key: String,
    http: reqwest::Client,
}

impl Admin<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(&self.key, method, path, body).await
    }

    async fn send_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/api/v1/admin{path}", self.srv.api_endpoint()),
            )
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put_defaults(&self, toml: &str) -> (u16, Value) {
        let resp = self
            .http
            .put(format!("{}/api/v1/admin/defaults", self.srv.api_endpoint()))
            .bearer_auth(&self.key)
            .body(toml.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

async fn ingest(srv: &TestServer, key: &str, n: u64) -> u16 {
    let records = (0..n).map(|i| log("hello", i)).collect();
    post_pb(srv, "/v1/logs", key, &logs_request(records, vec![]))
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_keys_are_administered_over_http_and_take_effect_at_once() {
    let admin_key = ApiKey::from_random([0xad; 8], [0x17; 32]);
    let mut srv = TestServer::builder()
        .tenant("existing", "ingest,query")
        .admin("ops-team", &admin_key)
        .start()
        .await;
    let admin = Admin {
        srv: &srv,
        key: admin_key.expose(),
        http: reqwest::Client::new(),
    };
    use reqwest::Method;

    // create a tenant with a first key; the key works on the next request
    let (status, body) = admin
        .send(
            Method::POST,
            "/tenants",
            Some(json!({"tenant": "acme", "key_scopes": "ingest,query"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let acme = body["key"].as_str().unwrap().to_string();
    let (_, page) = admin.send(Method::GET, "/tenants?limit=1", None).await;
    assert_eq!(
        page["tenants"][0]["version"], body["version"],
        "the version in force is answered"
    );
    assert_eq!(ingest(&srv, &acme, 3).await, 200);
    assert_eq!(
        srv.scalar(&acme, "SELECT count(*) FROM logs").await,
        json!(3)
    );
    // the same name again: a conflict; a hostile name: refused before any path is built
    let (status, body) = admin
        .send(Method::POST, "/tenants", Some(json!({"tenant": "acme"})))
        .await;
    assert_eq!(status, 409, "{body}");
    for bad in ["../etc", "", "Acme", "a/b"] {
        let (status, body) = admin
            .send(Method::POST, "/tenants", Some(json!({"tenant": bad})))
            .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let (status, body) = admin
        .send(
            Method::POST,
            "/tenants",
            Some(json!({"tenant": "x", "key_scopes": "root"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("root"), "{body}");
    let (status, _) = admin
        .send(Method::POST, "/tenants", Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 400);

    // a second key, then its revocation: refused on the next request
    let (status, body) = admin
        .send(
            Method::POST,
            "/tenants/acme/keys",
            Some(json!({"scopes": "ingest"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (second, second_id) = (
        body["key"].as_str().unwrap().to_string(),
        body["key_id"].as_str().unwrap().to_string(),
    );
    assert_eq!(ingest(&srv, &second, 1).await, 200);
    let (status, body) = admin
        .send(
            Method::DELETE,
            &format!("/tenants/acme/keys/{second_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ingest(&srv, &second, 1).await, 401);
    let (status, _) = admin
        .send(
            Method::DELETE,
            &format!("/tenants/acme/keys/{second_id}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "already revoked");
    let (status, _) = admin
        .send(
            Method::POST,
            "/tenants/nobody/keys",
            Some(json!({"scopes": "ingest"})),
        )
        .await;
    assert_eq!(status, 404);

    // listing, a page at a time
    for i in 0..5 {
        let (status, _) = admin
            .send(
                Method::POST,
                "/tenants",
                Some(json!({"tenant": format!("bulk-{i}")})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/tenants?limit=3&after={a}"),
            None => "/tenants?limit=3".into(),
        };
        let (status, body) = admin.send(Method::GET, &q, None).await;
        assert_eq!(status, 200, "{body}");
        for t in body["tenants"].as_array().unwrap() {
            names.push(t["tenant"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        names,
        ["acme", "bulk-0", "bulk-1", "bulk-2", "bulk-3", "bulk-4", "existing"]
    );

    // tenant keys and strangers are refused
    let existing = srv.key("existing", "ingest,query");
    let (status, body) = admin
        .send_as(&existing, Method::GET, "/tenants", None)
        .await;
    assert_eq!(status, 403, "{body}");
    let forged = ApiKey::from_random([0xad; 8], [0x18; 32]).expose();
    let (status, _) = admin.send_as(&forged, Method::GET, "/tenants", None).await;
    assert_eq!(status, 401);
    let (status, _) = admin.send_as("", Method::GET, "/tenants", None).await;
    assert_eq!(status, 401);

    // removal: its keys stop at once, its data is kept
    let (status, body) = admin.send(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ingest(&srv, &acme, 1).await, 401);
    let (status, _) = admin.send(Method::DELETE, "/tenants/acme", None).await;
    assert_eq!(status, 404);

    // every change is on the trail once, with the operator's name
    let (status, body) = admin
        .send(
            Method::POST,
            "/tenants/existing/keys",
            Some(json!({"scopes": "query"})),
        )
        .await;
    assert_eq!(status, 201);
    let new_id = body["key_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT kind, details['by'] AS by FROM audit WHERE kind = 'key_created' AND key_id = '{new_id}'"
    );
    let rows = loop {
        let r = srv.query(&existing, &sql).await;
        let rows = r.rows().clone();
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the key's creation was never audited"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(rows, vec![json!({"kind": "key_created", "by": "ops-team"})]);

    // its name is not given to a new tenant while its data is kept: that
    // tenant would read it; restoring it brings the data back on purpose
    let (status, body) = admin
        .send(Method::POST, "/tenants", Some(json!({"tenant": "acme"})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("data from before"), "{body}");
    let (status, body) = admin
        .send(
            Method::POST,
            "/tenants",
            Some(json!({"tenant": "acme", "restore": true, "key_scopes": "query"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let restored = body["key"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = srv.query(&restored, "SELECT count(*) AS n FROM logs").await;
        if r.status == 200 {
            assert!(r.rows()[0]["n"].as_u64().unwrap() > 0, "{}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.body);
        tokio::task::yield_now().await;
    }

    // a removal is remembered even when nothing was stored yet (rows may
    // be buffered, or only audit entries and jobs exist): restore only
    let (status, body) = admin
        .send(Method::POST, "/tenants", Some(json!({"tenant": "brief"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = admin.send(Method::DELETE, "/tenants/brief", None).await;
    assert_eq!(status, 200);
    let (status, body) = admin
        .send(Method::POST, "/tenants", Some(json!({"tenant": "brief"})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("restore"), "{body}");

    // a change the server cannot take in is not made, and the answer names
    // the file, not the server's directory
    let file = srv.server_config().policy_dir().join("existing.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}\n[query]\nmemory = \"64KiB\"\n")).unwrap();
    let broken = std::fs::read_to_string(&file).unwrap();
    let (status, body) = admin
        .send(
            Method::POST,
            "/tenants/existing/keys",
            Some(json!({"scopes": "query"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("existing.toml") && text.contains("nothing was changed"),
        "{text}"
    );
    assert!(
        !text.contains(&srv.server_config().policy_dir().display().to_string()),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        broken,
        "no key was added"
    );
    std::fs::write(&file, good).unwrap();

    // the removed tenant's data was kept
    srv.shutdown().await;
    assert!(srv.store_dir().join("tenant=acme").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_policy_is_set_in_bulk_inherited_and_overridden() {
    let admin_key = ApiKey::from_random([0xae; 8], [0x27; 32]);
    let srv = TestServer::builder()
        .tenant("plain", "ingest,query")
        .tenant("big", "ingest,query")
        .policy("big", "[limits]\nrecords_per_second = 0\n")
        .admin("ops", &admin_key)
        .start()
        .await;
    let admin = Admin {
        srv: &srv,
        key: admin_key.expose(),
        http: reqwest::Client::new(),
    };
    use reqwest::Method;
    let (status, _) = admin.send(Method::GET, "/defaults", None).await;
    assert_eq!(status, 404, "no default policy yet");

    // refused with its line, and nothing changes
    let (status, body) = admin
        .put_defaults("[limits]\nrecords_per_second = \"lots\"\n")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains(":2"), "{body}");
    let (status, body) = admin.put_defaults("tenant = \"plain\"\n").await;
    assert_eq!(status, 400, "{body}");
    // a secret shared by every tenant would make hashes comparable across them
    let (status, body) = admin
        .put_defaults("[redaction]\nhash_secret = \"0123456789abcdef0123\"\n")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("hash_secret"),
        "{body}"
    );

    // checked against every tenant: a burst without a rate does not fit
    // the tenant that sets its rate to 0 (unlimited)
    let (status, body) = admin
        .put_defaults("[limits]\nrecords_per_second = 5\nburst_records = 5\n")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("big.toml"),
        "{body}"
    );
    let (status, _) = admin.send(Method::GET, "/defaults", None).await;
    assert_eq!(status, 404, "the refused default policy was put back");

    // every tenant inherits a tight rate, except the one that sets its own
    let (status, body) = admin
        .put_defaults("[limits]\nrecords_per_second = 5\n")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenants_changed"], json!(2), "{body}");
    let (plain, big) = (
        srv.key("plain", "ingest,query"),
        srv.key("big", "ingest,query"),
    );
    // a full bucket takes one request whatever its size; the next waits
    assert_eq!(ingest(&srv, &plain, 50).await, 200);
    assert_eq!(ingest(&srv, &plain, 50).await, 429);
    assert_eq!(ingest(&srv, &big, 50).await, 200);
    assert_eq!(ingest(&srv, &big, 50).await, 200);
    let (status, body) = admin.send(Method::GET, "/defaults", None).await;
    assert_eq!(status, 200);
    assert!(body.as_str().unwrap().contains("records_per_second = 5"));

    // the change of every inheriting tenant is on its trail with the operator's name
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = srv
            .query(
                &plain,
                "SELECT count(*) AS n FROM audit WHERE kind = 'policy_changed' AND details['by'] = 'ops'",
            )
            .await;
        if r.rows().first().is_some_and(|row| row["n"] == json!(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not audited with its operator: {}",
            r.body
        );
        tokio::task::yield_now().await;
    }

    // removed: the built-in defaults again
    let (status, _) = admin.send(Method::DELETE, "/defaults", None).await;
    assert_eq!(status, 200);
    assert_eq!(ingest(&srv, &plain, 50).await, 200);
}
