//! Batches shared by the store's test binaries.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

/// A batch of `(n, s)` rows in two columns, for the WAL's own tests.
pub fn small_batch<S: AsRef<str>>(rows: &[(i64, S)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_ref()),
            )),
        ],
    )
    .unwrap()
}

/// A table-shaped batch: `tenant`, event `timestamp`s, and a `value`
/// counting up from `first_value`.
pub fn timed_batch(tenant: &str, times: &[i64], first_value: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![tenant; times.len()])),
            Arc::new(TimestampNanosecondArray::from(times.to_vec()).with_timezone("UTC")),
            Arc::new(Int64Array::from_iter_values(
                first_value..first_value + times.len() as i64,
            )),
        ],
    )
    .unwrap()
}

/// The WAL segment files of `dir`, in seq order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}
