//! The audit trail: an append-only, hash-chained JSON-lines log of
//! security-relevant events (authentication failures, scope refusals, policy
//! changes, tenant and key lifecycle, every query).
//!
//! Each entry carries the SHA-256 of the previous entry (`prev_hash`) and its
//! own hash over a canonical encoding of every other field, so [`verify`]
//! finds any edited, removed, reordered or inserted entry and names the first
//! bad line. `docs/audit.md` documents the format, the chain, what is logged
//! and what it costs.
//!
//! - [`AuditLog`] appends (thread-safe, group-committed fsync) and reads.
//! - [`verify`] / [`verify_with`] check a log file without opening it for writing.
//! - [`audit_schema`] / [`to_batch`] give a tenant's events as the `audit` table.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use bulkhead_rules::TenantId;

mod log;
mod publish;
mod refusals;
mod table;
mod verify;

pub use log::AuditLog;
pub use publish::{latest_published, publish_head, published_heads, PublishedHead};
pub use refusals::{RefusalAudit, MAX_DISTINCT_REFUSALS};
pub use table::{audit_schema, to_batch};
pub use verify::{verify, verify_with, Anchor, Problem, VerifyError, VerifyOptions, VerifyReport};

/// Name of the log file inside the audit directory.
pub const LOG_FILE_NAME: &str = "audit.log";

/// `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation for the entry hash; bumped if the encoding ever changes.
const HASH_DOMAIN: &[u8] = b"bulkhead-audit-v1\n";

/// Well-known detail keys, so every producer spells them the same way.
pub mod detail {
    /// Hex SHA-256 of the SQL text (the text itself is not logged: it may hold data).
    pub const SQL_SHA256: &str = "sql_sha256";
    /// Rows a query returned.
    pub const ROWS: &str = "rows";
    /// Why something was refused or failed.
    pub const REASON: &str = "reason";
    /// Policy version before a change.
    pub const OLD_VERSION: &str = "old_version";
    /// Policy version after a change.
    pub const NEW_VERSION: &str = "new_version";
    /// Peer address of the request.
    pub const REMOTE: &str = "remote";
    /// The scope a key lacked.
    pub const SCOPE: &str = "scope";
    /// Which interface saw the event (`otlp-grpc`, `otlp-http`, `api`, `cli`).
    pub const INTERFACE: &str = "interface";
    /// Bytes removed from a torn log tail at start-up.
    pub const TRUNCATED_BYTES: &str = "truncated_bytes";
    /// How many identical events one entry stands for (refused credentials
    /// are summed up per flush).
    pub const COUNT: &str = "count";
    /// File offset where the torn tail started.
    pub const OFFSET: &str = "offset";
}

/// What happened. Serialized snake_case; new kinds may be added (the kind is
/// hashed as its string, so old entries stay valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A request carried no key, a malformed key or an unknown/revoked key.
    AuthFailure,
    /// A valid key lacked the scope the request needs.
    ScopeRefused,
    /// A tenant policy was replaced (details: old_version, new_version).
    PolicyChanged,
    /// A new policy was refused (details: reason); the old one stays.
    PolicyRejected,
    TenantCreated,
    TenantRevoked,
    KeyCreated,
    KeyRevoked,
    /// A query ran (details: sql_sha256, rows).
    Query,
    /// A query was refused by the sandbox or its limits (details: sql_sha256, reason).
    QueryRefused,
    /// The log itself removed a torn tail left by a crash at start-up.
    LogRecovered,
    /// Data past its retention period was deleted (details: signal, before, files).
    RetentionApplied,
    /// A tenant's key-encryption key was rotated (details: kek_version,
    /// data_keys_rewrapped, versions_retired).
    KeyRotated,
    /// A tenant's keys were destroyed: none of its data can be read any
    /// more (details: at, data_keys_deleted when known).
    TenantShredded,
    /// An erasure was asked for (details: job, table, from, to,
    /// predicate_sha256, interface).
    ErasureRequested,
    /// An erasure job started on a node (details: job, node, requested_by).
    ErasureStarted,
    /// An erasure job finished (details: job, rows_removed, files_rewritten,
    /// files_removed, rows_read).
    ErasureDone,
    /// An erasure job failed (details: job, reason).
    ErasureFailed,
    /// A pending erasure job was cancelled (details: job).
    ErasureCancelled,
    /// Everything of a tenant was removed (details: job, objects_deleted,
    /// bytes_deleted, data_keys_destroyed).
    TenantOffboarded,
    /// A tenant's legal hold was placed or lifted (details: legal_hold,
    /// policy version).
    LegalHoldChanged,
    /// A forensic extract was made (details: extract, tables, rows, files,
    /// bytes, from, to, filter_sha256, manifest_sha256).
    ExtractCreated,
    /// The chain's head was written to the store (details: head_seq,
    /// head_hash, object).
    AuditHeadPublished,
}

