//! Forensic extracts: a tenant's data for a time range, some tables and an
//! optional filter, as a signed bundle a compliance officer can hand on.
//!
//! A bundle is a tar archive (or the same files in a directory):
//!
//! - `data/<table>/part-<n>.parquet`: the rows, read through the tenant's
//!   own session (so only its tables exist), streamed batch by batch into
//!   files of at most [`ROWS_PER_FILE`] rows: memory stays bounded whatever
//!   the size of the extract. Decrypted for the requester, or encrypted
//!   (Parquet modular encryption, footer and columns) under a recipient key
//!   when one is given.
//! - `manifest.json`: tenant, requester key id, range, tables, filter and
//!   its SHA-256, rows per table, every file with its rows, size and
//!   SHA-256, the policy versions the data was stored under, the audit
//!   chain's head when the extract was made, the creation time, and the
//!   public key that signs it.
//! - `manifest.sig`: the Ed25519 signature of `manifest.json`'s bytes, hex.
//!
//! [`verify`] needs the bundle and the instance's public key only: it
//! checks the signature, then every file's hash, and names each file that
//! is missing, altered, or not in the manifest.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use bulkhead_query::predicate::RowPredicate;
use bulkhead_query::QueryEngine;
use bulkhead_rules::TenantId;
use bulkhead_store::audit::Anchor;
use bulkhead_store::{Signal, Store};
use datafusion::logical_expr::{col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Rows per Parquet file of a bundle.
pub const ROWS_PER_FILE: usize = 1_000_000;

/// Format name in every manifest.
pub const FORMAT: &str = "bulkhead-extract-v1";

pub const MANIFEST: &str = "manifest.json";
/// A manifest larger than this is refused by [`verify`] (a million files
/// would fit).
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
pub const SIGNATURE: &str = "manifest.sig";

/// The instance's signing key (Ed25519), shared by every node of a
/// deployment (a file beside the keyring).
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_hex())
            .finish()
    }
}

impl Signer {
    /// Loads the PKCS#8 key at `path`, making one first if there is none
    /// (written whole under a temporary name, then linked into place, so
    /// two nodes starting together end up with the same key).
    pub fn load_or_create(path: &Path) -> Result<Signer, String> {
        let read = |p: &Path| -> Result<Signer, String> {
            let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let pair = Ed25519KeyPair::from_pkcs8(&bytes)
                .map_err(|e| format!("{}: not an Ed25519 PKCS#8 key: {e}", p.display()))?;
            Ok(Signer { pair })
        };
        if path.exists() {
            return read(path);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|e| format!("making a signing key: {e}"))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        tmp.write_all(pkcs8.as_ref())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
        match std::fs::hard_link(tmp.path(), path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "made a new signing key for forensic extracts; back it up")
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        read(path)
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.pair.sign(message).as_ref())
    }
}

/// What an extract is asked for (the API's JSON body).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractRequest {
    /// Table names; all of logs, spans and metrics when left out (an
    /// empty list is refused: it would extract nothing, or be read as
    /// everything).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    /// SQL predicate over one row, applied to every table.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// A 256-bit key (64 hex characters) to encrypt the files under
    /// instead of handing them over decrypted.
    #[serde(default)]
    pub recipient_key: Option<String>,
}

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A bundle's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub id: String,
    pub tenant: String,
    /// The key id of the requester.
    pub requested_by: String,
    pub created_at: String,
    pub from: String,
    pub to: String,
    pub tables: Vec<String>,
    pub filter: Option<String>,
    pub filter_sha256: Option<String>,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
    pub files: Vec<FileRecord>,
    /// Versions of the tenant's policy the extracted data was stored under.
    pub policy_versions: Vec<String>,
    /// The audit chain's last entry when the extract was made.
    pub audit_head: AuditHead,
    /// `None` when the files are in the clear; otherwise how they are
    /// encrypted and a fingerprint of the key (SHA-256 of it, first 16 hex).
    pub encryption: Option<String>,
    /// The public key that signs this manifest (hex); trust the one you
    /// were given, not this copy.
    pub public_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

