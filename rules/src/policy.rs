//! Per-tenant policy files and the keyring built from them.
//!
//! One TOML file per tenant, `<policy_dir>/<tenant>.toml`:
//!
//! ```toml
//! tenant = "acme"
//!
//! [[keys]]
//! id = "3f9c0a1b2c3d4e5f"
//! sha256 = "<64 lower-hex characters>"
//! scopes = ["ingest", "query"]
//! created = "2026-11-26T09:00:00Z"
//! ```
//!
//! Later sections (redaction, limits, retention) extend the same file.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::anomaly_policy::AnomalyPolicy;
use crate::error::{AuthError, PolicyError};
use crate::keys::{digest_eq, ApiKey, KeyRecord, Principal, Scopes};
use crate::limits::{Limits, Retention};
use crate::redact::RedactionPolicy;
use crate::tenant::TenantId;

/// The policy file as written on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    tenant: String,
    #[serde(default)]
    keys: Vec<KeyRecord>,
    #[serde(default, skip_serializing_if = "is_default_anomaly")]
    anomaly: AnomalyPolicy,
    #[serde(default, skip_serializing_if = "is_default_redaction")]
    redaction: RedactionPolicy,
    #[serde(default, skip_serializing_if = "is_default")]
    limits: Limits,
    #[serde(default, skip_serializing_if = "is_default")]
    retention: Retention,
    #[serde(default, skip_serializing_if = "is_default")]
    query: crate::QueryLimits,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_default_redaction(r: &RedactionPolicy) -> bool {
    *r == RedactionPolicy::default()
}

fn is_default_anomaly(a: &AnomalyPolicy) -> bool {
    *a == AnomalyPolicy::default()
}

/// A validated tenant policy.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantPolicy {
    pub tenant: TenantId,
    pub keys: Vec<KeyRecord>,
    pub anomaly: AnomalyPolicy,
    pub redaction: RedactionPolicy,
    pub limits: Limits,
    pub retention: Retention,
    pub query: crate::QueryLimits,
    /// Content hash of the policy text (first 16 hex characters of its SHA-256):
    /// stamped on every stored record as lineage.
    pub version: String,
}

impl TenantPolicy {
    /// A fresh policy with no keys.
    pub fn new(tenant: TenantId) -> Self {
        let mut p = Self {
            tenant,
            keys: Vec::new(),
            anomaly: AnomalyPolicy::default(),
            redaction: RedactionPolicy::default(),
            limits: Limits::default(),
            retention: Retention::default(),
            query: crate::QueryLimits::default(),
            version: String::new(),
        };
        p.version = version_of(&p.to_toml());
        p
    }

