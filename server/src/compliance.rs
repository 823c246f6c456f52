//! The compliance API on the query port: erasure requests by a tenant's
//! key with the `admin` scope, and tenant offboarding by an operator.
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `POST /api/v1/erasures` `{"table": "logs", "from": "...", "to": "...", "where": "..."}` | tenant key, `admin` | a new erasure job (202) |
//! | `GET /api/v1/erasures` | tenant key, `admin` | the tenant's jobs, oldest first |
//! | `GET /api/v1/erasures/{id}` | tenant key, `admin` | one job |
//! | `POST /api/v1/erasures/{id}/cancel` | tenant key, `admin` | cancel a pending job |
//! | `POST /api/v1/admin/tenants/{tenant}/offboard` | operator | remove everything of a tenant (202) |
//! | `GET /api/v1/admin/jobs/{id}` | operator | any job |
//!
//! A request is checked before it is stored (table, range, predicate, legal
//! hold) and refused with 400 or 409 and the reason.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bulkhead_collector::tenants::TenantDirectory;
use bulkhead_query::http::{auth_status, bearer};
use bulkhead_rules::{Authenticator, Clock, Principal, Scope, TenantId};
use bulkhead_store::audit::{AuditLog, NewEvent, RefusalAudit};
use bulkhead_store::Store;
use tokio::sync::Notify;

use crate::admin::{AdminState, Refusal};
use crate::jobs::{self, ErasureRequest, Job, JobError};

/// What the compliance routes need.
#[derive(Clone)]
pub struct ComplianceState {
    pub store: Arc<Store>,
    pub tenants: Arc<TenantDirectory>,
    pub audit: Arc<AuditLog>,
    pub refusals: Arc<RefusalAudit>,
    pub clock: Arc<dyn Clock>,
    /// Wakes the job runner.
    pub jobs_wanted: Arc<Notify>,
    pub admin: AdminState,
    pub engine: Arc<bulkhead_query::QueryEngine>,
    pub signer: Arc<crate::extract::Signer>,
    /// Where extracts are assembled before they are sent.
    pub scratch: std::path::PathBuf,
    /// Extracts being made on this node (one at a time).
    pub extract_slots: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: ComplianceState) -> Router {
    Router::new()
        .route("/api/v1/erasures", get(list_erasures).post(create_erasure))
        .route("/api/v1/erasures/{id}", get(get_erasure))
        .route("/api/v1/erasures/{id}/cancel", post(cancel_erasure))
        .route("/api/v1/admin/tenants/{tenant}/offboard", post(offboard))
        .route("/api/v1/admin/jobs/{id}", get(admin_job))
        .route("/api/v1/extracts", post(create_extract))
        .route("/api/v1/extracts/public-key", get(public_key))
        .with_state(state)
}

type Answer = Result<Response, Refusal>;

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

