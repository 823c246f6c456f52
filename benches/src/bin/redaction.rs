//! Redaction cost: log records of about 300 bytes (body and attributes)
//! through the tenant redaction step, with 5 regex rules and 2 built-in
//! opt-in detectors on top of the secure defaults, against the defaults
//! alone. Run in release:
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin redaction
//! ```
use std::hint::black_box;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use bulkhead_collector::convert::{self, Stamp};
use bulkhead_collector::redact::redact_batch;
use bulkhead_rules::redact::{RedactionPolicy, Redactor, Report};
use bulkhead_store::Signal;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

const RECORDS_PER_BATCH: usize = 1_000;
const BATCHES: usize = 100;

use bulkhead_benches::kv;

/// ~300 bytes per record: a ~200-byte message and four attributes; one in
/// ten carries an e-mail, one in twenty an order id, one in fifty a token.
fn request(seq: usize) -> ExportLogsServiceRequest {
    let records = (0..RECORDS_PER_BATCH)
        .map(|i| {
            let n = seq * RECORDS_PER_BATCH + i;
            let who = if n.is_multiple_of(10) { format!("user{n}@example.com") } else { format!("user-{n}") };
            let order = if n.is_multiple_of(20) { format!("ORD-{:06}", n % 1_000_000) } else { format!("cart-{n}") };
            let auth = if n.is_multiple_of(50) { "Bearer abcDEF123456ghiJKL".to_string() } else { "session".to_string() };
            LogRecord {
                time_unix_nano: 1_764_000_000_000_000_000 + n as u64,
                severity_number: 9,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "checkout completed for {who} with {order} from 10.1.{}.{} in {} ms; items=3 total=42.50 EUR currency=EUR channel=web auth={auth} region=eu-west-1 build=2026.11.3",
                        n % 256,
                        (n / 256) % 256,
                        n % 997
                    ))),
                }),
                attributes: vec![
                    kv("http.route", "/api/v1/checkout".into()),
                    kv("user.id", who),
                    kv("order.id", order),
                    kv("client.address", format!("192.168.{}.{}", n % 256, (n / 7) % 256)),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const POLICY: &str = r#"
detectors = ["email", "ipv4"]
hash_secret = "benchmark-tenant-secret"

[[rules]]
name = "orders"
match = { pattern = "ORD-[0-9]{6}" }
action = "hash"
hash_length = 16

[[rules]]
name = "carts"
match = { pattern = "cart-[0-9]+" }
action = "mask"
replacement = "[CART]"

[[rules]]
name = "amounts"
match = { pattern = "total=[0-9]+\\.[0-9]{2}" }
action = "mask"
replacement = "total=[AMOUNT]"

[[rules]]
name = "builds"
match = { pattern = "build=[0-9.]+" }
action = "mask"

[[rules]]
name = "regions"
match = { pattern = "region=[a-z]+-[a-z]+-[0-9]" }
action = "mask"
"#;

fn run(name: &str, redactor: &Redactor, batches: &[RecordBatch]) {
    let started = Instant::now();
    let mut report = Report::default();
    let mut rows = 0;
    for b in batches {
        let out = redact_batch(Signal::Logs, b, redactor, &mut report).expect("redaction");
        rows += out.map(|o| o.num_rows()).unwrap_or(0);
        black_box(rows);
    }
    let secs = started.elapsed().as_secs_f64();
    let total = batches.len() * RECORDS_PER_BATCH;
    let t = report.total();
    println!(
        "{name}: {total} records in {secs:.2} s = {:.0} records/s ({:.2} µs/record); masked {}, hashed {}",
        total as f64 / secs,
        secs * 1e6 / total as f64,
        t.values_masked,
        t.values_hashed
    );
}

fn main() {
    let stamp = Stamp {
        tenant: "bench",
        policy_version: "v1",
        node: "bench",
        received_at_nanos: 0,
        window: bulkhead_collector::convert::EventWindow::ANY,
    };
    let batches: Vec<_> = (0..BATCHES)
        .map(|s| convert::logs(&request(s), &stamp).batch.expect("records"))
        .collect();
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    println!(
        "{} log records, {:.0} bytes each in memory (Arrow, all columns)",
        BATCHES * RECORDS_PER_BATCH,
        bytes as f64 / (BATCHES * RECORDS_PER_BATCH) as f64
    );
    let policy: RedactionPolicy = toml::from_str(POLICY).expect("policy");
    let rules = Redactor::compile(&policy).expect("compiles");
    let defaults = Redactor::default_for_tenant();
    for _ in 0..2 {
        run("secure defaults only", &defaults, &batches);
        run("5 regex rules + email + ipv4 + defaults", &rules, &batches);
    }
}
