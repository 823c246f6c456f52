//! Helpers shared by the conversion tests: typed column access and a
//! line-per-cell rendering of batches for golden files.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::ArrowPrimitiveType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bulkhead_collector::convert::{Converted, Stamp};

pub const STAMP: Stamp<'static> = Stamp {
    tenant: "acme",
    policy_version: "policy-v7",
    node: "node-a",
    received_at_nanos: 1_700_000_000_000_000_000,
    window: bulkhead_collector::convert::EventWindow::ANY,
};

pub fn batch(c: &Converted) -> &RecordBatch {
    c.batch.as_ref().expect("a batch")
}

pub fn column<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_ref()
}

pub fn str_at(b: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let a = column(b, name)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    (!a.is_null(row)).then(|| a.value(row).to_string())
}

pub fn prim_at<T: ArrowPrimitiveType>(
    b: &RecordBatch,
    name: &str,
    row: usize,
) -> Option<T::Native> {
    let a = column(b, name).as_primitive::<T>();
    (!a.is_null(row)).then(|| a.value(row))
}

/// Entries of a `Map<Utf8, Utf8>` cell, in stored order.
pub fn map_at(b: &RecordBatch, name: &str, row: usize) -> Vec<(String, Option<String>)> {
    map_entries(column(b, name), row)
}

pub fn map_entries(a: &dyn Array, row: usize) -> Vec<(String, Option<String>)> {
    let map = a.as_map();
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..keys.len())
        .map(|i| {
            let v = (!values.is_null(i)).then(|| values.value(i).to_string());
            (keys.value(i).to_string(), v)
        })
        .collect()
}

pub fn pairs(kv: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

/// Values of a `List<primitive>` cell, `None` when the list is null.
pub fn list_at<T: ArrowPrimitiveType>(
    b: &RecordBatch,
    name: &str,
    row: usize,
) -> Option<Vec<T::Native>> {
    let l = column(b, name).as_list::<i32>();
    (!l.is_null(row)).then(|| l.value(row).as_primitive::<T>().values().to_vec())
}

/// Every cell as `column = value`, one line each, rows separated by headers;
/// nulls print as `NULL`.
pub fn render(c: &Converted) -> String {
    let mut out = format!(
        "accepted {} rejected {} errors {:?}\n",
        c.accepted, c.rejected, c.errors
    );
    let Some(b) = &c.batch else { return out };
    let opts = FormatOptions::default().with_null("NULL");
    let schema = b.schema();
    for row in 0..b.num_rows() {
        out.push_str(&format!("--- row {row}\n"));
        for (i, f) in schema.fields().iter().enumerate() {
            let fmt = ArrayFormatter::try_new(b.column(i).as_ref(), &opts).expect("formatter");
            out.push_str(&format!("{} = {}\n", f.name(), fmt.value(row)));
        }
    }
    out
}

/// Compares with `tests/fixtures/golden/<name>.txt`; with `BULKHEAD_BLESS=1`
/// (re)writes the file instead. Review a blessed file before committing it.
pub fn golden(name: &str, actual: &str) {
    let path = format!(
        "{}/tests/fixtures/golden/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("BULKHEAD_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(e, a, "{name}.txt line {} differs", i + 1);
    }
    assert_eq!(
        expected.lines().count(),
        actual.lines().count(),
        "{name}.txt line count"
    );
}
