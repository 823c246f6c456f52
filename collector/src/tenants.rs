//! The tenant directory: every tenant's policy and the keyring built from
//! them, reloaded when the policy files change.
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bulkhead_rules::redact::Redactor;
use bulkhead_rules::{
    ApiKey, AuthError, Authenticator, Clock, KeyRecord, Keyring, PolicySet, Principal, Scopes,
    TenantId, TenantPolicy,
};

/// How often an unknown key may trigger a look at the policy directory.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// One tenant's policy that changed at a reload.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyChange {
    pub tenant: TenantId,
    /// None: the tenant is new.
    pub old_version: Option<String>,
    /// None: the tenant's policy file is gone.
    pub new_version: Option<String>,
    pub keys_added: Vec<String>,
    pub keys_revoked: Vec<String>,
    /// Secure-default detectors the new policy turns off.
    pub disabled_defaults: Vec<String>,
    /// The operator whose admin request made the change, when one did.
    pub by: Option<String>,
    /// The legal hold's new state, when the change placed or lifted it
    /// (a new tenant born under a hold counts as placed).
    pub legal_hold: Option<bool>,
}

/// What a look at the policy directory did.
#[derive(Debug, PartialEq)]
pub enum ReloadOutcome {
    Unchanged,
    /// New policies are in force; per tenant, the old and new version
    /// (None: the tenant did not exist / no longer exists).
    Reloaded(Vec<PolicyChange>),
    /// The directory has problems; the previous policies stay in force.
    Refused(String),
}

struct Loaded {
    policies: PolicySet,
    redactors: std::collections::HashMap<TenantId, Arc<Redactor>>,
    /// Compiled redactors by their `[redaction]` section: tenants with the
    /// same rules (most keep the secure defaults) share one.
    compiled: std::collections::HashMap<Vec<u8>, Arc<Redactor>>,
    keyring: Keyring,
    fingerprint: Fingerprint,
}

/// Work a load did: files parsed and redactors compiled (the rest reused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadWork {
    pub parsed: usize,
    pub compiled: usize,
}

/// Policies and keys of all tenants, shared by the receivers and the API.
pub struct TenantDirectory {
    dir: PathBuf,
    /// The directory state last refused, so it is not re-read and re-logged.
    refused: Mutex<Option<Fingerprint>>,
    current: RwLock<Arc<Loaded>>,
    /// When an unknown key last made us look (injected clock, nanoseconds).
    last_check: Mutex<Option<i64>>,
    /// What the last reload had to do.
    last_work: Mutex<LoadWork>,
    /// Changes taken in by any reload (an unknown key's among them) and
    /// not yet handed to the audit trail.
    unaudited: Mutex<Vec<PolicyChange>>,
    /// Held while a new state is built from the current one, so that a
    /// reload and a refresh never build on the same state.
    loading: Mutex<()>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for TenantDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantDirectory({})", self.dir.display())
    }
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        // the keyring's directory and the write lock's file are not
        // policies (their writes are no policy change); `..data` of a
        // ConfigMap is, and stays in
        .filter(|e| e.file_name() != ".keys" && e.file_name() != WRITE_LOCK_FILE)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.modified().ok(), m.len()))
        })
        .collect();
    out.sort();
    out
}

