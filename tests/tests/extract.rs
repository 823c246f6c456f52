//! Forensic extracts through the API: a key with the `extract` scope gets
//! a signed tar bundle of its tenant's rows in a range, optionally
//! filtered; `verify` accepts the fresh bundle (as a tar and unpacked) and
//! names the file when one byte of a data file or of the manifest changes;
//! a recipient key encrypts the files; the extract is on the audit trail
//! with its counts and the manifest holds the audit head and policy
//! versions. A property test: whatever the tenant, range and filter, an
//! extract holds exactly that tenant's matching rows and never another's,
//! including rows of other tenants that claim the requester's name.
use std::io::Read;

use bulkhead::extract::{self, Manifest};
use bulkhead_e2e::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::{json, Value};

const MINUTE: u64 = 60_000_000_000;

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

/// Record `i` of `tenant`: body `<claimed>|<i>`, user `u<i % 3>`, at
/// `base + i` minutes. `claimed` is the tenant the record pretends to be.
fn records(claimed: &str, base: u64, n: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: base + i * MINUTE,
                        body: string(&format!("{claimed}|{i}")),
                        attributes: vec![
                            KeyValue {
                                key: "user.id".into(),
                                value: string(&format!("u{}", i % 3)),
                                ..Default::default()
                            },
                            KeyValue {
                                key: "tenant".into(),
                                value: string(claimed),
                                ..Default::default()
                            },
                        ],
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

fn rfc3339(nanos: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos as i64).to_rfc3339()
}

async fn post_extract(srv: &TestServer, key: &str, body: Value) -> (u16, bytes::Bytes) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/extracts", srv.api_endpoint()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap())
}

async fn public_key(srv: &TestServer) -> Vec<u8> {
    let text = reqwest::get(format!("{}/api/v1/extracts/public-key", srv.api_endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    extract::read_public_key(text.trim()).unwrap()
}

/// The tar's entries: name → content.
fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.push((name, bytes));
    }
    out
}

/// Every (tenant column, body) of the bundle's Parquet files, read with
/// `key` when they are encrypted.
fn rows_of(tar_bytes: &[u8], key: Option<&[u8]>) -> Vec<(String, String)> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let mut out = Vec::new();
    for (name, bytes) in entries(tar_bytes) {
        if !name.ends_with(".parquet") {
            continue;
        }
        let mut options = ArrowReaderOptions::new();
        if let Some(k) = key {
            options = options.with_file_decryption_properties(std::sync::Arc::new(
                parquet::encryption::decrypt::FileDecryptionProperties::builder(k.to_vec())
                    .build()
                    .unwrap()
                    .as_ref()
                    .clone(),
            ));
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            bytes::Bytes::from(bytes),
            options,
        )
        .unwrap()
        .build()
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            let tenant = b
                .column_by_name("tenant")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let body = b.column_by_name("body").unwrap().as_string::<i32>().clone();
            for i in 0..b.num_rows() {
                out.push((tenant.value(i).to_string(), body.value(i).to_string()));
                assert!(!body.is_null(i));
            }
        }
    }
    out
}

fn verify_bytes(tar_bytes: &[u8], key: &[u8]) -> extract::Verdict {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.tar");
    std::fs::write(&path, tar_bytes).unwrap();
    extract::verify(&path, key).unwrap()
}

