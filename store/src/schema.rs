//! Arrow schemas of the tables a tenant sees: `logs`, `spans`, `metrics`.
//!
//! Modelled on the OpenTelemetry Collector ClickHouse exporter tables
//! (`otel_logs`, `otel_traces`, `otel_metrics_*`), with one `metrics` table
//! holding one row per data point of every kind. `docs/schema.md` documents
//! every column and the OTLP field it comes from.
//!
//! Every schema starts with `tenant` and `timestamp` (the event time used to
//! partition files into `date=`/`hour=` directories) and ends with the lineage
//! columns `policy_version`, `received_by`, `received_at`. Attribute sets are
//! `Map<Utf8, Utf8>` columns built by [`attributes_field`].
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

/// Name of the tenant column, first in every table.
pub const TENANT_COLUMN: &str = "tenant";
/// Name of the event-time column, second in every table; files are
/// partitioned by it.
pub const TIMESTAMP_COLUMN: &str = "timestamp";
/// Time zone of every timestamp column.
pub const TIME_ZONE: &str = "UTC";

/// `Timestamp(Nanosecond, "UTC")`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some(TIME_ZONE.into()))
}

/// `Map<Utf8, Utf8>` as used by every attribute column: entries field
/// `entries`, non-null `keys`, nullable `values` (an attribute whose value is
/// empty), keys not sorted (they keep the order the sender gave).
pub fn attributes_map_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// A non-null attribute map column (an empty map when there are no attributes).
pub fn attributes_field(name: &str) -> Field {
    Field::new(name, attributes_map_type(), false)
}

/// The `logs` table.
pub fn logs_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        build(vec![
            Field::new("observed_timestamp", timestamp_type(), true),
            Field::new("trace_id", DataType::Utf8, true),
            Field::new("span_id", DataType::Utf8, true),
            Field::new("trace_flags", DataType::UInt32, false),
            Field::new("severity_text", DataType::Utf8, false),
            Field::new("severity_number", DataType::Int32, false),
            service_name(),
            Field::new("body", DataType::Utf8, true),
            Field::new("body_type", DataType::Utf8, true),
            Field::new("event_name", DataType::Utf8, false),
            attributes_field("attributes"),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
            Field::new("flags", DataType::UInt32, false),
        ])
    });
    SCHEMA.clone()
}

/// The `spans` table.
pub fn spans_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let event = Fields::from(vec![
            Field::new("timestamp", timestamp_type(), false),
            Field::new("name", DataType::Utf8, false),
            attributes_field("attributes"),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
        ]);
        let link = Fields::from(vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("trace_state", DataType::Utf8, false),
            Field::new("flags", DataType::UInt32, false),
            attributes_field("attributes"),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
        ]);
        build(vec![
            Field::new("end_timestamp", timestamp_type(), true),
            Field::new("duration_ns", DataType::Int64, true),
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("parent_span_id", DataType::Utf8, true),
            Field::new("trace_state", DataType::Utf8, false),
            Field::new("flags", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("status_code", DataType::Utf8, false),
            Field::new("status_message", DataType::Utf8, false),
            service_name(),
            attributes_field("attributes"),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
            Field::new("events", list_of(DataType::Struct(event)), false),
            Field::new("dropped_events_count", DataType::UInt32, false),
            Field::new("links", list_of(DataType::Struct(link)), false),
            Field::new("dropped_links_count", DataType::UInt32, false),
        ])
    });
    SCHEMA.clone()
}

/// The `metrics` table: one row per data point of every kind.
pub fn metrics_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let exemplar = Fields::from(vec![
            Field::new("timestamp", timestamp_type(), false),
            Field::new("value", DataType::Float64, true),
            Field::new("value_int", DataType::Int64, true),
            Field::new("span_id", DataType::Utf8, true),
            Field::new("trace_id", DataType::Utf8, true),
            attributes_field("filtered_attributes"),
        ]);
        let u64_list = || list_of(DataType::UInt64);
        let f64_list = || list_of(DataType::Float64);
        build(vec![
            Field::new("start_timestamp", timestamp_type(), true),
            service_name(),
            Field::new("metric_name", DataType::Utf8, false),
            Field::new("metric_description", DataType::Utf8, false),
            Field::new("metric_unit", DataType::Utf8, false),
            Field::new("metric_type", DataType::Utf8, false),
            attributes_field("metric_metadata"),
            Field::new("aggregation_temporality", DataType::Utf8, true),
            Field::new("is_monotonic", DataType::Boolean, true),
            Field::new("value", DataType::Float64, true),
            Field::new("value_int", DataType::Int64, true),
            Field::new("count", DataType::UInt64, true),
            Field::new("sum", DataType::Float64, true),
            Field::new("min", DataType::Float64, true),
            Field::new("max", DataType::Float64, true),
            Field::new("bucket_counts", u64_list(), true),
            Field::new("explicit_bounds", f64_list(), true),
            Field::new("scale", DataType::Int32, true),
            Field::new("zero_count", DataType::UInt64, true),
            Field::new("zero_threshold", DataType::Float64, true),
            Field::new("positive_offset", DataType::Int32, true),
            Field::new("positive_bucket_counts", u64_list(), true),
            Field::new("negative_offset", DataType::Int32, true),
            Field::new("negative_bucket_counts", u64_list(), true),
            Field::new("quantiles", f64_list(), true),
            Field::new("quantile_values", f64_list(), true),
            Field::new("exemplars", list_of(DataType::Struct(exemplar)), true),
            Field::new("flags", DataType::UInt32, false),
            attributes_field("attributes"),
        ])
    });
    SCHEMA.clone()
}

