//! The bulkhead server process.
pub mod convert;
