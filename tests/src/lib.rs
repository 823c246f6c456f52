//! End-to-end test support: [`TestServer`] starts the real server in-process
//! on free loopback ports with its own data directory, creates tenants and
//! keys the way the CLI does, and queries over the real HTTP API.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead::config::{ByteSize, HumanDuration};
use bulkhead::{Config, RunningServer, StartOptions};
use bulkhead_collector::tenants;
use bulkhead_rules::{Clock, Scopes, SystemClock};
use bulkhead_store::wal::WriteFaults;
use serde_json::Value;

/// Builds a [`TestServer`].
pub struct TestServerBuilder {
    tenants: Vec<(String, String)>,
    policy_sections: Vec<(String, String)>,
    config: Config,
    clock: Arc<dyn Clock>,
    data_dir: Option<PathBuf>,
    options: StartOptions,
}

/// A running server with its data directory and the keys of its tenants.
pub struct TestServer {
    server: Option<RunningServer>,
    config: Config,
    _dir: Option<tempfile::TempDir>,
    keys: Vec<(String, String, String)>,
    http: reqwest::Client,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        let mut config = Config::default();
        let any = |_| SocketAddr::from(([127, 0, 0, 1], 0));
        config.listen.grpc = any(());
        config.listen.http = any(());
        config.listen.api = any(());
        config.listen.metrics = any(());
        config.listen.flight = any(());
        config.node_name = "test-node".into();
        Self {
            tenants: Vec::new(),
            policy_sections: Vec::new(),
            config,
            clock: Arc::new(SystemClock),
            data_dir: None,
            options: StartOptions::default(),
        }
    }
}

impl TestServerBuilder {
    /// A tenant with one key of the given scopes (e.g. `"ingest,query"`),
    /// known afterwards as `key(tenant, scopes)`.
    pub fn tenant(mut self, name: &str, scopes: &str) -> Self {
        self.tenants.push((name.to_string(), scopes.to_string()));
        self
    }

    /// TOML appended to `tenant`'s policy file (e.g. a `[redaction]` section).
    pub fn policy(mut self, tenant: &str, toml: &str) -> Self {
        self.policy_sections
            .push((tenant.to_string(), toml.to_string()));
        self
    }

    pub fn tenant_attribute_keys(mut self, keys: &[&str]) -> Self {
        self.config.ingest.tenant_attribute_keys = keys.iter().map(|k| k.to_string()).collect();
        self
    }

    pub fn max_body_size(mut self, bytes: u64) -> Self {
        self.config.ingest.max_body_size = ByteSize(bytes);
        self
    }

    /// Requests in the ingest CPU stage at once (`ingest.workers`).
    pub fn ingest_workers(mut self, n: usize) -> Self {
        self.config.ingest.workers = n;
        self
    }

    /// `ingest.backlog_nice`.
    pub fn backlog_nice(mut self, nice: u8) -> Self {
        self.config.ingest.backlog_nice = nice;
        self
    }

    pub fn max_in_flight(mut self, bytes: u64) -> Self {
        self.config.ingest.max_in_flight = ByteSize(bytes);
        self
    }

    pub fn flush_max_age(mut self, d: std::time::Duration) -> Self {
        self.config.flush.max_age = HumanDuration(d);
        self
    }