fn job_error(e: JobError) -> Refusal {
    match e {
        JobError::NotFound(m) => refuse(StatusCode::NOT_FOUND, m),
        JobError::Conflict(m) => refuse(StatusCode::CONFLICT, m),
        JobError::Busy(m) => refuse(StatusCode::TOO_MANY_REQUESTS, m),
        JobError::Storage(m) => refuse(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// The tenant key behind the request, which must have the `admin` scope.
fn tenant_admin(state: &ComplianceState, headers: &HeaderMap) -> Result<Principal, Refusal> {
    tenant_key(state, headers, Scope::Admin, "erasure_api")
}

/// The tenant key behind the request, which must have `scope`.
fn tenant_key(
    state: &ComplianceState,
    headers: &HeaderMap,
    scope: Scope,
    interface: &str,
) -> Result<Principal, Refusal> {
    let presented = bearer(headers).ok();
    bearer(headers)
        .and_then(|k| state.tenants.authenticate(k))
        .and_then(|p| p.require(scope).map(|_| p))
        .map_err(|e| {
            state
                .refusals
                .record(NewEvent::refused_credential(&e, presented, interface));
            refuse(auth_status(&e), e.to_string())
        })
}

/// Runs blocking storage work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn under_hold(state: &ComplianceState, tenant: &TenantId) -> Option<Refusal> {
    state
        .tenants
        .policy(tenant)
        .is_some_and(|p| p.retention.legal_hold)
        .then(|| {
            refuse(
                StatusCode::CONFLICT,
                format!("tenant {tenant} is under a legal hold (retention.legal_hold in its policy): nothing of it may be erased until the hold is lifted"),
            )
        })
}

async fn create_erasure(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let p = tenant_admin(&state, &headers)?;
    let r: ErasureRequest = serde_json::from_slice(&body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON {{\"table\", \"from\", \"to\", \"where\"}}: {e}"),
        )
    })?;
    if let Some(held) = under_hold(&state, &p.tenant) {
        return Err(held);
    }
    let job = Job::erasure(&p.tenant, &r, &p.key_id, "api", state.clock.now_nanos())
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    submit(&state, job).await
}

async fn submit(state: &ComplianceState, job: Job) -> Answer {
    let (s, j) = (state.clone(), job.clone());
    blocking(move || {
        if let Ok(t) = TenantId::new(&j.tenant) {
            if j.kind() == "erasure" {
                jobs::check_room(s.store.storage(), &t).map_err(job_error)?;
            }
        }
        jobs::submit(s.store.storage(), &j).map_err(job_error)?;
        if let Err(e) = s.audit.append(j.requested_event()) {
            tracing::error!(error = %e, "audit trail: an erasure request was not written");
        }
        Ok(())
    })
    .await?;
    state.jobs_wanted.notify_one();
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn list_erasures(State(state): State<ComplianceState>, headers: HeaderMap) -> Answer {
    let p = tenant_admin(&state, &headers)?;
    let s = state.clone();
    let mine = blocking(move || {
        let all = jobs::list(s.store.storage()).map_err(job_error)?;
        let offboarded = offboarded_before(&s, &p.tenant)?;
        Ok(all
            .into_iter()
            .filter(|j| {
                j.tenant == p.tenant.as_str()
                    && j.kind() == "erasure"
                    && of_current_tenant(j, offboarded)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(serde_json::json!({ "jobs": mine })).into_response())
}

/// When a tenant of `tenant`'s name was last offboarded, if ever.
fn offboarded_before(state: &ComplianceState, tenant: &TenantId) -> Result<Option<i64>, Refusal> {
    state.store.offboarded_before(tenant).map_err(|e| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading tenant {tenant}'s offboarding mark: {e}"),
        )
    })
}

/// Whether `job` is of the tenant now under its name: one made before the
/// name's last offboarding (`offboarded`) was an earlier tenant's, whose
/// erasures (tables, ranges, who asked) are not the new one's to see.
fn of_current_tenant(job: &Job, offboarded: Option<i64>) -> bool {
    !offboarded.is_some_and(|mark| job.made_before(mark))
}

/// Erasure job `id` if it is the tenant's (another tenant's job, or an
/// offboarding, is not found).
async fn tenant_job(
    state: &ComplianceState,
    tenant: &TenantId,
    id: String,
) -> Result<Job, Refusal> {
    let (s, t) = (state.clone(), tenant.clone());
    let (job, offboarded) = blocking(move || {
        let job = jobs::get(s.store.storage(), &id).map_err(job_error)?;
        Ok((job, offboarded_before(&s, &t)?))
    })
    .await?;
    // an operator's offboarding of the tenant is not the tenant's to see
    // or cancel, nor the jobs of an earlier tenant of the same name
    if job.tenant != tenant.as_str()
        || job.kind() != "erasure"
        || !of_current_tenant(&job, offboarded)
    {
        return Err(refuse(StatusCode::NOT_FOUND, format!("no job {}", job.id)));
    }
    Ok(job)
}

async fn get_erasure(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let p = tenant_admin(&state, &headers)?;
    Ok(Json(tenant_job(&state, &p.tenant, id).await?).into_response())
}

async fn cancel_erasure(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let p = tenant_admin(&state, &headers)?;
    let job = tenant_job(&state, &p.tenant, id).await?;
    let s = state.clone();
    let now = state.clock.now_nanos();
    let key = p.key_id.clone();
    let cancelled = blocking(move || {
        let j = jobs::cancel(s.store.storage(), &job.id, now).map_err(job_error)?;
        let event = NewEvent::new(bulkhead_store::audit::EventKind::ErasureCancelled)
            .tenant(&p.tenant)
            .key_id(key)
            .detail("job", &j.id);
        if let Err(e) = s.audit.append(event) {
            tracing::error!(error = %e, "audit trail: a cancellation was not written");
        }
        Ok(j)
    })
    .await?;
    Ok(Json(cancelled).into_response())
}

async fn offboard(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let operator = crate::admin::authorize_operator(&state.admin, &headers)?;
    let tenant = TenantId::new(&name).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    if let Some(held) = under_hold(&state, &tenant) {
        return Err(held);
    }
    // a name with neither a policy nor stored data is a typo or a tenant
    // not created yet: offboarding it would mark the name shredded for good
    if state.tenants.policy(&tenant).is_none() {
        let (store, t) = (state.store.clone(), tenant.clone());
        let removed = bulkhead_collector::tenants::removed_marker(&state.admin.policy_dir, &tenant);
        let stored = blocking(move || {
            // removed with its data kept: stored, or still buffered
            Ok(removed.exists()
                || store
                    .storage()
                    .holds_tenant(&t)
                    .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?)
        })
        .await?;
        if !stored {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "there is no tenant {tenant} to offboard: it has no policy and no stored data"
                ),
            ));
        }
    }
    let job = Job::offboard(&tenant, &operator, "admin_api", state.clock.now_nanos());
    submit(&state, job).await
}

async fn admin_job(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    crate::admin::authorize_operator(&state.admin, &headers)?;
    let s = state.clone();
    let job = blocking(move || jobs::get(s.store.storage(), &id).map_err(job_error)).await?;
    Ok(Json(job).into_response())
}

/// The instance's public key for extract signatures (hex), for anyone.
async fn public_key(State(state): State<ComplianceState>) -> Response {
    format!("{}\n", state.signer.public_hex()).into_response()
}

/// Builds an extract and streams it as a tar archive. It is on the audit
/// trail before a byte of it leaves.
async fn create_extract(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    use crate::extract::{self, BuildError, ExtractRequest};
    let p = tenant_key(&state, &headers, Scope::Extract, "extract_api")?;
    let r: ExtractRequest = serde_json::from_slice(&body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON {{\"tables\", \"from\", \"to\", \"where\", \"recipient_key\"}}: {e}"),
        )
    })?;
    if let Err(e) = state.store.decryption(&p.tenant) {
        return Err(match e {
            bulkhead_store::Error::Key(bulkhead_store::crypto::KeyError::Shredded { .. }) => {
                refuse(StatusCode::GONE, e.to_string())
            }
            e => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        });
    }
    std::fs::create_dir_all(&state.scratch).map_err(|e| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scratch space: {e}"),
        )
    })?;
    let dir = tempfile::tempdir_in(&state.scratch).map_err(|e| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scratch space: {e}"),
        )
    })?;
    // one extract at a time per node: it is disk and CPU heavy, and the
    // rest of the server must keep its share
    let _slot = state
        .extract_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "another extract is being made on this node; retry in a minute",
            )
        })?;
    let sources = extract::Sources {
        engine: state.engine.clone(),
        store: state.store.clone(),
        signer: state.signer.clone(),
        audit_head: state.audit.head(),
        now_nanos: state.clock.now_nanos(),
    };
    // encoding and file writes are blocking work: on a thread of the
    // blocking pool, driving the query's stream from there, its operators'
    // tasks on the query threads (as a query's)
    let (tenant, key_id, path) = (p.tenant.clone(), p.key_id.clone(), dir.path().to_path_buf());
    let runtime = state.engine.query_threads();
    let manifest = tokio::task::spawn_blocking(move || {
        runtime.block_on(extract::build(
            sources,
            &tenant,
            &key_id,
            &r,
            &path,
            &|_| {},
        ))
    })
    .await
    .map_err(|e| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the extract failed: {e}"),
        )
    })?
    .map_err(|e| match e {
        BuildError::Request(m) => refuse(StatusCode::BAD_REQUEST, m),
        BuildError::TooLarge(m) => refuse(StatusCode::UNPROCESSABLE_ENTITY, m),
        BuildError::Failed(m) => {
            tracing::error!(tenant = %p.tenant, error = %m, "extract failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the extract failed: {m}"),
            )
        }
    })?;
    let (s, m, tenant, key) = (
        state.clone(),
        manifest.clone(),
        p.tenant.clone(),
        p.key_id.clone(),
    );
    let file = blocking(move || {
        let fail = |e: std::io::Error| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("writing the extract: {e}"),
            )
        };
        let mut file = tempfile::tempfile_in(&s.scratch).map_err(fail)?;
        extract::write_tar(dir.path(), &m, &mut file).map_err(fail)?;
        let manifest_sha256 = {
            use sha2::Digest;
            let bytes = std::fs::read(dir.path().join(extract::MANIFEST)).map_err(fail)?;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let event = NewEvent::new(bulkhead_store::audit::EventKind::ExtractCreated)
            .tenant(&tenant)
            .key_id(key)
            .detail("extract", &m.id)
            .detail("tables", m.tables.join(","))
            .detail("from", &m.from)
            .detail("to", &m.to)
            .detail("rows", m.total_rows())
            .detail("files", m.files.len())
            .detail("bytes", m.total_bytes())
            .detail("filter_sha256", m.filter_sha256.as_deref().unwrap_or(""))
            .detail("encrypted", m.encryption.is_some())
            .detail("manifest_sha256", manifest_sha256);
        s.audit.append(event).map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the audit trail is unavailable, so no extract is handed out: {e}"),
            )
        })?;
        use std::io::{Seek, SeekFrom};
        let len = file.seek(SeekFrom::End(0)).map_err(fail)?;
        file.seek(SeekFrom::Start(0)).map_err(fail)?;
        Ok((file, len))
    })
    .await?;
    let (file, len) = file;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    let value = |v: String| {
        axum::http::HeaderValue::from_str(&v).unwrap_or(axum::http::HeaderValue::from_static(""))
    };
    h.insert(
        axum::http::header::CONTENT_TYPE,
        value("application/x-tar".into()),
    );
    h.insert(axum::http::header::CONTENT_LENGTH, value(len.to_string()));
    h.insert(
        axum::http::header::CONTENT_DISPOSITION,
        value(format!(
            "attachment; filename=\"extract-{}.tar\"",
            manifest.id
        )),
    );
    h.insert("x-bulkhead-extract-id", value(manifest.id.clone()));
    h.insert(
        "x-bulkhead-extract-rows",
        value(manifest.total_rows().to_string()),
    );
    Ok(response)
}
