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
    #[error("encoding {what} as Parquet: {source}")]
    Encode {
        what: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("reading Parquet object {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("object storage at {path}: {source}")]
    Object {
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("object storage: {0}")]
    Storage(String),
    #[error("table manifest {0}")]
    Manifest(String),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("batch for tenant {tenant} has no usable 'timestamp' column")]
    NoTimestamp { tenant: String },
    #[error("write-ahead log: {0}")]
    Wal(#[source] crate::wal::WalError),
    #[error("{0}")]
    Key(#[from] crate::crypto::KeyError),
    #[error("erasure: {0}")]
    Erasure(String),
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

    /// What a client may be told of a transient error: the kind of
    /// problem, without the server's paths or object names (the operator's
    /// log has those).
    pub fn for_client(&self) -> String {
        match self {
            // the error's kind: its text may carry a path
            Error::Io { source, .. } => {
                format!("storage i/o error: {}; retry later", source.kind())
            }
            Error::Wal(crate::wal::WalError::Io { source, .. }) => {
                format!("write-ahead log i/o error: {}; retry later", source.kind())
            }
            Error::Object { .. } | Error::Storage(_) => {
                "object storage unavailable; retry later".into()
            }
            Error::Key(crate::crypto::KeyError::Storage(_)) => {
                "key storage unavailable; retry later".into()
            }
            other => other.to_string(),
        }
    }

    /// True for conditions a client should retry (the store is busy, not the data bad).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::BufferFull { .. }
            | Error::Io { .. }
            | Error::Object { .. }
            | Error::Storage(_) => true,
            Error::Wal(e) => e.is_transient(),
            Error::Key(e) => matches!(e, crate::crypto::KeyError::Storage(_)),
            _ => false,
        }
    }
}
