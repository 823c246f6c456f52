//! The `bulkhead` binary's library: the configuration file, the wiring that
//! puts the store, the ingest path (`bulkhead_collector`) and the query API
//! (`bulkhead_query`) together into one server, and the command line's
//! helpers.
//!
//! Start reading at [`server::start`]; the data path itself is in the other
//! crates: `bulkhead_collector` (OTLP in, tenant, governance, WAL) ->
//! `bulkhead_store` (WAL, buffers, Parquet) -> `bulkhead_query` (SQL).

pub mod backtest;
pub mod config;
pub mod policy_cli;
pub mod server;

pub use config::Config;
pub use server::{start, start_with, RunningServer, StartOptions};
