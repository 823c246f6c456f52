//! Validated tenant identifiers.
use std::fmt;

/// A validated tenant identifier: 1 to 63 characters of `a-z`, `0-9`, `-`, `_`,
/// starting with a letter or digit. Safe to use as a path segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > 63 {
            return Err(format!("tenant name must be 1 to 63 characters, got {}", name.len()));
        }
        let ok_first = name.as_bytes()[0].is_ascii_lowercase() || name.as_bytes()[0].is_ascii_digit();
        if !ok_first || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err("tenant name may only hold a-z, 0-9, '-' and '_', starting with a letter or digit".into());
        }
        Ok(Self(name.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
