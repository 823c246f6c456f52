//! Rendering OTLP `AnyValue`s as text or canonical JSON, and the builder of
//! `Map<Utf8, Utf8>` attribute columns.
use std::collections::HashSet;
use std::fmt::Write as _;

use arrow::array::{MapArray, MapBuilder, StringBuilder};
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

/// Above this many attributes, duplicate detection uses a hash set instead of
/// a quadratic scan (which is faster for the usual handful of attributes).
const DEDUP_SCAN_LIMIT: usize = 16;

/// The `body_type` name of an `AnyValue` kind.
pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::StringValue(_) => "string",
        Value::BoolValue(_) => "bool",
        Value::IntValue(_) => "int",
        Value::DoubleValue(_) => "double",
        Value::ArrayValue(_) => "array",
        Value::KvlistValue(_) => "kvlist",
        Value::BytesValue(_) => "bytes",
        Value::StringValueStrindex(_) => "strindex",
    }
}

/// Appends `v` as text: strings raw, scalars as their JSON text (non-finite
/// doubles as `NaN`, `Infinity`, `-Infinity`), bytes as base64, arrays and
/// key-value lists as JSON.
pub(crate) fn write_text(v: &Value, out: &mut String) {
    match v {
        Value::StringValue(s) => out.push_str(s),
        Value::ArrayValue(_) | Value::KvlistValue(_) => write_json(v, out),
        Value::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
        Value::DoubleValue(d) if d.is_nan() => out.push_str("NaN"),
        Value::DoubleValue(d) if d.is_infinite() => {
            out.push_str(if *d > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::BoolValue(_)
        | Value::IntValue(_)
        | Value::DoubleValue(_)
        | Value::StringValueStrindex(_) => write_json(v, out),
    }
}

/// Appends `v` as canonical JSON: ints as numbers, doubles in shortest
/// round-trip form (non-finite ones as the strings "NaN", "Infinity",
/// "-Infinity", as the protobuf JSON mapping spells them), bytes as a base64
/// string, arrays as arrays, key-value lists as objects (in sender order).
pub(crate) fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::StringValue(s) => write_json_str(s, out),
        Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        Value::DoubleValue(d) => write_double(*d, out),
        Value::BytesValue(b) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Value::ArrayValue(a) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_opt(item.value.as_ref(), out);
            }
            out.push(']');
        }
        Value::KvlistValue(kvs) => {
            out.push('{');
            for (i, kv) in kvs.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(&kv.key, out);
                out.push(':');
                write_json_opt(kv.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
    }
}

fn write_json_opt(v: Option<&Value>, out: &mut String) {
    match v {
        Some(v) => write_json(v, out),
        None => out.push_str("null"),
    }
}

fn write_double(d: f64, out: &mut String) {
    match serde_json::Number::from_f64(d) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None if d.is_nan() => out.push_str("\"NaN\""),
        None if d > 0.0 => out.push_str("\"Infinity\""),
        None => out.push_str("\"-Infinity\""),
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Text of the last attribute named `key`, if present with a value.
pub(crate) fn find_text<'a>(
    kvs: &'a [KeyValue],
    key: &str,
    scratch: &'a mut String,
) -> Option<&'a str> {
    let value = kvs
        .iter()
        .rev()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    if let Value::StringValue(s) = value {
        return Some(s);
    }
    scratch.clear();
    write_text(value, scratch);
    Some(scratch)
}

/// Builds a `Map<Utf8, Utf8>` column of attribute sets; a key given twice
/// keeps its last value.
#[derive(Debug)]
pub(crate) struct AttrsBuilder {
    map: MapBuilder<StringBuilder, StringBuilder>,
    scratch: String,
}

impl AttrsBuilder {
    pub(crate) fn new() -> Self {
        // MapBuilder's defaults ("entries", non-null "keys", nullable
        // "values") are exactly `bulkhead_store::schema::attributes_map_type`.
        Self {
            map: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            scratch: String::new(),
        }
    }

    /// Appends one map holding `kvs`.
    pub(crate) fn append(&mut self, kvs: &[KeyValue]) {
        if kvs.len() <= DEDUP_SCAN_LIMIT {
            for (i, kv) in kvs.iter().enumerate() {
                if !kvs[i + 1..].iter().any(|later| later.key == kv.key) {
                    self.entry(kv);
                }
            }
        } else {
            // Walk backwards so the first sighting of a key is its last value.
            let mut seen = HashSet::with_capacity(kvs.len());
            let keep: Vec<bool> = kvs
                .iter()
                .rev()
                .map(|kv| seen.insert(kv.key.as_str()))
                .collect();
            for (kv, keep) in kvs.iter().zip(keep.iter().rev()) {
                if *keep {
                    self.entry(kv);
                }
            }
        }
        // Appending a valid entry list cannot fail: offsets are managed here.
        let _ = self.map.append(true);
    }

