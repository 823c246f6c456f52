//! `POST /api/v1/query`: `{"sql": "..."}` with a key holding the `query` scope.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bulkhead_rules::{AuthError, Authenticator, Scope};
use serde::Deserialize;
use tracing::Instrument;

use crate::format::Format;
use crate::sandbox::QueryEngine;

/// What the query endpoint needs.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<QueryEngine>,
    pub auth: Arc<dyn Authenticator>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
}

/// The API routes served on the API port.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .with_state(state)
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
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

async fn query(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let principal = match bearer(&headers).and_then(|k| state.auth.authenticate(k)) {
        Ok(p) => p,
        Err(e) => return error_response(auth_status(&e), &e.to_string()),
    };
    if let Err(e) = principal.require(Scope::Query) {
        return error_response(auth_status(&e), &e.to_string());
    }
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("request body must be JSON {{\"sql\": \"...\"}}: {e}"),
            )
        }
    };
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let span = tracing::info_span!("query", tenant = %principal.tenant, key = %principal.key_id);
    let result = state
        .engine
        .execute(&principal.tenant, &request.sql)
        .instrument(span)
        .await;
    match result.and_then(|out| {
        format
            .encode(&out.schema, &out.batches)
            .map(|b| (b, out.rows))
    }) {
        Ok((body, rows)) => {
            tracing::debug!(rows, "query answered");
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(e) => {
            if let crate::QueryError::Internal(detail) = &e {
                tracing::error!(error = %detail, "query failed");
            } else {
                tracing::info!(error = %e, "query refused");
            }
            error_response(e.status(), &e.to_string())
        }
    }
}
