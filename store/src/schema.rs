//! Arrow schemas of the tenant tables.
