//! The admin API: tenants, keys and the default policy, administered over
//! HTTP by an operator holding an admin key (`[[admin]]` entries of the
//! server configuration, made by `bulkhead operator key --admin`). Tenant
//! keys, whatever their scopes, are refused (403).
//!
//! Every change is written to the policy directory as the CLI writes it and
//! taken in at once (one file's work, whatever the number of tenants), so a
//! key created here works on the next request; the change is on the audit
//! trail with the operator's name.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /api/v1/admin/tenants?after=NAME&limit=N` | tenants by name, a page at a time |
//! | `POST /api/v1/admin/tenants` `{"tenant": "acme", "key_scopes": "ingest,query"}` | create (and a first key) |
//! | `DELETE /api/v1/admin/tenants/{tenant}` | remove: its keys stop at once; stored data is kept |
//! | `POST /api/v1/admin/tenants/{tenant}/keys` `{"scopes": "ingest"}` | a new key, shown once |
//! | `DELETE /api/v1/admin/tenants/{tenant}/keys/{id}` | revoke a key |
//! | `GET`, `PUT`, `DELETE /api/v1/admin/defaults` | the default policy every tenant inherits (TOML) |
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bulkhead_collector::tenants::{self, ReloadOutcome, TenantDirectory};
use bulkhead_query::http::{bearer, error_response};
use bulkhead_rules::{ApiKey, AuthError, Authenticator, Scopes, TenantId, DEFAULTS_FILE};
use bulkhead_store::audit::{NewEvent, RefusalAudit};
use serde::Deserialize;

/// One `[[admin]]` entry of the server configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminGrant {
    /// Who holds the key (on the audit trail of every change it makes).
    pub name: String,
    /// The key's id (16 hex characters).
    pub key_id: String,
    /// The SHA-256 of the whole key, hex.
    pub key_sha256: String,
}

/// The admin keys, by id.
#[derive(Debug, Default)]
pub struct AdminKeys {
    by_id: HashMap<String, ([u8; 32], String)>,
}

impl AdminKeys {
    /// Checks every entry; the error names each problem with its entry.
    pub fn new(grants: &[AdminGrant]) -> Result<Self, String> {
        let mut by_id = HashMap::new();
        let mut errors = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            let at = format!("admin[{i}] ({})", g.name);
            if g.name.trim().is_empty() {
                errors.push(format!("{at}: name must not be empty"));
            }
            if g.key_id.len() != 16 || !g.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(format!("{at}: key_id must be 16 hex characters"));
            }
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&g.key_sha256, &mut digest).is_err() {
                errors.push(format!("{at}: key_sha256 must be 64 hex characters"));
                continue;
            }
            if by_id
                .insert(g.key_id.to_ascii_lowercase(), (digest, g.name.clone()))
                .is_some()
            {
                errors.push(format!("{at}: key_id {} is listed twice", g.key_id));
            }
        }
        if errors.is_empty() {
            Ok(Self { by_id })
        } else {
            Err(errors.join("; "))
        }
    }

    /// The operator's name when `presented` is an admin key; `None` when it
    /// is not one (a tenant key, say); an error for a forged secret.
    fn operator(&self, presented: &str) -> Option<Result<String, AuthError>> {
        let key = ApiKey::parse(presented).ok()?;
        let (digest, name) = self.by_id.get(key.id())?;
        Some(if bulkhead_rules::keys::digest_eq(digest, &key.digest()) {
            Ok(name.clone())
        } else {
            Err(AuthError::Unknown)
        })
    }
}

/// What the admin routes need.
#[derive(Clone)]
pub struct AdminState {
    pub keys: Arc<AdminKeys>,
    pub tenants: Arc<TenantDirectory>,
    pub policy_dir: PathBuf,
    pub refusals: Arc<RefusalAudit>,
    /// One change to the policy directory at a time (a key added while
    /// another is revoked must not lose either).
    pub writes: Arc<parking_lot::Mutex<()>>,
    /// To refuse the name of a tenant offboarded for good.
    pub store: Arc<bulkhead_store::Store>,
}

