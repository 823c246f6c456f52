//! Errors of the store.
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet error at {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("batch for tenant {tenant} has no usable 'timestamp' column")]
    NoTimestamp { tenant: String },
    #[error("write-ahead log: {0}")]
    Wal(#[source] crate::wal::WalError),
    #[error("ingest buffer full ({buffered} bytes buffered, limit {limit}); retry later")]
    BufferFull { buffered: usize, limit: usize },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True for conditions a client should retry (the store is busy, not the data bad).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::BufferFull { .. } | Error::Io { .. } => true,
            Error::Wal(e) => e.is_transient(),
            _ => false,
        }
    }
}
