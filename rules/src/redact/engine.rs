//! The compiled form of a [`RedactionPolicy`] and the per-rule counts.
use std::ops::Range;

use hmac::{Hmac, Mac};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use sha2::Sha256;

use super::detect::Detector;
use super::report::{AttrOutcome, Report};
use super::{json, Action, Location, RedactionPolicy, MAX_PATTERN_LEN, REGEX_SIZE_LIMIT};

enum Matcher {
    Pattern(Regex),
    Detector(Detector),
}

impl Matcher {
    fn find(&self, text: &str) -> Vec<Range<usize>> {
        match self {
            Matcher::Pattern(re) => re
                .find_iter(text)
                .filter(|m| !m.is_empty())
                .map(|m| m.range())
                .collect(),
            Matcher::Detector(d) => d.find(text),
        }
    }

    fn is_match(&self, text: &str) -> bool {
        match self {
            Matcher::Pattern(re) => re.is_match(text),
            Matcher::Detector(d) => !d.find(text).is_empty(),
        }
    }
}

struct Rule {
    name: String,
    action: Action,
    matcher: Option<Matcher>,
    replacement: String,
    /// ASCII-lowercased globs; `None` = no key restriction.
    keys: Option<Vec<String>>,
    /// Bit per [`Location`].
    locations: u16,
    hash_len: usize,
    /// Index of the matcher's pattern in [`Redactor::set`].
    set_index: Option<usize>,
}

impl Rule {
    fn applies(&self, loc: Location) -> bool {
        self.locations & (1 << loc as u16) != 0
    }

    fn key_matches(&self, key: &str) -> bool {
        match &self.keys {
            Some(globs) => globs.iter().any(|g| glob_match(g, key)),
            None => true,
        }
    }

    fn has_keys(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| !k.is_empty())
    }

    /// A value rule (mask, hash) or record rule acts on this value: in an
    /// attribute, the key must pass `keys`; without a key, `match` decides.
    fn targets(&self, loc: Location, key: Option<&str>) -> bool {
        if !self.applies(loc) {
            return false;
        }
        match key {
            Some(k) => !self.has_keys() || self.key_matches(k),
            None => self.matcher.is_some(),
        }
    }
}

/// A tenant's compiled redaction rules.
pub struct Redactor {
    rules: Vec<Rule>,
    /// Every rule's pattern in one set: one scan tells which rules can match
    /// a value, so a value without secrets costs one pass, not one per rule.
    set: Option<RegexSet>,
    disabled_defaults: Vec<String>,
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.rule_names().collect::<Vec<_>>())
            .field("disabled_defaults", &self.disabled_defaults)
            .finish_non_exhaustive()
    }
}

/// Compiles a rule's regex with the size limits; refuses long patterns and
/// patterns that match the empty string (they would mask between letters).
pub(crate) fn compile_pattern(p: &str) -> Result<Regex, String> {
    if p.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "pattern is {} bytes, at most {MAX_PATTERN_LEN} allowed",
            p.len()
        ));
    }
    let re = RegexBuilder::new(p)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    if re.is_match("") {
        return Err(format!("pattern {p:?} matches the empty string"));
    }
    Ok(re)
}

const ALL_LOCATIONS: u16 = (1 << Location::ALL.len()) - 1;

fn detector_rule(name: String, d: Detector) -> Rule {
    Rule {
        name,
        action: Action::Mask,
        matcher: Some(Matcher::Detector(d)),
        replacement: d.replacement(),
        keys: None,
        locations: ALL_LOCATIONS,
        hash_len: 64,
        set_index: None,
    }
}

impl Redactor {
    /// Compiles a policy; every problem of [`RedactionPolicy::problems`] is
    /// an error.
    pub fn compile(policy: &RedactionPolicy) -> Result<Redactor, Vec<String>> {
        let problems = policy.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut rules = Vec::new();
        for spec in &policy.rules {
            let matcher = match &spec.matcher {
                Some(m) => match (&m.pattern, &m.detector) {
                    (Some(p), _) => {
                        Some(Matcher::Pattern(compile_pattern(p).map_err(|e| vec![e])?))
                    }
                    (None, Some(d)) => Detector::from_name(d).map(Matcher::Detector),
                    (None, None) => None,
                },
                None => None,
            };
            let default_replacement = match &matcher {
                Some(Matcher::Detector(d)) => d.replacement(),
                _ => "[REDACTED]".to_owned(),
            };
            let locations = if spec.applies_to.is_empty() {
                ALL_LOCATIONS
            } else {
                spec.applies_to
                    .iter()
                    .fold(0, |acc, l| acc | 1 << *l as u16)
            };
            rules.push(Rule {
                name: spec.name.clone(),
                action: spec.action,
                matcher,
                replacement: spec.replacement.clone().unwrap_or(default_replacement),
                keys: spec
                    .keys
                    .as_ref()
                    .map(|ks| ks.iter().map(|k| k.to_ascii_lowercase()).collect()),
                locations,
                hash_len: spec.hash_length.unwrap_or(64),
                set_index: None,
            });
        }
        let mut seen: Vec<Detector> = Vec::new();
        for d in policy
            .detectors
            .iter()
            .filter_map(|d| Detector::from_name(d))
        {
            if !d.is_default() && !seen.contains(&d) {
                seen.push(d);
                rules.push(detector_rule(format!("detector:{}", d.name()), d));
            }
        }
        for d in Detector::DEFAULTS {
            if !policy.disable_defaults.iter().any(|n| n == d.name()) {
                rules.push(detector_rule(format!("default:{}", d.name()), d));
            }
        }
        let mac = match &policy.hash_secret {
            Some(s) => Some(
                Hmac::<Sha256>::new_from_slice(s.as_bytes())
                    .map_err(|e| vec![format!("redaction.hash_secret: {e}")])?,
            ),
            None => None,
        };
        let mut disabled_defaults = policy.disable_defaults.clone();
        disabled_defaults.sort();
        disabled_defaults.dedup();
        Ok(Redactor {
            set: prefilter(&mut rules),
            rules,
            disabled_defaults,
            mac,
        })
    }