/// The admin routes (merged into the API port's router).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/api/v1/admin/tenants",
            get(list_tenants).post(create_tenant),
        )
        .route("/api/v1/admin/tenants/{tenant}", delete(remove_tenant))
        .route("/api/v1/admin/tenants/{tenant}/keys", post(create_key))
        .route(
            "/api/v1/admin/tenants/{tenant}/keys/{id}",
            delete(revoke_key),
        )
        .route(
            "/api/v1/admin/defaults",
            get(get_defaults).put(put_defaults).delete(delete_defaults),
        )
        .with_state(state)
}

/// An error answer: status and message.
pub(crate) struct Refusal(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_response(self.0, &self.1)
    }
}

type Answer = Result<Response, Refusal>;

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

/// The operator behind the request, or its refusal (401 for no or a wrong
/// key, audited; 403 for a tenant key).
fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<String, Refusal> {
    let refuse = |e: AuthError, presented: Option<&str>| {
        state
            .refusals
            .record(NewEvent::refused_credential(&e, presented, "admin_api"));
        Refusal(
            StatusCode::UNAUTHORIZED,
            format!("the admin API needs an operator's admin key: {e}"),
        )
    };
    let token = bearer(headers).map_err(|e| refuse(e, None))?;
    match state.keys.operator(token) {
        Some(Ok(name)) => Ok(name),
        Some(Err(e)) => Err(refuse(e, Some(token))),
        None => match state.tenants.authenticate(token) {
            Ok(p) => {
                state.refusals.record(NewEvent::refused_credential(
                    &AuthError::Forbidden {
                        tenant: p.tenant.to_string(),
                        key_id: p.key_id.clone(),
                        needed: "operator admin",
                    },
                    Some(token),
                    "admin_api",
                ));
                Err(Refusal(
                    StatusCode::FORBIDDEN,
                    format!(
                        "key {} belongs to tenant {}: the admin API takes only an operator's admin key ([[admin]] in the server configuration)",
                        p.key_id, p.tenant
                    ),
                ))
            }
            Err(e) => Err(refuse(e, Some(token))),
        },
    }
}

/// The operator behind a request, or the error answer (for the other
/// operator routes of the API port).
pub(crate) fn authorize_operator(
    state: &AdminState,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    authorize(state, headers)
}

/// Runs a change to the policy directory off the async workers, one at a
/// time; then takes the tenant's file in at once.
async fn change<T: Send + 'static>(
    state: &AdminState,
    operator: String,
    tenant: TenantId,
    write: impl FnOnce(&std::path::Path) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let _one = state.writes.lock();
        let dir = state.policy_dir.clone();
        // and the CLI's, in another process
        let _dir = tenants::lock_writes(&dir)
            .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, e))?;
        // answers name files, not the server's directories
        let within = |m: String| m.replace(&format!("{}/", dir.display()), "");
        let path = bulkhead_rules::PolicySet::path_for(&dir, &tenant);
        let before = std::fs::read(&path).ok();
        let out = write(&dir).map_err(|Refusal(code, m)| Refusal(code, within(m)))?;
        if let Err(e) = state.tenants.refresh(&tenant, &operator) {
            // a change the server cannot take in is not made: the file goes
            // back as it was (a key created in a file that does not load
            // would be written but never work, its secret never shown)
            let undone = match &before {
                Some(bytes) => bulkhead_store::atomic::write_atomic(&path, bytes),
                None => std::fs::remove_file(&path),
            };
            if let Err(u) = undone {
                tracing::error!(%tenant, error = %u, "could not undo a policy change the server refused");
            }
            return Err(Refusal(
                StatusCode::CONFLICT,
                within(format!(
                    "tenant {tenant}'s policy does not load with this change, so nothing was changed; fix its file first: {e}"
                )),
            ));
        }
        Ok(out)
    })
    .await
    .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn tenant_id(name: &str) -> Result<TenantId, Refusal> {
    TenantId::new(name).map_err(bad)
}

