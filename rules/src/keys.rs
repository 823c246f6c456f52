//! API keys: their textual form, how they are stored (hashed) and scopes.
//!
//! A key reads `bhk_<id>_<secret>`: `id` is 16 lower-hex characters that
//! name the key (safe to log and audit), `secret` 64 lower-hex characters of
//! randomness. Only the SHA-256 of the whole key is stored. Keys are
//! high-entropy random strings, so a fast hash is the right tool here; slow
//! password hashes protect low-entropy secrets.
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::AuthError;
use crate::tenant::TenantId;

const PREFIX: &str = "bhk_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send OTLP data.
    Ingest,
    /// Run SQL over the tenant's tables.
    Query,
    /// Produce forensic extracts.
    Extract,
    /// Administer the tenant.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Query, Scope::Extract, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Extract => "extract",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown scope {s:?}; known scopes: ingest, query, extract, admin")
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    fn bit(s: Scope) -> u8 {
        1 << (s as u8)
    }
    pub fn contains(self, s: Scope) -> bool {
        self.0 & Self::bit(s) != 0
    }
    pub fn insert(&mut self, s: Scope) {
        self.0 |= Self::bit(s);
    }
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
    /// Parses a comma-separated list such as `ingest,query`.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let mut out = Scopes::default();
        for part in list.split(',').filter(|p| !p.trim().is_empty()) {
            out.insert(Scope::parse(part)?);
        }
        if out.0 == 0 {
            return Err("at least one scope is needed (ingest, query, extract, admin)".into());
        }
        Ok(out)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut s = Scopes::default();
        for x in iter {
            s.insert(x);
        }
        s
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// A key in clear text: exists only when created and when presented.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}, <secret>)", self.id)
    }
}

impl ApiKey {
    /// Builds a key from 8 bytes of id and 32 bytes of secret randomness.
    pub fn from_random(id: [u8; 8], secret: [u8; 32]) -> Self {
        Self {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// Parses a presented key. Refuses anything not of the exact form.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let rest = text.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
        let lower_hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(id, ID_HEX) || !lower_hex(secret, SECRET_HEX) {
            return Err(AuthError::Malformed);
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The clear-text form, `bhk_<id>_<secret>`.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }

    /// SHA-256 of the clear-text form.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.expose().as_bytes()).into()
    }
}

/// How a key is stored in a tenant policy: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The key's public id (the `<id>` part).
    pub id: String,
    /// Lower-hex SHA-256 of the whole key.
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub revoked: bool,
}

impl KeyRecord {
    pub fn new(key: &ApiKey, scopes: Scopes, created: String) -> Self {
        Self {
            id: key.id().to_string(),
            sha256: hex::encode(key.digest()),
            scopes: scopes.iter().collect(),
            created,
            revoked: false,
        }
    }
}

/// Who is calling: the outcome of authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub key_id: String,
    pub scopes: Scopes,
}

impl Principal {
    /// Succeeds when the key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                tenant: self.tenant.to_string(),
                key_id: self.key_id.clone(),
                needed: scope.as_str(),
            })
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value, for every
/// interface (OTLP/HTTP, OTLP/gRPC metadata, the query API).
/// The one `Authorization` value of a request, from every value it sent
/// under that name: none, or one in ASCII. Two or more are refused rather
/// than one picked (which one a proxy or a client library put first is
/// nothing to route a tenant's data by).
pub fn authorization_value<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<&'a str>, AuthError> {
    let mut values = values.into_iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Ambiguous);
    }
    if !first.is_ascii() {
        return Err(AuthError::Malformed);
    }
    std::str::from_utf8(first)
        .map(Some)
        .map_err(|_| AuthError::Malformed)
}

pub fn bearer_token(value: Option<&str>) -> Result<&str, AuthError> {
    let value = value.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

/// Compares two digests in time independent of where they differ.
pub fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_authorization_value_is_taken_and_two_are_refused() {
        let none: [&[u8]; 0] = [];
        assert_eq!(authorization_value(none), Ok(None));
        assert_eq!(
            authorization_value([b"Bearer k".as_slice()]),
            Ok(Some("Bearer k"))
        );
        assert_eq!(
            authorization_value([b"Bearer a".as_slice(), b"Bearer b".as_slice()]),
            Err(AuthError::Ambiguous)
        );
        assert_eq!(
            authorization_value(["Bearer \u{e9}k".as_bytes()]),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn key_round_trips_through_text() {
        let k = ApiKey::from_random([1; 8], [0xab; 32]);
        let text = k.expose();
        assert!(text.starts_with("bhk_0101010101010101_abab"));
        assert_eq!(ApiKey::parse(&text).unwrap(), k);
        assert!(!format!("{k:?}").contains("abab"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = ApiKey::from_random([1; 8], [2; 32]).expose();
        for bad in [
            "",
            "bhk_",
            "token",
            &good[..good.len() - 1],
            &good.to_uppercase(),
            &format!("{good}0"),
            &good.replace('_', "-"),
        ] {
            assert_eq!(ApiKey::parse(bad), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn scopes_parse_and_print() {
        let s = Scopes::parse_list("ingest, query").unwrap();
        assert!(s.contains(Scope::Ingest) && s.contains(Scope::Query));
        assert!(!s.contains(Scope::Admin));
        assert_eq!(s.to_string(), "ingest,query");
        assert!(Scopes::parse_list("ingest,write")
            .unwrap_err()
            .contains("write"));
        assert!(Scopes::parse_list("").is_err());
    }

    #[test]
    fn require_names_the_missing_scope() {
        let p = Principal {
            tenant: TenantId::new("acme").unwrap(),
            key_id: "k1".into(),
            scopes: Scopes::parse_list("ingest").unwrap(),
        };
        assert!(p.require(Scope::Ingest).is_ok());
        let err = p.require(Scope::Query).unwrap_err();
        assert!(err.to_string().contains("'query'"));
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(bearer_token(Some("abc")), Err(AuthError::Malformed));
    }

    #[test]
    fn digest_eq_compares() {
        assert!(digest_eq(&[3; 32], &[3; 32]));
        let mut b = [3; 32];
        b[31] = 4;
        assert!(!digest_eq(&[3; 32], &b));
    }
}
