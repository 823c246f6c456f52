//! Columns every table shares: `tenant`, `service_name`, the resource and
//! scope columns, and the lineage columns.
//!
//! Resource and scope values are built once per resource / scope, and each
//! accepted row records which resource and scope it belongs to; `finish`
//! expands them to one value per row with `take`. This renders each
//! attribute set once per request instead of once per row.
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ListArray, ListBuilder, StringArray, StringBuilder, StructArray,
    TimestampNanosecondArray, UInt32Array, UInt32Builder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::take;
use arrow::datatypes::{DataType, FieldRef, Fields, SchemaRef};
use arrow::error::ArrowError;
use bulkhead_store::schema::{SharedColumns, TIME_ZONE};
use opentelemetry_proto::tonic::common::v1::{EntityRef, InstrumentationScope};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::attrs::{self, AttrsBuilder};
use super::Stamp;

/// The shared columns of a batch: `tenant`, `service_name` and the tail
/// every table ends with.
pub(crate) struct Shared {
    pub(crate) tenant: StringArray,
    pub(crate) service_name: StringArray,
    pub(crate) tail: SharedColumns,
}

#[derive(Debug)]
pub(crate) struct Context {
    // One entry per resource.
    service_name: StringBuilder,
    res_attrs: AttrsBuilder,
    res_dropped: UInt32Builder,
    res_entity_refs: EntityRefsBuilder,
    res_schema_url: StringBuilder,
    resources: u32,
    // One entry per scope.
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: AttrsBuilder,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
    scopes: u32,
    // One entry per accepted row.
    row_resource: Vec<u32>,
    row_scope: Vec<u32>,
    scratch: String,
}

impl Context {
    /// `schema` is the target table's schema (for the nested field types).
    pub(crate) fn new(schema: &SchemaRef) -> Self {
        Self {
            service_name: StringBuilder::new(),
            res_attrs: AttrsBuilder::new(),
            res_dropped: UInt32Builder::new(),
            res_entity_refs: EntityRefsBuilder::new(schema),
            res_schema_url: StringBuilder::new(),
            resources: 0,
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: AttrsBuilder::new(),
            scope_dropped: UInt32Builder::new(),
            scope_schema_url: StringBuilder::new(),
            scopes: 0,
            row_resource: Vec::new(),
            row_scope: Vec::new(),
            scratch: String::new(),
        }
    }

    /// Starts a resource: rows recorded from now on belong to it.
    pub(crate) fn resource(&mut self, resource: Option<&Resource>, schema_url: &str) {
        let empty = Resource::default();
        let r = resource.unwrap_or(&empty);
        match attrs::find_text(&r.attributes, "service.name", &mut self.scratch) {
            Some(name) => self.service_name.append_value(name),
            None => self.service_name.append_null(),
        }
        self.res_attrs.append(&r.attributes);
        self.res_dropped.append_value(r.dropped_attributes_count);
        self.res_entity_refs.append(&r.entity_refs);
        self.res_schema_url.append_value(schema_url);
        self.resources += 1;
    }

    /// Starts a scope of the current resource.
    pub(crate) fn scope(&mut self, scope: Option<&InstrumentationScope>, schema_url: &str) {
        let empty = InstrumentationScope::default();
        let s = scope.unwrap_or(&empty);
        self.scope_name.append_value(&s.name);
        self.scope_version.append_value(&s.version);
        self.scope_attrs.append(&s.attributes);
        self.scope_dropped.append_value(s.dropped_attributes_count);
        self.scope_schema_url.append_value(schema_url);
        self.scopes += 1;
    }

    /// Records one accepted row of the current resource and scope.
    pub(crate) fn row(&mut self) {
        self.row_resource.push(self.resources.saturating_sub(1));
        self.row_scope.push(self.scopes.saturating_sub(1));
    }

    pub(crate) fn rows(&self) -> usize {
        self.row_resource.len()
    }

