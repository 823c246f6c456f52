//! OTLP/JSON floating-point fields as the protobuf JSON mapping writes them.
//!
//! The mapping encodes a `double` as a JSON number or, for values a number
//! cannot carry, as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`; a
//! parser also accepts a number in a string (`"1.5"`). The OTLP message
//! types deserialize most of their `double` fields (an attribute's
//! `doubleValue`, a data point's `asDouble`, a histogram's `sum`, `min`,
//! `max` and `explicitBounds`) as plain numbers, so one gauge reading `NaN`
//! would fail its metric or the whole request.
//!
//! [`from_slice`] reads a message through a wrapper around serde_json's
//! deserializer that, at every depth, reads such a string as the number it
//! names in two places: wherever the message asks for an `f64`, and under
//! the keys that OTLP uses only for doubles ([`DOUBLE_KEYS`]). The second
//! is needed because a metric's kind and a data point's value are
//! flattened oneofs: serde first buffers them without knowing their types,
//! and reads the buffer later without this wrapper. Everything else passes
//! through unchanged.
use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The OTLP/JSON keys whose values are doubles (or arrays of doubles:
/// `explicitBounds`) wherever they occur in a logs, traces or metrics
/// request.
pub(super) const DOUBLE_KEYS: &[&str] = &[
    "doubleValue",
    "asDouble",
    "sum",
    "min",
    "max",
    "explicitBounds",
    "zeroThreshold",
    "quantile",
    "value",
];

/// What the value under the key just read may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Anything: passed through as read.
    Plain,
    /// Under one of [`DOUBLE_KEYS`]: a string naming a number is read as
    /// that number; anything else passes through (a double field refuses
    /// it, an unknown field of that name is ignored whatever it holds).
    Double,
    /// A data point's or exemplar's `asDouble`, the double of their value
    /// oneof: a number or one of the mapping's strings, nothing else.
    OneofDouble,
    /// Their `asInt`: an int64, as a number or a decimal string.
    OneofInt,
}

impl Kind {
    fn of(key: &str) -> Self {
        match key {
            "asDouble" => Self::OneofDouble,
            "asInt" => Self::OneofInt,
            k if DOUBLE_KEYS.contains(&k) => Self::Double,
            _ => Self::Plain,
        }
    }

    /// What a oneof value must be, for the error that refuses another.
    fn expected(self) -> &'static str {
        match self {
            Self::OneofInt => "an integer for asInt (a number or a decimal string, within int64)",
            _ => "a number for asDouble, or \"NaN\", \"Infinity\", \"-Infinity\" or a number in a string",
        }
    }

    /// The number a string under this key is read as: `Ok(None)` to pass
    /// the string on as it is.
    fn number_in<E: de::Error>(self, v: &str) -> Result<Option<Number>, E> {
        match self {
            Self::Plain => Ok(None),
            Self::Double => Ok(special_float(v).map(Number::Float)),
            Self::OneofDouble => special_float(v)
                .map(|n| Some(Number::Float(n)))
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self.expected())),
            Self::OneofInt => v
                .parse::<i64>()
                .ok()
                .or_else(|| whole(special_float(v)?))
                .map(|n| Some(Number::Int(n)))
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self.expected())),
        }
    }
}

/// A number read from a string.
enum Number {
    Float(f64),
    Int(i64),
}

/// `v` as an int64 when it is a whole number within range (the protobuf
/// JSON mapping takes `1e3` for an integer).
fn whole(v: f64) -> Option<i64> {
    // 2^63 is exactly representable; every f64 below it in magnitude that
    // has no fraction converts exactly
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v)).then_some(v as i64)
}

/// Deserializes `T` from OTLP/JSON `body`, reading the mapping's
/// floating-point strings as numbers; trailing data after the value is an
/// error.
pub(super) fn from_slice<T: de::DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(Lenient {
        de: &mut de,
        kind: Kind::Plain,
    })?;
    de.end()?;
    Ok(value)
}

