//! Detectors (true and false positives), actions, validation.
use super::*;
use crate::redact::engine::glob;

fn policy(toml_text: &str) -> RedactionPolicy {
    #[derive(serde::Deserialize)]
    struct File {
        redaction: RedactionPolicy,
    }
    match toml::from_str::<File>(toml_text) {
        Ok(f) => f.redaction,
        Err(e) => panic!("{e}"),
    }
}

fn compile(toml_text: &str) -> Redactor {
    match Redactor::compile(&policy(toml_text)) {
        Ok(r) => r,
        Err(p) => panic!("{p:?}"),
    }
}

fn text(r: &Redactor, t: &str) -> String {
    let mut rep = Report::default();
    r.redact_text(Location::Body, t, &mut rep)
        .unwrap_or_else(|| t.to_owned())
}

#[test]
fn defaults_mask_credentials_but_not_personal_data() {
    let r = Redactor::default_for_tenant();
    assert_eq!(
        text(
            &r,
            "pay 4111111111111111 key AKIAIOSFODNN7EXAMPLE by a@b.io from 10.1.2.3"
        ),
        "pay [REDACTED:payment_card] key [REDACTED:cloud_key] by a@b.io from 10.1.2.3"
    );
    let mut rep = Report::default();
    assert_eq!(
        r.redact_text(Location::SpanName, "GET /users", &mut rep),
        None
    );
    assert!(rep.is_empty());
    assert!(r.disabled_defaults().is_empty());
}

#[test]
fn masking_that_exposes_another_secret_runs_again() {
    // Before the GCP key is masked, `AKIA` has no word boundary before it.
    let r = Redactor::default_for_tenant();
    let once = text(
        &r,
        "AIzaSyD-1234567890abcdefghijklmnopqrstuAKIAIOSFODNN7EXAMPLE",
    );
    assert_eq!(once, "[REDACTED:cloud_key][REDACTED:cloud_key]");
    assert_eq!(
        r.redact_text(Location::Body, &once, &mut Report::default()),
        None
    );
}

#[test]
fn defaults_are_turned_off_only_explicitly_and_visibly() {
    let r =
        compile("[redaction]\ndisable_defaults = [\"payment_card\"]\ndetectors = [\"email\"]\n");
    assert_eq!(r.disabled_defaults(), ["payment_card"]);
    assert_eq!(
        text(&r, "4111111111111111 a@b.io Bearer abcdefgh12"),
        "4111111111111111 [REDACTED:email] Bearer [REDACTED:bearer_token]"
    );
    assert!(r.rule_names().any(|n| n == "detector:email"));
    assert!(!r.rule_names().any(|n| n == "default:payment_card"));
}

#[test]
fn mask_rule_with_keys_and_locations() {
    let r = compile(
        r#"
[redaction]
[[redaction.rules]]
name = "orders"
match = { pattern = "ORD-[0-9]{6}" }
action = "mask"
replacement = "[ORDER]"
keys = ["order.*"]
applies_to = ["record_attributes", "body"]
"#,
    );
    let mut rep = Report::default();
    let out = r.redact_attribute(
        Location::RecordAttributes,
        "Order.Id",
        Some("x ORD-123456"),
        &mut rep,
    );
    assert_eq!(out, AttrOutcome::Replace("x [ORDER]".into()));
    let other_key = r.redact_attribute(
        Location::RecordAttributes,
        "note",
        Some("ORD-123456"),
        &mut rep,
    );
    assert_eq!(other_key, AttrOutcome::Keep);
    let other_loc = r.redact_attribute(
        Location::ResourceAttributes,
        "order.id",
        Some("ORD-123456"),
        &mut rep,
    );
    assert_eq!(other_loc, AttrOutcome::Keep);
    assert_eq!(
        r.redact_text(Location::Body, "ORD-000001 shipped", &mut rep)
            .as_deref(),
        Some("[ORDER] shipped")
    );
    assert_eq!(rep.get("orders").values_masked, 2);
}

