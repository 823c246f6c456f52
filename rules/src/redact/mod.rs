//! The `[redaction]` section of a tenant policy and the engine that applies
//! it: secrets, personal data and other tenants' names are removed from
//! telemetry before it is stored.
//!
//! ```toml
//! [redaction]
//! detectors = ["email", "ipv4"]        # opt-in personal-data detectors
//! disable_defaults = []                 # explicit opt-out of credential detectors
//! hash_secret = "per-tenant-secret-of-16+-bytes"
//!
//! [[redaction.rules]]
//! name = "mask-order-ids"
//! match = { pattern = "ORD-[0-9]{6}" }  # or { detector = "email" }
//! action = "mask"                       # mask | hash | drop_attribute | drop_record | allow_keys
//! replacement = "[ORDER]"               # mask only; default "[REDACTED]"
//! keys = ["order.*"]                    # attribute key globs (`*` = any text)
//! applies_to = ["record_attributes", "body"]   # default: everywhere
//!
//! [[redaction.rules]]
//! name = "allow"
//! action = "allow_keys"
//! keys = ["service.name", "http.*"]
//! applies_to = ["record_attributes"]
//! ```
//!
//! Semantics, in the order they are applied:
//!
//! - Rules run in file order, then the opt-in `detectors`, then the secure
//!   defaults, so the defaults see the final text and catch what the
//!   tenant's own rules left.
//! - `keys` restricts a rule to attributes whose key matches one of the
//!   globs (ASCII case-insensitive). Bodies and span names have no key: the
//!   `match` alone decides there, and a rule without `match` skips them.
//!   `span_name` covers span names, status messages and event names.
//! - `mask` replaces each match with `replacement` (the whole value when the
//!   rule has `keys` and no `match`). `hash` replaces each match (or the
//!   whole value) with the hex HMAC-SHA-256 of it under `hash_secret`,
//!   truncated to `hash_length` hex digits (default 64), so equal values
//!   stay equal and joinable.
//! - `drop_attribute` removes attributes whose key matches `keys` and whose
//!   value matches `match` (either may be left out, not both), judged on the
//!   value as received, before any masking.
//! - `drop_record` removes a record when any of its attributes (key in
//!   `keys`, value matching `match`) or its body or span name (matching
//!   `match`) does, judged on the values as received.
//! - `allow_keys` keeps only attributes whose key matches `keys`; fails
//!   closed: `keys = []` keeps none, and leaving `keys` out is an error.
//! - Detectors: credentials (`private_key`, `bearer_token`, `jwt`,
//!   `cloud_key`, `secret_assignment`, `payment_card`) always run unless
//!   named in `disable_defaults` ([`Redactor::disabled_defaults`] exposes the
//!   choice for audits); personal data (`email`, `ipv4`, `ipv6`, `us_ssn`,
//!   `uk_nino`) only when listed in `detectors`. A detector match is replaced
//!   with `[REDACTED:<name>]`. Patterns are in [`detect::pattern`].
//! - JSON bodies (`array`/`kvlist`) have their string leaves redacted; keys,
//!   numbers and layout are kept, so the text stays valid JSON.
//!
//! Masking is idempotent and a value nothing matched is returned unchanged.
//! A hash is not idempotent by nature (hashing a pseudonym gives another).
use serde::{Deserialize, Serialize};

pub mod detect;
mod engine;
mod json;
mod report;

#[cfg(test)]
mod detect_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use detect::Detector;
pub use engine::Redactor;
pub use json::redact_json_strings;
pub use report::{AttrOutcome, Report, RuleCounts};

/// Longest accepted regular expression, in bytes of text.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Compiled program and lazy DFA limits of every rule's regex.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Shortest accepted `hash_secret`, in bytes.
pub const MIN_HASH_SECRET_LEN: usize = 16;
/// At most this many rules per tenant.
pub const MAX_RULES: usize = 256;

/// Where in a record a value sits; rules can be limited to some of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    ResourceAttributes,
    ScopeAttributes,
    /// Log record and span attributes.
    RecordAttributes,
    EventAttributes,
    LinkAttributes,
    /// Data point attributes, metric metadata and exemplar attributes.
    MetricAttributes,
    /// Log bodies (string or JSON text).
    Body,
    /// Span names, span status messages and span event names.
    SpanName,
}

impl Location {
    pub const ALL: [Location; 8] = [
        Location::ResourceAttributes,
        Location::ScopeAttributes,
        Location::RecordAttributes,
        Location::EventAttributes,
        Location::LinkAttributes,
        Location::MetricAttributes,
        Location::Body,
        Location::SpanName,
    ];

    /// Attribute locations have keys; bodies and span names do not.
    pub fn has_keys(self) -> bool {
        !matches!(self, Location::Body | Location::SpanName)
    }
}

/// What a rule does with what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Mask,
    Hash,
    DropAttribute,
    DropRecord,
    AllowKeys,
}

/// What a rule looks for in values: a regex or a built-in detector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
}

/// One `[[redaction.rules]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MatchSpec>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Attribute key globs; `None` (absent) differs from `[]` for `allow_keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Empty: every location.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applies_to: Vec<Location>,
    /// Hex digits kept of a `hash` (8..=64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_length: Option<usize>,
}

/// The `[redaction]` section of a tenant policy.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionPolicy {
    /// Opt-in detectors by name (personal data; defaults may be listed too).
    pub detectors: Vec<String>,
    /// Default detectors this tenant turns off, by name.
    pub disable_defaults: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_secret: Option<String>,
    pub rules: Vec<RuleSpec>,
}

