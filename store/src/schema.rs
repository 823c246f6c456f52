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
//!
//! Each table is declared once, as a struct of typed Arrow arrays
//! ([`LogColumns`], [`SpanColumns`], [`MetricColumns`], [`AnomalyColumns`],
//! each signal table ending with [`SharedColumns`]); the schema is derived
//! from that declaration, and converters build the struct, so a column
//! change fails to compile where the column is built.
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, MapArray, StringArray,
    TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// Name of the tenant column, first in every table.
pub const TENANT_COLUMN: &str = "tenant";
/// Name of the event-time column, second in every table; files are
/// partitioned by it.
pub const TIMESTAMP_COLUMN: &str = "timestamp";
/// Time zone of every timestamp column.
pub const TIME_ZONE: &str = "UTC";

/// The columns a committed file holds: the table's, less `tenant`. The
/// file's path names the tenant (`tenant=<id>/...`), so engines that read
/// the tree with Hive partitioning get the column from there, without a
/// clash with one inside the file; Bulkhead's SQL adds it the same way.
pub fn file_schema(table: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = table
        .fields()
        .iter()
        .filter(|f| f.name() != TENANT_COLUMN)
        .cloned()
        .collect();
    Arc::new(Schema::new_with_metadata(fields, table.metadata().clone()))
}

/// `batch` without its `tenant` column (as a file holds it).
pub fn without_tenant(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    match batch.schema().index_of(TENANT_COLUMN) {
        Ok(i) => {
            let keep: Vec<usize> = (0..batch.num_columns()).filter(|c| *c != i).collect();
            batch.project(&keep)
        }
        Err(_) => Ok(batch.clone()),
    }
}

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

/// Declares a table's columns once, in order: the struct with one typed
/// Arrow array per column (what converters fill in) and the schema's fields
/// are generated from the same list, so adding, removing, renaming or
/// retyping a column fails to compile where the column is built. A
/// `then Tail` ends the table with the columns of another declaration.
macro_rules! columns {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$cmeta:meta])* $col:ident : $array:ty = ($dt:expr, $nullable:expr) ),* $(,)?
        }
        $( then $tail:ident )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $( $(#[$cmeta])* pub $col: $array, )*
            $(
                /// The columns every table ends with.
                pub tail: $tail,
            )?
        }

        impl $name {
            /// The schema's fields, in column order.
            pub fn fields() -> Vec<Field> {
                #[allow(unused_mut)]
                let mut fields = vec![$( Field::new(stringify!($col), $dt, $nullable) ),*];
                $( fields.extend($tail::fields()); )?
                fields
            }

            /// The arrays in column order.
            pub fn into_arrays(self) -> Vec<ArrayRef> {
                #[allow(unused_mut)]
                let mut arrays: Vec<ArrayRef> = vec![$( Arc::new(self.$col) as ArrayRef ),*];
                $( arrays.extend($tail::into_arrays(self.tail)); )?
                arrays
            }
        }
    };
}

columns! {
    /// The columns every signal table ends with: resource, scope, lineage.
    pub struct SharedColumns {
        resource_attributes: MapArray = (attributes_map_type(), false),
        resource_dropped_attributes_count: UInt32Array = (DataType::UInt32, false),
        resource_entity_refs: ListArray = (list_of(DataType::Struct(entity_ref_fields())), false),
        resource_schema_url: StringArray = (DataType::Utf8, false),
        scope_name: StringArray = (DataType::Utf8, false),
        scope_version: StringArray = (DataType::Utf8, false),
        scope_attributes: MapArray = (attributes_map_type(), false),
        scope_dropped_attributes_count: UInt32Array = (DataType::UInt32, false),
        scope_schema_url: StringArray = (DataType::Utf8, false),
        policy_version: StringArray = (DataType::Utf8, false),
        received_by: StringArray = (DataType::Utf8, false),
        received_at: TimestampNanosecondArray = (timestamp_type(), false),
    }
}