/// Not found when the message says there is no such tenant.
fn classify(e: String) -> Refusal {
    if e.starts_with("no tenant") {
        Refusal(StatusCode::NOT_FOUND, e)
    } else if e.contains("already") {
        Refusal(StatusCode::CONFLICT, e)
    } else if e.contains("has no key") {
        Refusal(StatusCode::NOT_FOUND, e)
    } else {
        Refusal(StatusCode::INTERNAL_SERVER_ERROR, e)
    }
}

fn scopes(list: &str) -> Result<Scopes, Refusal> {
    Scopes::parse_list(list).map_err(|e| bad(format!("scopes: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

/// At most this many tenants per page.
const MAX_PAGE: usize = 10_000;

async fn list_tenants(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Answer {
    authorize(&state, &headers)?;
    let after = page.after.as_deref().map(tenant_id).transpose()?;
    let limit = page.limit.unwrap_or(1_000).clamp(1, MAX_PAGE);
    let rows = state.tenants.summaries(after.as_ref(), limit + 1);
    let next = (rows.len() > limit).then(|| rows[limit - 1].tenant.to_string());
    let tenants: Vec<_> = rows
        .iter()
        .take(limit)
        .map(|s| {
            serde_json::json!({
                "tenant": s.tenant.as_str(),
                "version": s.version,
                "live_keys": s.live_keys,
                "revoked_keys": s.revoked_keys,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "tenants": tenants, "next": next })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    tenant: String,
    /// Scopes of a first key to create with it (`ingest,query`); none when absent.
    key_scopes: Option<String>,
    /// Bring back a tenant removed with its data kept, data included (see
    /// [`check_data_from_before`]).
    #[serde(default)]
    restore: bool,
}

/// Refuses to create `tenant` when it has no policy but stored data (a
/// tenant removed with its data kept), unless `restore`: a tenant created
/// under the name would read that data, which is right when the removed
/// tenant comes back and a leak when the name goes to someone else. With
/// `restore`, refuses a name with nothing to restore (a typo would make a
/// new, empty tenant that its operator takes for the old one).
pub fn check_data_from_before(
    storage: &bulkhead_store::objects::Storage,
    policy_dir: &std::path::Path,
    tenant: &TenantId,
    restore: bool,
) -> Result<(), String> {
    if bulkhead_rules::PolicySet::path_for(policy_dir, tenant).exists() {
        // the tenant exists: creating it is refused as such
        return Ok(());
    }
    // the mark covers data still buffered or only in the log, and audit
    // entries and jobs of a tenant that never stored anything; the store
    // covers removals from before the mark existed
    let held = tenants::removed_marker(policy_dir, tenant).exists()
        || storage
            .holds_tenant(tenant)
            .map_err(|e| format!("looking for tenant {tenant}'s data: {e}"))?;
    if restore && !held {
        return Err(format!(
            "tenant {tenant} has nothing to restore: it was not removed with its data kept and nothing is stored under the name; to create a new tenant, ask without restore"
        ));
    }
    if held && !restore {
        return Err(format!(
            "tenant {tenant} has data from before (it was removed with its data kept), which a tenant created under the name would read, its audit entries and jobs included: to bring the removed tenant back with its data, ask again with restore (\"restore\": true, or --restore); to give the name to someone else, offboard it first, which deletes that data"
        ));
    }
    Ok(())
}

/// Refuses a name that cannot be given out: offboarded (`shredded_at`, the
/// time its keys were shredded), being offboarded, or removed with its data
/// kept unless `restore` (see [`check_data_from_before`]). The admin API
/// answers 409 with the message, the CLI fails with it.
pub fn check_name_free(
    storage: &bulkhead_store::objects::Storage,
    policy_dir: &std::path::Path,
    tenant: &TenantId,
    restore: bool,
    shredded_at: Option<String>,
) -> Result<(), String> {
    if let Some(at) = shredded_at {
        return Err(format!(
            "tenant {tenant} was offboarded at {at}: its keys are shredded, so nothing written under the name could be read; choose another name"
        ));
    }
    // an offboarding under way has removed the policy and left the mark
    // of a removal (see check_data_from_before), which only restore passes:
    // so the jobs (every one read) are looked through for restores alone
    let offboarding = if restore {
        crate::jobs::offboarding(storage, tenant)
            .map_err(|e| format!("looking for an offboarding of tenant {tenant}: {e}"))?
    } else {
        None
    };
    if let Some(id) = offboarding {
        return Err(format!(
            "tenant {tenant} is being offboarded (job {id}); its name cannot be given out meanwhile"
        ));
    }
    check_data_from_before(storage, policy_dir, tenant, restore)
}

fn name_is_free(
    store: &bulkhead_store::Store,
    policy_dir: &std::path::Path,
    tenant: &TenantId,
    restore: bool,
) -> Result<(), Refusal> {
    let shredded_at = store
        .shredded_at(tenant)
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("the keyring: {e}")))?;
    check_name_free(store.storage(), policy_dir, tenant, restore, shredded_at)
        .map_err(|m| Refusal(StatusCode::CONFLICT, m))
}

async fn create_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<NewTenant>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let operator = authorize(&state, &headers)?;
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let tenant = tenant_id(&req.tenant)?;
    let first = req.key_scopes.as_deref().map(scopes).transpose()?;
    let (store, restore) = (state.store.clone(), req.restore);
    let name = tenant.to_string();
    let t = tenant.clone();
    let key = change(&state, operator, tenant.clone(), move |dir| {
        // checked under the lock every policy change takes, so a removal
        // (or an offboarding's) cannot come between the check and the write
        name_is_free(&store, dir, &t, restore)?;
        tenants::create_tenant(dir, &name).map_err(classify)?;
        match first {
            Some(s) => Ok(Some(tenants::create_key(dir, &name, s).map_err(classify)?)),
            None => Ok(None),
        }
    })
    .await?;
    // the version in force, its first key and the defaults included
    let version = state.tenants.policy_version(&tenant);
    let mut body = serde_json::json!({ "tenant": req.tenant, "version": version });
    if let Some(key) = key {
        body["key_id"] = key.id().into();
        body["key"] = key.expose().into();
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn remove_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let operator = authorize(&state, &headers)?;
    let tenant = tenant_id(&name)?;
    change(&state, operator, tenant, move |dir| {
        tenants::remove_tenant(dir, &name).map_err(|e| {
            if e.starts_with("no tenant") {
                Refusal(StatusCode::NOT_FOUND, e)
            } else {
                classify(e)
            }
        })
    })
    .await?;
    Ok(Json(serde_json::json!({ "removed": true, "data_kept": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    scopes: String,
}

async fn create_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let operator = authorize(&state, &headers)?;
    let tenant = tenant_id(&name)?;
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let s = scopes(&req.scopes)?;
    let key = change(&state, operator, tenant, move |dir| {
        tenants::create_key(dir, &name, s).map_err(classify)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "key_id": key.id(), "key": key.expose(), "scopes": req.scopes })),
    )
        .into_response())
}

async fn revoke_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> Answer {
    let operator = authorize(&state, &headers)?;
    let tenant = tenant_id(&name)?;
    change(&state, operator, tenant, move |dir| {
        tenants::revoke_key(dir, &name, &id).map_err(classify)
    })
    .await?;
    Ok(Json(serde_json::json!({ "revoked": true })).into_response())
}

/// Every problem, one a line.
fn joined(errors: &[bulkhead_rules::PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn defaults_path(state: &AdminState) -> PathBuf {
    state.policy_dir.join(DEFAULTS_FILE)
}

async fn get_defaults(State(state): State<AdminState>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers)?;
    match std::fs::read_to_string(defaults_path(&state)) {
        Ok(text) => Ok(([("content-type", "application/toml")], text).into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Refusal(
            StatusCode::NOT_FOUND,
            "no default policy: every tenant has only its own file".into(),
        )),
        Err(e) => Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Replaces the default policy: validated alone, then with every tenant
/// (a whole reload); refused with every problem, the one in force kept.
async fn put_defaults(State(state): State<AdminState>, headers: HeaderMap, text: String) -> Answer {
    let operator = authorize(&state, &headers)?;
    let path = defaults_path(&state);
    swap_defaults(state, operator, path, Some(text)).await
}

async fn delete_defaults(State(state): State<AdminState>, headers: HeaderMap) -> Answer {
    let operator = authorize(&state, &headers)?;
    let path = defaults_path(&state);
    swap_defaults(state, operator, path, None).await
}

/// Writes (or removes) the default policy and reloads every tenant; when
/// the reload refuses it, the previous file is put back.
async fn swap_defaults(
    state: AdminState,
    operator: String,
    path: PathBuf,
    text: Option<String>,
) -> Answer {
    tokio::task::spawn_blocking(move || {
        let _one = state.writes.lock();
        let _dir = tenants::lock_writes(&state.policy_dir)
            .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, e))?;
        let previous = std::fs::read_to_string(&path).ok();
        let put = |t: Option<&str>| -> Result<(), Refusal> {
            let r = match t {
                Some(t) => bulkhead_store::atomic::write_atomic(&path, t.as_bytes()),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            r.map_err(|e| {
                Refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{}: {e}", path.display()),
                )
            })
        };
        // checked against every tenant before anything is written: a
        // broken default policy on disk would stop the next start
        let candidate = match text.as_deref() {
            Some(t) => Some(
                bulkhead_rules::PolicyDefaults::parse(std::path::Path::new(DEFAULTS_FILE), t)
                    .map_err(|e| bad(joined(&e)))?,
            ),
            None => None,
        };
        if let Err(errors) = bulkhead_rules::PolicySet::load_dir_under(&state.policy_dir, candidate) {
            return Err(bad(format!(
                "the policy directory does not load with this default policy; nothing was changed:\n{}",
                joined(&errors)
            )));
        }
        put(text.as_deref())?;
        let changed = match state.tenants.reload_by(&operator) {
            ReloadOutcome::Reloaded(c) => c.len(),
            ReloadOutcome::Unchanged => 0,
            ReloadOutcome::Refused(why) => {
                // the directory changed under us since it was validated
                put(previous.as_deref())?;
                return Err(Refusal(
                    StatusCode::CONFLICT,
                    format!("the policy directory changed meanwhile; the default policy was not changed:\n{why}"),
                ));
            }
        };
        tracing::info!(%operator, changed, "default policy replaced");
        Ok(Json(serde_json::json!({
            "tenants_changed": changed,
            "version": state.tenants.defaults_version(),
        }))
        .into_response())
    })
    .await
    .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_keys_are_checked_whole_and_told_from_other_keys() {
        let key = ApiKey::from_random([5; 8], [6; 32]);
        let grant = AdminGrant {
            name: "ops".into(),
            key_id: key.id().into(),
            key_sha256: hex::encode(key.digest()),
        };
        let keys = AdminKeys::new(std::slice::from_ref(&grant)).unwrap();
        assert_eq!(keys.operator(&key.expose()), Some(Ok("ops".into())));
        let forged = ApiKey::from_random([5; 8], [7; 32]);
        assert_eq!(
            keys.operator(&forged.expose()),
            Some(Err(AuthError::Unknown))
        );
        let other = ApiKey::from_random([1; 8], [6; 32]);
        assert_eq!(keys.operator(&other.expose()), None);
        let e = AdminKeys::new(&[
            grant.clone(),
            AdminGrant {
                name: String::new(),
                key_id: "xyz".into(),
                key_sha256: "00".into(),
            },
            grant,
        ])
        .unwrap_err();
        assert!(
            e.contains("name")
                && e.contains("key_id must")
                && e.contains("key_sha256")
                && e.contains("twice"),
            "{e}"
        );
    }
}
