//! `POST /api/v1/query`: `{"sql": "..."}` with a key holding the `query` scope.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bulkhead_rules::{AuthError, Authenticator, Scope};
use bulkhead_store::audit::{AuditLog, NewEvent, RefusalAudit};
use serde::Deserialize;
use tracing::Instrument;

use crate::federation::{Federation, Operator};
use crate::format::Format;
use crate::sandbox::QueryEngine;

/// What the query endpoint needs.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<QueryEngine>,
    pub auth: Arc<dyn Authenticator>,
    /// Refused credentials are summed up here and written by the server's
    /// housekeeping, not with one fsync each.
    pub refusals: Arc<RefusalAudit>,
    /// Called once for every request whose handling panicked (it is
    /// answered 500; the server counts it).
    pub on_panic: Arc<dyn Fn() + Send + Sync>,
    /// Runs after authentication, before the query (tests inject faults).
    pub fault_hook: Option<QueryFaultHook>,
    /// Operator keys and the tenants each may query together.
    pub federation: Arc<Federation>,
}

/// A hook run for every authenticated query (fault injection in tests).
pub type QueryFaultHook = Arc<dyn Fn(&bulkhead_rules::TenantId) + Send + Sync>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
}

/// The API routes served on the API port.
pub fn router(state: ApiState) -> Router {
    let on_panic = state.on_panic.clone();
    Router::new()
        .route("/api/v1/query", post(query))
        .merge(crate::dashboard::router())
        .with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| {
            contain_panics(on_panic.clone(), req, next)
        }))
}

/// A panic while handling one request answers that request 500 and stops
/// there: the connection, the engine and every other request carry on.
async fn contain_panics(
    on_panic: Arc<dyn Fn() + Send + Sync>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "query request panicked; answered 500");
            on_panic();
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while answering this query; it has been logged",
            )
        }
    }
}

/// A JSON error body with a status.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Maps an authentication failure to its HTTP status (401 or 403).
pub fn auth_status(e: &AuthError) -> StatusCode {
    match e {
        AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = bulkhead_rules::keys::authorization_value(
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes()),
    )?;
    bulkhead_rules::keys::bearer_token(value)
}

/// Appends an audit event off the async workers (appends wait for fsync).
/// Returns false when the event could not be recorded.
pub async fn audit(log: Option<&Arc<AuditLog>>, event: NewEvent) -> bool {
    let Some(log) = log.cloned() else { return true };
    match tokio::task::spawn_blocking(move || log.append(event)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audit append failed");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "audit task failed");
            false
        }
    }
}

/// The `{"sql": ...}` body and the answer's format (from `Accept`).
/// On a bad body, the message of the 400 to answer.
fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<(QueryRequest, Format), String> {
    let request: QueryRequest = serde_json::from_slice(body)
        .map_err(|e| format!("request body must be JSON {{\"sql\": \"...\"}}: {e}"))?;
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    Ok((request, format))
}