    fn entry(&mut self, kv: &KeyValue) {
        let (keys, values) = self.map.entries();
        keys.append_value(&kv.key);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            None => values.append_null(),
            Some(Value::StringValue(s)) => values.append_value(s),
            Some(v) => {
                self.scratch.clear();
                write_text(v, &mut self.scratch);
                values.append_value(&self.scratch);
            }
        }
    }

    pub(crate) fn finish(&mut self) -> MapArray {
        self.map.finish()
    }
}

/// A body or attribute value rendered for a `Utf8` column.
pub(crate) fn render_body<'a>(
    body: Option<&'a AnyValue>,
    scratch: &'a mut String,
) -> Option<(&'a str, &'static str)> {
    let v = body?.value.as_ref()?;
    let kind = kind_name(v);
    if let Value::StringValue(s) = v {
        return Some((s, kind));
    }
    scratch.clear();
    write_json(v, scratch);
    Some((scratch, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, StringArray};
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    pub(crate) fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            key_strindex: 0,
        }
    }

    fn text(v: Value) -> String {
        let mut s = String::new();
        write_text(&v, &mut s);
        s
    }

    #[test]
    fn scalars_render_as_text() {
        assert_eq!(text(Value::StringValue("a \"b\"".into())), "a \"b\"");
        assert_eq!(text(Value::IntValue(-42)), "-42");
        assert_eq!(text(Value::DoubleValue(637.704)), "637.704");
        assert_eq!(text(Value::DoubleValue(5.0)), "5.0");
        assert_eq!(text(Value::DoubleValue(1e300)), "1e+300");
        assert_eq!(text(Value::DoubleValue(f64::NAN)), "NaN");
        assert_eq!(text(Value::DoubleValue(f64::NEG_INFINITY)), "-Infinity");
        let mut json = String::new();
        write_json(&Value::DoubleValue(f64::INFINITY), &mut json);
        assert_eq!(json, "\"Infinity\"");
        assert_eq!(text(Value::BoolValue(true)), "true");
        assert_eq!(
            text(Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])),
            "3q2+7w=="
        );
    }

    #[test]
    fn nested_values_render_as_json() {
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("s", Value::StringValue("x\n\u{1}é".into())),
                kv("i", Value::IntValue(7)),
                kv(
                    "a",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::BoolValue(false)),
                            },
                            AnyValue { value: None },
                            AnyValue {
                                value: Some(Value::BytesValue(vec![1, 2])),
                            },
                            AnyValue {
                                value: Some(Value::DoubleValue(0.5)),
                            },
                        ],
                    }),
                ),
                KeyValue {
                    key: "empty".into(),
                    value: None,
                    key_strindex: 0,
                },
            ],
        });
        let json = text(nested);
        assert_eq!(
            json,
            r#"{"s":"x\n\u0001é","i":7,"a":[false,null,"AQI=",0.5],"empty":null}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["a"][3], 0.5);
    }

    #[test]
    fn map_keeps_last_duplicate() {
        for n in [3, DEDUP_SCAN_LIMIT + 5] {
            let mut kvs: Vec<KeyValue> = (0..n)
                .map(|i| kv(&format!("k{i}"), Value::IntValue(i as i64)))
                .collect();
            kvs.push(kv("k1", Value::StringValue("last".into())));
            kvs.push(KeyValue {
                key: "nil".into(),
                value: None,
                key_strindex: 0,
            });
            let mut b = AttrsBuilder::new();
            b.append(&kvs);
            b.append(&[]);
            let map = b.finish();
            assert_eq!(map.len(), 2);
            assert_eq!(map.value_length(1), 0);
            let entries = map.value(0);
            let keys = entries
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let values = entries
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert_eq!(keys.len(), n + 1, "n={n}");
            let k1: Vec<_> = (0..keys.len()).filter(|&i| keys.value(i) == "k1").collect();
            assert_eq!(k1.len(), 1);
            assert_eq!(values.value(k1[0]), "last");
            assert_eq!(keys.value(0), "k0");
            assert_eq!(values.value(0), "0");
            assert!(values.is_null(keys.len() - 1));
        }
    }

    #[test]
    fn map_type_matches_store_schema() {
        let mut b = AttrsBuilder::new();
        b.append(&[]);
        assert_eq!(
            b.finish().data_type(),
            &bulkhead_store::schema::attributes_map_type()
        );
    }

    #[test]
    fn body_kinds() {
        let mut s = String::new();
        let body = AnyValue {
            value: Some(Value::IntValue(3)),
        };
        assert_eq!(render_body(Some(&body), &mut s), Some(("3", "int")));
        assert_eq!(render_body(None, &mut s), None);
        assert_eq!(render_body(Some(&AnyValue { value: None }), &mut s), None);
    }

    #[test]
    fn find_text_uses_last() {
        let kvs = vec![
            kv("service.name", Value::StringValue("a".into())),
            kv("service.name", Value::IntValue(9)),
        ];
        let mut s = String::new();
        assert_eq!(find_text(&kvs, "service.name", &mut s), Some("9"));
        assert_eq!(find_text(&kvs, "missing", &mut s), None);
    }
}
