//! Properties: planted secrets never survive, masking twice equals once,
//! text without matches is returned untouched.
use proptest::prelude::*;

use super::*;

/// One sample per default detector, as a sender would write it.
const SECRETS: [(&str, Detector); 8] = [
    ("4111 1111 1111 1111", Detector::PaymentCard),
    ("5555555555554444", Detector::PaymentCard),
    ("AKIAIOSFODNN7EXAMPLE", Detector::CloudKey),
    (
        "AIzaSyD-1234567890abcdefghijklmnopqrstu",
        Detector::CloudKey,
    ),
    ("Bearer abcdEFGH1234.xyz", Detector::BearerToken),
    (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-1",
        Detector::Jwt,
    ),
    ("password=hunter2hunter2", Detector::SecretAssignment),
    (
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----",
        Detector::PrivateKey,
    ),
];

/// Filler text: words, punctuation and digits that no detector matches
/// (digit runs end in a letter, so they stay too short for a card; no `@`,
/// no key prefixes).
fn filler() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            "[a-z]{1,8}",
            "[0-9]{1,4}[a-z]",
            Just(" ".to_owned()),
            Just(", ".to_owned()),
            Just("\n".to_owned()),
            Just("é".to_owned()),
            Just("\"".to_owned()),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// Every detector on; compiled once, the set of patterns is slow to build
/// in debug builds.
fn everything() -> &'static Redactor {
    static ALL: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(|| {
        let p = RedactionPolicy {
            detectors: Detector::ALL.iter().map(|d| d.name().to_owned()).collect(),
            ..RedactionPolicy::default()
        };
        match Redactor::compile(&p) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        }
    });
    &ALL
}

fn defaults() -> &'static Redactor {
    static DEFAULTS: std::sync::LazyLock<Redactor> =
        std::sync::LazyLock::new(Redactor::default_for_tenant);
    &DEFAULTS
}

fn redact(r: &Redactor, t: &str) -> String {
    r.redact_text(Location::Body, t, &mut Report::default())
        .unwrap_or_else(|| t.to_owned())
}

proptest! {
    #[test]
    fn planted_secrets_never_survive(
        before in filler(),
        after in filler(),
        which in proptest::collection::vec(0..SECRETS.len(), 1..4),
    ) {
        let mut text = before.clone();
        for i in &which {
            text.push(' ');
            text.push_str(SECRETS[*i].0);
            text.push(' ');
            text.push_str(&after);
        }
        let r = defaults();
        let out = redact(r, &text);
        for d in Detector::DEFAULTS {
            prop_assert!(d.find(&out).is_empty(), "{} survives in {out:?}", d.name());
        }
        for i in &which {
            let (secret, d) = SECRETS[*i];
            prop_assert!(!out.contains(secret), "{secret:?} survives in {out:?}");
            prop_assert!(out.contains(&d.replacement()));
        }
    }

    #[test]
    fn masking_is_idempotent(
        before in filler(),
        after in filler(),
        which in proptest::collection::vec(0..SECRETS.len(), 0..4),
        extra in prop_oneof![
            Just("a.b@example.org"),
            Just("192.168.0.1"),
            Just("2001:db8::1"),
            Just("123-45-6789"),
            Just("AB123456C"),
            Just(""),
        ],
    ) {
        let mut text = format!("{before} {extra} ");
        for i in &which {
            text.push_str(SECRETS[*i].0);
            text.push_str(&after);
        }
        let r = everything();
        let once = redact(r, &text);
        let mut rep = Report::default();
        prop_assert_eq!(r.redact_text(Location::Body, &once, &mut rep), None, "{:?}", once);
        prop_assert!(rep.is_empty());
        for d in Detector::ALL {
            prop_assert!(d.find(&once).is_empty(), "{} in {once:?}", d.name());
        }
    }

    #[test]
    fn text_without_matches_is_untouched(t in filler()) {
        let r = everything();
        let mut rep = Report::default();
        prop_assert_eq!(r.redact_text(Location::Body, &t, &mut rep), None);
        let json = format!("[{:?}, {{\"k\": {:?}}}, 12]", t, t);
        prop_assert_eq!(r.redact_json_body(&json, &mut rep), None);
        prop_assert!(rep.is_empty());
    }

    #[test]
    fn json_leaves_are_redacted_and_json_stays_valid(t in filler(), i in 0..SECRETS.len()) {
        let leaf = format!("{t} {} {t}", SECRETS[i].0);
        let json = format!("{{\"a\": [{leaf:?}, 1.5, true], \"b\": {t:?}}}");
        let r = defaults();
        let out = r.redact_json_body(&json, &mut Report::default()).unwrap_or(json);
        prop_assert!(!out.contains(SECRETS[i].0), "{}", out);
        let leaves = json::redact_json_strings(&out, |s| {
            assert!(Detector::DEFAULTS.iter().all(|d| d.find(s).is_empty()), "{s:?}");
            None
        });
        prop_assert_eq!(leaves, Ok(None));
        prop_assert!(out.ends_with(&format!(", 1.5, true], \"b\": {t:?}}}")), "{}", out);
    }
}
