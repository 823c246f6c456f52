//! The `bulkhead` binary's library: the configuration file, the wiring that
//! puts the store, the ingest path (`bulkhead_collector`) and the query API
//! (`bulkhead_query`) together into one server, and the command line's
//! helpers.
//!
//! Start reading at [`server::start`]; the data path itself is in the other
//! crates: `bulkhead_collector` (OTLP in, tenant, governance, WAL) ->
//! `bulkhead_store` (WAL, buffers, Parquet) -> `bulkhead_query` (SQL).

pub mod admin;
pub mod backtest;
pub mod compliance;
pub mod compliance_cli;
pub mod config;
pub mod console;
pub mod extract;
pub mod jobs;
pub mod policy_cli;
pub mod server;

pub use config::Config;
pub use server::{start, start_with, RunningServer, StartOptions};

/// The allocator of every program built on this crate (the `bulkhead`
/// binary, the benchmarks, the tests). Chosen by measurement: with the
/// system allocator, glibc's `malloc`/`free` (and its chunk consolidation)
/// took about 40 % of the query workers' time in a trace lookup over a day
/// of small files (docs/performance.md). The `system-allocator` feature
/// keeps the system's, for comparisons.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
