//! Validated tenant identifiers.
use std::fmt;

/// Longest tenant name accepted.
pub const MAX_TENANT_LEN: usize = 63;

/// A validated tenant identifier: 1 to 63 characters of `a-z`, `0-9`, `-` and
/// `_`, starting with a letter or digit.
///
/// It is only ever built through [`TenantId::new`], so every value is safe to
/// use as an object-path segment (`..`, `/`, `%`, NUL and the like cannot
/// occur) and as a metric label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `name`, naming the problem when it is refused.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("tenant name is empty".into());
        }
        if name.len() > MAX_TENANT_LEN {
            return Err(format!(
                "tenant name is {} bytes long; at most {MAX_TENANT_LEN} are allowed",
                name.len()
            ));
        }
        let first = name.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(format!(
                "tenant name {:?} must start with a-z or 0-9",
                name.escape_debug().to_string()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "tenant name {:?} holds {:?}; only a-z, 0-9, '-' and '_' are allowed",
                name.escape_debug().to_string(),
                bad
            ));
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

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["acme", "a", "team-42", "x_y", "0day"] {
            assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
        }
        assert!(TenantId::new(&"a".repeat(MAX_TENANT_LEN)).is_ok());
    }

    #[test]
    fn refuses_path_tricks_and_oddities() {
        for bad in [
            "", "..", "../b", "a/b", "a\\b", "%2e%2e", "a\0b", "Acme", "-a", "_a", "a b", "é",
            "a.b", "a:b",
        ] {
            let err = TenantId::new(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
        }
        let long = "a".repeat(MAX_TENANT_LEN + 1);
        assert!(TenantId::new(&long).unwrap_err().contains("at most 63"));
    }

    proptest! {
        #[test]
        fn accepted_names_are_safe_path_segments(s in "\\PC{0,80}") {
            if let Ok(t) = TenantId::new(&s) {
                prop_assert!(!t.as_str().contains('/'));
                prop_assert!(!t.as_str().contains(".."));
                prop_assert!(!t.as_str().contains('\0'));
                prop_assert!(!t.as_str().contains('%'));
                prop_assert!(t.as_str().len() <= MAX_TENANT_LEN);
            }
        }
    }
}