/// `tar_bytes` with one byte of entry `name` flipped.
fn flipped(tar_bytes: &[u8], name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(tar_bytes);
    let offset = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_string_lossy() == name)
        .map(|e| e.raw_file_position() as usize)
        .unwrap();
    let mut out = tar_bytes.to_vec();
    out[offset + 10] ^= 0x01;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_is_signed_verifiable_and_tamper_evident() {
    let mut srv = TestServer::builder()
        .tenant("acme", "ingest,query,extract")
        .tenant("acme", "ingest,query")
        .tenant("other", "ingest,query")
        .start()
        .await;
    let key = srv.key("acme", "ingest,query,extract");
    let plain = srv.key("acme", "ingest,query");
    let other = srv.key("other", "ingest,query");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let base = now - 120 * MINUTE;
    srv.post_logs(&key, records("acme", base, 90)).await;
    srv.post_logs(&other, records("acme", base, 90)).await; // claims to be acme
                                                            // part committed, part still buffered: the extract holds both
    srv.server().store().flush_all().unwrap();
    srv.post_logs(&key, records("acme", base + 90 * MINUTE, 10))
        .await;
    let request = json!({
        "tables": ["logs"],
        "from": rfc3339(base),
        "to": rfc3339(base + 100 * MINUTE),
        "where": "attr(attributes, 'user.id') <> 'u2'",
    });
    let (status, _) = post_extract(&srv, &plain, request.clone()).await;
    assert_eq!(status, 403, "the extract scope is needed");
    for (change, says) in [
        (json!({"tables": ["nope"]}), "no table"),
        (json!({"where": "body = (SELECT 1)"}), "subquery"),
        (json!({"to": rfc3339(base - 1)}), "empty"),
        (json!({"recipient_key": "abc"}), "64 hex"),
        (json!({"recipient_key": "00".repeat(32)}), "no secret"),
        (json!({"tables": []}), "empty list"),
    ] {
        let mut r = request.clone();
        for (k, v) in change.as_object().unwrap() {
            r[k] = v.clone();
        }
        let (status, body) = post_extract(&srv, &key, r).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(
            String::from_utf8_lossy(&body).contains(says),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    // well formed, but more than a query may hold: 422, as for a query
    let mut r = request.clone();
    r["where"] = json!("length(repeat(body, 100000000)) > 0");
    let (status, body) = post_extract(&srv, &key, r).await;
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("memory"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    let expected = srv
        .scalar(
            &key,
            &format!(
                "SELECT count(*) FROM logs WHERE attr(attributes, 'user.id') <> 'u2' AND timestamp >= to_timestamp_nanos({base}) AND timestamp < to_timestamp_nanos({})",
                base + 100 * MINUTE
            ),
        )
        .await
        .as_u64()
        .unwrap();
    let (status, bundle) = post_extract(&srv, &key, request.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
    let pk = public_key(&srv).await;
    let verdict = verify_bytes(&bundle, &pk);
    assert!(verdict.ok(), "{:?}", verdict.problems());
    let manifest: Manifest = verdict.manifest.unwrap();
    assert_eq!(expected, 67, "100 records, a third of them u2");
    assert_eq!(manifest.rows["logs"], expected);
    assert_eq!(manifest.tenant, "acme");
    assert_eq!(
        manifest.requested_by,
        bulkhead_rules::ApiKey::parse(&key).unwrap().id()
    );
    assert!(!manifest.policy_versions.is_empty());
    // the head names the query audited just before
    assert!(manifest.audit_head.seq > 0);
    let head = srv
        .query(
            &key,
            &format!(
                "SELECT kind, hash FROM audit WHERE seq = {}",
                manifest.audit_head.seq
            ),
        )
        .await;
    assert_eq!(head.rows()[0]["hash"], manifest.audit_head.hash.as_str());
    assert_eq!(manifest.public_key, hex::encode(&pk));
    let rows = rows_of(&bundle, None);
    assert_eq!(rows.len() as u64, expected);
    assert!(rows.iter().all(|(t, _)| t == "acme"));

    // unpacked into a directory it verifies too
    let dir = tempfile::tempdir().unwrap();
    tar::Archive::new(&bundle[..]).unpack(dir.path()).unwrap();
    assert!(extract::verify(dir.path(), &pk).unwrap().ok());
    // one byte of one data file: that file is named
    let data = manifest.files[0].path.clone();
    let v = verify_bytes(&flipped(&bundle, &data), &pk);
    assert!(!v.ok());
    assert!(v.signature_ok);
    assert_eq!(v.altered, vec![data.clone()]);
    assert!(v.problems()[0].contains(&data));
    // one byte of the manifest: the signature fails
    let v = verify_bytes(&flipped(&bundle, extract::MANIFEST), &pk);
    assert!(!v.signature_ok);
    assert!(v.problems()[0].contains(extract::MANIFEST));
    // a file removed from the unpacked bundle, another added: both named
    std::fs::remove_file(dir.path().join(&data)).unwrap();
    std::fs::write(dir.path().join("data/extra.parquet"), b"x").unwrap();
    let v = extract::verify(dir.path(), &pk).unwrap();
    assert_eq!(v.missing, vec![data.clone()]);
    assert_eq!(v.unlisted, vec!["data/extra.parquet".to_string()]);
    // another key: the signature fails
    let v = verify_bytes(&bundle, &[7u8; 32]);
    assert!(!v.signature_ok);

    // to a recipient key: unreadable without it, readable with it
    let recipient: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
    let mut r = request.clone();
    r["recipient_key"] = json!(hex::encode(recipient));
    let (status, sealed) = post_extract(&srv, &key, r).await;
    assert_eq!(status, 200);
    assert!(verify_bytes(&sealed, &pk).ok());
    for (name, bytes) in entries(&sealed) {
        if name.ends_with(".parquet") {
            assert!(
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    bytes::Bytes::from(bytes)
                )
                .is_err(),
                "{name} reads without the recipient key"
            );
        }
    }
    assert_eq!(rows_of(&sealed, Some(&recipient)).len() as u64, expected);

    // on the audit trail with its counts
    let r = srv
        .query(
            &key,
            "SELECT details['rows'] AS rows, details['encrypted'] AS enc FROM audit WHERE kind = 'extract_created' ORDER BY seq",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.rows().len(), 2);
    assert_eq!(r.rows()[0]["rows"], expected.to_string());
    assert_eq!(r.rows()[1]["enc"], "true");
    srv.shutdown().await;
}

/// Whatever tenant asks, for whatever range and filter, the extract holds
/// exactly its matching rows: none of another tenant's, even when those
/// claim the requester's name in their body and attributes.
#[test]
fn an_extract_never_holds_another_tenants_rows() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names = ["t0", "t1", "t2"];
    let mut builder = TestServer::builder();
    for n in names {
        builder = builder.tenant(n, "ingest,query,extract");
    }
    let mut srv = rt.block_on(builder.start());
    let base = 1_767_225_600_000_000_000u64; // 2026-01-01
    const N: u64 = 60;
    rt.block_on(async {
        for (i, n) in names.iter().enumerate() {
            let key = srv.key(n, "ingest,query,extract");
            srv.post_logs(&key, records(n, base, N)).await;
            // and records claiming to be the next tenant
            srv.post_logs(&key, records(names[(i + 1) % 3], base, N))
                .await;
        }
        srv.server().store().flush_all().unwrap();
    });
    let pk = rt.block_on(public_key(&srv));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                0usize..3,
                0u64..N,
                1u64..N + 5,
                proptest::option::of(0u64..3),
            ),
            |(who, start, len, user)| {
                let name = names[who];
                let key = srv.key(name, "ingest,query,extract");
                let (from, to) = (base + start * MINUTE, base + (start + len) * MINUTE);
                let mut request =
                    json!({"tables": ["logs"], "from": rfc3339(from), "to": rfc3339(to)});
                if let Some(u) = user {
                    request["where"] = json!(format!("attr(attributes, 'user.id') = 'u{u}'"));
                }
                let (status, bundle) = rt.block_on(post_extract(&srv, &key, request));
                prop_assert_eq!(status, 200);
                prop_assert!(verify_bytes(&bundle, &pk).ok());
                let rows = rows_of(&bundle, None);
                // the tenant's own records (both claims) in the range, by user
                let in_range = (start..(start + len).min(N))
                    .filter(|i| user.is_none_or(|u| i % 3 == u))
                    .count();
                prop_assert_eq!(rows.len(), 2 * in_range);
                let own = format!("{name}|");
                let claimed_by_next = format!("{}|", names[(who + 1) % 3]);
                for (tenant, body) in &rows {
                    prop_assert_eq!(tenant.as_str(), name);
                    // its own records, or the ones it sent claiming the next
                    // tenant: never the previous tenant's claiming this one
                    prop_assert!(
                        body.starts_with(&own) || body.starts_with(&claimed_by_next),
                        "{}",
                        body
                    );
                }
                let own_count = rows.iter().filter(|(_, b)| b.starts_with(&own)).count();
                prop_assert_eq!(
                    own_count,
                    in_range,
                    "the previous tenant's records claim {}",
                    name
                );
                Ok(())
            },
        )
        .unwrap();
    rt.block_on(srv.shutdown());
}
