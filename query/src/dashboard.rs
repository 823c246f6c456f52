//! The built-in tenant dashboard: one page (`GET /dashboard`, embedded in
//! the binary, no assets fetched from anywhere) that signs in with a query
//! key and runs the documented dashboard queries (`docs/queries.md`, served
//! as `GET /dashboard/queries.json`) through the public query API, like any
//! other client. Nothing here reads tenant data itself.
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

const PAGE: &str = include_str!("dashboard.html");
const QUERIES: &str = include_str!("../../docs/queries.md");

/// The queries of `docs/queries.md`, by their `## name`, in order.
pub fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = None;
    let mut sql: Option<String> = None;
    for line in QUERIES.lines() {
        if let Some(n) = line.strip_prefix("## ") {
            name = Some(n.trim().to_string());
        } else if line.trim() == "```sql" {
            sql = Some(String::new());
        } else if line.trim() == "```" {
            if let (Some(n), Some(q)) = (name.take(), sql.take()) {
                out.push((n, q));
            }
        } else if let Some(q) = sql.as_mut() {
            q.push_str(line);
            q.push('\n');
        }
    }
    out
}

/// `/dashboard` and `/dashboard/queries.json`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        // the page's own script and styles only; data through the API
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data: blob:",
                        ),
                    ],
                    PAGE,
                )
                    .into_response()
            }),
        )
        .route(
            "/dashboard/queries.json",
            get(|| async {
                let map: serde_json::Map<String, serde_json::Value> = queries()
                    .into_iter()
                    .map(|(n, q)| (n, serde_json::Value::String(q)))
                    .collect();
                Json(map)
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_of_the_page_has_its_documented_query() {
        let names: Vec<String> = queries().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "volume-by-service",
                "error-ratio",
                "latency-percentiles",
                "top-errors",
                "anomalies",
                "trace-lookup"
            ]
        );
        for name in &names[..5] {
            assert!(PAGE.contains(&format!("\"{name}\"")), "{name}");
        }
        // the page loads nothing from elsewhere
        assert!(!PAGE.contains("http://") || !PAGE.contains("src=\"http"));
        assert!(!PAGE.contains("https://"));
    }
}