    pub(crate) fn finish(mut self, stamp: &Stamp<'_>) -> Result<Shared, ArrowError> {
        let n = self.rows();
        let by_resource = UInt32Array::from(std::mem::take(&mut self.row_resource));
        let by_scope = UInt32Array::from(std::mem::take(&mut self.row_scope));
        fn expand<T: Array + Clone + 'static>(a: &T, rows: &UInt32Array) -> Result<T, ArrowError> {
            let taken = take(a, rows, None)?;
            taken.as_any().downcast_ref::<T>().cloned().ok_or_else(|| {
                ArrowError::InvalidArgumentError("take changed an array's type".into())
            })
        }
        let repeat = |v: &str| StringArray::from_iter_values(std::iter::repeat_n(v, n));
        let tail = SharedColumns {
            resource_attributes: expand(&self.res_attrs.finish(), &by_resource)?,
            resource_dropped_attributes_count: expand(&self.res_dropped.finish(), &by_resource)?,
            resource_entity_refs: expand(&self.res_entity_refs.finish()?, &by_resource)?,
            resource_schema_url: expand(&self.res_schema_url.finish(), &by_resource)?,
            scope_name: expand(&self.scope_name.finish(), &by_scope)?,
            scope_version: expand(&self.scope_version.finish(), &by_scope)?,
            scope_attributes: expand(&self.scope_attrs.finish(), &by_scope)?,
            scope_dropped_attributes_count: expand(&self.scope_dropped.finish(), &by_scope)?,
            scope_schema_url: expand(&self.scope_schema_url.finish(), &by_scope)?,
            policy_version: repeat(stamp.policy_version),
            received_by: repeat(stamp.node),
            received_at: TimestampNanosecondArray::from(vec![stamp.received_at_nanos; n])
                .with_timezone(TIME_ZONE),
        };
        Ok(Shared {
            tenant: repeat(stamp.tenant),
            service_name: expand(&self.service_name.finish(), &by_resource)?,
            tail,
        })
    }
}

/// Builds `resource_entity_refs`: `List<Struct{schema_url, type, id_keys,
/// description_keys}>`, one list per resource.
#[derive(Debug)]
struct EntityRefsBuilder {
    list_field: FieldRef,
    fields: Fields,
    schema_url: StringBuilder,
    kind: StringBuilder,
    id_keys: ListBuilder<StringBuilder>,
    description_keys: ListBuilder<StringBuilder>,
    offsets: Vec<i32>,
}

impl EntityRefsBuilder {
    fn new(schema: &SchemaRef) -> Self {
        let list_field = list_item(schema, "resource_entity_refs");
        let DataType::Struct(fields) = list_field.data_type().clone() else {
            unreachable!("resource_entity_refs items are structs in bulkhead_store::schema")
        };
        let item = |name: &str| match fields.find(name).map(|(_, f)| f.data_type()) {
            Some(DataType::List(item)) => item.clone(),
            _ => unreachable!("{name} is a list in bulkhead_store::schema"),
        };
        Self {
            id_keys: ListBuilder::new(StringBuilder::new()).with_field(item("id_keys")),
            description_keys: ListBuilder::new(StringBuilder::new())
                .with_field(item("description_keys")),
            list_field,
            fields,
            schema_url: StringBuilder::new(),
            kind: StringBuilder::new(),
            offsets: vec![0],
        }
    }

    fn append(&mut self, refs: &[EntityRef]) {
        for e in refs {
            self.schema_url.append_value(&e.schema_url);
            self.kind.append_value(&e.r#type);
            for k in &e.id_keys {
                self.id_keys.values().append_value(k);
            }
            self.id_keys.append(true);
            for k in &e.description_keys {
                self.description_keys.values().append_value(k);
            }
            self.description_keys.append(true);
        }
        push_offset(&mut self.offsets, refs.len());
    }

    fn finish(mut self) -> Result<ListArray, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.schema_url.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.id_keys.finish()),
            Arc::new(self.description_keys.finish()),
        ];
        list_of_structs(self.list_field, self.fields, children, self.offsets, None)
    }
}

/// The item field of the list column `name` of `schema`.
pub(crate) fn list_item(schema: &SchemaRef, name: &str) -> FieldRef {
    match schema.field_with_name(name).map(|f| f.data_type()) {
        Ok(DataType::List(item)) => item.clone(),
        _ => unreachable!("{name} is a list column in bulkhead_store::schema"),
    }
}

/// The struct fields of the items of list column `name` of `schema`.
pub(crate) fn list_struct_fields(schema: &SchemaRef, name: &str) -> (FieldRef, Fields) {
    let item = list_item(schema, name);
    match item.data_type() {
        DataType::Struct(fields) => (item.clone(), fields.clone()),
        _ => unreachable!("{name} items are structs in bulkhead_store::schema"),
    }
}

/// Ends the current list of a hand-built list column after `len` items.
pub(crate) fn push_offset(offsets: &mut Vec<i32>, len: usize) {
    let last = offsets.last().copied().unwrap_or(0);
    offsets.push(last + len as i32);
}

/// A `List<Struct>` column from its struct children and list offsets;
/// `valid` marks null lists (all lists are valid when `None`).
pub(crate) fn list_of_structs(
    item: FieldRef,
    fields: Fields,
    children: Vec<ArrayRef>,
    offsets: Vec<i32>,
    valid: Option<Vec<bool>>,
) -> Result<ListArray, ArrowError> {
    let values = StructArray::try_new(fields, children, None)?;
    let nulls = valid.map(NullBuffer::from);
    let list = ListArray::try_new(
        item,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        nulls,
    )?;
    Ok(list)
}