/// Loads the policy directory. With `previous`, a file whose text is
/// unchanged keeps its parsed policy, and a
/// `[redaction]` section compiled before keeps its redactor: a reload
/// costs what changed, not the number of tenants.
fn load(dir: &Path, previous: Option<&Loaded>) -> Result<(Loaded, LoadWork), String> {
    let fingerprint = fingerprint(dir);
    let mut work = LoadWork::default();
    // a file is reused when its text is what the policy in force was parsed
    // from (same content hash); reading is cheap, parsing and compiling are
    // not. Content, not size and time: a ConfigMap swaps files behind
    // symlinks, and a copy can keep a file's time.
    let reused = std::cell::Cell::new(0);
    let policies = PolicySet::load_dir_reusing(dir, |path, defaults| {
        let tenant = TenantId::new(path.file_stem()?.to_str()?).ok()?;
        let p = previous?.policies.policies.get(&tenant)?;
        let text = std::fs::read_to_string(path).ok()?;
        if TenantPolicy::version_with(&text, defaults) != p.version {
            return None;
        }
        reused.set(reused.get() + 1);
        Some(p.clone())
    })
    .map_err(|e| join_errors(&e))?;
    work.parsed = policies.policies.len() - reused.get();
    let keyring = Keyring::from_policies(&policies);
    // Redactors are compiled once per distinct `[redaction]` section, never
    // per request; rules that do not compile refuse the whole load.
    let mut compiled: std::collections::HashMap<Vec<u8>, Arc<Redactor>> =
        previous.map(|p| p.compiled.clone()).unwrap_or_default();
    let mut redactors = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (t, p) in &policies.policies {
        // a policy reused as it was keeps its redactor
        let kept = previous.and_then(|l| {
            let old = l.policies.policies.get(t)?;
            Arc::ptr_eq(old, p).then(|| l.redactors.get(t).cloned())?
        });
        if let Some(r) = kept {
            redactors.insert(t.clone(), r);
            continue;
        }
        match redactor_for(&mut compiled, t, p, &mut work) {
            Ok(r) => {
                redactors.insert(t.clone(), r);
            }
            Err(errors) => {
                let path = PolicySet::path_for(dir, t);
                problems.extend(
                    errors
                        .into_iter()
                        .map(|e| format!("{}: {e}", path.display())),
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    // forget sections no tenant uses any more
    let used: std::collections::HashSet<*const Redactor> =
        redactors.values().map(Arc::as_ptr).collect();
    compiled.retain(|_, r| used.contains(&Arc::as_ptr(r)));
    Ok((
        Loaded {
            policies,
            redactors,
            compiled,
            keyring,
            fingerprint,
        },
        work,
    ))
}

/// The compiled redactor of a policy's `[redaction]` section: one compiled
/// before for the same section, or compiled now (counted in `work`).
fn redactor_for(
    compiled: &mut std::collections::HashMap<Vec<u8>, Arc<Redactor>>,
    tenant: &TenantId,
    policy: &TenantPolicy,
    work: &mut LoadWork,
) -> Result<Arc<Redactor>, Vec<String>> {
    let key = serde_json::to_vec(&policy.redaction).map_err(|e| vec![e.to_string()])?;
    if let Some(r) = compiled.get(&key) {
        return Ok(r.clone());
    }
    let r = Redactor::compile(&policy.redaction).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    })?;
    work.compiled += 1;
    if !r.disabled_defaults().is_empty() {
        tracing::warn!(%tenant, disabled = ?r.disabled_defaults(), "tenant policy turns default credential masking off");
    }
    let r = Arc::new(r);
    compiled.insert(key, r.clone());
    Ok(r)
}

/// How a tenant's policy changed from `before` to `after` (None: absent).
fn change_of(
    tenant: &TenantId,
    before: Option<&Arc<TenantPolicy>>,
    after: Option<&Arc<TenantPolicy>>,
    redactor: Option<&Arc<Redactor>>,
) -> PolicyChange {
    let live = |p: Option<&Arc<TenantPolicy>>| -> Vec<String> {
        p.map(|p| {
            p.keys
                .iter()
                .filter(|k| !k.revoked)
                .map(|k| k.id.clone())
                .collect()
        })
        .unwrap_or_default()
    };
    let (old_keys, new_keys) = (live(before), live(after));
    PolicyChange {
        tenant: tenant.clone(),
        old_version: before.map(|o| o.version.clone()),
        new_version: after.map(|p| p.version.clone()),
        keys_added: new_keys
            .iter()
            .filter(|k| !old_keys.contains(k))
            .cloned()
            .collect(),
        keys_revoked: old_keys
            .iter()
            .filter(|k| !new_keys.contains(k))
            .cloned()
            .collect(),
        disabled_defaults: match (after, redactor) {
            (Some(_), Some(r)) => r.disabled_defaults().to_vec(),
            _ => Vec::new(),
        },
        by: None,
        legal_hold: {
            let held = |p: Option<&Arc<TenantPolicy>>| p.is_some_and(|p| p.retention.legal_hold);
            (held(before) != held(after) && after.is_some()).then(|| held(after))
        },
    }
}

impl TenantDirectory {
    /// Loads every policy in `dir`; refuses to start on any problem.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let (loaded, _) = load(dir, None)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
            refused: Mutex::new(None),
            last_check: Mutex::new(None),
            last_work: Mutex::default(),
            unaudited: Mutex::default(),
            loading: Mutex::default(),
            clock: Arc::new(bulkhead_rules::SystemClock),
        })
    }

    /// Decides on `clock` when an unknown key may make the directory be
    /// looked at again (at most once a second).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().clone()
    }

    /// Re-reads the policy directory when its files changed. A directory with
    /// problems is not taken: the previous policies stay in force, and the
    /// same broken state is reported once, not at every look.
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        self.reload(None)
    }

    /// [`TenantDirectory::reload_if_changed`] for an operator's admin
    /// request: the changes it takes in carry the operator's name.
    pub fn reload_by(&self, by: &str) -> ReloadOutcome {
        self.reload(Some(by))
    }

    fn reload(&self, by: Option<&str>) -> ReloadOutcome {
        let now = fingerprint(&self.dir);
        if now == self.current().fingerprint {
            return ReloadOutcome::Unchanged;
        }
        {
            let mut refused = self.refused.lock();
            if refused.as_ref() == Some(&now) {
                return ReloadOutcome::Unchanged;
            }
            *refused = None;
        }
        let _loading = self.loading.lock();
        let old = self.current();
        match load(&self.dir, Some(&old)) {
            Ok((loaded, work)) => {
                *self.last_work.lock() = work;
                let mut changes = Vec::new();
                for (t, p) in &loaded.policies.policies {
                    let prev = old.policies.policies.get(t);
                    if prev.map(|o| o.version.as_str()) == Some(p.version.as_str()) {
                        continue;
                    }
                    changes.push(change_of(t, prev, Some(p), loaded.redactors.get(t)));
                }
                for (t, o) in &old.policies.policies {
                    if !loaded.policies.policies.contains_key(t) {
                        changes.push(change_of(t, Some(o), None, None));
                    }
                }
                for c in &mut changes {
                    c.by = by.map(str::to_string);
                }
                tracing::info!(
                    tenants = loaded.policies.policies.len(),
                    keys = loaded.keyring.len(),
                    changed = changes.len(),
                    "policies reloaded"
                );
                for c in &changes {
                    tracing::info!(tenant = %c.tenant, old = c.old_version.as_deref().unwrap_or("-"), new = c.new_version.as_deref().unwrap_or("-"), "policy version changed");
                }
                *self.current.write() = Arc::new(loaded);
                self.unaudited.lock().extend(changes.iter().cloned());
                ReloadOutcome::Reloaded(changes)
            }
            Err(e) => {
                tracing::error!(error = %e, "policy change refused; previous policies stay in force");
                *self.refused.lock() = Some(now);
                ReloadOutcome::Refused(e)
            }
        }
    }

    fn reload_rate_limited(&self) -> bool {
        {
            let now = self.clock.now_nanos();
            let every = i64::try_from(RELOAD_AT_MOST_EVERY.as_nanos()).unwrap_or(i64::MAX);
            let mut last = self.last_check.lock();
            if last.is_some_and(|t| now.saturating_sub(t) < every) {
                return false;
            }
            *last = Some(now);
        }
        matches!(self.reload_if_changed(), ReloadOutcome::Reloaded(_))
    }

    /// Takes in one tenant's policy file now (an admin request has just
    /// written or removed it), at the cost of that one file whatever the
    /// number of tenants; the change, marked as made `by` that operator, is
    /// handed out by [`TenantDirectory::take_unaudited`]. A file that does
    /// not validate is refused and the policy in force stays.
    pub fn refresh(&self, tenant: &TenantId, by: &str) -> Result<PolicyChange, String> {
        let _loading = self.loading.lock();
        let old = self.current();
        let path = PolicySet::path_for(&self.dir, tenant);
        let defaults = old.policies.defaults.clone();
        let (next, stamp) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let p = TenantPolicy::parse_with(&path, &text, defaults.as_deref())
                    .map_err(|e| join_errors(&e))?;
                let meta =
                    std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                (Some(Arc::new(p)), Some((meta.modified().ok(), meta.len())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if let Some(p) = &next {
            for k in &p.keys {
                if let Some(other) = old
                    .policies
                    .policies
                    .values()
                    .find(|o| o.tenant != *tenant && o.keys.iter().any(|ok| ok.id == k.id))
                {
                    return Err(format!(
                        "{}: key id {} is also used by tenant {}",
                        path.display(),
                        k.id,
                        other.tenant
                    ));
                }
            }
        }
        let mut policies = old.policies.clone();
        let mut redactors = old.redactors.clone();
        let mut compiled = old.compiled.clone();
        let mut work = LoadWork::default();
        match &next {
            Some(p) => {
                let r = redactor_for(&mut compiled, tenant, p, &mut work).map_err(|e| {
                    e.iter()
                        .map(|e| format!("{}: {e}", path.display()))
                        .collect::<Vec<_>>()
                        .join("\n")
                })?;
                policies.policies.insert(tenant.clone(), p.clone());
                redactors.insert(tenant.clone(), r);
            }
            None => {
                policies.policies.remove(tenant);
                redactors.remove(tenant);
            }
        }
        work.parsed = usize::from(next.is_some());
        let mut fingerprint = old.fingerprint.clone();
        fingerprint.retain(|(p, _, _)| *p != path);
        if let Some((modified, len)) = stamp {
            fingerprint.push((path.clone(), modified, len));
            fingerprint.sort();
        }
        let mut change = change_of(
            tenant,
            old.policies.policies.get(tenant),
            next.as_ref(),
            redactors.get(tenant),
        );
        change.by = Some(by.to_string());
        let keyring = Keyring::from_policies(&policies);
        *self.current.write() = Arc::new(Loaded {
            policies,
            redactors,
            compiled,
            keyring,
            fingerprint,
        });
        *self.last_work.lock() = work;
        if change.old_version != change.new_version {
            self.unaudited.lock().push(change.clone());
        }
        Ok(change)
    }

    /// The changes every reload since the last call took in, whatever
    /// made it look (the policy watch, a key used seconds after it was
    /// created, an admin request): each is handed out once, to be audited.
    pub fn take_unaudited(&self) -> Vec<PolicyChange> {
        std::mem::take(&mut *self.unaudited.lock())
    }

    /// Files parsed and redactors compiled by the last reload.
    pub fn last_reload_work(&self) -> LoadWork {
        *self.last_work.lock()
    }

    /// The version of `tenant`'s policy in force (lineage).
    pub fn policy_version(&self, tenant: &TenantId) -> String {
        self.current()
            .policies
            .get(tenant)
            .map(|p| p.version.clone())
            .unwrap_or_default()
    }

    /// The redactor of `tenant`'s policy in force (secure defaults for a
    /// tenant without one).
    pub fn redactor(&self, tenant: &TenantId) -> Arc<Redactor> {
        static DEFAULT: std::sync::LazyLock<Arc<Redactor>> =
            std::sync::LazyLock::new(|| Arc::new(Redactor::default_for_tenant()));
        self.current()
            .redactors
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| DEFAULT.clone())
    }

    /// The policy in force for `tenant`.
    pub fn policy(&self, tenant: &TenantId) -> Option<Arc<TenantPolicy>> {
        self.current().policies.policies.get(tenant).cloned()
    }

    pub fn tenants(&self) -> Vec<TenantId> {
        self.current().policies.policies.keys().cloned().collect()
    }

    /// Up to `limit` tenants in force, by name, after `after`.
    pub fn summaries(&self, after: Option<&TenantId>, limit: usize) -> Vec<TenantSummary> {
        use std::ops::Bound;
        let current = self.current();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        current
            .policies
            .policies
            .range::<TenantId, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, p)| TenantSummary::of(p))
            .collect()
    }

    /// The version of the default policy in force, if there is one.
    pub fn defaults_version(&self) -> Option<String> {
        self.current()
            .policies
            .defaults
            .as_ref()
            .map(|d| d.version.clone())
    }
}