#[test]
fn whole_value_mask_and_drop_attribute() {
    let r = compile(
        r#"
[redaction]
[[redaction.rules]]
name = "pw"
action = "mask"
keys = ["*password*"]
[[redaction.rules]]
name = "no-debug"
action = "drop_attribute"
keys = ["debug.*"]
[[redaction.rules]]
name = "no-internal"
action = "drop_attribute"
match = { pattern = "^internal-" }
"#,
    );
    let mut rep = Report::default();
    let loc = Location::ScopeAttributes;
    assert_eq!(
        r.redact_attribute(loc, "db.password", Some("s3cr3t"), &mut rep),
        AttrOutcome::Replace("[REDACTED]".into())
    );
    assert_eq!(
        r.redact_attribute(loc, "db.password", Some("[REDACTED]"), &mut rep),
        AttrOutcome::Keep
    );
    assert_eq!(
        r.redact_attribute(loc, "debug.x", None, &mut rep),
        AttrOutcome::Drop
    );
    assert_eq!(
        r.redact_attribute(loc, "host", Some("internal-1"), &mut rep),
        AttrOutcome::Drop
    );
    assert_eq!(
        r.redact_attribute(loc, "host", Some("web-1"), &mut rep),
        AttrOutcome::Keep
    );
    assert_eq!(rep.get("no-debug").attributes_dropped, 1);
    assert_eq!(rep.get("no-internal").attributes_dropped, 1);
    assert_eq!(rep.get("pw").values_masked, 1);
}

#[test]
fn allow_list_keeps_only_listed_keys_and_fails_closed() {
    let r = compile(
        "[redaction]\n[[redaction.rules]]\nname = \"allow\"\naction = \"allow_keys\"\nkeys = [\"service.name\", \"http.*\"]\napplies_to = [\"record_attributes\"]\n",
    );
    let mut rep = Report::default();
    let loc = Location::RecordAttributes;
    assert_eq!(
        r.redact_attribute(loc, "http.method", Some("GET"), &mut rep),
        AttrOutcome::Keep
    );
    assert_eq!(
        r.redact_attribute(loc, "user.id", Some("7"), &mut rep),
        AttrOutcome::Drop
    );
    assert_eq!(
        r.redact_attribute(Location::ResourceAttributes, "user.id", Some("7"), &mut rep),
        AttrOutcome::Keep
    );
    let none = compile(
        "[redaction]\n[[redaction.rules]]\nname = \"none\"\naction = \"allow_keys\"\nkeys = []\n",
    );
    for key in ["service.name", "a", ""] {
        assert_eq!(
            none.redact_attribute(loc, key, Some("v"), &mut rep),
            AttrOutcome::Drop
        );
    }
    assert_eq!(rep.get("none").attributes_dropped, 3);
}

#[test]
fn hash_is_keyed_truncated_and_stable() {
    let r = compile(
        r#"
[redaction]
hash_secret = "0123456789abcdef-tenant-a"
[[redaction.rules]]
name = "user"
action = "hash"
keys = ["user.id"]
hash_length = 16
[[redaction.rules]]
name = "mails"
action = "hash"
match = { detector = "email" }
"#,
    );
    let mut rep = Report::default();
    let loc = Location::RecordAttributes;
    let AttrOutcome::Replace(a) = r.redact_attribute(loc, "user.id", Some("42"), &mut rep) else {
        panic!("not hashed")
    };
    assert_eq!(a.len(), 16);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        r.redact_attribute(loc, "user.id", Some("42"), &mut rep),
        AttrOutcome::Replace(a.clone())
    );
    let other = compile(
        "[redaction]\nhash_secret = \"another-secret-of-tenant-b\"\n[[redaction.rules]]\nname = \"user\"\naction = \"hash\"\nkeys = [\"user.id\"]\nhash_length = 16\n",
    );
    assert_ne!(
        other.redact_attribute(loc, "user.id", Some("42"), &mut rep),
        AttrOutcome::Replace(a)
    );
    let body = text(&r, "from a@b.io.");
    assert!(
        body.starts_with("from ") && body.ends_with('.') && body.len() == 5 + 64 + 1,
        "{body}"
    );
    assert_eq!(rep.get("user").values_hashed, 3);
}

