//! What the redactor did: per-rule counts for `/metrics`, and the outcome
//! of one attribute.
use std::collections::BTreeMap;

/// What becomes of one attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrOutcome {
    Keep,
    Replace(String),
    Drop,
}

/// How often one rule acted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Values (attribute values, bodies or their JSON leaves, span names)
    /// in which the rule masked something.
    pub values_masked: u64,
    pub values_hashed: u64,
    pub attributes_dropped: u64,
    pub records_dropped: u64,
}

impl RuleCounts {
    fn add(&mut self, o: &RuleCounts) {
        self.values_masked += o.values_masked;
        self.values_hashed += o.values_hashed;
        self.attributes_dropped += o.attributes_dropped;
        self.records_dropped += o.records_dropped;
    }
}

/// Counts per rule name; the built-in detectors appear as
/// `default:<detector>` (secure defaults) and `detector:<detector>` (opt-in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub rules: BTreeMap<String, RuleCounts>,
}

impl Report {
    pub fn get(&self, rule: &str) -> RuleCounts {
        self.rules.get(rule).copied().unwrap_or_default()
    }

    /// The sum over every rule.
    pub fn total(&self) -> RuleCounts {
        let mut t = RuleCounts::default();
        for c in self.rules.values() {
            t.add(c);
        }
        t
    }

    pub fn merge(&mut self, other: &Report) {
        for (name, c) in &other.rules {
            self.entry(name).add(c);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Counts one dropped record against `rule` (see [`Redactor::drop_rule_for`]).
    pub fn record_dropped(&mut self, rule: &str) {
        self.entry(rule).records_dropped += 1;
    }

    pub(super) fn entry(&mut self, rule: &str) -> &mut RuleCounts {
        // Looked up first so the common case allocates nothing.
        if !self.rules.contains_key(rule) {
            self.rules.insert(rule.to_owned(), RuleCounts::default());
        }
        self.rules.entry(rule.to_owned()).or_default()
    }
}
