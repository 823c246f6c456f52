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

/// Where a test's store lives: a temporary directory, or a fresh prefix in
/// the bucket of the S3-compatible test server (moto, started on loopback).
pub enum Backend {
    Local(tempfile::TempDir),
    S3(String),
}

impl Backend {
    pub fn local() -> Self {
        Backend::Local(tempfile::tempdir().unwrap())
    }

    pub fn s3() -> Self {
        Backend::S3(bulkhead_testkit::S3Server::shared().unique_prefix("store"))
    }

    pub fn config(&self) -> bulkhead_store::StorageConfig {
        match self {
            Backend::Local(dir) => bulkhead_store::StorageConfig::Local {
                root: dir.path().join("store"),
            },
            Backend::S3(prefix) => bulkhead_store::StorageConfig::S3(bulkhead_store::S3Config {
                bucket: bulkhead_testkit::S3_BUCKET.into(),
                prefix: prefix.clone(),
                endpoint: Some(bulkhead_testkit::S3Server::shared().endpoint().into()),
                region: "us-east-1".into(),
                allow_http: true,
                access_key_id: Some(bulkhead_testkit::S3_ACCESS_KEY.into()),
                secret_access_key: Some(bulkhead_testkit::S3_SECRET_KEY.into()),
            }),
        }
    }

    /// The store's directory on local disk, if local.
    pub fn local_dir(&self) -> Option<PathBuf> {
        match self {
            Backend::Local(dir) => Some(dir.path().join("store")),
            Backend::S3(_) => None,
        }
    }
}

/// A committed file's Parquet reader, read through the store.
pub fn parquet_of(
    store: &bulkhead_store::Store,
    path: &object_store::path::Path,
) -> parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes> {
    let bytes = store
        .read_object(path)
        .unwrap()
        .expect("committed file exists");
    // decrypted with the tenant's keys when the store has them
    let tenant = path
        .parts()
        .next()
        .and_then(|p| p.as_ref().strip_prefix("tenant=").map(str::to_string))
        .expect("a tenant's file");
    let tenant = bulkhead_rules::TenantId::new(&tenant).unwrap();
    let mut options = parquet::arrow::arrow_reader::ArrowReaderOptions::new();
    if let Some(d) = store.decryption(&tenant).unwrap() {
        options = options.with_file_decryption_properties(d);
    }
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
        bytes, options,
    )
    .unwrap()
}

/// The batches of committed files.
pub fn batches_in(
    store: &bulkhead_store::Store,
    files: &[(object_store::path::Path, u64)],
) -> Vec<RecordBatch> {
    files
        .iter()
        .flat_map(|(p, _)| parquet_of(store, p).build().unwrap().map(|b| b.unwrap()))
        .collect()
}

/// The rows of committed files.
pub fn rows_in(store: &bulkhead_store::Store, files: &[(object_store::path::Path, u64)]) -> usize {
    batches_in(store, files).iter().map(|b| b.num_rows()).sum()
}

/// Runs each named test function, which takes a [`Backend`], once on
/// local disk (`local::name`) and once on the S3 test server (`s3::name`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Backend::local())
            })*
        }
        mod s3 {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Backend::s3())
            })*
        }
    };
}

/// A logs-shaped batch with `trace_id` and `service_name` too (for
/// compaction's sort and bloom filter), one row per time.
pub fn trace_batch(times: &[i64], first_value: i64) -> RecordBatch {
    let base = timed_batch("acme", times, first_value);
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("trace_id", DataType::Utf8, true));
    fields.push(Field::new("service_name", DataType::Utf8, true));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(
        (0..times.len()).map(|i| format!("{:032x}", first_value as usize + i)),
    )));
    columns.push(Arc::new(StringArray::from(vec!["checkout"; times.len()])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Every `value` of `tenant`'s logs, committed or buffered, sorted.
pub fn values(store: &bulkhead_store::Store, tenant: &bulkhead_rules::TenantId) -> Vec<i64> {
    let snap = store
        .snapshot(
            tenant,
            bulkhead_store::Signal::Logs,
            bulkhead_store::TimeRange::ALL,
        )
        .unwrap();
    let mut out = Vec::new();
    for b in snap.buffered.iter().chain(&batches_in(store, &snap.files)) {
        let v = b
            .column_by_name("value")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        out.extend(v.values().iter().copied());
    }
    out.sort_unstable();
    out
}