    /// The redactor of a tenant whose policy has no `[redaction]` section:
    /// the secure defaults only.
    pub fn default_for_tenant() -> Redactor {
        let mut rules: Vec<Rule> = Detector::DEFAULTS
            .into_iter()
            .map(|d| detector_rule(format!("default:{}", d.name()), d))
            .collect();
        Redactor {
            set: prefilter(&mut rules),
            rules,
            disabled_defaults: Vec::new(),
            mac: None,
        }
    }

    /// The default detectors the tenant's policy turned off, sorted; for
    /// audits and the policy listing.
    pub fn disabled_defaults(&self) -> &[String] {
        &self.disabled_defaults
    }

    /// Names of every rule in force, in the order they run (detectors as
    /// `detector:<name>` / `default:<name>`).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// True when some rule can drop whole records (callers skip the scan
    /// otherwise).
    pub fn has_record_rules(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::DropRecord)
    }

    /// True when some rule removes attributes by key (so that a location
    /// with no value changes may still lose entries).
    pub fn has_attribute_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.action, Action::DropAttribute | Action::AllowKeys))
    }

    /// Redacts a text without a key: a string body or a span name.
    /// `None`: unchanged.
    pub fn redact_text(&self, loc: Location, text: &str, report: &mut Report) -> Option<String> {
        self.redact_value(loc, None, text, report)
    }

    /// Redacts the string leaves of a JSON body (an `array` or `kvlist`
    /// body). Text that is not valid JSON is redacted as plain text, so a
    /// malformed body cannot hide a secret.
    pub fn redact_json_body(&self, json: &str, report: &mut Report) -> Option<String> {
        let mut scratch = Report::default();
        match json::redact_json_strings(json, |s| {
            self.redact_value(Location::Body, None, s, &mut scratch)
        }) {
            Ok(out) => {
                report.merge(&scratch);
                out
            }
            Err(()) => self.redact_text(Location::Body, json, report),
        }
    }

    /// Decides one attribute: dropped by `allow_keys` or `drop_attribute`
    /// (judged on the value as received), else its value masked or hashed.
    pub fn redact_attribute(
        &self,
        loc: Location,
        key: &str,
        value: Option<&str>,
        report: &mut Report,
    ) -> AttrOutcome {
        for rule in self.rules.iter().filter(|r| r.applies(loc)) {
            let drop = match rule.action {
                Action::AllowKeys => !rule.key_matches(key),
                Action::DropAttribute => {
                    (!rule.has_keys() || rule.key_matches(key))
                        && match (&rule.matcher, value) {
                            (None, _) => true,
                            (Some(m), Some(v)) => m.is_match(v),
                            (Some(_), None) => false,
                        }
                }
                _ => false,
            };
            if drop {
                report.entry(&rule.name).attributes_dropped += 1;
                return AttrOutcome::Drop;
            }
        }
        match value.and_then(|v| self.redact_value(loc, Some(key), v, report)) {
            Some(v) => AttrOutcome::Replace(v),
            None => AttrOutcome::Keep,
        }
    }

    /// The first `drop_record` rule that one field of a record matches
    /// (`key` is `None` for bodies and span names). Does not count; see
    /// [`Report::record_dropped`] and [`Redactor::drops_record`].
    pub fn drop_rule_for(
        &self,
        loc: Location,
        key: Option<&str>,
        value: Option<&str>,
    ) -> Option<&str> {
        self.rules
            .iter()
            .filter(|r| r.action == Action::DropRecord && r.targets(loc, key))
            .find(|r| match (&r.matcher, value) {
                (None, _) => true,
                (Some(m), Some(v)) => m.is_match(v),
                (Some(_), None) => false,
            })
            .map(|r| r.name.as_str())
    }

    /// Whether a record goes, given its fields as (location, key, value);
    /// counts the drop against the rule that decided it.
    pub fn drops_record(
        &self,
        fields: &[(Location, Option<&str>, Option<&str>)],
        report: &mut Report,
    ) -> Option<&str> {
        let rule = fields
            .iter()
            .find_map(|(loc, key, value)| self.drop_rule_for(*loc, *key, *value))?;
        report.record_dropped(rule);
        Some(rule)
    }

    /// Applies the mask and hash rules to one value, until nothing changes:
    /// removing a match can expose another (`...stuAKIA...` has no word
    /// boundary before `AKIA` until the key before it is masked), and
    /// redacting twice must equal redacting once.
    fn redact_value(
        &self,
        loc: Location,
        key: Option<&str>,
        text: &str,
        report: &mut Report,
    ) -> Option<String> {
        let mut out = self.redact_pass(loc, key, text, true, report)?;
        // Later passes mask only: hashing a hash would give a new pseudonym.
        // The bound is a guard; in practice the second pass finds nothing.
        for _ in 0..8 {
            match self.redact_pass(loc, key, &out, false, report) {
                Some(next) => out = next,
                None => break,
            }
        }
        Some(out)
    }

    /// One pass of the mask (and, if `hash`, hash) rules, in order.
    fn redact_pass(
        &self,
        loc: Location,
        key: Option<&str>,
        text: &str,
        hash: bool,
        report: &mut Report,
    ) -> Option<String> {
        let mut current: Option<String> = None;
        let mut hits: Option<regex::SetMatches> = None;
        for rule in &self.rules {
            let acts = match rule.action {
                Action::Mask => true,
                Action::Hash => hash,
                _ => false,
            };
            if !acts || !rule.targets(loc, key) {
                continue;
            }
            let cur = current.as_deref().unwrap_or(text);
            if let (Some(set), Some(i)) = (&self.set, rule.set_index) {
                if !hits.get_or_insert_with(|| set.matches(cur)).matched(i) {
                    continue;
                }
            }
            let next = match &rule.matcher {
                None => {
                    let whole = self.replacement(rule, cur);
                    (whole != cur).then_some(whole)
                }
                Some(m) => {
                    let ranges = m.find(cur);
                    self.splice(rule, cur, &ranges)
                }
            };
            if let Some(next) = next {
                let c = report.entry(&rule.name);
                match rule.action {
                    Action::Hash => c.values_hashed += 1,
                    _ => c.values_masked += 1,
                }
                current = Some(next);
                // The text changed: what can match it has to be asked again.
                hits = None;
            }
        }
        current.filter(|c| c != text)
    }

    fn replacement(&self, rule: &Rule, matched: &str) -> String {
        match (rule.action, &self.mac) {
            (Action::Hash, Some(mac)) => {
                let mut mac = mac.clone();
                mac.update(matched.as_bytes());
                let mut hex = hex::encode(mac.finalize().into_bytes());
                hex.truncate(rule.hash_len);
                hex
            }
            // `problems` refuses hash rules without a secret; masking is the
            // safe reading should one get here.
            _ => rule.replacement.clone(),
        }
    }

    /// Replaces the ranges; `None` when nothing changed (a match that is
    /// already the replacement stays, which keeps masking idempotent).
    fn splice(&self, rule: &Rule, text: &str, ranges: &[Range<usize>]) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut changed = false;
        for r in ranges {
            let matched = &text[r.clone()];
            let rep = self.replacement(rule, matched);
            out.push_str(&text[last..r.start]);
            changed |= rep != matched;
            out.push_str(&rep);
            last = r.end;
        }
        out.push_str(&text[last..]);
        changed.then_some(out)
    }
}