    /// Parses and validates one policy file's text, reporting every problem.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<PolicyError>> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![PolicyError::new(path, line, e.message().to_string())]
        })?;
        let mut errors = Vec::new();
        let tenant = match TenantId::new(&file.tenant) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(PolicyError::new(path, find_line(text, "tenant"), e));
                None
            }
        };
        if let (Some(t), Some(stem)) = (&tenant, path.file_stem().and_then(|s| s.to_str())) {
            if stem != t.as_str() {
                errors.push(PolicyError::new(
                    path,
                    find_line(text, "tenant"),
                    format!("file is named {stem:?} but declares tenant {t:?}; name it {t}.toml"),
                ));
            }
        }
        let mut seen = HashMap::new();
        for k in &file.keys {
            let line = find_line(text, &k.id);
            if k.id.len() != 16 || !k.id.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(PolicyError::new(
                    path,
                    line,
                    format!("key id {:?} must be 16 hex characters", k.id),
                ));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(PolicyError::new(
                    path,
                    line,
                    format!("key {}: sha256 must be 64 hex characters", k.id),
                ));
            }
            if k.scopes.is_empty() {
                errors.push(PolicyError::new(
                    path,
                    line,
                    format!("key {}: no scopes", k.id),
                ));
            }
            if seen.insert(k.id.clone(), ()).is_some() {
                errors.push(PolicyError::new(
                    path,
                    line,
                    format!("key id {} appears twice", k.id),
                ));
            }
        }
        for problem in file.anomaly.problems() {
            errors.push(PolicyError::new(path, find_line(text, "[anomaly"), problem));
        }
        for problem in file.limits.problems() {
            errors.push(PolicyError::new(path, find_line(text, "[limits"), problem));
        }
        for problem in file.query.problems() {
            errors.push(PolicyError::new(path, find_line(text, "[query"), problem));
        }
        for problem in file.redaction.problems() {
            errors.push(PolicyError::new(
                path,
                find_line(text, "[redaction"),
                problem,
            ));
        }
        match (tenant, errors.is_empty()) {
            (Some(tenant), true) => Ok(Self {
                tenant,
                keys: file.keys,
                anomaly: file.anomaly,
                redaction: file.redaction,
                limits: file.limits,
                retention: file.retention,
                query: file.query,
                version: version_of(text),
            }),
            _ => Err(errors),
        }
    }

    /// The policy as TOML text (what `tenant create` and `key create` write).
    pub fn to_toml(&self) -> String {
        let file = PolicyFile {
            tenant: self.tenant.to_string(),
            keys: self.keys.clone(),
            anomaly: self.anomaly.clone(),
            redaction: self.redaction.clone(),
            limits: self.limits.clone(),
            retention: self.retention.clone(),
            query: self.query.clone(),
        };
        let body = toml::to_string_pretty(&file).unwrap_or_default();
        format!(
            "# Bulkhead tenant policy. Key secrets are never stored, only their SHA-256.\n{body}"
        )
    }

    /// Adds a key record and refreshes the version.
    pub fn add_key(&mut self, key: KeyRecord) {
        self.keys.push(key);
        self.version = version_of(&self.to_toml());
    }

    /// The version a policy file with this text has (its content hash).
    pub fn version_of(text: &str) -> String {
        version_of(text)
    }
}

fn version_of(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|at| line_of(text, at))
}

/// Every tenant's policy, loaded from one directory.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub policies: BTreeMap<TenantId, Arc<TenantPolicy>>,
}

impl PolicySet {
    /// The path of a tenant's policy file inside `dir`.
    pub fn path_for(dir: &Path, tenant: &TenantId) -> PathBuf {
        dir.join(format!("{tenant}.toml"))
    }

    /// Loads every `*.toml` file of `dir` (a missing directory is an empty set),
    /// reporting every problem of every file at once.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<PolicyError>> {
        Self::load_dir_reusing(dir, |_| None)
    }

    /// As [`PolicySet::load_dir`], but a file for which `reuse` gives a
    /// policy (one already parsed, from a file that has not changed since)
    /// is neither read nor parsed again. Checks across files (key ids) still
    /// cover every policy.
    pub fn load_dir_reusing(
        dir: &Path,
        reuse: impl Fn(&Path) -> Option<Arc<TenantPolicy>>,
    ) -> Result<Self, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut set = PolicySet::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(e) => {
                return Err(vec![PolicyError::new(
                    dir,
                    None,
                    format!("cannot read policy directory: {e}"),
                )])
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut key_owner: HashMap<String, TenantId> = HashMap::new();
        for path in paths {
            let (p, text) = match reuse(&path) {
                Some(p) => (p, None),
                None => {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            errors.push(PolicyError::new(&path, None, format!("cannot read: {e}")));
                            continue;
                        }
                    };
                    match TenantPolicy::parse(&path, &text) {
                        Ok(p) => (Arc::new(p), Some(text)),
                        Err(mut e) => {
                            errors.append(&mut e);
                            continue;
                        }
                    }
                }
            };
            for k in &p.keys {
                if let Some(other) = key_owner.insert(k.id.clone(), p.tenant.clone()) {
                    errors.push(PolicyError::new(
                        &path,
                        text.as_deref().and_then(|t| find_line(t, &k.id)),
                        format!("key id {} is also used by tenant {other}", k.id),
                    ));
                }
            }
            set.policies.insert(p.tenant.clone(), p);
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, tenant: &TenantId) -> Option<&TenantPolicy> {
        self.policies.get(tenant).map(|p| p.as_ref())
    }
}

