//! Rewrites the string leaves of JSON text in place: object keys, numbers,
//! literals and whitespace are copied byte for byte, so the result is valid
//! JSON whenever the input was, and unchanged leaves stay identical.

/// Calls `f` on the decoded text of every string value (not object keys)
/// and writes back what it returns. `Ok(None)`: nothing changed. `Err`:
/// the text is not JSON as far as strings go (unterminated string, bad
/// escape), left to the caller to treat as plain text.
#[allow(clippy::result_unit_err)]
pub fn redact_json_strings(
    json: &str,
    mut f: impl FnMut(&str) -> Option<String>,
) -> Result<Option<String>, ()> {
    let bytes = json.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `json` already in `out`
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        let end = string_end(bytes, start)?;
        i = end;
        if is_key(bytes, end) {
            continue;
        }
        let decoded = decode(&json[start + 1..end - 1])?;
        if let Some(new) = f(&decoded) {
            let o = out.get_or_insert_with(|| String::with_capacity(json.len()));
            o.push_str(&json[copied..start]);
            encode_into(o, &new);
            copied = end;
        }
    }
    Ok(out.map(|mut o| {
        o.push_str(&json[copied..]);
        o
    }))
}

/// Index just past the closing quote of the string opening at `start`.
fn string_end(bytes: &[u8], start: usize) -> Result<usize, ()> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(())
}

/// A string followed by `:` is an object key.
fn is_key(bytes: &[u8], mut i: usize) -> bool {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    bytes.get(i) == Some(&b':')
}

fn decode(s: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().ok_or(())? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if chars.next() != Some('\\') || chars.next() != Some('u') {
                        return Err(());
                    }
                    let lo = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(());
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                out.push(char::from_u32(code).ok_or(())?);
            }
            _ => return Err(()),
        }
    }
    Ok(out)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, ()> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.next().and_then(|c| c.to_digit(16)).ok_or(())?;
    }
    Ok(v)
}

/// Writes `s` as a JSON string, escaping as serde_json does.
fn encode_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
