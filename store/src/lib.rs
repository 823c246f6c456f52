//! The tenant store of Bulkhead: where each tenant's data lives and how it
//! gets there safely.
//!
//! Start with [`Store`]: it buffers Arrow batches per tenant, signal and event
//! hour, commits them as Parquet files atomically (temporary name, fsync,
//! rename, directory fsync) under
//! `tenant=<id>/signal=<name>/date=YYYY-MM-DD/hour=HH/<id>.parquet`
//! ([`paths`]), and gives readers a consistent [`Snapshot`] of committed files
//! plus still-buffered batches. [`schema`] holds the tables' Arrow schemas.

pub mod atomic;
pub mod audit;
pub mod error;
pub mod paths;
pub mod schema;
mod signal;
mod store;
pub mod wal;
mod writer;

pub use error::{Error, Result};
pub use paths::{ParquetFilePath, PartitionHour};
pub use signal::Signal;
pub use store::{
    FlushConfig, FlushStats, ReplayReport, Snapshot, Store, StoreStats, TimeRange, WAL_FOOTER_KEY,
};
pub use wal::{Wal, WalConfig, WalEntry, WalError, WalStats, WriteFaults};
