//! Tenant-scoped, sandboxed SQL with Apache DataFusion.
//!
//! Start with [`QueryEngine`]: for each request it builds a session whose
//! catalog holds only the caller's tables ([`catalog`]), so isolation comes
//! from what the session can name, never from a WHERE clause. [`sandbox`]
//! refuses everything but read queries and bounds time, memory and rows;
//! [`format`] encodes results; [`http`] is the `/api/v1/query` endpoint and
//! [`flight`] the Arrow Flight SQL service over the same engine.

pub mod bounded;
pub mod catalog;
pub mod dashboard;
pub mod deadline;
pub mod error;
pub mod federation;
pub mod flight;
pub mod format;
pub mod http;
pub mod limits;
pub mod nesting;
pub mod predicate;
pub mod sandbox;
pub mod udf;
pub mod udwf;
pub mod yielding;

pub use error::QueryError;
pub use sandbox::{EngineLimits, PolicyLimits, QueryEngine, QueryOutput};