impl Manifest {
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// The checked request: tables, range, filter, recipient key.
struct Plan {
    tables: Vec<Signal>,
    from: i64,
    to: i64,
    filter: Option<String>,
    recipient: Option<[u8; 32]>,
}

fn parse_time(what: &str, text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map_err(|e| {
            format!("{what}: {text:?} is not an RFC 3339 time such as 2026-01-31T00:00:00Z ({e})")
        })?
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("{what}: {text} is outside the years 1677 to 2262"))
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl ExtractRequest {
    fn plan(&self) -> Result<Plan, String> {
        let tables = match &self.tables {
            None => vec![Signal::Logs, Signal::Spans, Signal::Metrics],
            Some(names) if names.is_empty() => {
                return Err(format!(
                    "tables is an empty list; name some of {}, or leave tables out for logs, spans and metrics",
                    Signal::ALL.map(|s| s.name()).join(", ")
                ))
            }
            Some(names) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for t in names {
                    let s = Signal::from_name(t).ok_or_else(|| {
                        format!(
                            "no table {t:?}: extracts take {}",
                            Signal::ALL.map(|s| s.name()).join(", ")
                        )
                    })?;
                    if seen.insert(s) {
                        out.push(s);
                    }
                }
                out
            }
        };
        let from = parse_time("from", &self.from)?;
        let to = parse_time("to", &self.to)?;
        if from >= to {
            return Err(format!(
                "the time range is empty: from ({}) must come before to ({})",
                self.from, self.to
            ));
        }
        let filter = match self.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(f) => {
                for s in &tables {
                    RowPredicate::compile(*s, f)
                        .map_err(|e| format!("where (for table {s}): {e}"))?;
                }
                Some(f.to_string())
            }
        };
        let recipient = match &self.recipient_key {
            None => None,
            Some(k) => {
                let mut key = [0u8; 32];
                hex::decode_to_slice(k.trim(), &mut key).map_err(|_| {
                    "recipient_key must be 64 hex characters (a 256-bit key)".to_string()
                })?;
                if key.iter().all(|&b| b == key[0]) {
                    return Err(
                        "recipient_key is one byte repeated (such as all zeros): that is no secret; use 32 random bytes"
                            .into(),
                    );
                }
                Some(key)
            }
        };
        Ok(Plan {
            tables,
            from,
            to,
            filter,
            recipient,
        })
    }
}

/// What [`build`] needs of the server.
pub struct Sources {
    pub engine: Arc<QueryEngine>,
    pub store: Arc<Store>,
    pub signer: Arc<Signer>,
    pub audit_head: Anchor,
    pub now_nanos: i64,
}

fn writer_properties(recipient: Option<&[u8; 32]>) -> Result<WriterProperties, String> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()));
    if let Some(key) = recipient {
        let enc = FileEncryptionProperties::builder(key.to_vec())
            .with_footer_key_metadata("bulkhead-extract-recipient".into())
            .build()
            .map_err(|e| e.to_string())?;
        b = b.with_file_encryption_properties(enc);
    }
    Ok(b.build())
}

/// A Parquet file being written into the bundle, hashed as it goes.
struct Part {
    rel: String,
    writer: ArrowWriter<HashingFile>,
    rows: u64,
}

