//! Operator federation: an operator key, granted a list of tenants in the
//! server configuration, queries across those tenants at once. The tables
//! hold every granted tenant's rows, told apart by their `tenant` column;
//! a request may narrow the set with `X-Scope-OrgID: a|b` (Grafana's
//! multi-tenant header), and naming any tenant not granted refuses the
//! whole query. Every federated query is on each touched tenant's audit
//! trail, with the operator's name and the tenants it touched.
//!
//! Operator keys have the tenants' key format (`bhk_<id>_<secret>`) and are
//! configured only as their id and SHA-256, never in clear.
use std::collections::HashMap;

use bulkhead_rules::{ApiKey, AuthError, TenantId};
use serde::Deserialize;

/// One `[[federation]]` entry of the server configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who holds the key (on the audit trail).
    pub name: String,
    /// The key's id (16 hex characters).
    pub key_id: String,
    /// The SHA-256 of the whole key, hex.
    pub key_sha256: String,
    /// The tenants the key may query.
    pub tenants: Vec<String>,
}

/// An authenticated operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub key_id: String,
    pub tenants: Vec<TenantId>,
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    operator: Operator,
}

/// Every operator grant, by key id.
#[derive(Debug, Default)]
pub struct Federation {
    by_id: HashMap<String, Entry>,
}

impl Federation {
    /// Checks every grant; the error lists each problem with its entry.
    pub fn new(grants: &[Grant]) -> Result<Self, String> {
        let mut by_id = HashMap::new();
        let mut errors = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            let at = format!("federation[{i}] ({})", g.name);
            let digest = match hex::decode(&g.key_sha256) {
                Ok(d) if d.len() == 32 => {
                    let mut out = [0u8; 32];
                    out.copy_from_slice(&d);
                    Some(out)
                }
                _ => {
                    errors.push(format!("{at}: key_sha256 must be 64 hex characters"));
                    None
                }
            };
            if g.key_id.len() != 16 || !g.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(format!("{at}: key_id must be 16 hex characters"));
            }
            if g.tenants.is_empty() {
                errors.push(format!("{at}: tenants must name at least one tenant"));
            }
            let mut tenants = Vec::new();
            for t in &g.tenants {
                match TenantId::new(t) {
                    Ok(t) => tenants.push(t),
                    Err(e) => errors.push(format!("{at}: tenant {t:?}: {e}")),
                }
            }
            if let Some(digest) = digest {
                let operator = Operator {
                    name: g.name.clone(),
                    key_id: g.key_id.clone(),
                    tenants,
                };
                if by_id
                    .insert(g.key_id.clone(), Entry { digest, operator })
                    .is_some()
                {
                    errors.push(format!("{at}: key_id {} is granted twice", g.key_id));
                }
            }
        }
        if errors.is_empty() {
            Ok(Self { by_id })
        } else {
            Err(errors.join("; "))
        }
    }

    /// `None` when `presented` is not an operator key (a tenant key, say);
    /// otherwise the operator, or why the key is refused.
    pub fn operator(&self, presented: &str) -> Option<Result<Operator, AuthError>> {
        let key = ApiKey::parse(presented).ok()?;
        let entry = self.by_id.get(key.id())?;
        // the whole digest is compared, whatever differs first
        Some(
            if bulkhead_rules::keys::digest_eq(&entry.digest, &key.digest()) {
                Ok(entry.operator.clone())
            } else {
                Err(AuthError::Unknown)
            },
        )
    }
}

impl Operator {
    /// The tenants a request asks for: those of `scope` (`a|b`, Grafana's
    /// `X-Scope-OrgID`), each of which must be granted; every granted one
    /// when the request names none.
    pub fn tenants(&self, scope: Option<&str>) -> Result<Vec<TenantId>, String> {
        let Some(scope) = scope.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(self.tenants.clone());
        };
        let mut out: Vec<TenantId> = Vec::new();
        for name in scope.split('|').map(str::trim).filter(|s| !s.is_empty()) {
            match self.tenants.iter().find(|t| t.as_str() == name) {
                Some(t) if !out.contains(t) => out.push(t.clone()),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "tenant {name:?} is not granted to operator {}",
                        self.name
                    ))
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(key: &ApiKey, tenants: &[&str]) -> Grant {
        Grant {
            name: "sre".into(),
            key_id: key.id().into(),
            key_sha256: hex::encode(key.digest()),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn operator_keys_are_told_from_tenant_keys_and_checked_whole() {
        let key = ApiKey::from_random([7; 8], [9; 32]);
        let f = Federation::new(&[grant(&key, &["a", "b"])]).unwrap();
        let op = f.operator(&key.expose()).unwrap().unwrap();
        assert_eq!(op.name, "sre");
        // same id, other secret: refused
        let forged = ApiKey::from_random([7; 8], [8; 32]);
        assert!(matches!(f.operator(&forged.expose()), Some(Err(_))));
        // another key: not an operator's
        let tenant_key = ApiKey::from_random([1; 8], [9; 32]);
        assert!(f.operator(&tenant_key.expose()).is_none());
        assert!(f.operator("garbage").is_none());
    }

    #[test]
    fn a_request_gets_granted_tenants_only() {
        let key = ApiKey::from_random([7; 8], [9; 32]);
        let f = Federation::new(&[grant(&key, &["a", "b"])]).unwrap();
        let op = f.operator(&key.expose()).unwrap().unwrap();
        let names = |v: Vec<TenantId>| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(names(op.tenants(None).unwrap()), ["a", "b"]);
        assert_eq!(names(op.tenants(Some("b")).unwrap()), ["b"]);
        assert_eq!(names(op.tenants(Some(" b | a |b")).unwrap()), ["b", "a"]);
        let e = op.tenants(Some("a|c")).unwrap_err();
        assert!(e.contains("\"c\"") && e.contains("sre"), "{e}");
    }

    #[test]
    fn bad_grants_are_named() {
        let e = Federation::new(&[Grant {
            name: "x".into(),
            key_id: "nothex".into(),
            key_sha256: "00".into(),
            tenants: vec!["Not A Tenant".into()],
        }])
        .unwrap_err();
        assert!(
            e.contains("key_id") && e.contains("key_sha256") && e.contains("tenant"),
            "{e}"
        );
    }
}
