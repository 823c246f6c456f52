//! Tenant identity and policy model.
pub mod tenant;