async fn query(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let log = state.engine.audit();
    let presented = bearer(&headers).ok();
    if let Some(operator) = presented.and_then(|k| state.federation.operator(k)) {
        return federated(&state, operator, presented, &headers, &body).await;
    }
    let principal = match bearer(&headers)
        .and_then(|k| state.auth.authenticate(k))
        .and_then(|p| p.require(Scope::Query).map(|_| p))
    {
        Ok(p) => p,
        Err(e) => {
            if log.is_some() {
                state
                    .refusals
                    .record(NewEvent::refused_credential(&e, presented, "query"));
            }
            return error_response(auth_status(&e), &e.to_string());
        }
    };
    if let Some(hook) = &state.fault_hook {
        hook(&principal.tenant);
    }
    let (request, format) = match parse_request(&headers, &body) {
        Ok(r) => r,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    let span = tracing::info_span!("query", tenant = %principal.tenant, key = %principal.key_id);
    let result = state
        .engine
        .execute(&principal.tenant, &request.sql)
        .instrument(span)
        .await;
    let (tenant, key) = (&principal.tenant, principal.key_id.as_str());
    match result.and_then(|out| {
        format
            .encode(&out.schema, &out.batches)
            .map(|b| (b, out.rows))
    }) {
        Ok((body, rows)) => {
            // Every answered query is on the record before the answer leaves.
            if !audit(log, NewEvent::query(tenant, key, &request.sql, rows as u64)).await {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the audit trail is unavailable; try again later",
                );
            }
            tracing::debug!(rows, "query answered");
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(e) => {
            if let crate::QueryError::Internal(detail) = &e {
                tracing::error!(error = %detail, "query failed");
            } else {
                tracing::info!(error = %e, "query refused");
            }
            audit(
                log,
                NewEvent::query_refused(tenant, key, &request.sql, &e.to_string()),
            )
            .await;
            let mut response = error_response(e.status(), &e.to_string());
            if matches!(e, crate::QueryError::Busy(_)) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// The `X-Scope-OrgID` header, if given once. Given twice, or with bytes
/// that are not text, it is refused: read as absent it would widen the
/// query to every granted tenant, and which of two copies a proxy keeps is
/// not ours to guess.
fn scope_header(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let mut values = headers.get_all("x-scope-orgid").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(
            "X-Scope-OrgID is given more than once; give it once, with the tenants separated by |"
                .into(),
        );
    }
    let scope = first.to_str().map_err(|_| {
        "X-Scope-OrgID is not visible ASCII text; give tenant names separated by |".to_string()
    })?;
    if scope.split('|').all(|name| name.trim().is_empty()) {
        // empty, or `|` alone: neither is "every tenant" nor a query over none
        let shown: String = scope.chars().take(40).collect();
        return Err(format!(
            "X-Scope-OrgID {shown:?} names no tenant; give tenants separated by |, or leave the header out for every granted one"
        ));
    }
    Ok(Some(scope))
}

/// An operator's query over its granted tenants (`X-Scope-OrgID: a|b`
/// narrows them). On the record of every tenant it touched.
async fn federated(
    state: &ApiState,
    operator: Result<Operator, AuthError>,
    presented: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let log = state.engine.audit();
    let operator = match operator {
        Ok(o) => o,
        Err(e) => {
            if log.is_some() {
                state
                    .refusals
                    .record(NewEvent::refused_credential(&e, presented, "query"));
            }
            return error_response(auth_status(&e), &e.to_string());
        }
    };
    let scope = match scope_header(headers) {
        Ok(s) => s,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    let tenants = match operator.tenants(scope) {
        Ok(t) => t,
        Err(reason) => {
            if log.is_some() {
                state.refusals.record(
                    NewEvent::auth_failure(Some(&operator.key_id), &reason)
                        .detail(bulkhead_store::audit::detail::INTERFACE, "query"),
                );
            }
            return error_response(StatusCode::FORBIDDEN, &reason);
        }
    };
    let (request, format) = match parse_request(headers, body) {
        Ok(r) => r,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    let names = tenants
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let span = tracing::info_span!("federated_query", operator = %operator.name, tenants = %names);
    let result = state
        .engine
        .execute_federated(&tenants, &request.sql)
        .instrument(span)
        .await;
    let on_record = |event: NewEvent| {
        event
            .detail("operator", operator.name.as_str())
            .detail("tenants", names.as_str())
    };
    match result.and_then(|out| {
        format
            .encode(&out.schema, &out.batches)
            .map(|b| (b, out.rows))
    }) {
        Ok((body, rows)) => {
            for t in &tenants {
                let event = NewEvent::query(t, &operator.key_id, &request.sql, rows as u64);
                if !audit(log, on_record(event)).await {
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the audit trail is unavailable; try again later",
                    );
                }
            }
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(e) => {
            for t in &tenants {
                let event =
                    NewEvent::query_refused(t, &operator.key_id, &request.sql, &e.to_string());
                audit(log, on_record(event)).await;
            }
            error_response(e.status(), &e.to_string())
        }
    }
}
