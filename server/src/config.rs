//! The server's configuration: one TOML file (see `deploy/bulkhead.toml`),
//! every field defaulted, environment overrides for containers.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this node, stamped on every record it receives (`received_by`).
    pub node_name: String,
    /// Root of the tenant store.
    pub data_dir: PathBuf,
    /// Tenant policy files; defaults to `<data_dir>/policies`.
    pub policy_dir: Option<PathBuf>,
    pub listen: Listen,
    pub ingest: Ingest,
    pub flush: Flush,
    pub wal: Wal,
    pub storage: Storage,
    pub compaction: Compaction,
    pub anomaly: Anomaly,
    pub query: Query,
    pub encryption: Encryption,
    /// Operator keys, each granted a list of tenants to query together
    /// (`[[federation]]` entries; `bulkhead operator key` makes one).
    pub federation: Vec<bulkhead_query::federation::Grant>,
    /// Operator keys for the admin API (`[[admin]]` entries; `bulkhead
    /// operator key --admin` makes one): tenants, keys, the default policy.
    pub admin: Vec<crate::admin::AdminGrant>,
    /// Let the kernel back the server's memory with transparent huge pages
    /// (where `/sys/kernel/mm/transparent_hugepage/enabled` allows it; the
    /// allocator asks for them). Off by default: a page fault that makes a
    /// huge page zeroes 2 MiB (or compacts memory first) while the faulting
    /// request waits, and acknowledgements waited for it while buffers grew
    /// (small tenants' p99 7.3 ms with, 1.7 ms without; docs/performance.md).
    /// Linux only.
    pub transparent_huge_pages: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wal {
    /// Off: requests are acknowledged once buffered, and a crash loses up to
    /// `flush.max_age` of them. Only for throwaway data and comparisons.
    pub enabled: bool,
    /// A write-ahead log segment is closed and a new one started at this size.
    pub segment_size: ByteSize,
    /// Above this much log on disk, the oldest buffers are committed early
    /// so the oldest segments can be deleted.
    pub max_size: ByteSize,
    /// Compress each entry's Arrow buffers with LZ4 before it is encrypted
    /// and written (fewer bytes to write and sync; recovery reads either).
    pub compress: bool,
    /// Where the log keeps its segments (default `<data_dir>/wal`): a
    /// device of its own keeps its syncs from waiting for the Parquet
    /// commits and merges written to the data directory's.
    pub path: Option<PathBuf>,
}

impl Default for Wal {
    fn default() -> Self {
        Self {
            enabled: true,
            segment_size: ByteSize(64 << 20),
            max_size: ByteSize(4 << 30),
            compress: true,
            path: None,
        }
    }
}

/// Envelope encryption of each tenant's data under its own key (see
/// `docs/security.md`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Encryption {
    /// Encrypt new Parquet files and write-ahead log entries. Turned off,
    /// new data is written in the clear and what was encrypted stays
    /// readable (the keyring is still opened when it exists).
    pub enabled: bool,
    /// The keyring: each tenant's key-encryption keys, wrapped under the
    /// master key. Default `<policy_dir>/.keys/keyring.json`: nodes sharing
    /// a bucket share the policy directory, and so one keyring.
    pub keyring: Option<PathBuf>,
    /// The master key (64 hex digits), read when `BULKHEAD_MASTER_KEY` is
    /// not set. Default `<policy_dir>/.keys/master.key`, made on first start
    /// when neither it nor the keyring exists. In production give it in
    /// `BULKHEAD_MASTER_KEY` (from a secret store) instead.
    pub master_key_file: Option<PathBuf>,
}

impl Default for Encryption {
    fn default() -> Self {
        Self {
            enabled: true,
            keyring: None,
            master_key_file: None,
        }
    }
}

