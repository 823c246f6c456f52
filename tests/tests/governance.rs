//! Governance on the ingest path: secure-default credential masking for
//! every tenant, each tenant's own redaction policy, and fields naming
//! another tenant pinned to the caller. Checked in query results and in the
//! Parquet files themselves (read back, not grepped).
use std::path::Path;

use arrow::array::Array;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bulkhead_e2e::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::json;

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQ";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const CARD: &str = "4111 1111 1111 1111";
const BEARER: &str = "Bearer s3cr3tT0kenValue99";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
const EMAIL: &str = "jane.doe@example.com";

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: s(v),
        ..Default::default()
    }
}

fn request() -> Vec<u8> {
    let records = vec![
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            body: s(&format!("login with {BEARER} from {EMAIL}")),
            attributes: vec![kv("auth", JWT), kv("card", CARD), kv("user.email", EMAIL)],
            ..Default::default()
        },
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_001,
            body: s(&format!("config dump: aws_key={AWS_KEY}\n{PEM}")),
            attributes: vec![kv("order", "ORD-123456")],
            ..Default::default()
        },
    ];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shop"), kv("tenant.id", "other-tenant")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn send(srv: &TestServer, tenant: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/logs", srv.http_endpoint()))
        .bearer_auth(srv.key(tenant, "ingest,query"))
        .header("content-type", "application/x-protobuf")
        .body(request())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Every cell of every Parquet file under `dir`, nested values included,
/// as text (decrypted with the tenants' keys), and the raw bytes of every
/// file as they are on disk.
fn all_stored_text(config: &bulkhead::Config, dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.push_str(&all_stored_text(config, &p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            for batch in bulkhead_e2e::read_stored_file(config, &p) {
                for col in batch.columns() {
                    let f =
                        ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()).unwrap();
                    for i in 0..col.len() {
                        out.push_str(&f.value(i).to_string());
                        out.push('\n');
                    }
                }
            }
        }
    }
    out
}

const SECRETS: [&str; 5] = [
    JWT,
    AWS_KEY,
    CARD,
    "s3cr3tT0kenValue99",
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_storage_and_each_tenant_gets_its_own_policy() {
    let mut srv = TestServer::builder()
        .tenant("plain", "ingest,query")
        .tenant("strict", "ingest,query")
        .policy(
            "strict",
            r#"[redaction]
detectors = ["email"]
hash_secret = "strict-tenant-secret-0001"

[[redaction.rules]]
name = "hash-orders"
match = { pattern = "ORD-[0-9]{6}" }
action = "hash"
hash_length = 16

[[redaction.rules]]
name = "no-card-attribute"
action = "drop_attribute"
keys = ["card"]
applies_to = ["record_attributes"]
"#,
        )
        .start()
        .await;
    send(&srv, "plain").await;
    send(&srv, "strict").await;

    // plain: secure defaults only; personal data (e-mail) and orders stay
    let plain = srv.key("plain", "ingest,query");
    let r = srv
        .query(&plain, "SELECT body, attributes, resource_attributes['tenant.id'] AS claimed FROM logs ORDER BY timestamp")
        .await;
    let rows = r.rows();
    assert_eq!(rows.len(), 2);
    let text = serde_json::to_string(rows).unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} survived in {text}");
    }
    assert!(text.contains(EMAIL), "e-mail masking is opt-in: {text}");
    assert!(text.contains("ORD-123456"));
    assert_eq!(
        rows[0]["claimed"],
        json!("plain"),
        "a foreign tenant.id is pinned to the caller"
    );

    // strict: e-mail masked, orders hashed (joinable, not readable), card attribute gone
    let strict = srv.key("strict", "ingest,query");
    let r = srv
        .query(&strict, "SELECT body, attributes, resource_attributes['tenant.id'] AS claimed FROM logs ORDER BY timestamp")
        .await;
    let rows = r.rows();
    let text = serde_json::to_string(rows).unwrap();
    assert!(
        !text.contains(EMAIL) && !text.contains("ORD-123456"),
        "{text}"
    );
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} survived in {text}");
    }
    assert!(rows[0]["attributes"].get("card").is_none(), "{}", rows[0]);
    let hashed = rows[1]["attributes"]["order"].as_str().unwrap();
    assert_eq!(hashed.len(), 16, "{hashed}");
    assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(rows[0]["claimed"], json!("strict"));

    // counted per tenant and rule
    let metrics = srv.metrics_text().await;
    for line in [
        "bulkhead_redactions_total{tenant=\"strict\",rule=\"hash-orders\",action=\"hashed\"} 1",
        "bulkhead_redactions_total{tenant=\"strict\",rule=\"no-card-attribute\",action=\"attribute_dropped\"} 1",
        // the resource attribute is pinned on each of the two records
        "bulkhead_tenant_fields_overwritten_total{tenant=\"plain\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains(
            "bulkhead_redactions_total{tenant=\"plain\",rule=\"default:jwt\",action=\"masked\"}"
        ),
        "{metrics}"
    );

    // and in the files themselves, read back as Parquet
    let store = srv.store_dir();
    let config = srv.server_config().clone();
    srv.shutdown().await;
    let stored = all_stored_text(&config, &store);
    assert!(stored.contains("shop"), "the files were read");
    for secret in SECRETS {
        assert!(!stored.contains(secret), "{secret} is in a stored file");
    }
    assert!(!stored.contains("other-tenant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_attribute_keys_are_configurable() {
    let srv = TestServer::builder()
        .tenant("plain", "ingest,query")
        .tenant_attribute_keys(&["customer"])
        .start()
        .await;
    let body = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("customer", "someone-else"), kv("tenant.id", "kept-now")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    body: s("hello"),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/logs", srv.http_endpoint()))
        .bearer_auth(srv.key("plain", "ingest,query"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = srv
        .query(
            &srv.key("plain", "ingest,query"),
            "SELECT resource_attributes['customer'] AS c, resource_attributes['tenant.id'] AS t FROM logs",
        )
        .await;
    assert_eq!(r.rows(), &vec![json!({"c": "plain", "t": "kept-now"})]);
}