impl Authenticator for TenantDirectory {
    fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        match self.current().keyring.authenticate(presented) {
            // A key created since the last load: look again, at most once a second.
            Err(AuthError::Unknown) if self.reload_rate_limited() => {
                self.current().keyring.authenticate(presented)
            }
            other => other,
        }
    }
}

/// The file in the policy directory whose lock [`lock_writes`] takes (the
/// policy loader reads `.toml` files only).
pub const WRITE_LOCK_FILE: &str = ".write.lock";

/// Held while the policy directory is changed; dropped, the next writer
/// goes on.
#[derive(Debug)]
pub struct WriteLock {
    _file: std::fs::File,
}

/// How long [`lock_writes`] waits for another process's change.
const WRITE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Waits for and takes the policy directory's write lock (`flock` on
/// [`WRITE_LOCK_FILE`]). The server's admin API and offboarding jobs and the
/// CLI's tenant and key commands take it around each change, so that two
/// processes changing one tenant's file (a key created by each, say) cannot
/// overwrite each other's change: each reads the file, changes it and
/// writes it whole. A process that dies holding it lets it go; one that
/// holds it longer than 10 s makes the others fail, saying so, rather than
/// wait on.
pub fn lock_writes(policy_dir: &Path) -> Result<WriteLock, String> {
    lock_writes_within(policy_dir, WRITE_LOCK_WAIT)
}

