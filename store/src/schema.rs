//! Arrow schemas of the tenant tables (placeholder until the conversion lands).
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

static MINIMAL: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("timestamp", ts(), false),
        Field::new("policy_version", DataType::Utf8, false),
        Field::new("received_by", DataType::Utf8, false),
        Field::new("received_at", ts(), false),
    ]))
});

pub fn logs_schema() -> SchemaRef {
    MINIMAL.clone()
}
pub fn spans_schema() -> SchemaRef {
    MINIMAL.clone()
}
pub fn metrics_schema() -> SchemaRef {
    MINIMAL.clone()
}