/// A file that hashes what is written to it.
struct HashingFile {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes the bundle of `tenant`'s data asked for by `request` into the
/// empty directory `dir`; `progress(rows so far)` is called as rows are
/// written. The error names what is wrong with the request, or what failed.
pub async fn build(
    sources: Sources,
    tenant: &TenantId,
    requested_by: &str,
    request: &ExtractRequest,
    dir: &Path,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Manifest, BuildError> {
    let plan = request.plan().map_err(BuildError::Request)?;
    let internal = |e: &dyn std::fmt::Display| BuildError::Failed(e.to_string());
    let ctx = sources
        .engine
        .session(tenant)
        .map_err(|e| BuildError::Failed(e.to_string()))?;
    let props = writer_properties(plan.recipient.as_ref()).map_err(|e| internal(&e))?;
    let mut files = Vec::new();
    let mut rows = BTreeMap::new();
    let mut total = 0u64;
    let ts = |n: i64| {
        lit(ScalarValue::TimestampNanosecond(
            Some(n),
            Some("UTC".into()),
        ))
    };
    for signal in &plan.tables {
        let table = signal.name();
        let mut df = ctx
            .table(table)
            .await
            .map_err(|e| internal(&e))?
            .filter(
                col("timestamp")
                    .gt_eq(ts(plan.from))
                    .and(col("timestamp").lt(ts(plan.to))),
            )
            .map_err(|e| internal(&e))?;
        if let Some(f) = &plan.filter {
            let expr = ctx
                .parse_sql_expr(f, df.schema())
                .map_err(|e| BuildError::Request(format!("where: {e}")))?;
            df = df
                .filter(expr)
                .map_err(|e| BuildError::Request(format!("where: {e}")))?;
        }
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(|e| internal(&e))?;
        let table_dir = dir.join("data").join(table);
        std::fs::create_dir_all(&table_dir).map_err(|e| internal(&e))?;
        let mut part: Option<Part> = None;
        let mut n = 0usize;
        let mut table_rows = 0u64;
        let finish = |p: Part, files: &mut Vec<FileRecord>| -> Result<(), BuildError> {
            let Part {
                rel, writer, rows, ..
            } = p;
            let mut out = writer.into_inner().map_err(|e| internal(&e))?;
            out.flush().map_err(|e| internal(&e))?;
            out.file.get_ref().sync_all().map_err(|e| internal(&e))?;
            files.push(FileRecord {
                path: rel,
                table: table.to_string(),
                rows,
                bytes: out.bytes,
                sha256: hex::encode(out.hash.finalize()),
            });
            Ok(())
        };
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| match e.find_root() {
                datafusion::error::DataFusionError::ResourcesExhausted(m) => {
                    BuildError::TooLarge(format!(
                        "the extract of {table} needs more memory than a query may use ({m}); narrow the time range or the where"
                    ))
                }
                _ => internal(&e),
            })?;
            if batch.num_rows() == 0 {
                continue;
            }
            let mut offset = 0;
            while offset < batch.num_rows() {
                if part
                    .as_ref()
                    .is_some_and(|p| p.rows as usize >= ROWS_PER_FILE)
                {
                    if let Some(p) = part.take() {
                        finish(p, &mut files)?;
                    }
                }
                let p = match &mut part {
                    Some(p) => p,
                    None => {
                        let rel = format!("data/{table}/part-{n:05}.parquet");
                        n += 1;
                        let path = dir.join(&rel);
                        let file = std::fs::File::create(&path).map_err(|e| internal(&e))?;
                        let sink = HashingFile {
                            file: std::io::BufWriter::new(file),
                            hash: Sha256::new(),
                            bytes: 0,
                        };
                        let writer =
                            ArrowWriter::try_new(sink, schema.clone(), Some(props.clone()))
                                .map_err(|e| internal(&e))?;
                        part.insert(Part {
                            rel,
                            writer,
                            rows: 0,
                        })
                    }
                };
                let take = (ROWS_PER_FILE - p.rows as usize).min(batch.num_rows() - offset);
                let slice = batch.slice(offset, take);
                p.writer.write(&slice).map_err(|e| internal(&e))?;
                p.rows += take as u64;
                offset += take;
                table_rows += take as u64;
                total += take as u64;
                progress(total);
            }
        }
        if let Some(p) = part.take() {
            finish(p, &mut files)?;
        }
        rows.insert(table.to_string(), table_rows);
    }
    // the policy versions the extracted range was stored under
    let mut versions = BTreeSet::new();
    for signal in &plan.tables {
        for f in sources
            .store
            .files(tenant, *signal)
            .map_err(|e| internal(&e))?
        {
            if f.min_time < plan.to && f.max_time >= plan.from {
                versions.extend(f.policy_versions.iter().cloned());
            }
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_string(),
        requested_by: requested_by.to_string(),
        created_at: rfc3339(sources.now_nanos),
        from: rfc3339(plan.from),
        to: rfc3339(plan.to),
        tables: plan.tables.iter().map(|s| s.name().to_string()).collect(),
        filter_sha256: plan
            .filter
            .as_ref()
            .map(|f| hex::encode(Sha256::digest(f.as_bytes()))),
        filter: plan.filter.clone(),
        rows,
        files,
        policy_versions: versions.into_iter().collect(),
        audit_head: AuditHead {
            seq: sources.audit_head.seq,
            hash: sources.audit_head.hash.clone(),
        },
        encryption: plan.recipient.map(|k| {
            format!(
                "parquet-modular-aes-gcm; recipient key sha256 {}",
                &hex::encode(Sha256::digest(k))[..16]
            )
        }),
        public_key: sources.signer.public_hex(),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| internal(&e))?;
    std::fs::write(dir.join(MANIFEST), &text).map_err(|e| internal(&e))?;
    std::fs::write(dir.join(SIGNATURE), sources.signer.sign(&text)).map_err(|e| internal(&e))?;
    Ok(manifest)
}

/// Why an extract was not made.
#[derive(Debug)]
pub enum BuildError {
    /// The request is wrong (400).
    Request(String),
    /// The request is well formed but takes more than the query limits
    /// allow (422).
    TooLarge(String),
    Failed(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Request(m) | BuildError::TooLarge(m) | BuildError::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Writes the bundle directory `dir` as a tar archive to `out`: the
/// manifest and its signature first, then the files in manifest order.
pub fn write_tar(dir: &Path, manifest: &Manifest, out: impl Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    for name in [MANIFEST, SIGNATURE] {
        tar.append_path_with_name(dir.join(name), name)?;
    }
    for f in &manifest.files {
        tar.append_path_with_name(dir.join(&f.path), &f.path)?;
    }
    tar.into_inner()?.flush()
}

/// What [`verify`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The signature over the manifest holds.
    pub signature_ok: bool,
    /// Files whose hash or size differs from the manifest's.
    pub altered: Vec<String>,
    /// Files the manifest names that the bundle lacks.
    pub missing: Vec<String>,
    /// Files in the bundle the manifest does not name.
    pub unlisted: Vec<String>,
    /// Entries a bundle never holds: links, devices, duplicates, paths
    /// with `..`, an oversized manifest.
    pub malformed: Vec<String>,
    pub manifest: Option<Manifest>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.signature_ok
            && self.malformed.is_empty()
            && self.altered.is_empty()
            && self.missing.is_empty()
            && self.unlisted.is_empty()
    }