/// [`lock_writes`], waiting at most `wait`.
pub fn lock_writes_within(policy_dir: &Path, wait: Duration) -> Result<WriteLock, String> {
    let path = policy_dir.join(WRITE_LOCK_FILE);
    // read-only is enough for a lock, so a file another user made (the
    // CLI run as root) serves as well
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(policy_dir)
                .map_err(|e| format!("{}: {e}", policy_dir.display()))?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(WriteLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "the policy directory is being changed by another process, which has held {} for over {} s; try again",
                    path.display(),
                    wait.as_secs_f64()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", path.display()))
            }
        }
    }
}

/// Creates a tenant's policy file. Fails if the tenant exists.
pub fn create_tenant(policy_dir: &Path, name: &str) -> Result<TenantPolicy, String> {
    let tenant = TenantId::new(name)?;
    let path = PolicySet::path_for(policy_dir, &tenant);
    if path.exists() {
        // no path: the admin API answers with this
        return Err(format!("tenant {tenant} already exists"));
    }
    let policy = TenantPolicy::new(tenant);
    write_policy(policy_dir, &policy)?;
    // the name is in use again: whoever created it checked (or restored)
    let _ = std::fs::remove_file(removed_marker(policy_dir, &policy.tenant));
    Ok(policy)
}

/// The mark [`remove_tenant`] leaves beside the policies: the tenant was
/// removed with its data kept (stored, buffered or in the log), so a tenant
/// created under the name later would read that data. The policy loader
/// reads `.toml` files only.
pub fn removed_marker(policy_dir: &Path, tenant: &TenantId) -> std::path::PathBuf {
    policy_dir.join(format!("{tenant}.removed"))
}