/// Where tenant data lives.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// `local` (a directory: `path`, default `<data_dir>/store`) or `s3`
    /// (a bucket on S3 or an S3-compatible server).
    pub backend: Backend,
    /// The local directory (`backend = "local"`).
    pub path: Option<PathBuf>,
    /// The bucket (`backend = "s3"`).
    pub bucket: String,
    /// Key prefix in the bucket below which the store lives.
    pub prefix: String,
    /// Endpoint of an S3-compatible server; unset for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Allow a plain `http://` endpoint (a server on a private network).
    pub allow_http: bool,
    /// A file removed by retention or compaction is deleted this long after
    /// its removal; queries that started before still read it. Keep it
    /// longer than `query.timeout`.
    pub removal_grace: HumanDuration,
    /// A Parquet file no manifest names (a crash between its upload and its
    /// commit) is deleted once it is this old. Longer than any upload and
    /// commit may take, on every node sharing the storage.
    pub orphan_age: HumanDuration,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    S3,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            path: None,
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            allow_http: false,
            removal_grace: HumanDuration(Duration::from_secs(300)),
            orphan_age: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

/// How anomaly detection is organised across nodes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Anomaly {
    pub coordination: Coordination,
}

/// Who scores a tenant's minutes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Coordination {
    /// `bucket` when the storage is S3, `node` on local disk.
    #[default]
    Auto,
    /// Each node scores what it receives itself; state on its own disk.
    Node,
    /// Nodes publish per-minute partials to the storage and one leader
    /// scores the merged minutes; state in the storage.
    Bucket,
}

impl Anomaly {
    /// Whether detection is shared through the storage.
    pub fn shared(&self, storage: &Storage) -> bool {
        match self.coordination {
            Coordination::Auto => storage.backend == Backend::S3,
            Coordination::Node => false,
            Coordination::Bucket => true,
        }
    }
}

/// Background merging of a tenant-hour's small files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compaction {
    pub enabled: bool,
    /// How often the compactor looks for work.
    pub interval: HumanDuration,
    /// An hour still receiving data is merged once it has this many flushed files.
    pub min_files: usize,
    /// An hour that ended this long ago is merged whole.
    pub settle: HumanDuration,
    /// Input bytes per merge at most.
    pub max_input_size: ByteSize,
    /// Input rows per merge at most (what bounds a merge's memory).
    pub max_input_rows: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        let d = bulkhead_store::CompactionConfig::default();
        Self {
            enabled: true,
            interval: HumanDuration(Duration::from_secs(60)),
            min_files: d.min_files,
            settle: HumanDuration(d.settle),
            max_input_size: ByteSize(d.max_input_bytes),
            max_input_rows: d.max_input_rows,
        }
    }
}

