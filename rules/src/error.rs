//! Errors of the rules crate.
use std::path::PathBuf;

/// Why a presented credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send 'Authorization: Bearer <key>'")]
    Missing,
    #[error("malformed credentials: expected 'Bearer bhk_<id>_<secret>'")]
    Malformed,
    #[error("more than one Authorization header: send exactly one")]
    Ambiguous,
    #[error("unknown or revoked key")]
    Unknown,
    #[error("key {key_id} of tenant {tenant} lacks the '{needed}' scope")]
    Forbidden {
        tenant: String,
        key_id: String,
        needed: &'static str,
    },
}

/// A problem in a policy file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl PolicyError {
    pub fn new(path: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