fn join_errors(errors: &[bulkhead_rules::PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An existing tenant's own policy file: its name, text and keys (the rest
/// of the file is not validated here: the server validates it, merged over
/// the defaults, when it takes it in).
fn read_own(policy_dir: &Path, name: &str) -> Result<(TenantId, String, Vec<KeyRecord>), String> {
    let tenant = TenantId::new(name)?;
    let path = PolicySet::path_for(policy_dir, &tenant);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("no tenant {tenant}: create it first with 'bulkhead tenant create {tenant}'")
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    let keys = TenantPolicy::own_keys(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((tenant, text, keys))
}

#[cfg(test)]
fn read_policy(policy_dir: &Path, name: &str) -> Result<TenantPolicy, String> {
    let (tenant, text, _) = read_own(policy_dir, name)?;
    TenantPolicy::parse(&PolicySet::path_for(policy_dir, &tenant), &text)
        .map_err(|e| join_errors(&e))
}

/// Changes a tenant's keys in its own policy file, every other value of the
/// file kept (comments are not).
fn edit_keys<T>(
    policy_dir: &Path,
    name: &str,
    edit: impl FnOnce(&TenantId, &mut Vec<KeyRecord>) -> Result<T, String>,
) -> Result<T, String> {
    let (tenant, text, mut keys) = read_own(policy_dir, name)?;
    let out = edit(&tenant, &mut keys)?;
    let path = PolicySet::path_for(policy_dir, &tenant);
    let text =
        TenantPolicy::with_keys(&text, &keys).map_err(|e| format!("{}: {e}", path.display()))?;
    bulkhead_store::atomic::write_atomic(&path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(out)
}

/// Creates a key for an existing tenant and stores its hash. The returned key
/// is the only copy of the secret.
pub fn create_key(policy_dir: &Path, name: &str, scopes: Scopes) -> Result<ApiKey, String> {
    let key = ApiKey::from_random(rand::random(), rand::random());
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    edit_keys(policy_dir, name, |_, keys| {
        keys.push(KeyRecord::new(&key, scopes, created));
        Ok(())
    })?;
    Ok(key)
}

/// One tenant as `bulkhead tenant list` shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct TenantSummary {
    pub tenant: TenantId,
    pub version: String,
    pub live_keys: usize,
    pub revoked_keys: usize,
}

/// Every tenant of the policy directory, by name, with its policy version
/// and keys. Fails, naming every problem, when a policy does not validate.
pub fn list_tenants(policy_dir: &Path) -> Result<Vec<TenantSummary>, String> {
    let set = PolicySet::load_dir(policy_dir).map_err(|e| join_errors(&e))?;
    Ok(set
        .policies
        .values()
        .map(|p| TenantSummary::of(p))
        .collect())
}

impl TenantSummary {
    fn of(p: &TenantPolicy) -> Self {
        let live = p.keys.iter().filter(|k| !k.revoked).count();
        Self {
            tenant: p.tenant.clone(),
            version: p.version.clone(),
            live_keys: live,
            revoked_keys: p.keys.len() - live,
        }
    }
}

/// Removes a tenant's policy file: its keys stop authenticating at the
/// server's next reload (within seconds), which audits the removal. Data
/// already stored for the tenant is not deleted by this.
pub fn remove_tenant(policy_dir: &Path, name: &str) -> Result<Removed, String> {
    let tenant = TenantId::new(name)?;
    if !PolicySet::path_for(policy_dir, &tenant).exists() {
        // no path: the admin API answers with this
        return Err(format!("no tenant {tenant}: nothing to remove"));
    }
    // whatever the file holds, valid or not, it goes
    let live_keys = read_own(policy_dir, name)
        .map(|(_, _, keys)| keys.iter().filter(|k| !k.revoked).count())
        .unwrap_or(0);
    let path = PolicySet::path_for(policy_dir, &tenant);
    let marker = removed_marker(policy_dir, &tenant);
    std::fs::write(
        &marker,
        format!(
            "tenant {tenant} was removed at {} with its data kept; `bulkhead tenant create {tenant} --restore` takes it back, `bulkhead tenant offboard {tenant}` deletes the data\n",
            chrono::Utc::now().to_rfc3339()
        ),
    )
    .map_err(|e| format!("{}: {e}", marker.display()))?;
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // the removal itself durable, as the file's creation was
    std::fs::File::open(policy_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", policy_dir.display()))?;
    Ok(Removed { tenant, live_keys })
}

/// A tenant [`remove_tenant`] removed.
#[derive(Debug)]
pub struct Removed {
    pub tenant: TenantId,
    /// Keys that worked until then.
    pub live_keys: usize,
}

/// Revokes a key of a tenant: it stops authenticating at the next reload
/// (within seconds on a running server). The record stays, marked revoked.
pub fn revoke_key(policy_dir: &Path, name: &str, key_id: &str) -> Result<(), String> {
    edit_keys(policy_dir, name, |tenant, keys| {
        let key = keys
            .iter_mut()
            .find(|k| k.id == key_id)
            .ok_or_else(|| format!("tenant {tenant} has no key {key_id:?}"))?;
        if key.revoked {
            return Err(format!(
                "key {key_id} of tenant {tenant} is already revoked"
            ));
        }
        key.revoked = true;
        Ok(())
    })
}

/// Writes a policy file atomically (temporary name, fsync, rename).
fn write_policy(policy_dir: &Path, policy: &TenantPolicy) -> Result<(), String> {
    let path = PolicySet::path_for(policy_dir, &policy.tenant);
    bulkhead_store::atomic::write_atomic(&path, policy.to_toml().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    /// The write lock is one holder's at a time (another waiter gives up
    /// after its wait, naming the lock), and a lock file this process may
    /// only read serves as well.
    #[test]
    fn the_write_lock_is_held_by_one_and_works_on_a_read_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_writes(dir.path()).unwrap();
        let refused = lock_writes_within(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(
            refused.contains("another process") && refused.contains(WRITE_LOCK_FILE),
            "{refused}"
        );
        drop(held);
        drop(lock_writes_within(dir.path(), Duration::from_millis(50)).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join(WRITE_LOCK_FILE);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
            let held = lock_writes(dir.path()).unwrap();
            assert!(lock_writes_within(dir.path(), Duration::from_millis(50)).is_err());
            drop(held);
        }
    }

    use super::*;
    use bulkhead_rules::Scope;

    #[test]
    fn created_keys_authenticate_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        create_tenant(dir.path(), "acme").unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        assert!(create_tenant(dir.path(), "acme")
            .unwrap_err()
            .contains("already exists"));
        let key = create_key(dir.path(), "acme", Scopes::parse_list("ingest").unwrap()).unwrap();
        let p = tenants.authenticate(&key.expose()).unwrap();
        assert_eq!(p.tenant.as_str(), "acme");
        assert!(p.scopes.contains(Scope::Ingest));
        let text = std::fs::read_to_string(dir.path().join("acme.toml")).unwrap();
        assert!(!text.contains(&key.expose()));
    }

    #[test]
    fn a_change_among_thousands_of_tenants_reloads_only_that_tenant() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2_000 {
            create_tenant(dir.path(), &format!("t{i:04}")).unwrap();
        }
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        // every tenant keeps the secure defaults: one redactor for all
        let (a, b) = (
            TenantId::new("t0001").unwrap(),
            TenantId::new("t1999").unwrap(),
        );
        assert!(Arc::ptr_eq(&tenants.redactor(&a), &tenants.redactor(&b)));
        assert_eq!(tenants.reload_if_changed(), ReloadOutcome::Unchanged);

        // one tenant opts into e-mail masking
        let mut p = read_policy(dir.path(), "t0001").unwrap();
        p.redaction.detectors = vec!["email".into()];
        write_policy(dir.path(), &p).unwrap();
        let ReloadOutcome::Reloaded(changes) = tenants.reload_if_changed() else {
            panic!("not reloaded")
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].tenant, a);
        assert_eq!(
            tenants.last_reload_work(),
            LoadWork {
                parsed: 1,
                compiled: 1
            }
        );
        assert!(!Arc::ptr_eq(&tenants.redactor(&a), &tenants.redactor(&b)));
        let masked = tenants.redactor(&a);

        // a second tenant with the same rules shares the first one's redactor
        let mut p = read_policy(dir.path(), "t0002").unwrap();
        p.redaction.detectors = vec!["email".into()];
        write_policy(dir.path(), &p).unwrap();
        assert!(matches!(
            tenants.reload_if_changed(),
            ReloadOutcome::Reloaded(_)
        ));
        assert_eq!(
            tenants.last_reload_work(),
            LoadWork {
                parsed: 1,
                compiled: 0
            }
        );
        let c = TenantId::new("t0002").unwrap();
        assert!(Arc::ptr_eq(&tenants.redactor(&c), &masked));
        assert_eq!(tenants.policy(&c).unwrap().redaction.detectors, ["email"]);
        assert_eq!(tenants.tenants().len(), 2_000);
    }

    #[test]
    fn a_key_used_seconds_after_its_creation_is_audited_once() {
        let dir = tempfile::tempdir().unwrap();
        create_tenant(dir.path(), "acme").unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        let key = create_key(dir.path(), "acme", Scopes::parse_list("ingest").unwrap()).unwrap();
        // the key's first use reloads on the spot...
        tenants.authenticate(&key.expose()).unwrap();
        // ... and the policy watch's next look finds nothing new, but the
        // change is still handed over, once
        assert_eq!(tenants.reload_if_changed(), ReloadOutcome::Unchanged);
        let changes = tenants.take_unaudited();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].keys_added, [key.id().to_string()]);
        assert!(tenants.take_unaudited().is_empty());
    }

    #[test]
    fn a_default_policy_change_reaches_every_tenant_that_inherits_it() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..500 {
            create_tenant(dir.path(), &format!("t{i:03}")).unwrap();
        }
        // one tenant keeps its own rate whatever the defaults say (0 is
        // also the built-in default: it must survive a key being added)
        std::fs::write(
            dir.path().join("t000.toml"),
            "tenant = \"t000\"\n[limits]\nrecords_per_second = 0\n",
        )
        .unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join(bulkhead_rules::DEFAULTS_FILE),
            "[limits]\nrecords_per_second = 250\n[redaction]\ndetectors = [\"email\"]\n",
        )
        .unwrap();
        let ReloadOutcome::Reloaded(changes) = tenants.reload_if_changed() else {
            panic!("not reloaded")
        };
        assert_eq!(changes.len(), 500, "every tenant has a new version");
        // one [redaction] section for all: compiled once
        assert_eq!(tenants.last_reload_work().compiled, 1);
        let rate = |t: &str| {
            tenants
                .policy(&TenantId::new(t).unwrap())
                .unwrap()
                .limits
                .records_per_second
        };
        assert_eq!(rate("t001"), 250);
        assert_eq!(rate("t499"), 250);
        assert_eq!(rate("t000"), 0);
        assert_eq!(
            tenants
                .policy(&TenantId::new("t001").unwrap())
                .unwrap()
                .redaction
                .detectors,
            ["email"]
        );
        // a key added to the overriding tenant keeps its override
        let key = create_key(dir.path(), "t000", Scopes::parse_list("ingest").unwrap()).unwrap();
        assert!(matches!(
            tenants.reload_if_changed(),
            ReloadOutcome::Reloaded(_)
        ));
        assert_eq!(
            tenants.last_reload_work(),
            LoadWork {
                parsed: 1,
                compiled: 0
            }
        );
        assert_eq!(rate("t000"), 0);
        assert_eq!(
            tenants.authenticate(&key.expose()).unwrap().tenant.as_str(),
            "t000"
        );
        // the defaults file is not a tenant
        assert_eq!(tenants.tenants().len(), 500);
        assert_eq!(list_tenants(dir.path()).unwrap().len(), 500);
        // a broken default policy is refused; the one in force stays
        std::fs::write(
            dir.path().join(bulkhead_rules::DEFAULTS_FILE),
            "[limits]\nrecords_per_second = \"many\"\n",
        )
        .unwrap();
        let ReloadOutcome::Refused(why) = tenants.reload_if_changed() else {
            panic!("a broken default policy was taken")
        };
        assert!(why.contains(bulkhead_rules::DEFAULTS_FILE), "{why}");
        assert_eq!(rate("t001"), 250);
    }

    #[test]
    fn a_refresh_takes_in_one_file_among_thousands() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2_000 {
            create_tenant(dir.path(), &format!("t{i:04}")).unwrap();
        }
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        let t = TenantId::new("t0042").unwrap();
        let key = create_key(
            dir.path(),
            "t0042",
            Scopes::parse_list("ingest,query").unwrap(),
        )
        .unwrap();
        let change = tenants.refresh(&t, "ops").unwrap();
        assert_eq!(change.keys_added, [key.id().to_string()]);
        assert_eq!(
            tenants.last_reload_work(),
            LoadWork {
                parsed: 1,
                compiled: 0
            }
        );
        assert_eq!(tenants.authenticate(&key.expose()).unwrap().tenant, t);
        // the watch finds nothing more to take in; the change is audited once, with who made it
        assert_eq!(tenants.reload_if_changed(), ReloadOutcome::Unchanged);
        let unaudited = tenants.take_unaudited();
        assert_eq!(unaudited.len(), 1);
        assert_eq!(unaudited[0].by.as_deref(), Some("ops"));
        // a new tenant, and a removed one
        create_tenant(dir.path(), "fresh").unwrap();
        let fresh = TenantId::new("fresh").unwrap();
        assert_eq!(tenants.refresh(&fresh, "ops").unwrap().old_version, None);
        assert!(tenants.policy(&fresh).is_some());
        remove_tenant(dir.path(), "t0042").unwrap();
        let gone = tenants.refresh(&t, "ops").unwrap();
        assert_eq!(gone.new_version, None);
        assert_eq!(gone.keys_revoked, [key.id().to_string()]);
        assert!(tenants.authenticate(&key.expose()).is_err());
        assert_eq!(tenants.reload_if_changed(), ReloadOutcome::Unchanged);
        assert_eq!(tenants.tenants().len(), 2_000);
        // a file that does not validate is refused; the policy in force stays
        std::fs::write(
            dir.path().join("t0001.toml"),
            "tenant = \"t0001\"\n[limits]\nfoo = 1\n",
        )
        .unwrap();
        let one = TenantId::new("t0001").unwrap();
        let before = tenants.policy_version(&one);
        assert!(tenants.refresh(&one, "ops").unwrap_err().contains("foo"));
        assert_eq!(tenants.policy_version(&one), before);
    }

    #[test]
    fn keys_of_a_tenant_valid_only_with_the_defaults_can_be_changed() {
        let dir = tempfile::tempdir().unwrap();
        // alone, a burst without a rate does not validate; merged it does
        std::fs::write(
            dir.path().join(bulkhead_rules::DEFAULTS_FILE),
            "[limits]\nrecords_per_second = 5\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("acme.toml"),
            "tenant = \"acme\"\n[limits]\nburst_records = 50\n",
        )
        .unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        let key = create_key(dir.path(), "acme", Scopes::parse_list("ingest").unwrap()).unwrap();
        assert_eq!(
            tenants.authenticate(&key.expose()).unwrap().tenant.as_str(),
            "acme"
        );
        revoke_key(dir.path(), "acme", key.id()).unwrap();
        assert!(matches!(
            tenants.reload_if_changed(),
            ReloadOutcome::Reloaded(_)
        ));
        assert!(tenants.authenticate(&key.expose()).is_err());
        assert_eq!(
            tenants
                .policy(&TenantId::new("acme").unwrap())
                .unwrap()
                .limits
                .burst_records,
            50
        );
        // even a file broken beyond its keys gives its key up, and goes
        std::fs::write(
            dir.path().join("acme.toml"),
            format!(
                "{}\n[limits]\nnot_a_limit = 1\n",
                std::fs::read_to_string(dir.path().join("acme.toml"))
                    .unwrap()
                    .replace("[limits]\nburst_records = 50\n", "")
            ),
        )
        .unwrap();
        let second = create_key(dir.path(), "acme", Scopes::parse_list("ingest").unwrap()).unwrap();
        revoke_key(dir.path(), "acme", second.id()).unwrap();
        assert_eq!(remove_tenant(dir.path(), "acme").unwrap().live_keys, 0);
    }

    /// Policies mounted from a Kubernetes ConfigMap: each file is a symlink
    /// through `..data`, and an update swaps `..data` to a new directory.
    /// The new text is taken even with the same size and time.
    #[test]
    fn a_configmap_update_behind_symlinks_is_taken() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (dir.path().join("..v1"), dir.path().join("..v2"));
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        create_tenant(&v1, "acme").unwrap();
        let text = std::fs::read_to_string(v1.join("acme.toml")).unwrap();
        let edited = format!("{text}\n[limits]\nrecords_per_second = 5000\n");
        std::fs::write(v1.join("acme.toml"), &edited).unwrap();
        std::fs::write(v2.join("acme.toml"), edited.replace("5000", "6000")).unwrap();
        let when = std::fs::metadata(v1.join("acme.toml"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(v2.join("acme.toml"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        symlink("..v1", dir.path().join("..data")).unwrap();
        symlink("..data/acme.toml", dir.path().join("acme.toml")).unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(
            tenants.policy(&acme).unwrap().limits.records_per_second,
            5000
        );
        // the kubelet's swap: a new `..data` link, renamed over the old one
        symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(matches!(
            tenants.reload_if_changed(),
            ReloadOutcome::Reloaded(_)
        ));
        assert_eq!(
            tenants.policy(&acme).unwrap().limits.records_per_second,
            6000
        );
    }

    #[test]
    fn tenants_are_listed_and_a_removed_tenant_stops_authenticating() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["beta", "alpha", "gamma"] {
            create_tenant(dir.path(), name).unwrap();
        }
        let key = create_key(dir.path(), "beta", Scopes::parse_list("ingest").unwrap()).unwrap();
        let old = create_key(dir.path(), "beta", Scopes::parse_list("query").unwrap()).unwrap();
        revoke_key(dir.path(), "beta", old.id()).unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        assert!(tenants.authenticate(&key.expose()).is_ok());

        let listed = list_tenants(dir.path()).unwrap();
        let names: Vec<&str> = listed.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "gamma"]);
        assert_eq!((listed[1].live_keys, listed[1].revoked_keys), (1, 1));
        assert_eq!(
            listed[1].version,
            tenants.policy_version(&TenantId::new("beta").unwrap())
        );

        remove_tenant(dir.path(), "beta").unwrap();
        let ReloadOutcome::Reloaded(changes) = tenants.reload_if_changed() else {
            panic!("not reloaded")
        };
        assert_eq!(changes[0].new_version, None);
        assert_eq!(changes[0].keys_revoked, vec![key.id().to_string()]);
        assert!(tenants.authenticate(&key.expose()).is_err());
        assert_eq!(list_tenants(dir.path()).unwrap().len(), 2);
        let e = remove_tenant(dir.path(), "beta").unwrap_err();
        assert!(e.contains("no tenant beta"), "{e}");
    }

    #[test]
    fn revoked_keys_stop_working_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        create_tenant(dir.path(), "acme").unwrap();
        let key = create_key(dir.path(), "acme", Scopes::parse_list("query").unwrap()).unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        assert!(tenants.authenticate(&key.expose()).is_ok());
        revoke_key(dir.path(), "acme", key.id()).unwrap();
        let ReloadOutcome::Reloaded(changes) = tenants.reload_if_changed() else {
            panic!("not reloaded")
        };
        assert_eq!(changes[0].keys_revoked, vec![key.id().to_string()]);
        assert!(tenants.authenticate(&key.expose()).is_err());
        assert!(revoke_key(dir.path(), "acme", key.id())
            .unwrap_err()
            .contains("already revoked"));
        assert!(revoke_key(dir.path(), "acme", "nope")
            .unwrap_err()
            .contains("no key"));
    }

    #[test]
    fn keys_need_an_existing_valid_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let e = create_key(dir.path(), "ghost", Scopes::parse_list("query").unwrap()).unwrap_err();
        assert!(e.contains("tenant create ghost"), "{e}");
        assert!(create_tenant(dir.path(), "../evil").is_err());
        assert!(create_key(dir.path(), "a/b", Scopes::parse_list("query").unwrap()).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path())
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
    }

    #[test]
    fn a_broken_policy_does_not_replace_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        create_tenant(dir.path(), "acme").unwrap();
        let key = create_key(dir.path(), "acme", Scopes::parse_list("ingest").unwrap()).unwrap();
        let tenants = TenantDirectory::open(dir.path()).unwrap();
        let v1 = tenants.policy_version(&TenantId::new("acme").unwrap());
        std::fs::write(dir.path().join("broken.toml"), "tenant = 5\n").unwrap();
        assert!(
            matches!(tenants.reload_if_changed(), ReloadOutcome::Refused(e) if e.contains("broken.toml"))
        );
        // the same broken state is not reported again
        assert_eq!(tenants.reload_if_changed(), ReloadOutcome::Unchanged);
        assert!(tenants.authenticate(&key.expose()).is_ok());
        // fixing it lets the next change in, with the versions that changed
        std::fs::remove_file(dir.path().join("broken.toml")).unwrap();
        create_key(dir.path(), "acme", Scopes::parse_list("query").unwrap()).unwrap();
        let ReloadOutcome::Reloaded(changes) = tenants.reload_if_changed() else {
            panic!("not reloaded");
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].old_version.as_deref(), Some(v1.as_str()));
        assert_ne!(changes[0].new_version.as_deref(), Some(v1.as_str()));
        assert_eq!(changes[0].keys_added.len(), 1);
        assert!(changes[0].keys_revoked.is_empty());
    }
}
