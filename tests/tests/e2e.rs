//! The end-to-end tests, one module per area, linked into one test binary
//! (`cargo test -p bulkhead-e2e`; one area: `cargo test -p bulkhead-e2e --
//! isolation::`). One binary instead of one per file: each links the whole
//! server and query engine, about 280 MB apiece in a debug build, and the
//! disk of a CI machine is not always large.

mod admin;
mod anomaly;
mod audit;
mod common;
mod conformance_grpc;
mod conformance_http;
mod dashboard_queries;
mod durability;
mod encryption;
mod erasure;
mod examples;
mod extract;
mod fairness;
mod flight_sql;
mod governance;
mod isolation;
mod limits;
mod other_engines;
mod otlp_clients;
mod policy_reload;
mod robustness;
mod telemetry;