struct KeyEntry {
    tenant: TenantId,
    digest: [u8; 32],
    scopes: Scopes,
}

/// Maps presented keys to principals. Built from a [`PolicySet`].
#[derive(Default)]
pub struct Keyring {
    by_id: HashMap<String, KeyEntry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.by_id.len())
    }
}

impl Keyring {
    pub fn from_policies(set: &PolicySet) -> Self {
        let mut by_id = HashMap::new();
        for p in set.policies.values() {
            for k in p.keys.iter().filter(|k| !k.revoked) {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(&k.sha256, &mut digest).is_err() {
                    continue; // refused by validation already
                }
                by_id.insert(
                    k.id.to_ascii_lowercase(),
                    KeyEntry {
                        tenant: p.tenant.clone(),
                        digest,
                        scopes: k.scopes.iter().copied().collect(),
                    },
                );
            }
        }
        Self { by_id }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Turns a presented key into the principal that owns it.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        let key = ApiKey::parse(presented)?;
        let entry = self.by_id.get(key.id()).ok_or(AuthError::Unknown)?;
        if !digest_eq(&entry.digest, &key.digest()) {
            return Err(AuthError::Unknown);
        }
        Ok(Principal {
            tenant: entry.tenant.clone(),
            key_id: key.id().to_string(),
            scopes: entry.scopes,
        })
    }
}

/// Anything that can turn a presented key into a principal; the servers hold
/// one of these (the collector's reloads itself when policies change).
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, presented: &str) -> Result<Principal, AuthError>;
}

