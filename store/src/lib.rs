//! The tenant store of Bulkhead: where each tenant's data lives and how it
//! gets there safely.
//!
//! Start with [`Store`]: it buffers Arrow batches per tenant, signal and event
//! hour, puts them as Parquet objects under
//! `tenant=<id>/signal=<name>/date=YYYY-MM-DD/hour=HH/<id>.parquet`
//! ([`paths`]) on local disk or S3-compatible storage ([`objects`]), commits
//! each to its table's [`manifest`] atomically, and gives readers a
//! consistent [`Snapshot`] of committed files plus still-buffered batches.
//! [`schema`] holds the tables' Arrow schemas.

pub mod atomic;
pub mod audit;
pub mod compaction;
pub mod crypto;
pub mod erase;
pub mod error;
pub mod manifest;
pub mod objects;
pub mod paths;
pub mod schema;
mod signal;
mod store;
pub mod wal;
mod writer;

pub use compaction::{CompactionConfig, CompactionStats};
pub use erase::{EraseStats, OffboardStats, RowMatcher};
pub use error::{Error, Result};
pub use manifest::FileEntry;
pub use objects::{S3Config, StorageConfig, OBJECT_STORE_URL};
pub use paths::{ParquetFilePath, PartitionHour};
pub use signal::Signal;
pub use store::{
    CpuTurns, FlushConfig, FlushStats, ReplayReport, Snapshot, Store, StoreStats, TimeRange,
};
pub use wal::{Wal, WalBody, WalConfig, WalEntry, WalError, WalStats, WriteFaults};
