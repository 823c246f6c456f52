//! Unit tests of the conversion, one module per signal, with shared
//! constructors of OTLP messages and typed accessors of batch cells.
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::ArrowPrimitiveType;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{Converted, Stamp};

mod logs;
mod metrics;
mod traces;

pub(super) const STAMP: Stamp<'static> = Stamp {
    tenant: "t1",
    policy_version: "p3",
    node: "n1",
    received_at_nanos: 1_700_000_000_000_000_000,
    window: crate::convert::EventWindow::ANY,
};

pub(super) const TRACE_ID: [u8; 16] = [0xab; 16];
pub(super) const SPAN_ID: [u8; 8] = [0xcd; 8];

pub(super) fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        key_strindex: 0,
    }
}

pub(super) fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

pub(super) fn resource(service: Option<&str>) -> Option<Resource> {
    Some(Resource {
        attributes: service
            .map(|n| kv("service.name", s(n)))
            .into_iter()
            .collect(),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    })
}

pub(super) fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.k", s("scope.v"))],
        dropped_attributes_count: 4,
    })
}

pub(super) fn batch(c: &Converted) -> &RecordBatch {
    c.batch.as_ref().expect("a batch")
}

pub(super) fn column<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_ref()
}

pub(super) fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = column(b, name)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    a.iter().map(|v| v.map(str::to_string)).collect()
}

pub(super) fn str_at(b: &RecordBatch, name: &str, row: usize) -> Option<String> {
    strs(b, name).swap_remove(row)
}

pub(super) fn prims<T: ArrowPrimitiveType>(b: &RecordBatch, name: &str) -> Vec<Option<T::Native>> {
    column(b, name).as_primitive::<T>().iter().collect()
}

/// Entries of a `Map<Utf8, Utf8>` array's cell, in stored order.
pub(super) fn map_entries(a: &dyn Array, row: usize) -> Vec<(String, Option<String>)> {
    let entries = a.as_map().value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..keys.len())
        .map(|i| {
            (
                keys.value(i).to_string(),
                (!values.is_null(i)).then(|| values.value(i).to_string()),
            )
        })
        .collect()
}

pub(super) fn map_at(b: &RecordBatch, name: &str, row: usize) -> Vec<(String, Option<String>)> {
    map_entries(column(b, name), row)
}

pub(super) fn pairs(kv: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

/// Values of a `List<primitive>` cell, `None` when the list is null.
pub(super) fn list_at<T: ArrowPrimitiveType>(
    b: &RecordBatch,
    name: &str,
    row: usize,
) -> Option<Vec<T::Native>> {
    let l = column(b, name).as_list::<i32>();
    (!l.is_null(row)).then(|| l.value(row).as_primitive::<T>().values().to_vec())
}

/// The struct items of a `List<Struct>` cell.
pub(super) fn struct_list_at(
    b: &RecordBatch,
    name: &str,
    row: usize,
) -> Option<arrow::array::StructArray> {
    let l = column(b, name).as_list::<i32>();
    (!l.is_null(row)).then(|| l.value(row).as_struct().clone())
}

#[test]
fn rejections_keep_five_distinct_messages() {
    let mut r = super::Rejections::default();
    for i in 0..10 {
        r.add(1, || format!("problem {}", i % 7));
    }
    r.add(3, || "same".into());
    assert_eq!(r.count, 13);
    assert_eq!(
        r.messages,
        [
            "problem 0",
            "problem 1",
            "problem 2",
            "problem 3",
            "problem 4"
        ]
    );
}

#[test]
fn ids_are_checked_and_rendered_lower_hex() {
    assert_eq!(super::check_id(&[], 16, "trace_id", false), Ok(()));
    assert_eq!(
        super::check_id(&[], 16, "trace_id", true),
        Err("trace_id is required".into())
    );
    assert_eq!(
        super::check_id(&[1; 5], 16, "trace_id", false),
        Err("trace_id must be 16 bytes, got 5".into())
    );
    let mut b = arrow::array::StringBuilder::new();
    super::append_id(&mut b, &[0xAB, 0x01, 0xff, 0x00, 0x10, 0x20, 0x30, 0x4f]);
    super::append_id(&mut b, &[]);
    let a = b.finish();
    assert_eq!(a.value(0), "ab01ff001020304f");
    assert!(a.is_null(1));
}

#[test]
fn times_beyond_2262_are_refused() {
    assert_eq!(super::nanos(5, "time_unix_nano"), Ok(5));
    let e = super::nanos(u64::MAX, "time_unix_nano").unwrap_err();
    assert!(
        e.contains("time_unix_nano 18446744073709551615 is out of range"),
        "{e}"
    );
}
