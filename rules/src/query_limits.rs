//! The `[query]` section of a tenant policy: what one tenant's SQL may take
//! of the shared query engine, so a heavy query stalls nobody else's.
//!
//! ```toml
//! [query]
//! max_concurrent = 4         # queries running at once; more are refused at once (429, retry)
//! timeout = "30s"            # wall time of one query
//! memory = "256MiB"          # memory of the tenant's running queries together; sorts and
//!                            # aggregations spill to disk past it, the rest fails
//! max_rows = 100000          # rows one answer may carry
//! max_result_size = "64MiB"  # Arrow bytes one answer may carry
//! ```
//!
//! Every limit has a default, so a policy without the section is bounded
//! too; an operator's `[query]` in the server configuration bounds all
//! tenants together (the shared memory pool).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration};

/// Query limits of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    /// Queries of the tenant running at once; more are refused with a
    /// retryable error.
    pub max_concurrent: u32,
    /// Wall time of one query.
    pub timeout: HumanDuration,
    /// Memory the tenant's running queries may hold together.
    pub memory: ByteSize,
    /// Rows in one answer.
    pub max_rows: u64,
    /// Bytes of Arrow data in one answer.
    pub max_result_size: ByteSize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 4,
            timeout: HumanDuration(Duration::from_secs(30)),
            memory: ByteSize(256 << 20),
            max_rows: 100_000,
            max_result_size: ByteSize(64 << 20),
        }
    }
}

impl QueryLimits {
    /// Every problem, each naming its setting.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_concurrent == 0 {
            out.push("query.max_concurrent must be at least 1".into());
        }
        if self.timeout.0 < Duration::from_millis(100) {
            out.push("query.timeout must be at least 100ms".into());
        }
        if self.memory.0 < 1 << 20 {
            out.push("query.memory must be at least 1MiB".into());
        }
        if self.max_rows == 0 {
            out.push("query.max_rows must be at least 1".into());
        }
        if self.max_result_size.0 < 1 << 10 {
            out.push("query.max_result_size must be at least 1KiB".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_every_bad_value_is_named() {
        assert!(QueryLimits::default().problems().is_empty());
        let bad = QueryLimits {
            max_concurrent: 0,
            timeout: HumanDuration(Duration::from_millis(1)),
            memory: ByteSize(1),
            max_rows: 0,
            max_result_size: ByteSize(1),
        };
        let p = bad.problems().join("\n");
        for name in [
            "max_concurrent",
            "timeout",
            "memory",
            "max_rows",
            "max_result_size",
        ] {
            assert!(p.contains(&format!("query.{name}")), "{p}");
        }
    }

    #[test]
    fn a_section_parses_and_round_trips() {
        let l: QueryLimits =
            toml::from_str("max_concurrent = 2\ntimeout = \"5s\"\nmemory = \"64MiB\"\n").unwrap();
        assert_eq!(l.max_concurrent, 2);
        assert_eq!(l.timeout.0, Duration::from_secs(5));
        assert_eq!(l.memory.0, 64 << 20);
        assert_eq!(l.max_rows, QueryLimits::default().max_rows);
        let text = toml::to_string(&l).unwrap();
        assert_eq!(toml::from_str::<QueryLimits>(&text).unwrap(), l);
        assert!(toml::from_str::<QueryLimits>("surprise = 1").is_err());
    }
}
