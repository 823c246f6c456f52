//! The one parser of durations written in configuration and policy files
//! (`"30s"`, `"15m"`, `"12h"`, `"30d"`, `"1h 30m"`), on the `humantime`
//! crate; used by tenant policies and the server configuration alike.
use std::time::Duration;

/// Parses a duration such as `"500ms"`, `"30s"`, `"15m"`, `"12h"` or
/// `"30d"`; the error names the text and shows the expected form.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("duration {s:?} is not understood ({e}); write e.g. \"30s\", \"15m\", \"12h\" or \"30d\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_junk_is_named() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_duration(" 250ms ").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("1h 30m").unwrap(),
            Duration::from_secs(5_400)
        );
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("\"30\""), "{e}");
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