columns! {
    /// The `logs` table's columns.
    pub struct LogColumns {
        tenant: StringArray = (DataType::Utf8, false),
        timestamp: TimestampNanosecondArray = (timestamp_type(), false),
        observed_timestamp: TimestampNanosecondArray = (timestamp_type(), true),
        trace_id: StringArray = (DataType::Utf8, true),
        span_id: StringArray = (DataType::Utf8, true),
        trace_flags: UInt32Array = (DataType::UInt32, false),
        severity_text: StringArray = (DataType::Utf8, false),
        severity_number: Int32Array = (DataType::Int32, false),
        service_name: StringArray = (DataType::Utf8, true),
        body: StringArray = (DataType::Utf8, true),
        body_type: StringArray = (DataType::Utf8, true),
        event_name: StringArray = (DataType::Utf8, false),
        attributes: MapArray = (attributes_map_type(), false),
        dropped_attributes_count: UInt32Array = (DataType::UInt32, false),
        flags: UInt32Array = (DataType::UInt32, false),
    }
    then SharedColumns
}

columns! {
    /// The `spans` table's columns.
    pub struct SpanColumns {
        tenant: StringArray = (DataType::Utf8, false),
        timestamp: TimestampNanosecondArray = (timestamp_type(), false),
        end_timestamp: TimestampNanosecondArray = (timestamp_type(), true),
        duration_ns: Int64Array = (DataType::Int64, true),
        trace_id: StringArray = (DataType::Utf8, false),
        span_id: StringArray = (DataType::Utf8, false),
        parent_span_id: StringArray = (DataType::Utf8, true),
        trace_state: StringArray = (DataType::Utf8, false),
        flags: UInt32Array = (DataType::UInt32, false),
        name: StringArray = (DataType::Utf8, false),
        kind: StringArray = (DataType::Utf8, false),
        status_code: StringArray = (DataType::Utf8, false),
        status_message: StringArray = (DataType::Utf8, false),
        service_name: StringArray = (DataType::Utf8, true),
        attributes: MapArray = (attributes_map_type(), false),
        dropped_attributes_count: UInt32Array = (DataType::UInt32, false),
        events: ListArray = (list_of(DataType::Struct(span_event_fields())), false),
        dropped_events_count: UInt32Array = (DataType::UInt32, false),
        links: ListArray = (list_of(DataType::Struct(span_link_fields())), false),
        dropped_links_count: UInt32Array = (DataType::UInt32, false),
    }
    then SharedColumns
}

columns! {
    /// The `metrics` table's columns: one row per data point of every kind.
    pub struct MetricColumns {
        tenant: StringArray = (DataType::Utf8, false),
        timestamp: TimestampNanosecondArray = (timestamp_type(), false),
        start_timestamp: TimestampNanosecondArray = (timestamp_type(), true),
        service_name: StringArray = (DataType::Utf8, true),
        metric_name: StringArray = (DataType::Utf8, false),
        metric_description: StringArray = (DataType::Utf8, false),
        metric_unit: StringArray = (DataType::Utf8, false),
        metric_type: StringArray = (DataType::Utf8, false),
        metric_metadata: MapArray = (attributes_map_type(), false),
        aggregation_temporality: StringArray = (DataType::Utf8, true),
        is_monotonic: BooleanArray = (DataType::Boolean, true),
        value: Float64Array = (DataType::Float64, true),
        value_int: Int64Array = (DataType::Int64, true),
        count: UInt64Array = (DataType::UInt64, true),
        sum: Float64Array = (DataType::Float64, true),
        min: Float64Array = (DataType::Float64, true),
        max: Float64Array = (DataType::Float64, true),
        bucket_counts: ListArray = (list_of(DataType::UInt64), true),
        explicit_bounds: ListArray = (list_of(DataType::Float64), true),
        scale: Int32Array = (DataType::Int32, true),
        zero_count: UInt64Array = (DataType::UInt64, true),
        zero_threshold: Float64Array = (DataType::Float64, true),
        positive_offset: Int32Array = (DataType::Int32, true),
        positive_bucket_counts: ListArray = (list_of(DataType::UInt64), true),
        negative_offset: Int32Array = (DataType::Int32, true),
        negative_bucket_counts: ListArray = (list_of(DataType::UInt64), true),
        quantiles: ListArray = (list_of(DataType::Float64), true),
        quantile_values: ListArray = (list_of(DataType::Float64), true),
        exemplars: ListArray = (list_of(DataType::Struct(exemplar_fields())), true),
        flags: UInt32Array = (DataType::UInt32, false),
        attributes: MapArray = (attributes_map_type(), false),
    }
    then SharedColumns
}

