//! The `audit` table a tenant reads: its own entries as one Arrow batch.
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, MapBuilder, StringBuilder, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::AuditEvent;
use crate::schema::{attributes_field, timestamp_type, TENANT_COLUMN, TIMESTAMP_COLUMN, TIME_ZONE};

/// The `audit` table: `tenant`, `timestamp` (when the event was logged),
/// `seq`, `kind`, `key_id`, `details` (`Map<Utf8, Utf8>`, keys in order),
/// `prev_hash`, `hash`. With `seq`, `prev_hash` and `hash` a tenant can check
/// its rows are entries of the chain an operator verified.
pub fn audit_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new(TENANT_COLUMN, DataType::Utf8, false),
            Field::new(TIMESTAMP_COLUMN, timestamp_type(), false),
            Field::new("seq", DataType::UInt64, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("key_id", DataType::Utf8, true),
            attributes_field("details"),
            Field::new("prev_hash", DataType::Utf8, false),
            Field::new("hash", DataType::Utf8, false),
        ]))
    });
    SCHEMA.clone()
}

/// `events` as one batch of [`audit_schema`]. Meant for one tenant's events
/// ([`super::AuditLog::events_for`]); an event without a tenant gets an
/// empty `tenant`.
pub fn to_batch(events: &[AuditEvent]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut tenant = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut key_id = StringBuilder::new();
    let mut prev_hash = StringBuilder::new();
    let mut hash = StringBuilder::new();
    // MapBuilder's defaults ("entries", non-null "keys", nullable "values")
    // are exactly `attributes_map_type`.
    let mut details = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for e in events {
        tenant.append_value(e.tenant.as_deref().unwrap_or(""));
        kind.append_value(e.kind.as_str());
        key_id.append_option(e.key_id.as_deref());
        for (k, v) in &e.details {
            details.keys().append_value(k);
            details.values().append_value(v);
        }
        details.append(true)?;
        prev_hash.append_value(&e.prev_hash);
        hash.append_value(&e.hash);
    }
    let timestamp = TimestampNanosecondArray::from_iter_values(events.iter().map(|e| e.time_nanos))
        .with_timezone(TIME_ZONE);
    let seq = UInt64Array::from_iter_values(events.iter().map(|e| e.seq));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(timestamp),
        Arc::new(seq),
        Arc::new(kind.finish()),
        Arc::new(key_id.finish()),
        Arc::new(details.finish()),
        Arc::new(prev_hash.finish()),
        Arc::new(hash.finish()),
    ];
    RecordBatch::try_new(audit_schema(), columns)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Array, AsArray};

    use super::*;
    use crate::audit::{EventKind, GENESIS_HASH};

    #[test]
    fn batch_matches_schema_and_values() {
        let events = vec![
            AuditEvent {
                seq: 4,
                time_nanos: 10,
                tenant: Some("acme".into()),
                key_id: Some("k1".into()),
                kind: EventKind::Query,
                details: BTreeMap::from([
                    ("rows".into(), "2".into()),
                    ("sql_sha256".into(), "ab".into()),
                ]),
                prev_hash: GENESIS_HASH.into(),
                hash: "h4".into(),
            },
            AuditEvent {
                seq: 7,
                time_nanos: 20,
                tenant: Some("acme".into()),
                key_id: None,
                kind: EventKind::PolicyChanged,
                details: BTreeMap::new(),
                prev_hash: "h6".into(),
                hash: "h7".into(),
            },
        ];
        let b = to_batch(&events).unwrap();
        assert_eq!(b.schema(), audit_schema());
        assert_eq!(b.num_rows(), 2);
        let seq = b.column(2).as_primitive::<arrow::datatypes::UInt64Type>();
        assert_eq!(seq.values(), &[4, 7]);
        assert_eq!(b.column(3).as_string::<i32>().value(1), "policy_changed");
        assert!(b.column(4).is_null(1));
        let details = b.column(5).as_map();
        assert_eq!(details.value_length(0), 2);
        assert_eq!(details.value_length(1), 0);
        assert_eq!(details.keys().as_string::<i32>().value(1), "sql_sha256");
    }

    #[test]
    fn empty_batch_is_fine() {
        assert_eq!(to_batch(&[]).unwrap().num_rows(), 0);
    }
}