#[test]
fn drop_record_rules() {
    let r = compile(
        r#"
[redaction]
[[redaction.rules]]
name = "health"
action = "drop_record"
match = { pattern = "^/healthz$" }
keys = ["url.path"]
[[redaction.rules]]
name = "canary"
action = "drop_record"
keys = ["synthetic"]
applies_to = ["resource_attributes"]
"#,
    );
    let mut rep = Report::default();
    let rec = |loc, k, v| vec![(loc, Some(k), Some(v))];
    assert_eq!(
        r.drops_record(
            &rec(Location::RecordAttributes, "url.path", "/healthz"),
            &mut rep
        ),
        Some("health")
    );
    assert_eq!(
        r.drops_record(
            &rec(Location::RecordAttributes, "url.path", "/api"),
            &mut rep
        ),
        None
    );
    assert_eq!(
        r.drops_record(&rec(Location::RecordAttributes, "synthetic", "1"), &mut rep),
        None
    );
    assert_eq!(
        r.drops_record(
            &rec(Location::ResourceAttributes, "synthetic", "1"),
            &mut rep
        ),
        Some("canary")
    );
    // Bodies have no key: the pattern alone decides.
    assert_eq!(
        r.drops_record(&[(Location::Body, None, Some("/healthz"))], &mut rep),
        Some("health")
    );
    assert_eq!(rep.get("health").records_dropped, 2);
    assert_eq!(rep.total().records_dropped, 3);
}