    pub fn max_total_buffer(mut self, bytes: u64) -> Self {
        self.config.flush.max_total_buffer = ByteSize(bytes);
        self.config.flush.max_buffer_size = ByteSize(bytes);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// WAL writes fail while `faults` is switched on (a full disk).
    pub fn wal_faults(mut self, faults: Arc<WriteFaults>) -> Self {
        self.options.wal_faults = Some(faults);
        self
    }

    /// Grants an operator key (the one returned) the tenants `tenants`.
    pub fn operator(mut self, name: &str, tenants: &[&str], key: &bulkhead_rules::ApiKey) -> Self {
        self.config
            .federation
            .push(bulkhead_query::federation::Grant {
                name: name.into(),
                key_id: key.id().into(),
                key_sha256: key.digest().iter().map(|b| format!("{b:02x}")).collect(),
                tenants: tenants.iter().map(|t| t.to_string()).collect(),
            });
        self
    }

    /// An admin-API key (the one given) for operator `name`.
    pub fn admin(mut self, name: &str, key: &bulkhead_rules::ApiKey) -> Self {
        self.config.admin.push(bulkhead::admin::AdminGrant {
            name: name.into(),
            key_id: key.id().into(),
            key_sha256: key.digest().iter().map(|b| format!("{b:02x}")).collect(),
        });
        self
    }

    /// Housekeeping (flushes, policy checks) does nothing while `paused` is set.
    pub fn pause_housekeeping(mut self, paused: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.options.pause_housekeeping = Some(paused);
        self
    }

    /// Runs for every authenticated query (fault injection).
    pub fn query_fault_hook(mut self, hook: bulkhead_query::http::QueryFaultHook) -> Self {
        self.options.query_fault_hook = Some(hook);
        self
    }

    /// Runs at the start of every ingest (to inject a panic, say).
    pub fn fault_hook(mut self, hook: bulkhead_collector::pipeline::FaultHook) -> Self {
        self.options.fault_hook = Some(hook);
        self
    }

    /// Sets the accepted event-time window's bounds.
    pub fn event_window(
        mut self,
        max_age: Option<std::time::Duration>,
        max_future: std::time::Duration,
    ) -> Self {
        self.config.ingest.max_event_age = max_age.map(HumanDuration);
        self.config.ingest.max_event_future = HumanDuration(max_future);
        self
    }

    /// Encrypt new data under per-tenant keys (the default) or not.
    pub fn encryption(mut self, enabled: bool) -> Self {
        self.config.encryption.enabled = enabled;
        self
    }

    /// Use an existing data directory (to restart over earlier data).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub async fn start(mut self) -> TestServer {
        let dir = match &self.data_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temp dir")),
        };
        self.config.data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.as_ref().expect("temp dir").path().to_path_buf());
        let policy_dir = self.config.policy_dir();
        let mut keys = Vec::new();
        for (name, scopes) in &self.tenants {
            let exists = policy_dir.join(format!("{name}.toml")).exists();
            if !exists {
                tenants::create_tenant(&policy_dir, name).expect("create tenant");
            }
            let key = tenants::create_key(
                &policy_dir,
                name,
                Scopes::parse_list(scopes).expect("scopes"),
            )
            .expect("create key");
            keys.push((name.clone(), scopes.clone(), key.expose()));
        }
        for (tenant, section) in &self.policy_sections {
            let path = policy_dir.join(format!("{tenant}.toml"));
            let mut text = std::fs::read_to_string(&path).expect("policy file");
            text.push('\n');
            text.push_str(section);
            std::fs::write(&path, text).expect("write policy");
        }
        let server = bulkhead::start_with(&self.config, self.clock.clone(), self.options)
            .await
            .expect("server starts");
        TestServer {
            server: Some(server),
            config: self.config,
            _dir: dir,
            keys,
            http: reqwest::Client::new(),
        }
    }
}

/// Every batch of one stored Parquet file (a path under the store
/// directory of `config`), decrypted with its tenant's keys the way the
/// server reads it (the keyring and master key on disk; the server may be
/// running or stopped).
pub fn read_stored_file(config: &Config, file: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let rel = file
        .strip_prefix(config.store_dir())
        .expect("a file of the store");
    let tenant = rel
        .iter()
        .next()
        .and_then(|p| p.to_str())
        .and_then(|p| p.strip_prefix("tenant="))
        .expect("under tenant=<id>");
    let tenant = bulkhead_rules::TenantId::new(tenant).expect("tenant id");
    let mut options = ArrowReaderOptions::new();
    if let Some(keys) = config.open_keys(|k| std::env::var(k).ok()).expect("keys") {
        let storage =
            bulkhead_store::objects::Storage::open_beside_server(&config.storage_config())
                .expect("storage");
        let props = bulkhead_store::crypto::decryption_properties(keys, Arc::new(storage), &tenant)
            .expect("decryption properties");
        options = options.with_file_decryption_properties(props);
    }
    let bytes = bytes::Bytes::from(std::fs::read(file).expect("read file"));
    ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}