impl Authenticator for Keyring {
    fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        Keyring::authenticate(self, presented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Scope;

    fn policy_with_key(name: &str, seed: u8, scopes: &str) -> (TenantPolicy, ApiKey) {
        let mut p = TenantPolicy::new(TenantId::new(name).unwrap());
        let key = ApiKey::from_random([seed; 8], [seed; 32]);
        p.add_key(KeyRecord::new(
            &key,
            Scopes::parse_list(scopes).unwrap(),
            "2026-01-01T00:00:00Z".into(),
        ));
        (p, key)
    }

    #[test]
    fn written_policy_parses_back_and_never_holds_the_secret() {
        let (p, key) = policy_with_key("acme", 7, "ingest,query");
        let text = p.to_toml();
        assert!(!text.contains(&key.expose()));
        assert!(!text.contains(&key.expose()[21..]));
        let back = TenantPolicy::parse(Path::new("acme.toml"), &text).unwrap();
        assert_eq!(back.keys, p.keys);
        assert_eq!(back.version, p.version);
    }

    #[test]
    fn keyring_authenticates_and_refuses() {
        let (a, ka) = policy_with_key("a", 1, "ingest");
        let (b, kb) = policy_with_key("b", 2, "query");
        let mut set = PolicySet::default();
        set.policies.insert(a.tenant.clone(), a.into());
        set.policies.insert(b.tenant.clone(), b.into());
        let ring = Keyring::from_policies(&set);
        let pa = ring.authenticate(&ka.expose()).unwrap();
        assert_eq!(pa.tenant.as_str(), "a");
        assert!(pa.scopes.contains(Scope::Ingest) && !pa.scopes.contains(Scope::Query));
        assert_eq!(
            ring.authenticate(&kb.expose()).unwrap().tenant.as_str(),
            "b"
        );
        // right id, wrong secret
        let forged = ApiKey::from_random([1; 8], [9; 32]);
        assert_eq!(ring.authenticate(&forged.expose()), Err(AuthError::Unknown));
        assert_eq!(ring.authenticate("nonsense"), Err(AuthError::Malformed));
    }

    #[test]
    fn revoked_keys_do_not_authenticate() {
        let (mut p, k) = policy_with_key("a", 1, "ingest");
        p.keys[0].revoked = true;
        let mut set = PolicySet::default();
        set.policies.insert(p.tenant.clone(), p.into());
        assert_eq!(
            Keyring::from_policies(&set).authenticate(&k.expose()),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn parse_reports_every_problem_with_lines() {
        let text = "tenant = \"acme\"\n\n[[keys]]\nid = \"xyz\"\nsha256 = \"00\"\nscopes = []\n";
        let errs = TenantPolicy::parse(Path::new("dir/other.toml"), text).unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(all.iter().any(|e| e.contains("named \"other\"")), "{all:?}");
        assert!(
            all.iter()
                .any(|e| e.contains("16 hex") && e.contains(":4:")),
            "{all:?}"
        );
        assert!(all.iter().any(|e| e.contains("sha256")), "{all:?}");
        assert!(all.iter().any(|e| e.contains("no scopes")), "{all:?}");
    }

    #[test]
    fn anomaly_section_parses_and_is_validated() {
        let text = "tenant = \"a\"\n[anomaly]\nmetrics = [\"cpu.*\"]\nseries_limit = 10\n[anomaly.detector]\nsensitivity = 0.8\nseasonality = \"daily\"\n";
        let p = TenantPolicy::parse(Path::new("a.toml"), text).unwrap();
        assert_eq!(p.anomaly.series_limit, 10);
        assert!(p.anomaly.selects_metric("cpu.load"));
        assert_eq!(p.anomaly.detector.sensitivity, 0.8);
        let back = TenantPolicy::parse(Path::new("a.toml"), &p.to_toml()).unwrap();
        assert_eq!(back.anomaly, p.anomaly);
        let errs = TenantPolicy::parse(
            Path::new("a.toml"),
            "tenant = \"a\"\n[anomaly]\nseries_limit = 0\n",
        )
        .unwrap_err();
        assert_eq!(errs[0].line, Some(2), "{errs:?}");
        assert!(errs[0].message.contains("series_limit"));
        // a fresh policy does not spell out the defaults
        assert!(!TenantPolicy::new(TenantId::new("a").unwrap())
            .to_toml()
            .contains("anomaly"));
    }

    #[test]
    fn redaction_section_is_validated_with_its_line() {
        let text = "tenant = \"a\"\n\n[redaction]\ndetectors = [\"email\", \"horoscope\"]\n";
        let errs = TenantPolicy::parse(Path::new("a.toml"), text).unwrap_err();
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
        assert!(errs[0].message.contains("horoscope"), "{errs:?}");
        let ok = TenantPolicy::parse(
            Path::new("a.toml"),
            "tenant = \"a\"\n[redaction]\ndetectors = [\"email\"]\n",
        )
        .unwrap();
        assert_eq!(ok.redaction.detectors, vec!["email".to_string()]);
        let back = TenantPolicy::parse(Path::new("a.toml"), &ok.to_toml()).unwrap();
        assert_eq!(back.redaction, ok.redaction);
    }

    #[test]
    fn syntax_and_unknown_fields_are_refused_with_line() {
        let errs =
            TenantPolicy::parse(Path::new("a.toml"), "tenant = \"a\"\nfoo = 1\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2), "{errs:?}");
        assert!(errs[0].message.contains("foo"));
        let errs = TenantPolicy::parse(Path::new("a.toml"), "tenant = \"../b\"\n").unwrap_err();
        assert!(errs[0].message.contains("tenant name"), "{errs:?}");
    }

    #[test]
    fn load_dir_refuses_a_key_id_shared_by_two_tenants() {
        let dir = std::env::temp_dir().join(format!("bh-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, _) = policy_with_key("a", 1, "ingest");
        let (mut b, _) = policy_with_key("b", 2, "ingest");
        b.keys[0].id = a.keys[0].id.clone();
        std::fs::write(dir.join("a.toml"), a.to_toml()).unwrap();
        std::fs::write(dir.join("b.toml"), b.to_toml()).unwrap();
        let errs = PolicySet::load_dir(&dir).unwrap_err();
        assert!(
            errs[0].message.contains("also used by tenant a"),
            "{errs:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(PolicySet::load_dir(&dir).unwrap().policies.is_empty());
    }
}