#[test]
fn json_bodies_keep_structure_and_mask_string_leaves_only() {
    let r = compile("[redaction]\ndetectors = [\"email\"]\n");
    let mut rep = Report::default();
    let json = r#"{"user":"a@b.io","n":4111111111111111,"list":["x","Bearer abcdefghij\n",{"a@b.io":true}],"esc":"q\"\u00e9"}"#;
    let out = r.redact_json_body(json, &mut rep);
    assert_eq!(
        out.as_deref(),
        Some(
            r#"{"user":"[REDACTED:email]","n":4111111111111111,"list":["x","Bearer [REDACTED:bearer_token]\n",{"a@b.io":true}],"esc":"q\"\u00e9"}"#
        )
    );
    assert_eq!(
        r.redact_json_body(out.as_deref().unwrap_or(""), &mut rep),
        None
    );
    assert_eq!(r.redact_json_body(r#"["a", 1, null]"#, &mut rep), None);
    // Not JSON: redacted as text, so nothing hides behind a broken quote.
    assert_eq!(
        r.redact_json_body("[\"a@b.io", &mut rep).as_deref(),
        Some("[\"[REDACTED:email]")
    );
    assert_eq!(rep.get("detector:email").values_masked, 2);
    assert_eq!(rep.get("default:bearer_token").values_masked, 1);
}

#[test]
fn problems_name_the_setting() {
    let long = "a".repeat(MAX_PATTERN_LEN + 1);
    let p = policy(&format!(
        r#"
[redaction]
detectors = ["emial"]
disable_defaults = ["email", "nope"]
hash_secret = "short"
[[redaction.rules]]
name = "bad-regex"
match = {{ pattern = "(unclosed" }}
action = "mask"
[[redaction.rules]]
name = "long"
match = {{ pattern = "{long}" }}
action = "mask"
[[redaction.rules]]
name = "allow"
action = "allow_keys"
[[redaction.rules]]
name = "allow"
action = "mask"
[[redaction.rules]]
name = "det"
match = {{ detector = "ssn" }}
action = "hash"
hash_length = 4
[[redaction.rules]]
name = "empty"
match = {{ pattern = "x*" }}
action = "drop_record"
replacement = "y"
[[redaction.rules]]
name = "loops"
match = {{ pattern = "[0-9]+" }}
action = "mask"
replacement = "<0>"
"#
    ));
    let all = p.problems().join("\n");
    for needle in [
        "redaction.detectors: unknown detector \"emial\"",
        "redaction.disable_defaults: \"email\" is not on by default",
        "redaction.disable_defaults: unknown detector \"nope\"",
        "redaction.hash_secret must be at least 16 bytes, got 5",
        "redaction.rules[0] (\"bad-regex\").match.pattern: regex parse error",
        "redaction.rules[1] (\"long\").match.pattern: pattern is 1025 bytes",
        "redaction.rules[2] (\"allow\").keys is required for allow_keys",
        "redaction.rules[3] (\"allow\").name is used by an earlier rule",
        "redaction.rules[3] (\"allow\"): action Mask needs `match` or `keys`",
        "redaction.rules[4] (\"det\").match.detector: unknown detector \"ssn\"",
        "redaction.rules[4] (\"det\").hash_length must be in 8..=64, got 4",
        "redaction.rules[5] (\"empty\").match.pattern: pattern \"x*\" matches the empty string",
        "redaction.rules[5] (\"empty\").replacement is only used by mask",
        "redaction.rules[6] (\"loops\").replacement \"<0>\" contains a match",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
    assert!(Redactor::compile(&p).is_err());
    let both = policy("[redaction]\ndetectors = [\"jwt\"]\ndisable_defaults = [\"jwt\"]\n");
    assert!(both
        .problems()
        .join("\n")
        .contains("\"jwt\" is also listed in redaction.detectors"));
    let no_secret = policy(
        "[redaction]\n[[redaction.rules]]\nname = \"h\"\naction = \"hash\"\nkeys = [\"k\"]\n",
    );
    assert!(no_secret
        .problems()
        .join("\n")
        .contains("hash needs redaction.hash_secret"));
    let unknown = toml::from_str::<RedactionPolicy>("detector = []\n");
    assert!(unknown.is_err());
    let unknown_in_rule = toml::from_str::<RedactionPolicy>(
        "[[rules]]\nname = \"a\"\naction = \"mask\"\nkey = [\"x\"]\n",
    );
    assert!(unknown_in_rule.is_err());
    let body_drop = policy(
        "[redaction]\n[[redaction.rules]]\nname = \"d\"\naction = \"drop_attribute\"\nkeys = [\"k\"]\napplies_to = [\"body\"]\n",
    );
    assert!(body_drop.problems().join("\n").contains(
        "redaction.rules[0] (\"d\").applies_to: DropAttribute applies to attribute locations only"
    ));
}

#[test]
fn huge_regexes_are_refused_by_the_size_limit() {
    let p = policy("[redaction]\n[[redaction.rules]]\nname = \"big\"\nmatch = { pattern = \"\\\\w{500}\\\\w{500}\" }\naction = \"mask\"\n");
    let all = p.problems().join("\n");
    assert!(
        all.contains("redaction.rules[0] (\"big\").match.pattern") && all.contains("size limit"),
        "{all}"
    );
}

#[test]
fn the_secret_stays_out_of_debug_output() {
    let p = policy("[redaction]\nhash_secret = \"0123456789abcdef-secret\"\n");
    assert!(!format!("{p:?}").contains("0123456789abcdef"));
    let back: RedactionPolicy =
        toml::from_str(&toml::to_string(&p).unwrap_or_default()).unwrap_or_default();
    assert_eq!(back, p);
}

#[test]
fn redactors_are_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Redactor>();
    send_sync::<Report>();
}

#[test]
fn key_globs() {
    assert!(glob("http.*", "HTTP.method"));
    assert!(glob("*token*", "x-auth-token-id"));
    assert!(glob("a*b*c", "aXbYbc"));
    assert!(!glob("http.*", "https.x"));
    assert!(!glob("service.name", "service.name.x"));
}
