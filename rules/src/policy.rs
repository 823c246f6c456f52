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
//!
//! A default policy, `<policy_dir>/_defaults.toml` (no tenant can be named
//! so: tenant names start with a letter or digit), holds the sections every
//! tenant inherits: a tenant's own file overrides it key by key (tables
//! merge, any other value replaces), and neither `tenant` nor `keys` may be
//! set there. A tenant's version is then the hash of both texts, so a
//! change of the defaults is a new version of every tenant that inherits.
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

/// The first line of every policy file Bulkhead writes.
const HEADER: &str =
    "# Bulkhead tenant policy. Key secrets are never stored, only their SHA-256.\n";

/// The default policy's file name inside the policy directory.
pub const DEFAULTS_FILE: &str = "_defaults.toml";

/// The sections a default policy may hold: those of a tenant's file
/// without `tenant` and `keys`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    #[serde(default)]
    anomaly: AnomalyPolicy,
    #[serde(default)]
    redaction: RedactionPolicy,
    #[serde(default)]
    limits: Limits,
    /// Parsing it is all its validation.
    #[serde(default)]
    #[allow(dead_code)]
    retention: Retention,
    #[serde(default)]
    query: crate::QueryLimits,
}

/// The default policy every tenant inherits (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDefaults {
    table: toml::Table,
    /// Content hash of the defaults' text.
    pub version: String,
}

