//! The bulkhead server process: OTLP receivers, authentication, OTLP to
//! Arrow conversion, the ingest pipeline and the command line.
//!
//! Start reading at [`server::start`], which wires everything together;
//! then [`receiver`] (gRPC and HTTP), [`pipeline`] (tenant stamping and
//! buffering) and [`convert`] (OTLP to Arrow). [`tenants`] holds the
//! policies and keys; [`config`] the TOML configuration.

pub mod anomaly;
pub mod attr_limits;
pub mod audit;
pub mod backtest;
pub mod cardinality;
pub mod config;
pub mod convert;
pub mod error;
pub mod limits;
pub mod pipeline;
pub mod policy_cli;
pub mod receiver;
pub mod redact;
pub mod server;
pub mod telemetry;
pub mod tenants;

pub use config::Config;
pub use server::{start, start_with, RunningServer, StartOptions};