impl Compaction {
    pub fn store_config(&self) -> bulkhead_store::CompactionConfig {
        bulkhead_store::CompactionConfig {
            min_files: self.min_files,
            settle: self.settle.0,
            max_input_bytes: self.max_input_size.0,
            max_input_rows: self.max_input_rows,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// OTLP/gRPC.
    pub grpc: SocketAddr,
    /// OTLP/HTTP.
    pub http: SocketAddr,
    /// Query API.
    pub api: SocketAddr,
    /// Self-metrics (`/metrics`) and health; keep it on loopback or a
    /// private network: it shows tenant names and figures.
    pub metrics: SocketAddr,
    /// Arrow Flight SQL (the query API for SQL clients and drivers).
    pub flight: SocketAddr,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    /// Largest request accepted, after decompression.
    pub max_body_size: ByteSize,
    /// Attribute keys that name a tenant (compared ignoring ASCII case); in
    /// resource, scope and record attributes their values are overwritten
    /// with the authenticated tenant when they name another one.
    pub tenant_attribute_keys: Vec<String>,
    /// Records whose event time is older than this are rejected one by one
    /// (OTLP partial success); unset: the tenant's longest retention.
    pub max_event_age: Option<HumanDuration>,
    /// Records whose event time is further ahead of the clock than this are
    /// rejected one by one.
    pub max_event_future: HumanDuration,
    /// Requests decompressed, decoded, converted and redacted at once
    /// (default: one per core, and one more; one tenant holds at most all
    /// but one); more wait in their tenant's queue and are
    /// let in round-robin across tenants. The WAL's fsync is waited for
    /// outside these slots.
    pub workers: usize,
    /// How many steps of operating-system priority (nice) below the
    /// server's the CPU work of a backlogged tenant runs: one whose turn
    /// came while more of its requests were queued for one (a tenant
    /// sending faster than its share is worked off). 0 (the default)
    /// turns it off: see docs/configuration.md for what it costs.
    pub backlog_nice: u8,
    /// Bytes of requests worked on at once (decompressed); above it, new
    /// requests get 503 / UNAVAILABLE with a retry hint.
    pub max_in_flight: ByteSize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flush {
    /// A tenant's buffer for one signal and hour becomes a file after this
    /// long (buffered rows are in the write-ahead log, and queries on this
    /// node see them; other nodes see them once committed)...
    pub max_age: HumanDuration,
    /// ... or once it holds this much.
    pub max_buffer_size: ByteSize,
    /// Above this much buffered in total, ingest answers "retry later".
    pub max_total_buffer: ByteSize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Query {
    /// The longest any query may run (a tenant's `query.timeout` applies within it).
    pub timeout: HumanDuration,
    /// The most rows any answer may carry (a tenant's `query.max_rows` applies within it).
    pub max_rows: usize,
    /// The memory pool all tenants' running queries share.
    pub memory_limit: ByteSize,
    /// Disk all spilling queries may use together.
    pub max_spill: ByteSize,
    /// Parsed Parquet footers kept in memory across queries, all tenants
    /// together: a warm query reads no footer it has read before, as long
    /// as the files it touches fit.
    pub metadata_cache: ByteSize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: "local".into(),
            data_dir: PathBuf::from("./bulkhead-data"),
            policy_dir: None,
            listen: Listen::default(),
            ingest: Ingest::default(),
            flush: Flush::default(),
            wal: Wal::default(),
            storage: Storage::default(),
            compaction: Compaction::default(),
            anomaly: Anomaly::default(),
            query: Query::default(),
            encryption: Encryption::default(),
            federation: Vec::new(),
            admin: Vec::new(),
            transparent_huge_pages: false,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            api: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 9464)),
            flight: SocketAddr::from(([127, 0, 0, 1], 8815)),
        }
    }
}

impl Default for Ingest {
    fn default() -> Self {
        Self {
            max_body_size: ByteSize(64 << 20),
            tenant_attribute_keys: bulkhead_collector::redact::TENANT_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            max_event_age: None,
            max_event_future: HumanDuration(bulkhead_collector::pipeline::DEFAULT_MAX_EVENT_FUTURE),
            workers: bulkhead_collector::pipeline::default_ingest_workers(),
            backlog_nice: 0,
            max_in_flight: ByteSize(512 << 20),
        }
    }
}

impl Default for Flush {
    fn default() -> Self {
        Self {
            max_age: HumanDuration(Duration::from_secs(600)),
            max_buffer_size: ByteSize(64 << 20),
            max_total_buffer: ByteSize(1 << 30),
        }
    }
}

impl Default for Query {
    fn default() -> Self {
        Self {
            timeout: HumanDuration(Duration::from_secs(30)),
            max_rows: 100_000,
            memory_limit: ByteSize(512 << 20),
            max_spill: ByteSize(4 << 30),
            metadata_cache: ByteSize(256 << 20),
        }
    }
}