impl PolicyDefaults {
    /// Parses and validates the default policy's text, reporting every
    /// problem with its line.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<PolicyError>> {
        let syntax = |e: toml::de::Error| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![PolicyError::new(path, line, e.message().to_string())]
        };
        let table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let mut errors = Vec::new();
        for own in ["tenant", "keys"] {
            if table.contains_key(own) {
                errors.push(PolicyError::new(
                    path,
                    find_line(text, own),
                    format!("`{own}` cannot be set in the default policy: it belongs in each tenant's own file"),
                ));
            }
        }
        let secret = table
            .get("redaction")
            .and_then(|r| r.as_table())
            .is_some_and(|r| r.contains_key("hash_secret"));
        if secret {
            errors.push(PolicyError::new(
                path,
                find_line(text, "hash_secret"),
                "`redaction.hash_secret` cannot be set in the default policy: shared by every tenant, hashed values could be matched across tenants; set it in each tenant's own file".to_string(),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let file: DefaultsFile = toml::from_str(text).map_err(syntax)?;
        let errors = section_problems(
            path,
            text,
            &file.anomaly,
            &file.limits,
            &file.query,
            &file.redaction,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            table,
            version: version_of(text),
        })
    }

    /// `own` merged over the defaults: tables merge key by key, any other
    /// value of `own` replaces the default's.
    fn under(&self, own: toml::Table) -> toml::Table {
        fn merge(base: &mut toml::Table, over: toml::Table) {
            for (k, v) in over {
                match (base.get_mut(&k), v) {
                    (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                    (_, v) => {
                        base.insert(k, v);
                    }
                }
            }
        }
        let mut out = self.table.clone();
        merge(&mut out, own);
        out
    }
}

/// Problems of the validated sections, each with its line in `text`.
fn section_problems(
    path: &Path,
    text: &str,
    anomaly: &AnomalyPolicy,
    limits: &Limits,
    query: &crate::QueryLimits,
    redaction: &RedactionPolicy,
) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    for (section, problems) in [
        ("[anomaly", anomaly.problems()),
        ("[limits", limits.problems()),
        ("[query", query.problems()),
        ("[redaction", redaction.problems()),
    ] {
        for problem in problems {
            errors.push(PolicyError::new(path, find_line(text, section), problem));
        }
    }
    errors
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
        Self::parse_with(path, text, None)
    }

    /// As [`TenantPolicy::parse`], the file's sections merged over
    /// `defaults` (the policy in force is the merge; lines point into the
    /// tenant's file where it has the section).
    pub fn parse_with(
        path: &Path,
        text: &str,
        defaults: Option<&PolicyDefaults>,
    ) -> Result<Self, Vec<PolicyError>> {
        let syntax = |e: toml::de::Error| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![PolicyError::new(path, line, e.message().to_string())]
        };
        let mut file: PolicyFile = toml::from_str(text).map_err(syntax)?;
        if let Some(d) = defaults {
            let own: toml::Table = toml::from_str(text).map_err(syntax)?;
            file = toml::Value::Table(d.under(own))
                .try_into()
                .map_err(|e: toml::de::Error| {
                    vec![PolicyError::new(
                        path,
                        None,
                        format!(
                            "merged over the default policy ({DEFAULTS_FILE}): {}",
                            e.message()
                        ),
                    )]
                })?;
        }
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
        errors.extend(section_problems(
            path,
            text,
            &file.anomaly,
            &file.limits,
            &file.query,
            &file.redaction,
        ));
        match (tenant, errors.is_empty()) {
            (Some(tenant), true) => Ok(Self {
                tenant,
                keys: file.keys,
                anomaly: file.anomaly,
                redaction: file.redaction,
                limits: file.limits,
                retention: file.retention,
                query: file.query,
                version: Self::version_with(text, defaults),
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
        format!("{HEADER}{body}")
    }

    /// The `[[keys]]` of a tenant's own policy file, read without the rest
    /// of the file being validated (nor the default policy it inherits): a
    /// leaked key must be revocable whatever else is wrong.
    pub fn own_keys(text: &str) -> Result<Vec<KeyRecord>, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        match table.get("keys") {
            None => Ok(Vec::new()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| format!("keys: {}", e.message())),
        }
    }

    /// `text` (a tenant's own policy file) with its keys replaced by `keys`,
    /// every other value kept as written: rewriting the file from the
    /// parsed policy would drop explicit values equal to the built-in
    /// defaults, which still override the default policy.
    pub fn with_keys(text: &str, keys: &[KeyRecord]) -> Result<String, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        table.insert(
            "keys".into(),
            toml::Value::try_from(keys).map_err(|e| e.to_string())?,
        );
        let body = toml::to_string_pretty(&table).map_err(|e| e.to_string())?;
        Ok(format!("{HEADER}{body}"))
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

    /// The version of a policy file with this text, inheriting `defaults`:
    /// the hash of both, so a change to either is a new version.
    pub fn version_with(text: &str, defaults: Option<&PolicyDefaults>) -> String {
        match defaults {
            None => version_of(text),
            Some(d) => version_of(&format!("{}\n{text}", d.version)),
        }
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
    /// The default policy the tenants inherit, when the directory has one.
    pub defaults: Option<Arc<PolicyDefaults>>,
}

impl PolicySet {
    /// The path of a tenant's policy file inside `dir`.
    pub fn path_for(dir: &Path, tenant: &TenantId) -> PathBuf {
        dir.join(format!("{tenant}.toml"))
    }

    /// Loads every `*.toml` file of `dir` (a missing directory is an empty set),
    /// reporting every problem of every file at once.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<PolicyError>> {
        Self::load_dir_reusing(dir, |_, _| None)
    }

    /// The default policy of `dir` ([`DEFAULTS_FILE`]), if it has one.
    pub fn load_defaults(dir: &Path) -> Result<Option<PolicyDefaults>, Vec<PolicyError>> {
        let path = dir.join(DEFAULTS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => PolicyDefaults::parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(vec![PolicyError::new(
                &path,
                None,
                format!("cannot read: {e}"),
            )]),
        }
    }

    /// As [`PolicySet::load_dir`], but a file for which `reuse` gives a
    /// policy (one already parsed, from a file that has not changed since,
    /// under the same defaults, which it is given) is neither read nor
    /// parsed again. Checks across files (key ids) still cover every policy.
    pub fn load_dir_reusing(
        dir: &Path,
        reuse: impl Fn(&Path, Option<&PolicyDefaults>) -> Option<Arc<TenantPolicy>>,
    ) -> Result<Self, Vec<PolicyError>> {
        Self::load_dir_with(dir, Self::load_defaults(dir), reuse)
    }

    /// The tenants of `dir` as they would load under `defaults` instead of
    /// the directory's own default policy: a new default policy is checked
    /// against every tenant before it is written.
    pub fn load_dir_under(
        dir: &Path,
        defaults: Option<PolicyDefaults>,
    ) -> Result<Self, Vec<PolicyError>> {
        Self::load_dir_with(dir, Ok(defaults), |_, _| None)
    }

    fn load_dir_with(
        dir: &Path,
        defaults: Result<Option<PolicyDefaults>, Vec<PolicyError>>,
        reuse: impl Fn(&Path, Option<&PolicyDefaults>) -> Option<Arc<TenantPolicy>>,
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
            .filter(|p| p.file_name().is_none_or(|n| n != DEFAULTS_FILE))
            .collect();
        paths.sort();
        set.defaults = match defaults {
            Ok(d) => d.map(Arc::new),
            Err(mut e) => {
                // every tenant inherits it: nothing is loaded over a broken one
                errors.append(&mut e);
                return Err(errors);
            }
        };
        let defaults = set.defaults.clone();
        let mut key_owner: HashMap<String, TenantId> = HashMap::new();
        for path in paths {
            let (p, text) = match reuse(&path, defaults.as_deref()) {
                Some(p) => (p, None),
                None => {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            errors.push(PolicyError::new(&path, None, format!("cannot read: {e}")));
                            continue;
                        }
                    };
                    match TenantPolicy::parse_with(&path, &text, defaults.as_deref()) {
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
    fn the_default_policy_is_inherited_key_by_key_and_overridden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DEFAULTS_FILE),
            "[limits]\nrecords_per_second = 500\nmax_metric_series = 10\n[retention]\nlogs = \"7d\"\n",
        )
        .unwrap();
        // inherits everything
        std::fs::write(dir.path().join("plain.toml"), "tenant = \"plain\"\n").unwrap();
        // overrides one key of [limits] (with the built-in default's value)
        // and keeps the other
        std::fs::write(
            dir.path().join("big.toml"),
            "tenant = \"big\"\n[limits]\nrecords_per_second = 0\n",
        )
        .unwrap();
        let set = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!(set.policies.len(), 2, "the defaults are no tenant");
        let get = |n: &str| set.get(&TenantId::new(n).unwrap()).unwrap().clone();
        let (plain, big) = (get("plain"), get("big"));
        assert_eq!(plain.limits.records_per_second, 500);
        assert_eq!(plain.limits.max_metric_series, 10);
        assert!(plain.retention.logs.is_some());
        assert_eq!(big.limits.records_per_second, 0);
        assert_eq!(big.limits.max_metric_series, 10);
        assert!(big.retention.logs.is_some());

        // a change of the defaults is a new version of every inheriting tenant
        std::fs::write(
            dir.path().join(DEFAULTS_FILE),
            "[limits]\nrecords_per_second = 600\n",
        )
        .unwrap();
        let again = PolicySet::load_dir(dir.path()).unwrap();
        let plain2 = again.get(&TenantId::new("plain").unwrap()).unwrap();
        assert_eq!(plain2.limits.records_per_second, 600);
        assert_ne!(plain2.version, plain.version);
        assert_eq!(
            plain2.limits.max_metric_series,
            Limits::default().max_metric_series
        );
        // without defaults the version is the file's own hash, as before
        std::fs::remove_file(dir.path().join(DEFAULTS_FILE)).unwrap();
        let none = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!(
            none.get(&TenantId::new("plain").unwrap()).unwrap().version,
            TenantPolicy::version_of("tenant = \"plain\"\n")
        );
    }

    #[test]
    fn a_bad_default_policy_is_refused_with_its_file_and_line() {
        let path = Path::new(DEFAULTS_FILE);
        let errs =
            PolicyDefaults::parse(path, "tenant = \"x\"\n[[keys]]\nid = \"a\"\n").unwrap_err();
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|e| e.contains("`tenant` cannot be set")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|e| e.contains("`keys` cannot be set")),
            "{all:?}"
        );
        let errs = PolicyDefaults::parse(path, "\n[anomaly]\nseries_limit = 0\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2), "{errs:?}");
        assert!(errs[0].message.contains("series_limit"), "{errs:?}");
        let errs = PolicyDefaults::parse(path, "[limits]\nrecords_per_sec = 1\n").unwrap_err();
        assert!(errs[0].message.contains("records_per_sec"), "{errs:?}");
        // a broken default policy loads no tenant at all
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEFAULTS_FILE), "[limits\n").unwrap();
        std::fs::write(dir.path().join("a.toml"), "tenant = \"a\"\n").unwrap();
        let errs = PolicySet::load_dir(dir.path()).unwrap_err();
        assert!(errs[0].to_string().contains(DEFAULTS_FILE), "{errs:?}");
    }

    #[test]
    fn rewriting_keys_keeps_every_other_value_as_written() {
        let (p, key) = policy_with_key("a", 3, "ingest");
        let text = "tenant = \"a\"\n[limits]\nrecords_per_second = 0\nmax_metric_series = 100000\n";
        let out = TenantPolicy::with_keys(text, &p.keys).unwrap();
        assert!(out.contains("records_per_second = 0"), "{out}");
        assert!(out.contains("max_metric_series = 100000"), "{out}");
        let back = TenantPolicy::parse(Path::new("a.toml"), &out).unwrap();
        assert_eq!(back.keys, p.keys);
        assert!(!out.contains(&key.expose()));
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
