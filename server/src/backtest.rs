//! `bulkhead anomaly backtest`: runs exactly the streaming detector over a
//! CSV series, point by point, so operators can tune settings against their
//! own history.
//!
//! Input: a header `timestamp,value`, then one point per line; timestamps in
//! RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC). Output:
//! `timestamp,value,score,anomaly,expected,lower,upper`.
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use bulkhead_rules::anomaly::{Detector, DetectorSettings};

/// What a backtest did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub points: usize,
    pub anomalies: usize,
    /// Lines skipped, with their line number and why.
    pub skipped: Vec<(usize, String)>,
}

/// Detector settings from `--settings`: a TOML file, or inline
/// `key=value,key=value` (e.g. `sensitivity=0.7,seasonality=daily`).
pub fn parse_settings(arg: Option<&str>) -> Result<DetectorSettings, String> {
    let Some(arg) = arg else {
        return Ok(DetectorSettings::default());
    };
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))?
    } else {
        arg.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--settings: {pair:?} is not key=value"))?;
                let (k, v) = (k.trim(), v.trim());
                let literal = v.parse::<f64>().is_ok() || v == "true" || v == "false";
                Ok(if literal {
                    format!("{k} = {v}\n")
                } else {
                    format!("{k} = {v:?}\n")
                })
            })
            .collect::<Result<String, String>>()?
    };
    let settings: DetectorSettings =
        toml::from_str(&text).map_err(|e| format!("--settings: {}", e.message()))?;
    settings
        .validate()
        .map_err(|e| format!("--settings: {e}"))?;
    Ok(settings)
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().timestamp())
        .map_err(|_| format!("timestamp {s:?} is neither RFC 3339 nor YYYY-MM-DD HH:MM:SS"))
}

/// Scores `input` into `output`.
pub fn run(input: &Path, output: &Path, settings: &DetectorSettings) -> Result<Summary, String> {
    let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut lines = BufReader::new(file).lines();
    let header = lines
        .next()
        .ok_or_else(|| {
            format!(
                "{}: empty file; expected a header 'timestamp,value'",
                input.display()
            )
        })?
        .map_err(|e| format!("{}: {e}", input.display()))?;
    let cols: Vec<String> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    if cols != ["timestamp", "value"] {
        return Err(format!(
            "{}: line 1: header must be 'timestamp,value', got {header:?}",
            input.display()
        ));
    }
    let out = std::fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let mut out = BufWriter::new(out);
    let werr = |e: std::io::Error| format!("{}: {e}", output.display());
    writeln!(out, "timestamp,value,score,anomaly,expected,lower,upper").map_err(werr)?;
    let mut detector = Detector::new(settings);
    let mut summary = Summary::default();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line.map_err(|e| format!("{}: line {n}: {e}", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line
            .split_once(',')
            .ok_or_else(|| "expected 'timestamp,value'".to_string())
            .and_then(|(t, v)| {
                let secs = parse_time(t.trim())?;
                let value: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("value {:?} is not a number", v.trim()))?;
                Ok((t.trim().to_string(), secs, value))
            });
        let (ts, secs, value) = match parsed {
            Ok(p) => p,
            Err(e) => {
                summary.skipped.push((n, e));
                continue;
            }
        };
        let s = detector.observe(secs, value);
        summary.points += 1;
        summary.anomalies += usize::from(s.anomaly);
        writeln!(
            out,
            "{ts},{value},{:.6},{},{},{},{}",
            s.score, s.anomaly, s.expected, s.lower, s.upper
        )
        .map_err(werr)?;
    }
    out.flush().map_err(werr)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_inline_and_refuse_unknowns() {
        let s =
            parse_settings(Some("sensitivity=0.9, seasonality=daily,warmup_points=30")).unwrap();
        assert_eq!(s.sensitivity, 0.9);
        assert_eq!(s.warmup_points, 30);
        assert!(parse_settings(Some("sensitivty=0.9"))
            .unwrap_err()
            .contains("sensitivty"));
        assert!(parse_settings(Some("sensitivity=4"))
            .unwrap_err()
            .contains("sensitivity"));
        assert!(parse_settings(Some("nonsense"))
            .unwrap_err()
            .contains("key=value"));
    }

    #[test]
    fn both_timestamp_forms_parse() {
        assert_eq!(parse_time("2025-01-01T00:01:00Z").unwrap(), 1_735_689_660);
        assert_eq!(parse_time("2025-01-01 00:01:00").unwrap(), 1_735_689_660);
        assert!(parse_time("01/01/2025").is_err());
    }

    #[test]
    fn a_spike_is_scored_and_bad_lines_are_skipped_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let mut text = String::from("timestamp,value\n");
        for m in 0..300 {
            let v = if m == 250 {
                500.0
            } else {
                100.0 + (m % 7) as f64
            };
            text.push_str(&format!("2025-01-01 {:02}:{:02}:00,{v}\n", m / 60, m % 60));
        }
        text.push_str("2025-01-01 05:00:00,oops\n");
        std::fs::write(&input, text).unwrap();
        let output = dir.path().join("out.csv");
        let summary = run(&input, &output, &DetectorSettings::default()).unwrap();
        assert_eq!(summary.points, 300);
        assert_eq!(summary.anomalies, 1);
        assert_eq!(summary.skipped.len(), 1);
        assert_eq!(summary.skipped[0].0, 302);
        assert!(summary.skipped[0].1.contains("oops"));
        let out = std::fs::read_to_string(&output).unwrap();
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("timestamp,value,score,anomaly,expected,lower,upper")
        );
        let spike = out
            .lines()
            .find(|l| l.starts_with("2025-01-01 04:10:00"))
            .unwrap();
        let fields: Vec<&str> = spike.split(',').collect();
        assert_eq!(fields[1], "500");
        assert_eq!(fields[3], "true");
        let score: f64 = fields[2].parse().unwrap();
        assert!(score > 0.5 && score <= 1.0);
    }

    #[test]
    fn a_wrong_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "time,val\n").unwrap();
        let e = run(
            &input,
            &dir.path().join("o.csv"),
            &DetectorSettings::default(),
        )
        .unwrap_err();
        assert!(e.contains("line 1") && e.contains("timestamp,value"), "{e}");
    }
}
