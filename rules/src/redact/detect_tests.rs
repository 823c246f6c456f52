//! Each detector: what it finds and, as important, what it leaves alone.
use super::*;

fn found(d: Detector, text: &str) -> Vec<&str> {
    d.find(text).into_iter().map(|r| &text[r]).collect()
}

#[test]
fn every_builtin_pattern_compiles() {
    for d in Detector::ALL {
        assert!(d.find("").is_empty(), "{}", d.name());
        assert_eq!(Detector::from_name(d.name()), Some(d));
    }
}

#[test]
fn payment_cards_need_a_valid_luhn_checksum() {
    let d = Detector::PaymentCard;
    assert_eq!(found(d, "card 4111111111111111 ok"), ["4111111111111111"]);
    assert_eq!(found(d, "4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
    assert_eq!(found(d, "amex 3782-822463-10005."), ["3782-822463-10005"]);
    assert_eq!(found(d, "mc 5555555555554444"), ["5555555555554444"]);
    assert_eq!(found(d, "20 4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
    assert_eq!(
        found(d, "1234 5678 4111 1111 1111 1111"),
        ["4111 1111 1111 1111"]
    );
    // Luhn-invalid, too short, a nanosecond timestamp, part of a word.
    assert!(found(d, "4111111111111112").is_empty());
    assert!(found(d, "411111111111").is_empty());
    assert!(found(d, "1700000000000000000").is_empty());
    assert!(found(d, "id=ab4111111111111111cd").is_empty());
}

#[test]
fn emails() {
    let d = Detector::Email;
    assert_eq!(
        found(d, "to: Jane.Doe+x@mail.example.co.uk,"),
        ["Jane.Doe+x@mail.example.co.uk"]
    );
    assert!(found(d, "user@localhost or @handle or a@b").is_empty());
}

#[test]
fn ip_addresses() {
    assert_eq!(found(Detector::Ipv4, "from 10.0.0.255:80"), ["10.0.0.255"]);
    assert!(found(Detector::Ipv4, "256.1.1.1 and 1.2.3").is_empty());
    let d = Detector::Ipv6;
    assert_eq!(
        found(d, "peer [2001:db8::8a2e:370:7334]:443"),
        ["2001:db8::8a2e:370:7334"]
    );
    assert_eq!(found(d, "fe80::1 up"), ["fe80::1"]);
    assert_eq!(found(d, "::ffff:192.0.2.1"), ["::ffff:192.0.2.1"]);
    // Times, MAC addresses and code paths are not addresses.
    assert!(found(d, "at 10:33:28 mac 00:1a:2b:3c:4d:5e std::vec::Vec").is_empty());
}

#[test]
fn tokens_and_keys() {
    assert_eq!(
        found(
            Detector::BearerToken,
            "Authorization: Bearer abc.DEF-123_xyz"
        ),
        ["abc.DEF-123_xyz"]
    );
    assert!(found(Detector::BearerToken, "bearer of bad news").is_empty());
    let jwt =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert_eq!(found(Detector::Jwt, &format!("t={jwt};")), [jwt]);
    assert!(found(Detector::Jwt, "eyJ.eyJ.").is_empty());
    let c = Detector::CloudKey;
    assert_eq!(
        found(c, "key AKIAIOSFODNN7EXAMPLE!"),
        ["AKIAIOSFODNN7EXAMPLE"]
    );
    assert_eq!(found(c, "ASIAY34FZKBOKMUTVV7A"), ["ASIAY34FZKBOKMUTVV7A"]);
    let gcp = "AIzaSyD-1234567890abcdefghijklmnopqrstu";
    assert_eq!(found(c, &format!("k={gcp}")), [gcp]);
    assert!(found(c, "AKIA1234 and XAKIAIOSFODNN7EXAMPLE").is_empty());
    let s = Detector::SecretAssignment;
    assert_eq!(found(s, "login password=hunter22 ok"), ["hunter22"]);
    assert_eq!(found(s, r#"{"api_key": "abcd1234"}"#), ["abcd1234"]);
    assert!(found(s, "password reset sent").is_empty());
}

#[test]
fn private_keys_whole_or_truncated() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    assert_eq!(found(Detector::PrivateKey, &format!("a {pem} b")), [pem]);
    let cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg";
    assert_eq!(found(Detector::PrivateKey, &format!("x {cut}")), [cut]);
    assert!(found(Detector::PrivateKey, "-----BEGIN CERTIFICATE-----").is_empty());
}

#[test]
fn national_ids() {
    assert_eq!(found(Detector::UsSsn, "ssn 123-45-6789."), ["123-45-6789"]);
    assert!(found(
        Detector::UsSsn,
        "000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000"
    )
    .is_empty());
    assert_eq!(
        found(Detector::UkNino, "NI AB 12 34 56 C"),
        ["AB 12 34 56 C"]
    );
    assert_eq!(found(Detector::UkNino, "JG103759A"), ["JG103759A"]);
    assert!(found(Detector::UkNino, "GB123456A DA123456A AB123456E").is_empty());
}