    /// What is wrong, one problem per line (empty when all is well).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.signature_ok {
            out.push(format!(
                "{MANIFEST}: the signature does not match (the manifest was changed, or signed by another key)"
            ));
        }
        out.extend(self.malformed.iter().cloned());
        out.extend(
            self.altered
                .iter()
                .map(|f| format!("{f}: content does not match its SHA-256 in the manifest")),
        );
        out.extend(
            self.missing
                .iter()
                .map(|f| format!("{f}: named by the manifest, not in the bundle")),
        );
        out.extend(
            self.unlisted
                .iter()
                .map(|f| format!("{f}: in the bundle, not in the manifest")),
        );
        out
    }
}

/// Hex SHA-256 and size of everything `r` yields.
fn digest(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Checks `bundle` (a tar archive or a directory) against `public_key`
/// (32 bytes). An error only when the bundle cannot be read at all.
pub fn verify(bundle: &Path, public_key: &[u8]) -> Result<Verdict, String> {
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut signature: Option<Vec<u8>> = None;
    let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut malformed = Vec::new();
    let io = |e: std::io::Error| format!("{}: {e}", bundle.display());
    // one entry of the bundle: its name checked, duplicates refused
    let mut take =
        |rel: String, content: &mut dyn Read, malformed: &mut Vec<String>| -> Result<(), String> {
            if rel.starts_with('/')
                || rel
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
            {
                malformed.push(format!("{rel}: not a plain relative path"));
                return Ok(());
            }
            let small = |content: &mut dyn Read, cap: u64| -> Result<Vec<u8>, String> {
                let mut bytes = Vec::new();
                content
                    .take(cap + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("{}: {e}", bundle.display()))?;
                Ok(bytes)
            };
            let (slot, cap) = match rel.as_str() {
                MANIFEST => (&mut manifest_bytes, MAX_MANIFEST_BYTES),
                SIGNATURE => (&mut signature, 1024),
                _ => {
                    match seen.entry(rel) {
                        std::collections::btree_map::Entry::Occupied(e) => {
                            malformed.push(format!("{}: in the bundle twice", e.key()));
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(digest(content).map_err(io)?);
                        }
                    }
                    return Ok(());
                }
            };
            let bytes = small(content, cap)?;
            if slot.is_some() {
                malformed.push(format!("{rel}: in the bundle twice"));
            } else if bytes.len() as u64 > cap {
                malformed.push(format!("{rel}: larger than {cap} bytes"));
            } else {
                *slot = Some(bytes);
            }
            Ok(())
        };
    let meta = std::fs::symlink_metadata(bundle).map_err(io)?;
    if meta.is_dir() {
        let mut stack = vec![bundle.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(io)? {
                let p = e.map_err(io)?.path();
                let rel = p
                    .strip_prefix(bundle)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .replace('\\', "/");
                // links are not followed: a bundle holds files only
                let kind = std::fs::symlink_metadata(&p).map_err(io)?.file_type();
                if kind.is_dir() {
                    stack.push(p);
                } else if kind.is_file() {
                    let mut f = std::fs::File::open(&p).map_err(io)?;
                    take(rel, &mut f, &mut malformed)?;
                } else {
                    malformed.push(format!("{rel}: not a regular file (a link or a device)"));
                }
            }
        }
    } else {
        let file = std::fs::File::open(bundle).map_err(io)?;
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let rel = entry
                .path()
                .map_err(io)?
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            match entry.header().entry_type() {
                tar::EntryType::Directory => {}
                tar::EntryType::Regular => take(rel, &mut entry, &mut malformed)?,
                other => malformed.push(format!(
                    "{rel}: a {other:?} entry; a bundle holds regular files only"
                )),
            }
        }
    }
    let manifest_bytes = manifest_bytes
        .ok_or_else(|| format!("{}: no {MANIFEST} in the bundle", bundle.display()))?;
    let signature =
        signature.ok_or_else(|| format!("{}: no {SIGNATURE} in the bundle", bundle.display()))?;
    let mut verdict = Verdict {
        malformed,
        signature_ok: hex::decode(String::from_utf8_lossy(&signature).trim())
            .ok()
            .is_some_and(|sig| {
                UnparsedPublicKey::new(&ED25519, public_key)
                    .verify(&manifest_bytes, &sig)
                    .is_ok()
            }),
        ..Default::default()
    };
    // a manifest that does not parse still fails on its signature above;
    // without it no file can be checked
    let manifest: Manifest = match serde_json::from_slice(&manifest_bytes) {
        Ok(m) => m,
        Err(_) => {
            verdict.unlisted = seen.into_keys().collect();
            return Ok(verdict);
        }
    };
    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            verdict
                .malformed
                .push(format!("{}: listed twice in the manifest", f.path));
            continue;
        }
        match seen.remove(&f.path) {
            None => verdict.missing.push(f.path.clone()),
            Some((sha, size)) if sha != f.sha256 || size != f.bytes => {
                verdict.altered.push(f.path.clone())
            }
            Some(_) => {}
        }
    }
    verdict.unlisted = seen.into_keys().collect();
    verdict.manifest = Some(manifest);
    Ok(verdict)
}