/// Builds the set of the rules' patterns and records each rule's index in
/// it; `None` (no prefilter, every rule runs) if the set exceeds its limits.
fn prefilter(rules: &mut [Rule]) -> Option<RegexSet> {
    let mut patterns = Vec::new();
    for rule in rules.iter_mut() {
        let p = match &rule.matcher {
            Some(Matcher::Pattern(re)) => re.as_str(),
            Some(Matcher::Detector(d)) => super::detect::pattern(*d),
            None => continue,
        };
        rule.set_index = Some(patterns.len());
        patterns.push(p);
    }
    let limit = REGEX_SIZE_LIMIT.saturating_mul(patterns.len().max(1));
    match RegexSetBuilder::new(&patterns)
        .size_limit(limit)
        .dfa_size_limit(limit)
        .build()
    {
        Ok(set) => Some(set),
        Err(_) => {
            for rule in rules.iter_mut() {
                rule.set_index = None;
            }
            None
        }
    }
}

/// `*` matches any run of characters; ASCII case-insensitive (`glob` is
/// already lower case).
fn glob_match(glob: &str, key: &str) -> bool {
    let g = glob.as_bytes();
    let k = key.as_bytes();
    let (mut gi, mut ki) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ki < k.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ki));
            gi += 1;
        } else if gi < g.len() && g[gi] == k[ki].to_ascii_lowercase() {
            gi += 1;
            ki += 1;
        } else if let Some((sg, sk)) = star {
            // Let the last star swallow one more byte and retry.
            gi = sg + 1;
            ki = sk + 1;
            star = Some((sg, sk + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
pub(super) fn glob(glob: &str, key: &str) -> bool {
    glob_match(&glob.to_ascii_lowercase(), key)
}