/// `List<item>` with non-null items named `item` (Arrow's default name).
fn list_of(item: DataType) -> DataType {
    DataType::List(FieldRef::new(Field::new_list_field(item, false)))
}

fn service_name() -> Field {
    Field::new("service_name", DataType::Utf8, true)
}

/// `tenant`, `timestamp`, the signal's own columns, then the resource and
/// scope columns and the lineage columns every table shares.
fn build(signal_columns: Vec<Field>) -> SchemaRef {
    let entity_ref = Fields::from(vec![
        Field::new("schema_url", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("id_keys", list_of(DataType::Utf8), false),
        Field::new("description_keys", list_of(DataType::Utf8), false),
    ]);
    let mut fields = vec![
        Field::new(TENANT_COLUMN, DataType::Utf8, false),
        Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
    ];
    fields.extend(signal_columns);
    fields.extend([
        attributes_field("resource_attributes"),
        Field::new("resource_dropped_attributes_count", DataType::UInt32, false),
        Field::new(
            "resource_entity_refs",
            list_of(DataType::Struct(entity_ref)),
            false,
        ),
        Field::new("resource_schema_url", DataType::Utf8, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
        attributes_field("scope_attributes"),
        Field::new("scope_dropped_attributes_count", DataType::UInt32, false),
        Field::new("scope_schema_url", DataType::Utf8, false),
        Field::new("policy_version", DataType::Utf8, false),
        Field::new("received_by", DataType::Utf8, false),
        Field::new("received_at", timestamp_type(), false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The `anomalies` table: one row per anomaly the baseline detectors found
/// in the tenant's own series (see `docs/anomaly.md`). `timestamp` is the
/// start of the minute whose value was anomalous.
pub fn anomalies_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new(TENANT_COLUMN, DataType::Utf8, false),
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
            Field::new("signal", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("series", DataType::Utf8, false),
            Field::new("service_name", DataType::Utf8, true),
            Field::new("observed", DataType::Float64, false),
            Field::new("expected", DataType::Float64, false),
            Field::new("lower", DataType::Float64, false),
            Field::new("upper", DataType::Float64, false),
            Field::new("score", DataType::Float64, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("settings", DataType::Utf8, false),
            Field::new("policy_version", DataType::Utf8, false),
            Field::new("detected_by", DataType::Utf8, false),
            Field::new("detected_at", timestamp_type(), false),
        ]))
    });
    SCHEMA.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> [(&'static str, SchemaRef); 3] {
        [
            ("logs", logs_schema()),
            ("spans", spans_schema()),
            ("metrics", metrics_schema()),
        ]
    }

    #[test]
    fn every_schema_starts_with_tenant_and_timestamp() {
        for (name, schema) in all() {
            let f = schema.fields();
            assert_eq!(f[0].name(), "tenant", "{name}");
            assert_eq!(f[0].data_type(), &DataType::Utf8, "{name}");
            assert!(!f[0].is_nullable(), "{name}");
            assert_eq!(f[1].name(), "timestamp", "{name}");
            assert_eq!(f[1].data_type(), &timestamp_type(), "{name}");
            assert!(!f[1].is_nullable(), "{name}");
        }
    }

    #[test]
    fn every_schema_ends_with_lineage() {
        for (name, schema) in all() {
            let f = schema.fields();
            let n = f.len();
            let tail: Vec<_> = f[n - 3..]
                .iter()
                .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
                .collect();
            assert_eq!(
                tail,
                vec![
                    ("policy_version", DataType::Utf8, false),
                    ("received_by", DataType::Utf8, false),
                    ("received_at", timestamp_type(), false),
                ],
                "{name}"
            );
        }
    }

    #[test]
    fn column_names_are_unique_snake_case() {
        for (name, schema) in all() {
            let mut seen = std::collections::HashSet::new();
            for f in schema.fields() {
                assert!(
                    seen.insert(f.name().clone()),
                    "{name}: duplicate {}",
                    f.name()
                );
                assert!(
                    f.name()
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{name}: {}",
                    f.name()
                );
            }
        }
    }

    #[test]
    fn map_type_has_expected_shape() {
        let DataType::Map(entries, sorted) = attributes_map_type() else {
            panic!("not a map");
        };
        assert!(!sorted);
        assert_eq!(entries.name(), "entries");
        assert!(!entries.is_nullable());
        let DataType::Struct(kv) = entries.data_type() else {
            panic!("entries not a struct");
        };
        assert_eq!(kv[0].name(), "keys");
        assert!(!kv[0].is_nullable());
        assert_eq!(kv[1].name(), "values");
        assert!(kv[1].is_nullable());
    }

    #[test]
    fn schemas_are_built_once() {
        assert!(Arc::ptr_eq(&logs_schema(), &logs_schema()));
        assert!(Arc::ptr_eq(&spans_schema(), &spans_schema()));
        assert!(Arc::ptr_eq(&metrics_schema(), &metrics_schema()));
    }
}