columns! {
    /// The `anomalies` table's columns: one row per anomaly the baseline
    /// detectors found in the tenant's own series (see `docs/anomaly.md`).
    /// `timestamp` is the start of the minute whose value was anomalous.
    pub struct AnomalyColumns {
        tenant: StringArray = (DataType::Utf8, false),
        timestamp: TimestampNanosecondArray = (timestamp_type(), false),
        signal: StringArray = (DataType::Utf8, false),
        kind: StringArray = (DataType::Utf8, false),
        series: StringArray = (DataType::Utf8, false),
        service_name: StringArray = (DataType::Utf8, true),
        observed: Float64Array = (DataType::Float64, false),
        expected: Float64Array = (DataType::Float64, false),
        lower: Float64Array = (DataType::Float64, false),
        upper: Float64Array = (DataType::Float64, false),
        score: Float64Array = (DataType::Float64, false),
        severity: StringArray = (DataType::Utf8, false),
        settings: StringArray = (DataType::Utf8, false),
        policy_version: StringArray = (DataType::Utf8, false),
        detected_by: StringArray = (DataType::Utf8, false),
        detected_at: TimestampNanosecondArray = (timestamp_type(), false),
    }
}

/// Fields of a `resource_entity_refs` item.
fn entity_ref_fields() -> Fields {
    Fields::from(vec![
        Field::new("schema_url", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("id_keys", list_of(DataType::Utf8), false),
        Field::new("description_keys", list_of(DataType::Utf8), false),
    ])
}

/// Fields of a span `events` item.
fn span_event_fields() -> Fields {
    Fields::from(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        attributes_field("attributes"),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

/// Fields of a span `links` item.
fn span_link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("flags", DataType::UInt32, false),
        attributes_field("attributes"),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

/// Fields of a metric `exemplars` item.
fn exemplar_fields() -> Fields {
    Fields::from(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("value", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("trace_id", DataType::Utf8, true),
        attributes_field("filtered_attributes"),
    ])
}

macro_rules! table {
    ($(#[$meta:meta])* $fn:ident, $columns:ident) => {
        $(#[$meta])*
        pub fn $fn() -> SchemaRef {
            static SCHEMA: LazyLock<SchemaRef> =
                LazyLock::new(|| Arc::new(Schema::new($columns::fields())));
            SCHEMA.clone()
        }

        impl $columns {
            /// The batch of these columns, in the table's schema (fails on
            /// arrays of different lengths or a type detail such as a time
            /// zone that the array types do not pin down).
            pub fn into_batch(self) -> Result<RecordBatch, ArrowError> {
                RecordBatch::try_new($fn(), self.into_arrays())
            }
        }
    };
}

table!(
    /// The `logs` table.
    logs_schema,
    LogColumns
);
table!(
    /// The `spans` table.
    spans_schema,
    SpanColumns
);
table!(
    /// The `metrics` table: one row per data point of every kind.
    metrics_schema,
    MetricColumns
);
table!(
    /// The `anomalies` table.
    anomalies_schema,
    AnomalyColumns
);

/// `List<item>` with non-null items named `item` (Arrow's default name).
fn list_of(item: DataType) -> DataType {
    DataType::List(FieldRef::new(Field::new_list_field(item, false)))
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
