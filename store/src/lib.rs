//! Per-tenant Parquet storage.
pub mod schema;
