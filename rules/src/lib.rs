//! Tenant identity, API keys and the policy-as-code model of Bulkhead.
//!
//! Pure: no I/O beyond reading policy text, no async. Start reading at
//! [`TenantId`] (the validated tenant, carried everywhere), then [`keys`]
//! (how a presented credential becomes a [`Principal`]) and [`policy`] (the
//! per-tenant policy files and the [`Keyring`] built from them).

pub mod anomaly;
pub mod anomaly_policy;
pub mod clock;
pub mod error;
pub mod keys;
pub mod limits;
pub mod policy;
pub mod query_limits;
pub mod redact;
pub mod tenant;
pub mod units;

pub use anomaly_policy::{AnomalyPolicy, SeriesKind};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AuthError, PolicyError};
pub use keys::{ApiKey, KeyRecord, Principal, Scope, Scopes};
pub use limits::{Limits, Period, Retention};
pub use policy::{Authenticator, Keyring, PolicyDefaults, PolicySet, TenantPolicy, DEFAULTS_FILE};
pub use query_limits::QueryLimits;
pub use tenant::TenantId;
