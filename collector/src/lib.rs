//! The ingest path: OTLP receivers, authentication, admission and limits,
//! OTLP to Arrow conversion, governance (redaction) and the hand-over to the
//! store's write-ahead log. Nothing of the query side is here; the `bulkhead`
//! crate wires both into one server.
//!
//! Start reading at [`receiver`] (gRPC and HTTP), then [`pipeline`]
//! (admission, tenant stamping, WAL) and [`convert`] (OTLP to Arrow).
//! [`tenants`] holds the policies and keys.

pub mod anomaly;
pub mod attr_limits;
pub mod audit;
pub mod backlog;
pub mod cardinality;
pub mod convert;
pub mod error;
pub mod fair;
pub mod limits;
pub mod pipeline;
pub mod receiver;
pub mod redact;
pub mod telemetry;
pub mod tenants;