/// A query's HTTP status and parsed JSON body.
#[derive(Debug)]
pub struct QueryResult {
    pub status: u16,
    pub body: Value,
}

impl QueryResult {
    /// The rows, panicking with the error body when the query failed.
    pub fn rows(&self) -> &Vec<Value> {
        assert_eq!(self.status, 200, "query failed: {}", self.body);
        self.body.as_array().expect("rows array")
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// The key created for `tenant` with `scopes`.
    pub fn key(&self, tenant: &str, scopes: &str) -> String {
        self.keys
            .iter()
            .find(|(t, s, _)| t == tenant && s == scopes)
            .map(|(_, _, k)| k.clone())
            .unwrap_or_else(|| panic!("no key for {tenant} with {scopes}"))
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.running().grpc_addr)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.running().http_addr)
    }

    pub fn api_endpoint(&self) -> String {
        format!("http://{}", self.running().api_addr)
    }

    /// The self-metrics listener (`/metrics`).
    /// The Arrow Flight SQL endpoint, `grpc://host:port`.
    pub fn flight_endpoint(&self) -> String {
        format!("grpc://{}", self.running().flight_addr)
    }

    pub fn metrics_endpoint(&self) -> String {
        format!("http://{}", self.running().metrics_addr)
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.metrics_endpoint()))
            .send()
            .await
            .expect("metrics request");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics body")
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn store_dir(&self) -> PathBuf {
        self.config.store_dir()
    }

    /// Posts protobuf OTLP logs to `/v1/logs` with `key`; asserts a 200.
    pub async fn post_logs(&self, key: &str, body: Vec<u8>) {
        let resp = self
            .http
            .post(format!("{}/v1/logs", self.http_endpoint()))
            .bearer_auth(key)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("OTLP/HTTP request");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    }

    /// The configuration the server was started with.
    pub fn server_config(&self) -> &bulkhead::Config {
        &self.config
    }

    pub fn server(&self) -> &RunningServer {
        self.running()
    }

    /// A query API request for `sql` with `key`, not sent yet.
    fn query_request(&self, key: &str, sql: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/api/v1/query", self.api_endpoint()))
            .bearer_auth(key)
            .json(&serde_json::json!({ "sql": sql }))
    }

    /// Runs SQL with `key` over the HTTP API and returns the JSON answer.
    pub async fn query(&self, key: &str, sql: &str) -> QueryResult {
        let resp = self
            .query_request(key, sql)
            .send()
            .await
            .expect("query request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("query body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        QueryResult { status, body }
    }

    /// Runs SQL with `key` over the HTTP API asking for CSV; asserts a 200.
    pub async fn query_csv(&self, key: &str, sql: &str) -> String {
        let resp = self
            .query_request(key, sql)
            .header("accept", "text/csv")
            .send()
            .await
            .expect("query request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("query body");
        assert_eq!(status, 200, "{sql}: {text}");
        text
    }

    /// The single value of a one-row, one-column query.
    pub async fn scalar(&self, key: &str, sql: &str) -> Value {
        let r = self.query(key, sql).await;
        let rows = r.rows();
        assert_eq!(rows.len(), 1, "expected one row from {sql}: {}", r.body);
        rows[0]
            .as_object()
            .expect("row")
            .values()
            .next()
            .cloned()
            .expect("a column")
    }

    /// Stops the server gracefully (flushing buffers).
    pub async fn shutdown(&mut self) -> bulkhead_store::FlushStats {
        self.server
            .take()
            .expect("server running")
            .shutdown()
            .await
            .expect("clean shutdown")
    }
}

/// The Python interpreter with the test clients of
/// `tests/python/requirements.txt` (see [`bulkhead_testkit::python`]).
pub fn test_python() -> String {
    bulkhead_testkit::python()
}

/// Runs a Python test client (off the async workers) and returns its
/// standard output; panics with its output when it fails.
pub async fn run_python(script: &str, args: &[&str]) -> String {
    let mut command = std::process::Command::new(test_python());
    command.arg(script).args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("python task")
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); `bash .ci/run` installs the Python test clients",
                test_python()
            )
        });
    assert!(
        out.status.success(),
        "{script} failed (its packages: tests/python/requirements.txt, installed by .ci/run)\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
