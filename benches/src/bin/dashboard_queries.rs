//! `dashboard_queries`: how long the dashboard's documented queries
//! (`docs/queries.md`) take on a tenant with ten million log rows.
//!
//! Starts a real server in this process (WAL on, default flushes every 30 s
//! of buffered age, so the day is spread over many files as in production),
//! sends a day of logs (10 million rows by default, eight services, 2 % errors)
//! and 200,000 spans over OTLP/gRPC, then runs every documented query through
//! `/api/v1/query` over the whole day: once cold, then five times warm, and
//! reports the first and the median of the warm runs. Run it in release:
//!
//! ```text
//! cargo run --release -p bulkhead-benches --bin dashboard_queries
//! ```
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_collector::tenants;
use bulkhead_rules::{Scopes, SystemClock};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use tonic::codec::CompressionEncoding;

#[derive(Parser)]
struct Args {
    /// Log rows in the tenant's day.
    #[arg(long, default_value_t = 10_000_000)]
    logs: u64,
    /// Spans in the tenant's day.
    #[arg(long, default_value_t = 200_000)]
    spans: u64,
    /// Concurrent gRPC clients.
    #[arg(long, default_value_t = 4)]
    clients: u64,
}

const DAY: u64 = 86_400_000_000_000;
const BATCH: u64 = 2_000;
const SERVICES: u64 = 8;

use bulkhead_benches::kv;

fn resource(service: u64) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", format!("svc-{service}"))],
        ..Default::default()
    })
}

/// Rows `first..first + BATCH` of the day, all of service `first / BATCH % SERVICES`.
fn logs(first: u64, start: u64, total: u64) -> ExportLogsServiceRequest {
    let service = first / BATCH % SERVICES;
    let records = (first..(first + BATCH).min(total))
        .map(|n| {
            let error = n % 50 == 0;
            LogRecord {
                time_unix_nano: start + n * (DAY / total),
                severity_number: if error { 17 } else { 9 },
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(if error {
                        format!("upstream timeout calling dependency {}", n % 7)
                    } else {
                        format!("GET /api/items/{} 200 in {} ms", n % 10_000, n % 97)
                    })),
                }),
                attributes: vec![kv("user.id", format!("u-{}", n % 5_000))],
                trace_id: (n as u128 + 1).to_be_bytes().to_vec(),
                span_id: (n + 1).to_be_bytes().to_vec(),
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn spans(first: u64, start: u64, total: u64) -> ExportTraceServiceRequest {
    let service = first / BATCH % SERVICES;
    let spans = (first..(first + BATCH).min(total))
        .map(|n| {
            let begin = start + n * (DAY / total);
            Span {
                trace_id: (n as u128 / 4 + 1).to_be_bytes().to_vec(),
                span_id: (n + 1).to_be_bytes().to_vec(),
                name: format!("GET /api/items/{}", n % 50),
                kind: 2,
                start_time_unix_nano: begin,
                end_time_unix_nano: begin + (1 + n % 400) * 1_000_000,
                status: Some(Status {
                    code: if n % 40 == 0 {
                        status::StatusCode::Error as i32
                    } else {
                        status::StatusCode::Ok as i32
                    },
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends the day's logs and spans from `clients` clients, building each
/// request as it goes; a request told to retry (a full buffer) is retried.
async fn load(endpoint: &str, key: &str, args: &Args, start: u64) -> Result<(), String> {
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {key}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (endpoint, auth) = (endpoint.to_string(), auth.clone());
        let (total_logs, total_spans, clients) = (args.logs, args.spans, args.clients);
        tasks.push(tokio::spawn(async move {
            let mut logs_client = LogsServiceClient::connect(endpoint.clone())
                .await
                .map_err(|e| e.to_string())?
                .send_compressed(CompressionEncoding::Gzip);
            let mut traces_client = TraceServiceClient::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?
                .send_compressed(CompressionEncoding::Gzip);
            let mut first = c * BATCH;
            while first < total_logs {
                let body = logs(first, start, total_logs);
                loop {
                    let mut req = tonic::Request::new(body.clone());
                    req.metadata_mut().insert("authorization", auth.clone());
                    match logs_client.export(req).await {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        Err(s) => return Err(s.to_string()),
                    }
                }
                first += clients * BATCH;
            }
            let mut first = c * BATCH;
            while first < total_spans {
                let mut req = tonic::Request::new(spans(first, start, total_spans));
                req.metadata_mut().insert("authorization", auth.clone());
                traces_client.export(req).await.map_err(|e| e.to_string())?;
                first += clients * BATCH;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

use bulkhead_benches::sql_timestamp as timestamp;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = bulkhead_benches::loopback_config(dir.path());
    tenants::create_tenant(&config.policy_dir(), "bench")?;
    let key = tenants::create_key(
        &config.policy_dir(),
        "bench",
        Scopes::parse_list("ingest,query")?,
    )?;
    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    // every query covers all of it
    let (start, end) = bulkhead_benches::day_ending_an_hour_ago()?;

    let loaded = Instant::now();
    load(
        &format!("http://{}", server.grpc_addr),
        &key.expose(),
        &args,
        start,
    )
    .await?;
    println!(
        "loaded {} log rows and {} spans in {:.1} s",
        args.logs,
        args.spans,
        loaded.elapsed().as_secs_f64()
    );
    // commit what is buffered, as 30-second flushes would have by now
    let store = server.store().clone();
    tokio::task::spawn_blocking(move || store.flush_all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let files = server
        .store()
        .stats()
        .files_committed
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("committed files: {files}");

    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/query", server.api_addr);
    let trace = format!("{:032x}", 1_000u128 / 4 + 1);
    println!("query                  rows   cold ms   warm median ms");
    for (name, sql) in bulkhead_query::dashboard::queries() {
        let sql = sql
            .replace(":from", &timestamp(start))
            .replace(":to", &timestamp(end))
            .replace(":bucket", "INTERVAL '15 minutes'")
            .replace(":trace_id", &format!("'{trace}'"));
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..6 {
            let t = Instant::now();
            let resp = http
                .post(&url)
                .bearer_auth(key.expose())
                .json(&serde_json::json!({ "sql": sql }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            times.push(t.elapsed());
            if !status.is_success() {
                return Err(format!("{name}: {status} {body}"));
            }
            rows = body.as_array().map_or(0, Vec::len);
        }
        let cold = times[0];
        let mut warm = times[1..].to_vec();
        warm.sort();
        println!(
            "{name:<22} {rows:>5} {:>9.1} {:>16.1}",
            cold.as_secs_f64() * 1e3,
            warm[warm.len() / 2].as_secs_f64() * 1e3
        );
    }
    server.shutdown().await?;
    Ok(())
}