/// Reads a public key given as 64 hex characters, or a file holding them.
pub fn read_public_key(text_or_path: &str) -> Result<Vec<u8>, String> {
    let text = if Path::new(text_or_path).is_file() {
        std::fs::read_to_string(text_or_path).map_err(|e| format!("{text_or_path}: {e}"))?
    } else {
        text_or_path.to_string()
    };
    let key = hex::decode(text.trim()).map_err(|_| {
        "the public key must be 64 hex characters (or a file holding them)".to_string()
    })?;
    if key.len() != 32 {
        return Err(format!(
            "the public key must be 32 bytes (64 hex characters), not {}",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed bundle of one data file, as a directory and as a tar.
    fn bundle(dir: &Path) -> (Signer, Vec<u8>) {
        let signer = Signer::load_or_create(&dir.join("key.pk8")).unwrap();
        let root = dir.join("bundle");
        std::fs::create_dir_all(root.join("data/logs")).unwrap();
        let content = b"not really parquet, but hashed all the same";
        std::fs::write(root.join("data/logs/part-00000.parquet"), content).unwrap();
        let manifest = Manifest {
            format: FORMAT.into(),
            id: "x".into(),
            tenant: "acme".into(),
            requested_by: "k".into(),
            created_at: "now".into(),
            from: "a".into(),
            to: "b".into(),
            tables: vec!["logs".into()],
            filter: None,
            filter_sha256: None,
            rows: BTreeMap::from([("logs".to_string(), 1)]),
            files: vec![FileRecord {
                path: "data/logs/part-00000.parquet".into(),
                table: "logs".into(),
                rows: 1,
                bytes: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content)),
            }],
            policy_versions: vec![],
            audit_head: AuditHead {
                seq: 0,
                hash: String::new(),
            },
            encryption: None,
            public_key: signer.public_hex(),
        };
        let text = serde_json::to_vec_pretty(&manifest).unwrap();
        std::fs::write(root.join(MANIFEST), &text).unwrap();
        std::fs::write(root.join(SIGNATURE), signer.sign(&text)).unwrap();
        let mut tar = Vec::new();
        write_tar(&root, &manifest, &mut tar).unwrap();
        (signer, tar)
    }

    fn check(dir: &Path, tar: &[u8], key: &[u8]) -> Verdict {
        let p = dir.join("check.tar");
        std::fs::write(&p, tar).unwrap();
        verify(&p, key).unwrap()
    }

    /// `tar` with one more entry appended (before the end-of-archive blocks).
    fn appended(tar: &[u8], name: &str, kind: tar::EntryType, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut b = tar::Builder::new(&mut out);
            let mut archive = tar::Archive::new(tar);
            for e in archive.entries().unwrap() {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).unwrap();
                b.append(&h, &bytes[..]).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(content.len() as u64);
            if kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            // set the name bytes directly: the builder refuses `..`
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, content).unwrap();
            b.finish().unwrap();
        }
        out
    }

    #[test]
    fn a_whole_bundle_verifies_and_odd_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, tar) = bundle(dir.path());
        let key = hex::decode(signer.public_hex()).unwrap();
        assert!(check(dir.path(), &tar, &key).ok());
        assert!(verify(&dir.path().join("bundle"), &key).unwrap().ok());
        let data = "data/logs/part-00000.parquet";
        for (name, kind, says) in [
            (data, tar::EntryType::Regular, "twice"),
            (data, tar::EntryType::Continuous, "regular files only"),
            (data, tar::EntryType::Symlink, "regular files only"),
            (MANIFEST, tar::EntryType::Regular, "twice"),
            (
                "data/../evil.parquet",
                tar::EntryType::Regular,
                "relative path",
            ),
        ] {
            let v = check(dir.path(), &appended(&tar, name, kind, b"altered"), &key);
            assert!(!v.ok(), "{name} {kind:?} passed");
            assert!(
                v.problems().iter().any(|p| p.contains(says)),
                "{name} {kind:?}: {:?}",
                v.problems()
            );
        }
        // a link in a directory bundle is named, not followed
        #[cfg(unix)]
        {
            let root = dir.path().join("bundle");
            std::os::unix::fs::symlink("/etc/hostname", root.join("data/link.parquet")).unwrap();
            let v = verify(&root, &key).unwrap();
            assert!(
                v.malformed.iter().any(|p| p.contains("data/link.parquet")),
                "{v:?}"
            );
        }
    }
}