impl Config {
    /// Reads and validates a config file, then applies environment overrides.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses TOML text; reports the first syntax problem with its line, or
    /// every semantic problem at once.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every environment variable [`Config::apply_env`] reads.
    pub const ENV_VARS: &'static [&'static str] = &[
        "BULKHEAD_GRPC_LISTEN",
        "BULKHEAD_HTTP_LISTEN",
        "BULKHEAD_API_LISTEN",
        "BULKHEAD_METRICS_LISTEN",
        "BULKHEAD_FLIGHT_LISTEN",
        "BULKHEAD_DATA_DIR",
        "BULKHEAD_POLICY_DIR",
        "BULKHEAD_NODE_NAME",
        "BULKHEAD_S3_BUCKET",
        "BULKHEAD_S3_PREFIX",
        "BULKHEAD_S3_ENDPOINT",
    ];

    /// Applies `BULKHEAD_*` environment overrides from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let mut errors = Vec::new();
        let mut addr = |var: &str, slot: &mut SocketAddr| {
            if let Some(v) = env(var) {
                match v.parse() {
                    Ok(a) => *slot = a,
                    Err(e) => errors.push(format!("{var}={v:?}: {e}")),
                }
            }
        };
        addr("BULKHEAD_GRPC_LISTEN", &mut self.listen.grpc);
        addr("BULKHEAD_HTTP_LISTEN", &mut self.listen.http);
        addr("BULKHEAD_API_LISTEN", &mut self.listen.api);
        addr("BULKHEAD_METRICS_LISTEN", &mut self.listen.metrics);
        addr("BULKHEAD_FLIGHT_LISTEN", &mut self.listen.flight);
        if let Some(v) = env("BULKHEAD_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("BULKHEAD_POLICY_DIR") {
            self.policy_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env("BULKHEAD_NODE_NAME") {
            self.node_name = v;
        }
        // one image, one configuration file, several nodes and places
        if let Some(v) = env("BULKHEAD_S3_BUCKET") {
            self.storage.bucket = v;
        }
        if let Some(v) = env("BULKHEAD_S3_PREFIX") {
            self.storage.prefix = v;
        }
        if let Some(v) = env("BULKHEAD_S3_ENDPOINT") {
            self.storage.endpoint = Some(v);
        }
        if errors.is_empty() {
            self.validate()
        } else {
            Err(errors.join("; "))
        }
    }

    /// Every semantic problem, each naming its setting.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Err(e) = bulkhead_query::federation::Federation::new(&self.federation) {
            errors.push(e);
        }
        if let Err(e) = crate::admin::AdminKeys::new(&self.admin) {
            errors.push(e);
        }
        if self.node_name.is_empty()
            || self.node_name.len() > 64
            || !self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.node_name.starts_with('.')
        {
            errors.push(format!(
                "node_name: {:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
                self.node_name
            ));
        }
        let l = &self.listen;
        let all = [
            (l.grpc, "listen.grpc"),
            (l.http, "listen.http"),
            (l.api, "listen.api"),
            (l.metrics, "listen.metrics"),
            (l.flight, "listen.flight"),
        ];
        for (i, (a, an)) in all.iter().enumerate() {
            for (b, bn) in &all[i + 1..] {
                if a == b && a.port() != 0 {
                    errors.push(format!("{an} and {bn}: both are {a}"));
                }
            }
        }
        if self.ingest.max_body_size.0 < 1024 {
            errors.push("ingest.max_body_size: must be at least 1KiB".into());
        }
        if self
            .ingest
            .tenant_attribute_keys
            .iter()
            .any(|k| k.trim().is_empty())
        {
            errors.push("ingest.tenant_attribute_keys: keys must not be empty".into());
        }
        if self.ingest.max_in_flight.0 < self.ingest.max_body_size.0 {
            errors.push("ingest.max_in_flight: must be at least ingest.max_body_size".into());
        }
        if self.ingest.workers == 0 {
            errors.push("ingest.workers: must be at least 1".into());
        }
        if self.ingest.backlog_nice > 19 {
            errors.push(format!(
                "ingest.backlog_nice: {} is out of range (0 to 19)",
                self.ingest.backlog_nice
            ));
        }
        if self.ingest.max_event_future.0.is_zero() {
            errors.push("ingest.max_event_future: must be more than 0".into());
        }
        if let Some(p) = &self.wal.path {
            if p.as_os_str().is_empty() {
                errors.push("wal.path: must not be empty (leave it out for <data_dir>/wal)".into());
            } else if p.starts_with(self.policy_dir())
                || (self.storage.backend == Backend::Local && p.starts_with(self.store_dir()))
            {
                errors.push(format!(
                    "wal.path: {} is inside the policy or store directory; give the log a directory of its own",
                    p.display()
                ));
            }
        }
        if self.wal.segment_size.0 < 64 << 10 {
            errors.push("wal.segment_size: must be at least 64KiB".into());
        }
        if self.wal.max_size.0 < 2 * self.wal.segment_size.0 {
            errors.push("wal.max_size: must be at least twice wal.segment_size".into());
        }
        if self.flush.max_age.0.is_zero() {
            errors.push("flush.max_age: must be more than 0".into());
        }
        if self.flush.max_buffer_size.0 == 0 {
            errors.push("flush.max_buffer_size: must be more than 0".into());
        }
        if self.flush.max_total_buffer.0 < self.flush.max_buffer_size.0 {
            errors.push("flush.max_total_buffer: must be at least flush.max_buffer_size".into());
        }
        if self.storage.backend == Backend::S3 && self.storage.bucket.is_empty() {
            errors.push("storage.bucket: must be set when storage.backend is \"s3\"".into());
        }
        if self.storage.backend == Backend::Local
            && (!self.storage.bucket.is_empty() || self.storage.endpoint.is_some())
        {
            errors
                .push("storage.bucket, storage.endpoint: only for storage.backend = \"s3\"".into());
        }
        if self.storage.removal_grace.0 < self.query.timeout.0 {
            errors.push(format!(
                "storage.removal_grace: must be at least query.timeout ({:?}), or a running query may lose a file",
                self.query.timeout.0
            ));
        }
        if self.storage.orphan_age.0 < Duration::from_secs(60) {
            errors.push("storage.orphan_age: must be at least 1m".into());
        }
        if self.compaction.min_files < 2 {
            errors.push("compaction.min_files: must be at least 2".into());
        }
        if self.compaction.max_input_rows < 2 {
            errors.push("compaction.max_input_rows: must be at least 2".into());
        }
        if self.compaction.interval.0.is_zero() {
            errors.push("compaction.interval: must be more than 0".into());
        }
        if self.query.timeout.0.is_zero() {
            errors.push("query.timeout: must be more than 0".into());
        }
        if self.query.max_rows == 0 {
            errors.push("query.max_rows: must be more than 0".into());
        }
        if self.query.memory_limit.0 < (1 << 20) {
            errors.push("query.memory_limit: must be at least 1MiB".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.policy_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("policies"))
    }

    /// The keyring file: by default beside the tenant policies (in
    /// `.keys/`), which every node of a bucket shares already.
    pub fn keyring_path(&self) -> PathBuf {
        self.encryption
            .keyring
            .clone()
            .unwrap_or_else(|| self.policy_dir().join(".keys").join("keyring.json"))
    }

    /// The master key file (used when `BULKHEAD_MASTER_KEY` is unset).
    pub fn master_key_path(&self) -> PathBuf {
        self.encryption
            .master_key_file
            .clone()
            .unwrap_or_else(|| self.policy_dir().join(".keys").join("master.key"))
    }

    /// The instance's Ed25519 key that signs forensic extracts (PKCS#8),
    /// beside the keyring: every node of a deployment shares it. Made at
    /// the first start.
    pub fn signing_key_path(&self) -> PathBuf {
        self.policy_dir().join(".keys").join("extract-signing.pk8")
    }

    /// Opens the tenants' data keys: none when encryption is off and no
    /// keyring exists (a deployment that never encrypted). The master key
    /// comes from `BULKHEAD_MASTER_KEY` (as `env` reads it), else from the
    /// master key file, which is made only for a new keyring.
    pub fn open_keys(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<std::sync::Arc<bulkhead_store::crypto::DataKeys>>, String> {
        use bulkhead_store::crypto::{DataKeys, Keyring, MasterKey, MASTER_KEY_ENV};
        let keyring = self.keyring_path();
        let exists = keyring.exists();
        if !self.encryption.enabled && !exists {
            return Ok(None);
        }
        let master = match env(MASTER_KEY_ENV) {
            Some(v) => MasterKey::parse(&v).map_err(|e| format!("{MASTER_KEY_ENV}: {e}"))?,
            None => {
                let file = self.master_key_path();
                if exists && !file.exists() {
                    return Err(format!(
                        "keyring {} exists but its master key does not: set {MASTER_KEY_ENV} or encryption.master_key_file ({} is missing)",
                        keyring.display(),
                        file.display()
                    ));
                }
                let created = !file.exists();
                let key = MasterKey::load_file(&file, true).map_err(|e| e.to_string())?;
                if created {
                    tracing::warn!(
                        path = %file.display(),
                        "made a new master key for tenant encryption; back it up, and in production keep it off the data's disk ({MASTER_KEY_ENV} or encryption.master_key_file): without it nothing encrypted can be read"
                    );
                }
                key
            }
        };
        let ring = Keyring::open(&keyring, master).map_err(|e| e.to_string())?;
        Ok(Some(std::sync::Arc::new(DataKeys::with_encryption(
            std::sync::Arc::new(ring),
            self.encryption.enabled,
        ))))
    }

    /// The append-only audit trail.
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }

    /// Where the write-ahead log keeps its segments.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wal"))
    }

    /// Where the tenant store keeps its partition trees on local disk.
    pub fn store_dir(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("store"))
    }

    /// The store's backend as configured; S3 credentials come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
    pub fn storage_config(&self) -> bulkhead_store::StorageConfig {
        match self.storage.backend {
            Backend::Local => bulkhead_store::StorageConfig::Local {
                root: self.store_dir(),
            },
            Backend::S3 => bulkhead_store::StorageConfig::S3(bulkhead_store::S3Config {
                bucket: self.storage.bucket.clone(),
                prefix: self.storage.prefix.clone(),
                endpoint: self.storage.endpoint.clone(),
                region: self.storage.region.clone(),
                allow_http: self.storage.allow_http,
                access_key_id: None,
                secret_access_key: None,
            }),
        }
    }
}