impl std::fmt::Debug for RedactionPolicy {
    // The secret must not reach logs through a `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactionPolicy")
            .field("detectors", &self.detectors)
            .field("disable_defaults", &self.disable_defaults)
            .field("hash_secret", &self.hash_secret.as_ref().map(|_| "<set>"))
            .field("rules", &self.rules)
            .finish()
    }
}

impl RedactionPolicy {
    /// Every problem, as messages naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.detectors {
            if Detector::from_name(d).is_none() {
                out.push(format!(
                    "redaction.detectors: unknown detector {d:?} (known: {})",
                    known_detectors()
                ));
            }
        }
        for d in &self.disable_defaults {
            match Detector::from_name(d) {
                Some(det) if det.is_default() && self.detectors.contains(d) => out.push(format!(
                    "redaction.disable_defaults: {d:?} is also listed in redaction.detectors"
                )),
                Some(det) if det.is_default() => {}
                Some(_) => out.push(format!(
                    "redaction.disable_defaults: {d:?} is not on by default; leave it out of redaction.detectors instead"
                )),
                None => out.push(format!(
                    "redaction.disable_defaults: unknown detector {d:?} (known: {})",
                    known_detectors()
                )),
            }
        }
        if let Some(s) = &self.hash_secret {
            if s.len() < MIN_HASH_SECRET_LEN {
                out.push(format!(
                    "redaction.hash_secret must be at least {MIN_HASH_SECRET_LEN} bytes, got {}",
                    s.len()
                ));
            }
        }
        if self.rules.len() > MAX_RULES {
            out.push(format!(
                "redaction.rules: at most {MAX_RULES} rules, got {}",
                self.rules.len()
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = if rule.name.is_empty() {
                format!("redaction.rules[{i}]")
            } else {
                format!("redaction.rules[{i}] ({:?})", rule.name)
            };
            if rule.name.is_empty() || rule.name.len() > 128 {
                out.push(format!("{at}.name must be 1 to 128 bytes"));
            }
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                out.push(format!("{at}.name is used by an earlier rule"));
            }
            rule_problems(rule, &at, self.hash_secret.is_some(), &mut out);
        }
        out
    }
}

fn known_detectors() -> String {
    Detector::ALL.map(Detector::name).join(", ")
}

fn rule_problems(rule: &RuleSpec, at: &str, has_secret: bool, out: &mut Vec<String>) {
    let keys = rule.keys.as_deref().unwrap_or(&[]);
    for k in keys {
        if k.is_empty() || k.len() > 256 {
            out.push(format!("{at}.keys: {k:?} must be 1 to 256 bytes"));
        }
    }
    if let Some(m) = &rule.matcher {
        match (&m.pattern, &m.detector) {
            (Some(_), Some(_)) | (None, None) => out.push(format!(
                "{at}.match must have exactly one of `pattern` or `detector`"
            )),
            (Some(p), None) => {
                match engine::compile_pattern(p) {
                    Err(e) => out.push(format!("{at}.match.pattern: {e}")),
                    // A replacement the pattern finds inside would be masked
                    // again on every pass.
                    Ok(re) => match (&rule.replacement, rule.action) {
                        (Some(r), Action::Mask)
                            if re.find(r).is_some_and(|m| m.range() != (0..r.len())) =>
                        {
                            out.push(format!(
                                "{at}.replacement {r:?} contains a match of the pattern, so masking would not be idempotent"
                            ))
                        }
                        _ => {}
                    },
                }
            }
            (None, Some(d)) => {
                if Detector::from_name(d).is_none() {
                    out.push(format!(
                        "{at}.match.detector: unknown detector {d:?} (known: {})",
                        known_detectors()
                    ));
                }
            }
        }
    }
    let needs_target = || format!("{at}: action {:?} needs `match` or `keys`", rule.action);
    match rule.action {
        Action::Mask | Action::Hash | Action::DropAttribute | Action::DropRecord => {
            if rule.matcher.is_none() && keys.is_empty() {
                out.push(needs_target());
            }
        }
        Action::AllowKeys => {
            if rule.keys.is_none() {
                out.push(format!(
                    "{at}.keys is required for allow_keys (`keys = []` keeps no attribute)"
                ));
            }
            if rule.matcher.is_some() {
                out.push(format!("{at}.match is not used by allow_keys"));
            }
        }
    }
    if matches!(rule.action, Action::AllowKeys | Action::DropAttribute)
        && rule.applies_to.iter().any(|l| !l.has_keys())
    {
        out.push(format!(
            "{at}.applies_to: {:?} applies to attribute locations only",
            rule.action
        ));
    }
    if rule.replacement.is_some() && rule.action != Action::Mask {
        out.push(format!("{at}.replacement is only used by mask"));
    }
    if let Some(r) = &rule.replacement {
        if r.len() > 256 {
            out.push(format!("{at}.replacement must be at most 256 bytes"));
        }
    }
    if rule.action == Action::Hash {
        if !has_secret {
            out.push(format!("{at}: hash needs redaction.hash_secret"));
        }
        if let Some(n) = rule.hash_length {
            if !(8..=64).contains(&n) {
                out.push(format!("{at}.hash_length must be in 8..=64, got {n}"));
            }
        }
    } else if rule.hash_length.is_some() {
        out.push(format!("{at}.hash_length is only used by hash"));
    }
}