impl EventKind {
    /// The snake_case name used in the file, the hash and the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AuthFailure => "auth_failure",
            EventKind::ScopeRefused => "scope_refused",
            EventKind::PolicyChanged => "policy_changed",
            EventKind::PolicyRejected => "policy_rejected",
            EventKind::TenantCreated => "tenant_created",
            EventKind::TenantRevoked => "tenant_revoked",
            EventKind::KeyCreated => "key_created",
            EventKind::KeyRevoked => "key_revoked",
            EventKind::Query => "query",
            EventKind::QueryRefused => "query_refused",
            EventKind::LogRecovered => "log_recovered",
            EventKind::RetentionApplied => "retention_applied",
            EventKind::KeyRotated => "key_rotated",
            EventKind::TenantShredded => "tenant_shredded",
            EventKind::ErasureRequested => "erasure_requested",
            EventKind::ErasureStarted => "erasure_started",
            EventKind::ErasureDone => "erasure_done",
            EventKind::ErasureFailed => "erasure_failed",
            EventKind::ErasureCancelled => "erasure_cancelled",
            EventKind::TenantOffboarded => "tenant_offboarded",
            EventKind::LegalHoldChanged => "legal_hold_changed",
            EventKind::ExtractCreated => "extract_created",
            EventKind::AuditHeadPublished => "audit_head_published",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the log, exactly as stored (one JSON object per line, fields
/// in this order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the chain, from 1, assigned by the log; consecutive.
    pub seq: u64,
    /// When the log accepted the event, nanoseconds since the epoch (injected clock).
    pub time_nanos: i64,
    /// The authenticated tenant; `None` when there is none (e.g. an unknown key).
    pub tenant: Option<String>,
    /// The key id involved, if any (never the secret).
    pub key_id: Option<String>,
    pub kind: EventKind,
    /// Small string payload; see [`detail`] for the usual keys.
    pub details: BTreeMap<String, String>,
    /// `hash` of the previous entry, [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// Hex SHA-256 of the canonical encoding of every other field ([`AuditEvent::compute_hash`]).
    pub hash: String,
}

impl AuditEvent {
    /// SHA-256 over a length-prefixed binary encoding of every field but
    /// `hash`. Binary rather than JSON so another implementation can
    /// recompute it without matching a JSON library's escaping rules:
    /// `"bulkhead-audit-v1\n"`, seq (u64 BE), time_nanos (i64 BE), tenant and
    /// key_id as optional strings (0, or 1 + string), kind as a string, the
    /// number of details (u32 BE) then each key and value as strings in key
    /// order, prev_hash as a string; a string is its UTF-8 length (u32 BE)
    /// followed by its bytes.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN);
        h.update(self.seq.to_be_bytes());
        h.update(self.time_nanos.to_be_bytes());
        for opt in [&self.tenant, &self.key_id] {
            match opt {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    put_str(&mut h, s);
                }
            }
        }
        put_str(&mut h, self.kind.as_str());
        h.update((self.details.len() as u32).to_be_bytes());
        for (k, v) in &self.details {
            put_str(&mut h, k);
            put_str(&mut h, v);
        }
        put_str(&mut h, &self.prev_hash);
        hex::encode(h.finalize())
    }

    /// The stored line, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("an audit event always serializes")
    }
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// Hex SHA-256 of a query's SQL text, for [`detail::SQL_SHA256`].
pub fn sql_sha256(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// An event to append; the log assigns seq, time and the hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub kind: EventKind,
    pub details: BTreeMap<String, String>,
}