pub use bulkhead_rules::units::ByteSize;

pub use bulkhead_rules::units::HumanDuration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_lists_exactly_what_apply_env_reads() {
        let asked = std::sync::Mutex::new(Vec::new());
        Config::default()
            .apply_env(|v| {
                asked.lock().unwrap().push(v.to_string());
                None
            })
            .unwrap();
        let mut asked = asked.into_inner().unwrap();
        asked.sort();
        let mut listed: Vec<String> = Config::ENV_VARS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(asked, listed);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("10 MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("123").unwrap().0, 123);
        assert!(ByteSize::parse("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(
            HumanDuration::parse("30d").unwrap().0,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        // one parser for every duration (bulkhead_rules::units)
        assert_eq!(
            HumanDuration::parse("3 weeks").unwrap().0,
            Duration::from_secs(21 * 86_400)
        );
        assert!(HumanDuration::parse("3 fortnights")
            .unwrap_err()
            .contains("not understood"));
    }

    #[test]
    fn empty_config_is_the_local_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.grpc.to_string(), "127.0.0.1:4317");
        assert_eq!(c.listen.http.to_string(), "127.0.0.1:4318");
        assert_eq!(c.listen.api.to_string(), "127.0.0.1:8080");
        assert_eq!(c.policy_dir(), PathBuf::from("./bulkhead-data/policies"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e = Config::parse("[listen]\ngrpc = \"127.0.0.1:1\"\nhtpp = \"x\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("htpp"), "{e}");
        let e = Config::parse("[flush]\nmax_age = \"3 fortnights\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("fortnights"), "{e}");
        let e = Config::parse("[query]\nmax_rows = 0\n[flush]\nmax_age = \"0s\"\n").unwrap_err();
        assert!(
            e.contains("query.max_rows") && e.contains("flush.max_age"),
            "{e}"
        );
        let e = Config::parse("[ingest]\nbacklog_nice = 20\n").unwrap_err();
        assert!(
            e.contains("ingest.backlog_nice") && e.contains("0 to 19"),
            "{e}"
        );
        assert_eq!(
            Config::parse("[ingest]\nbacklog_nice = 19\n")
                .unwrap()
                .ingest
                .backlog_nice,
            19
        );
        assert_eq!(Config::parse("").unwrap().ingest.backlog_nice, 0, "off");
        let e = Config::parse("[wal]\npath = \"\"\n").unwrap_err();
        assert!(e.contains("wal.path") && e.contains("empty"), "{e}");
        for inside in ["d/store/log", "d/policies/log"] {
            let e = Config::parse(&format!("data_dir = \"d\"\n[wal]\npath = {inside:?}\n"))
                .unwrap_err();
            assert!(e.contains("wal.path") && e.contains(inside), "{e}");
        }
        let c = Config::parse("data_dir = \"d\"\n[wal]\npath = \"/var/log-disk/wal\"\n").unwrap();
        assert_eq!(c.wal_dir(), PathBuf::from("/var/log-disk/wal"));
        let e = Config::parse("[compaction]\nmax_input_rows = 1\n").unwrap_err();
        assert!(e.contains("compaction.max_input_rows"), "{e}");
        let c = Config::parse("[compaction]\nmax_input_rows = 250_000\n").unwrap();
        assert_eq!(c.compaction.store_config().max_input_rows, 250_000);
    }

    #[test]
    fn node_names_are_safe_object_names_and_detection_follows_the_backend() {
        for bad in ["", "a/b", "..", ".hidden", "node a", &"n".repeat(65)] {
            let e = Config::parse(&format!("node_name = {bad:?}\n")).unwrap_err();
            assert!(e.contains("node_name"), "{bad:?}: {e}");
        }
        let c = Config::parse("node_name = \"node-a.eu_1\"\n").unwrap();
        assert!(!c.anomaly.shared(&c.storage), "local disk: per node");
        let c = Config::parse("[storage]\nbackend = \"s3\"\nbucket = \"b\"\n").unwrap();
        assert!(c.anomaly.shared(&c.storage), "S3: shared");
        let c = Config::parse(
            "[anomaly]\ncoordination = \"node\"\n[storage]\nbackend = \"s3\"\nbucket = \"b\"\n",
        )
        .unwrap();
        assert!(!c.anomaly.shared(&c.storage));
        let e = Config::parse("[anomaly]\ncoordination = \"gossip\"\n").unwrap_err();
        assert!(e.contains("gossip"), "{e}");
    }

    #[test]
    fn environment_overrides_apply() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "BULKHEAD_GRPC_LISTEN" => Some("0.0.0.0:14317".into()),
            "BULKHEAD_DATA_DIR" => Some("/var/lib/bulkhead".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen.grpc.to_string(), "0.0.0.0:14317");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/bulkhead"));
        let e = c
            .apply_env(|k| (k == "BULKHEAD_API_LISTEN").then(|| "nope".into()))
            .unwrap_err();
        assert!(e.contains("BULKHEAD_API_LISTEN"), "{e}");
    }

    #[test]
    fn deploy_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bulkhead.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.listen.grpc.to_string(), "0.0.0.0:4317");
        assert_eq!(c.ingest.max_body_size, ByteSize(64 << 20));
    }
}
