//! Built-in detectors: a regular expression finds candidates, a check (Luhn,
//! number ranges, address parsing) confirms them, so that e.g. a 16-digit
//! order number that fails Luhn is left alone.
use std::net::Ipv6Addr;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// A built-in detector. The first six are credentials and are on for every
/// tenant unless the policy lists them in `disable_defaults`; the others are
/// personal data and only run when listed in `detectors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    BearerToken,
    Jwt,
    CloudKey,
    SecretAssignment,
    PaymentCard,
    PrivateKey,
    Email,
    Ipv4,
    Ipv6,
    UsSsn,
    UkNino,
}

impl Detector {
    pub const ALL: [Detector; 11] = [
        Detector::BearerToken,
        Detector::Jwt,
        Detector::CloudKey,
        Detector::SecretAssignment,
        Detector::PaymentCard,
        Detector::PrivateKey,
        Detector::Email,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::UsSsn,
        Detector::UkNino,
    ];

    /// The detectors every tenant gets unless it opts out explicitly.
    pub const DEFAULTS: [Detector; 6] = [
        Detector::PrivateKey,
        Detector::BearerToken,
        Detector::Jwt,
        Detector::CloudKey,
        Detector::SecretAssignment,
        Detector::PaymentCard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::BearerToken => "bearer_token",
            Detector::Jwt => "jwt",
            Detector::CloudKey => "cloud_key",
            Detector::SecretAssignment => "secret_assignment",
            Detector::PaymentCard => "payment_card",
            Detector::PrivateKey => "private_key",
            Detector::Email => "email",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::UsSsn => "us_ssn",
            Detector::UkNino => "uk_nino",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn is_default(self) -> bool {
        Detector::DEFAULTS.contains(&self)
    }

    /// The text a match is replaced with when the rule gives none.
    pub fn replacement(self) -> String {
        format!("[REDACTED:{}]", self.name())
    }

    /// The byte ranges of confirmed matches, in order, not overlapping.
    pub fn find(self, text: &str) -> Vec<Range<usize>> {
        let re = &PATTERNS[self as usize];
        let mut out = Vec::new();
        // Most values hold no secret: the DFA answers that quickly, while
        // setting up captures costs on every call.
        if !re.is_match(text) {
            return out;
        }
        if self == Detector::PaymentCard {
            for run in re.find_iter(text) {
                card_ranges(run.start(), run.as_str(), &mut out);
            }
            return out;
        }
        for caps in re.captures_iter(text) {
            // Group 1, when the pattern has it, is the secret part (the value
            // of `password=...`, the token after `Bearer`): only it is masked
            // so the text stays readable.
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            if self.confirms(m.as_str()) && self.bounded(text, m.range()) {
                out.push(m.range());
            }
        }
        out
    }

    fn confirms(self, candidate: &str) -> bool {
        match self {
            Detector::UsSsn => ssn_valid(candidate),
            Detector::UkNino => nino_valid(candidate),
            Detector::Ipv6 => candidate.parse::<Ipv6Addr>().is_ok(),
            _ => true,
        }
    }

    /// Boundaries the regex crate cannot express without look-around.
    fn bounded(self, text: &str, r: Range<usize>) -> bool {
        match self {
            Detector::Ipv6 => {
                // `std::vec` is a path, not the address `d::`.
                let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_');
                !text[..r.start].chars().next_back().is_some_and(part)
                    && !text[r.end..].chars().next().is_some_and(part)
            }
            _ => true,
        }
    }
}

/// One pattern per detector, in the order of the enum.
static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    Detector::ALL
        .iter()
        .map(|d| {
            // The patterns are constants checked by the tests; a failure here
            // is a bug in this file.
            Regex::new(pattern(*d)).expect("built-in detector pattern")
        })
        .collect()
});

/// The regular expression of each detector (group 1, when present, is the
/// part that gets masked). Word boundaries are ASCII (`(?-u:\b)`) so the
/// fast DFA also runs on non-ASCII text.
pub fn pattern(d: Detector) -> &'static str {
    match d {
        Detector::BearerToken => r"(?i)(?-u:\b)bearer\s+([A-Za-z0-9\-._~+/]{8,}=*)",
        Detector::Jwt => r"(?-u:\b)eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        Detector::CloudKey => concat!(
            r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
            r"|(?-u:\b)AIza[0-9A-Za-z_-]{35}",
            r"|(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,255}(?-u:\b)",
            r"|(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
        ),
        Detector::SecretAssignment => concat!(
            r#"(?i)(?-u:\b)(?:password|passwd|pwd|secret|client_secret|api_?key|access_?key|"#,
            r#"secret_?key|aws_secret_access_key|access_token|auth_token|refresh_token|token)"#,
            r#"["']?\s*[=:]\s*["']?([^\s"'&,;\[][^\s"'&,;]{3,})"#
        ),
        // Runs of 13 or more digits in groups; `card_ranges` picks the cards
        // out of them.
        Detector::PaymentCard => r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,}(?-u:\b)",
        Detector::PrivateKey => concat!(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)",
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|$)"
        ),
        Detector::Email => concat!(
            r"(?i)(?-u:\b)[a-z0-9._%+-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
            r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}(?-u:\b)"
        ),
        Detector::Ipv4 => {
            r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)"
        }
        Detector::Ipv6 => {
            r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-f]{0,4})"
        }
        Detector::UsSsn => r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
        Detector::UkNino => {
            r"(?-u:\b)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?-u:\b)"
        }
    }
}

/// The cards in a run of digit groups (`2024 4111 1111 1111 1111` holds
/// one): consecutive groups with 13 to 19 digits in all, each group at
/// least 3 digits long when there are several, starting with 2-6 (the
/// issuers; rules out nanosecond timestamps), Luhn-valid. The longest card
/// from the leftmost group wins; searching whole groups keeps a number that
/// merely contains a card inside a longer digit string out.
fn card_ranges(base: usize, run: &str, out: &mut Vec<Range<usize>>) {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut start = None;
    for (i, b) in run.bytes().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                groups.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        groups.push(s..run.len());
    }
    let mut i = 0;
    while i < groups.len() {
        let mut best = None;
        let mut digits = 0;
        for j in i..groups.len() {
            digits += groups[j].len();
            if digits > 19 || (j > i && groups[i..=j].iter().any(|g| g.len() < 3)) {
                break;
            }
            let candidate = &run[groups[i].start..groups[j].end];
            if digits >= 13
                && matches!(candidate.as_bytes()[0], b'2'..=b'6')
                && luhn_valid(candidate)
            {
                best = Some(j);
            }
        }
        match best {
            Some(j) => {
                out.push(base + groups[i].start..base + groups[j].end);
                i = j + 1;
            }
            None => i += 1,
        }
    }
}

/// 13 to 19 digits (separators ignored) whose Luhn checksum is valid.
pub fn luhn_valid(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (0, _) => d,
            (_, dd) if dd > 9 => dd - 9,
            (_, dd) => dd,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Area 001-899 except 666, group 01-99, serial 0001-9999.
fn ssn_valid(candidate: &str) -> bool {
    let mut parts = candidate.split('-');
    let (Some(a), Some(g), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    a != "000" && a != "666" && !a.starts_with('9') && g != "00" && s != "0000"
}

/// Prefixes that are never issued.
fn nino_valid(candidate: &str) -> bool {
    let prefix = candidate.get(..2).unwrap_or("");
    !matches!(prefix, "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ")
}