impl NewEvent {
    pub fn new(kind: EventKind) -> Self {
        Self {
            tenant: None,
            key_id: None,
            kind,
            details: BTreeMap::new(),
        }
    }

    /// Takes a [`TenantId`] so only validated names reach the log.
    pub fn tenant(mut self, tenant: &TenantId) -> Self {
        self.tenant = Some(tenant.as_str().to_string());
        self
    }

    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    pub fn detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.insert(key.into(), value.to_string());
        self
    }

    /// A query that ran and returned `rows` rows.
    pub fn query(tenant: &TenantId, key_id: &str, sql: &str, rows: u64) -> Self {
        Self::new(EventKind::Query)
            .tenant(tenant)
            .key_id(key_id)
            .detail(detail::SQL_SHA256, sql_sha256(sql))
            .detail(detail::ROWS, rows)
    }

    /// A query the sandbox or its limits refused.
    pub fn query_refused(tenant: &TenantId, key_id: &str, sql: &str, reason: &str) -> Self {
        Self::new(EventKind::QueryRefused)
            .tenant(tenant)
            .key_id(key_id)
            .detail(detail::SQL_SHA256, sql_sha256(sql))
            .detail(detail::REASON, reason)
    }

    /// An authentication failure; `key_id` is the id the request claimed, if
    /// it parsed (it need not exist).
    pub fn auth_failure(key_id: Option<&str>, reason: &str) -> Self {
        let mut e = Self::new(EventKind::AuthFailure).detail(detail::REASON, reason);
        e.key_id = key_id.map(str::to_string);
        e
    }

    /// A valid key that lacks `scope`.
    pub fn scope_refused(tenant: &TenantId, key_id: &str, scope: &str) -> Self {
        Self::new(EventKind::ScopeRefused)
            .tenant(tenant)
            .key_id(key_id)
            .detail(detail::SCOPE, scope)
    }

    /// A policy replaced; `old_version` is `None` for a tenant's first policy.
    pub fn policy_changed(tenant: &TenantId, old_version: Option<&str>, new_version: &str) -> Self {
        let e = Self::new(EventKind::PolicyChanged)
            .tenant(tenant)
            .detail(detail::NEW_VERSION, new_version);
        match old_version {
            Some(v) => e.detail(detail::OLD_VERSION, v),
            None => e,
        }
    }
}

/// Errors of [`AuditLog`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("i/o error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line read back is not a valid entry; `offset` is its byte offset
    /// (run `verify` for the line number and the first problem of the chain).
    #[error("audit log {path} is corrupt at byte {offset}: {problem}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        problem: Problem,
    },
    #[error("audit log {0} is in use by another process")]
    Locked(PathBuf),
    #[error("audit log {0} failed an earlier write or fsync; appends are refused until restart")]
    Poisoned(PathBuf),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Parses one stored line (without newline) strictly: it must be the