/// The number a protobuf JSON string names, if it names one.
fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        // "nan", "inf" and " 1.5" are not the mapping's spellings
        _ if s.trim() != s => None,
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// A deserializer whose floating-point reads also take the mapping's
/// strings; `kind` says what the key the value sits under lets it be
/// ([`Kind`]).
struct Lenient<D> {
    de: D,
    kind: Kind,
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                match self.kind {
                    Kind::Plain => self.de.$method(Wrap::plain(visitor)),
                    kind => self.de.deserialize_any(Wrap { inner: visitor, kind }),
                }
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Lenient<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_any(Float(visitor))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_any(Float(visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // `null` must still reach the visitor as none, so never as `any`
        self.de.deserialize_option(Wrap {
            inner: visitor,
            kind: self.kind,
        })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_ignored_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de.deserialize_unit_struct(name, Wrap::plain(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_newtype_struct(name, Wrap::plain(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de.deserialize_tuple(len, Wrap::plain(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_tuple_struct(name, len, Wrap::plain(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_struct(name, fields, ObjectOnly(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.de
            .deserialize_enum(name, variants, Wrap::plain(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

const EXPECTED: &str = "a number, or \"NaN\", \"Infinity\", \"-Infinity\" or a number in a string";

/// A message from a JSON object only: serde would also build a struct from
/// an array of its fields in order (`[]` an empty message), which is not
/// OTLP/JSON.
struct ObjectOnly<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object for ")?;
        self.0.expecting(f)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Fields {
            inner: map,
            next: Kind::Plain,
        })
    }
}

/// Reads an `f64` from a number or from one of the mapping's strings.
struct Float<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Float<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.0.visit_f64(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.0.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.0.visit_u64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match special_float(v) {
            Some(n) => self.0.visit_f64(n),
            None => Err(E::invalid_value(de::Unexpected::Str(v), &EXPECTED)),
        }
    }
}

/// Passes every visit through, wrapping what it hands on so that values
/// nested inside are read leniently too; under a double key a string naming
/// a number arrives as that number; under a oneof's key ([`Kind`]) anything
/// but its number is refused here, since serde would read a flattened
/// oneof that does not fit as no value at all.
struct Wrap<V> {
    inner: V,
    kind: Kind,
}

impl<V> Wrap<V> {
    fn plain(inner: V) -> Self {
        Self {
            inner,
            kind: Kind::Plain,
        }
    }

    fn oneof(&self) -> bool {
        matches!(self.kind, Kind::OneofDouble | Kind::OneofInt)
    }

    fn refuse<T, E: de::Error>(&self, found: de::Unexpected) -> Result<T, E> {
        Err(E::invalid_type(found, &self.kind.expected()))
    }
}

macro_rules! pass {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    // serde_json gives only these, the strings, null, arrays and objects;
    // the rest pass through untouched
    pass!(
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u128(u128),
        visit_f32(f32),
        visit_char(char),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        if self.oneof() {
            return self.refuse(de::Unexpected::Bool(v));
        }
        self.inner.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        if self.kind == Kind::OneofInt && i64::try_from(v).is_err() {
            return Err(E::invalid_value(
                de::Unexpected::Unsigned(v),
                &self.kind.expected(),
            ));
        }
        self.inner.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        if self.kind == Kind::OneofInt {
            return match whole(v) {
                Some(n) => self.inner.visit_i64(n),
                None => Err(E::invalid_value(
                    de::Unexpected::Float(v),
                    &self.kind.expected(),
                )),
            };
        }
        self.inner.visit_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match self.kind.number_in(v)? {
            Some(Number::Float(n)) => self.inner.visit_f64(n),
            Some(Number::Int(n)) => self.inner.visit_i64(n),
            None => self.inner.visit_str(v),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match self.kind.number_in(v)? {
            Some(Number::Float(n)) => self.inner.visit_f64(n),
            Some(Number::Int(n)) => self.inner.visit_i64(n),
            None => self.inner.visit_borrowed_str(v),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        match self.kind.number_in(&v)? {
            Some(Number::Float(n)) => self.inner.visit_f64(n),
            Some(Number::Int(n)) => self.inner.visit_i64(n),
            None => self.inner.visit_string(v),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Lenient {
            de,
            kind: self.kind,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Lenient {
            de,
            kind: self.kind,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.oneof() {
            return self.refuse(de::Unexpected::Seq);
        }
        // the items of `explicitBounds` are doubles as the key is
        self.inner.visit_seq(Wrap {
            inner: seq,
            kind: self.kind,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        if self.oneof() {
            return self.refuse(de::Unexpected::Map);
        }
        self.inner.visit_map(Fields {
            inner: map,
            next: Kind::Plain,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Wrap::plain(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Lenient {
            de,
            kind: self.kind,
        })
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Wrap {
            inner: seed,
            kind: self.kind,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// An object's key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// An object's entries: each key is read first (JSON keys are strings) so
/// that its value knows what it may be ([`Kind`]).
struct Fields<A> {
    inner: A,
    next: Kind,
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.inner.next_key_seed(Key)? else {
            return Ok(None);
        };
        self.next = Kind::of(&key);
        match key {
            Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::<A::Error>::new(k)),
            Cow::Owned(k) => seed.deserialize(StringDeserializer::<A::Error>::new(k)),
        }
        .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Wrap {
            inner: seed,
            kind: std::mem::replace(&mut self.next, Kind::Plain),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Wrap<A> {
    type Error = A::Error;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        self.inner
            .variant_seed(Wrap::plain(seed))
            .map(|(value, variant)| (value, Wrap::plain(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Wrap::plain(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, Wrap::plain(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, Wrap::plain(visitor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};

    fn log_attribute(json_value: &str) -> serde_json::Result<Option<Value>> {
        let body = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"1700000000000000000",
            "body":{{"stringValue":"x"}},"attributes":[{{"key":"v","value":{{"doubleValue":{json_value}}}}}]}}]}}]}}]}}"#
        );
        let req: ExportLogsServiceRequest = from_slice(body.as_bytes())?;
        let record = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_700_000_000_000_000_000);
        Ok(record.attributes[0].value.as_ref().unwrap().value.clone())
    }

    fn double(v: Option<Value>) -> f64 {
        match v {
            Some(Value::DoubleValue(d)) => d,
            other => panic!("not a double: {other:?}"),
        }
    }

    #[test]
    fn attribute_doubles_take_the_mappings_strings() {
        assert!(double(log_attribute(r#""NaN""#).unwrap()).is_nan());
        assert_eq!(
            double(log_attribute(r#""Infinity""#).unwrap()),
            f64::INFINITY
        );
        assert_eq!(
            double(log_attribute(r#""-Infinity""#).unwrap()),
            f64::NEG_INFINITY
        );
        assert_eq!(double(log_attribute(r#""1.5""#).unwrap()), 1.5);
        assert_eq!(double(log_attribute("2.25").unwrap()), 2.25);
        assert_eq!(double(log_attribute("7").unwrap()), 7.0);
        assert_eq!(double(log_attribute("-7").unwrap()), -7.0);
    }

    #[test]
    fn strings_that_are_not_numbers_are_named() {
        for bad in [
            r#""nan""#,
            r#""inf""#,
            r#""1.5x""#,
            r#"" 1.5""#,
            r#""1e999""#,
        ] {
            let err = log_attribute(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("f64"), "{bad}: {err}");
            assert!(err.contains("line"), "the position is given: {err}");
        }
        let err = log_attribute("true").unwrap_err().to_string();
        assert!(err.contains("boolean `true`"), "{err}");
    }

    #[test]
    fn data_point_and_histogram_doubles_take_the_mappings_strings() {
        let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"g","gauge":{"dataPoints":[{"timeUnixNano":"1","asDouble":"NaN"},
                                               {"timeUnixNano":"2","asDouble":"-Infinity"}]}},
            {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"1",
                "count":"2","sum":"Infinity","min":"-1.5","max":"NaN",
                "bucketCounts":["1","1"],"explicitBounds":["0.5"]}]}},
            {"name":"s","summary":{"dataPoints":[{"timeUnixNano":"1","count":"1","sum":"NaN",
                "quantileValues":[{"quantile":0.5,"value":"Infinity"}]}]}}
        ]}]}]}"#;
        let req: ExportMetricsServiceRequest = from_slice(body).unwrap();
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Gauge(g)) = &metrics[0].data else {
            panic!("gauge")
        };
        let values: Vec<f64> = g
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d,
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert!(values[0].is_nan());
        assert_eq!(values[1], f64::NEG_INFINITY);
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            panic!("histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(p.sum, Some(f64::INFINITY));
        assert_eq!(p.min, Some(-1.5));
        assert!(p.max.unwrap().is_nan());
        assert_eq!(p.explicit_bounds, vec![0.5]);
        assert_eq!(p.bucket_counts, vec![1, 1]);
        let Some(Data::Summary(s)) = &metrics[2].data else {
            panic!("summary")
        };
        assert!(s.data_points[0].sum.is_nan());
        assert_eq!(s.data_points[0].quantile_values[0].value, f64::INFINITY);
    }

    #[test]
    fn unknown_fields_under_double_keys_are_ignored_whatever_they_hold() {
        let logs = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a",
            "value":"extra","min":"lowest","futureField":{"sum":"x"}},
            "attributes":[{"key":"k","value":{"stringValue":"v","value":"extra"}}]}]}]}]}"#;
        let req: ExportLogsServiceRequest = from_slice(logs).unwrap();
        let record = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(
            record.body.as_ref().unwrap().value,
            Some(Value::StringValue("a".into()))
        );
        assert_eq!(
            record.attributes[0].value.as_ref().unwrap().value,
            Some(Value::StringValue("v".into()))
        );
        let metrics = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","value":"extra",
            "gauge":{"dataPoints":[{"asDouble":"NaN","min":"n/a","futureStats":{"value":"p99"}}]}}]}]}]}"#;
        let req: ExportMetricsServiceRequest = from_slice(metrics).unwrap();
        let Some(Data::Gauge(g)) = &req.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("the gauge's data was dropped")
        };
        assert!(matches!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(d)) if d.is_nan()
        ));
    }

    fn gauge_point(value: &str) -> serde_json::Result<Option<number_data_point::Value>> {
        let body = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"g","gauge":{{"dataPoints":[
                {{"timeUnixNano":"1",{value}}}]}}}}]}}]}}]}}"#
        );
        let req: ExportMetricsServiceRequest = from_slice(body.as_bytes())?;
        let Some(Data::Gauge(g)) = &req.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("the gauge's data was dropped")
        };
        Ok(g.data_points[0].value)
    }

    #[test]
    fn data_point_values_take_every_spelling_of_their_number() {
        use number_data_point::Value::{AsDouble, AsInt};
        for (json, want) in [
            (r#""asInt":"42""#, AsInt(42)),
            (r#""asInt":-42"#, AsInt(-42)),
            (r#""asInt":"-9223372036854775808""#, AsInt(i64::MIN)),
            (r#""asInt":9223372036854775807"#, AsInt(i64::MAX)),
            (r#""asInt":1e3"#, AsInt(1000)),
            (r#""asInt":"1e3""#, AsInt(1000)),
            (r#""asDouble":"1.5""#, AsDouble(1.5)),
            (r#""asDouble":7"#, AsDouble(7.0)),
        ] {
            assert_eq!(gauge_point(json).unwrap(), Some(want), "{json}");
        }
        assert_eq!(gauge_point(r#""asInt":null"#).unwrap(), None);
        assert_eq!(gauge_point(r#""asDouble":null"#).unwrap(), None);
    }

    #[test]
    fn data_point_values_that_do_not_fit_are_refused_not_dropped() {
        // serde reads a flattened oneof that does not fit as no value: the
        // point would be stored without its number and acknowledged
        let plain: ExportMetricsServiceRequest = serde_json::from_str(
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[
                {"timeUnixNano":"1","asInt":"abc"}]}}]}]}]}"#,
        )
        .unwrap();
        let Some(Data::Gauge(g)) = &plain.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("gauge")
        };
        assert_eq!(g.data_points[0].value, None, "the library alone drops it");
        for (json, named) in [
            (r#""asInt":"abc""#, "\"abc\""),
            (r#""asInt":"""#, "\"\""),
            (r#""asInt":"1.5""#, "\"1.5\""),
            (r#""asInt":1.5"#, "1.5"),
            (r#""asInt":9223372036854775808"#, "9223372036854775808"),
            (r#""asInt":1e19"#, "1e+19"),
            (r#""asInt":true"#, "boolean `true`"),
            (r#""asInt":[1]"#, "sequence"),
            (r#""asInt":{"v":1}"#, "map"),
            (r#""asDouble":"abc""#, "\"abc\""),
            (r#""asDouble":"nan""#, "\"nan\""),
            (r#""asDouble":false"#, "boolean `false`"),
            (r#""asDouble":{}"#, "map"),
        ] {
            let err = gauge_point(json).unwrap_err().to_string();
            let key = if json.contains("asInt") {
                "for asInt"
            } else {
                "for asDouble"
            };
            assert!(err.contains(named) && err.contains(key), "{json}: {err}");
            assert!(err.contains("line"), "the position is given: {err}");
        }
        let exemplar = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[
            {"timeUnixNano":"1","asInt":"1","exemplars":[{"timeUnixNano":"1","asInt":"x"}]}]}}]}]}]}"#;
        let err = from_slice::<ExportMetricsServiceRequest>(exemplar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("for asInt"), "{err}");
    }

    #[test]
    fn bare_numbers_read_back_exactly() {
        // a double written as its shortest round-trip decimal (as OTLP/JSON
        // writers do) must read back as the same double, not one off in
        // its last bit: serde_json needs its `float_roundtrip` feature
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = Vec::new();
        while values.len() < 2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                values.push(v);
            }
        }
        let points: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"timeUnixNano":"1","asDouble":{v:?}}}"#))
            .collect();
        let body = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"g","gauge":{{"dataPoints":[{}]}}}}]}}]}}]}}"#,
            points.join(",")
        );
        let req: ExportMetricsServiceRequest = from_slice(body.as_bytes()).unwrap();
        let Some(Data::Gauge(g)) = &req.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("gauge")
        };
        let wrong: Vec<(f64, f64)> = g
            .data_points
            .iter()
            .zip(&values)
            .filter_map(|(p, &sent)| match p.value {
                Some(number_data_point::Value::AsDouble(read)) if read == sent => None,
                Some(number_data_point::Value::AsDouble(read)) => Some((sent, read)),
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {} read back differently, e.g. {:?}",
            wrong.len(),
            values.len(),
            &wrong[..wrong.len().min(3)]
        );
    }

    #[test]
    fn messages_come_from_objects_only() {
        for body in [
            &br#"{"resourceLogs":[[]]}"#[..],
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[["1"]]}]}]}"#,
            br#"{"resourceLogs":[{"resource":[]}]}"#,
        ] {
            let err = from_slice::<ExportLogsServiceRequest>(body)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a JSON object for"), "{err}");
        }
    }

    #[test]
    fn everything_else_reads_as_plain_serde_json_does() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[
            {"key":"a","value":{"intValue":"-42"}},
            {"key":"b","value":{"arrayValue":{"values":[{"boolValue":true},{"doubleValue":"NaN"}]}}},
            {"key":"c","value":{"kvlistValue":{"values":[{"key":"d","value":{"bytesValue":"AAE="}}]}}}]},
            "scopeLogs":[{"logRecords":[{"severityNumber":9,"traceId":"5b8efff798038103d269b633813fc60c",
            "body":{"stringValue":"hello"}}]}]}]}"#;
        let lenient: ExportLogsServiceRequest = from_slice(body).unwrap();
        let plain: ExportLogsServiceRequest =
            serde_json::from_slice(&body[..]).unwrap_or_else(|_| {
                // the plain reader refuses the NaN string; compare the rest
                let without = String::from_utf8_lossy(body).replace(r#""NaN""#, "0.5");
                serde_json::from_str(&without).unwrap()
            });
        let attrs = &lenient.resource_logs[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        let Some(Value::ArrayValue(a)) = &attrs[1].value.as_ref().unwrap().value else {
            panic!("array")
        };
        assert!(double(a.values[1].value.clone()).is_nan());
        let mut lenient = lenient;
        let Some(Value::ArrayValue(a)) = &mut lenient.resource_logs[0]
            .resource
            .as_mut()
            .unwrap()
            .attributes[1]
            .value
            .as_mut()
            .unwrap()
            .value
        else {
            unreachable!()
        };
        a.values[1].value = Some(Value::DoubleValue(0.5));
        assert_eq!(lenient, plain);
        assert!(from_slice::<ExportLogsServiceRequest>(b"{} x").is_err());
    }
}