/// canonical serialization of the event it holds and its hash must match, so
/// a byte-level edit can never leave a line that still reads as valid.
pub(crate) fn parse_line(line: &[u8]) -> Result<AuditEvent, Problem> {
    let event: AuditEvent =
        serde_json::from_slice(line).map_err(|e| Problem::Malformed(e.to_string()))?;
    if event.to_line().as_bytes() != line {
        return Err(Problem::NotCanonical { seq: event.seq });
    }
    let expected = event.compute_hash();
    if expected != event.hash {
        return Err(Problem::HashMismatch {
            seq: event.seq,
            stored: event.hash,
            computed: expected,
        });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditEvent {
        let mut e = AuditEvent {
            seq: 1,
            time_nanos: 1_700_000_000_000_000_000,
            tenant: Some("acme".into()),
            key_id: Some("k1".into()),
            kind: EventKind::Query,
            details: BTreeMap::from([("rows".into(), "3".into())]),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    #[test]
    fn kind_names_match_serde() {
        for k in [
            EventKind::AuthFailure,
            EventKind::ScopeRefused,
            EventKind::PolicyChanged,
            EventKind::PolicyRejected,
            EventKind::TenantCreated,
            EventKind::TenantRevoked,
            EventKind::KeyCreated,
            EventKind::KeyRevoked,
            EventKind::Query,
            EventKind::QueryRefused,
            EventKind::LogRecovered,
            EventKind::RetentionApplied,
            EventKind::KeyRotated,
            EventKind::TenantShredded,
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }

    #[test]
    fn line_round_trips_and_field_order_is_fixed() {
        let e = sample();
        let line = e.to_line();
        assert!(line.starts_with(r#"{"seq":1,"time_nanos":1700000000000000000,"tenant":"acme","key_id":"k1","kind":"query","details":{"rows":"3"},"prev_hash":"000"#));
        assert_eq!(parse_line(line.as_bytes()).unwrap(), e);
    }

    #[test]
    fn hash_covers_every_field() {
        let base = sample();
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.seq = 2;
        variants.push(v);
        let mut v = base.clone();
        v.time_nanos += 1;
        variants.push(v);
        let mut v = base.clone();
        v.tenant = None;
        variants.push(v);
        let mut v = base.clone();
        v.key_id = Some("k2".into());
        variants.push(v);
        let mut v = base.clone();
        v.kind = EventKind::QueryRefused;
        variants.push(v);
        let mut v = base.clone();
        v.details.insert("rows".into(), "4".into());
        variants.push(v);
        let mut v = base.clone();
        v.prev_hash = "1".repeat(64);
        variants.push(v);
        for v in variants {
            assert_ne!(v.compute_hash(), base.hash, "{v:?}");
        }
    }

    #[test]
    fn string_boundaries_are_unambiguous() {
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        let mut a = sample();
        a.details = BTreeMap::from([("ab".into(), "c".into())]);
        let mut b = sample();
        b.details = BTreeMap::from([("a".into(), "bc".into())]);
        assert_ne!(a.compute_hash(), b.compute_hash());
    }

    #[test]
    fn non_canonical_lines_are_refused() {
        let line = sample().to_line();
        let spaced = line.replacen(",", ", ", 1);
        assert!(matches!(
            parse_line(spaced.as_bytes()),
            Err(Problem::NotCanonical { .. })
        ));
        let extra = line.replacen("{", r#"{"x":1,"#, 1);
        assert!(matches!(
            parse_line(extra.as_bytes()),
            Err(Problem::Malformed(_))
        ));
    }

    #[test]
    fn helpers_fill_the_usual_details() {
        let t = TenantId::new("acme").unwrap();
        let q = NewEvent::query(&t, "k1", "SELECT 1", 1);
        assert_eq!(q.details[detail::SQL_SHA256], sql_sha256("SELECT 1"));
        assert_eq!(q.details[detail::ROWS], "1");
        let p = NewEvent::policy_changed(&t, Some("v1"), "v2");
        assert_eq!(p.details[detail::OLD_VERSION], "v1");
        let a = NewEvent::auth_failure(None, "unknown key");
        assert_eq!(a.tenant, None);
        assert_eq!(a.kind, EventKind::AuthFailure);
    }
}
