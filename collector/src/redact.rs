//! Applies a tenant's [`Redactor`] to a converted batch before it is
//! stored, and pins tenant-naming attributes to the authenticated tenant.
//!
//! Every attribute map of the store schemas is visited (resource, scope,
//! record, span event and link, metric metadata and exemplar attributes), as
//! are log bodies (JSON bodies leaf by leaf) and span names, span status
//! messages and event names (location `span_name`). Records a
//! `drop_record` rule matches are removed first, judged on the values as
//! received. Columns nothing changed are passed through as the same `Arc`,
//! so a batch without secrets costs a scan and no copies.
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, MapArray, StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::redact::{AttrOutcome, Location, Redactor, Report};
use bulkhead_store::Signal;

/// Attribute keys that name a tenant; [`enforce_tenant_fields`] pins them.
pub const TENANT_KEYS: [&str; 4] = ["tenant.id", "tenant", "org_id", "x-scope-orgid"];

/// A column the redactor looks at.
#[derive(Clone, Copy)]
enum Col {
    /// A `Map<Utf8, Utf8>` column.
    Map(&'static str, Location),
    /// The map field `child` of the items of a `List<Struct>` column.
    ListMap(&'static str, &'static str, Location),
    /// A `Utf8` column without key (span name, status message).
    Text(&'static str, Location),
    /// The `Utf8` field `child` of the items of a `List<Struct>` column.
    ListText(&'static str, &'static str, Location),
    /// The log body, with `body_type`.
    Body,
}

const RESOURCE: Col = Col::Map("resource_attributes", Location::ResourceAttributes);
const SCOPE: Col = Col::Map("scope_attributes", Location::ScopeAttributes);

fn columns_of(signal: Signal) -> &'static [Col] {
    match signal {
        Signal::Logs => &[
            RESOURCE,
            SCOPE,
            Col::Map("attributes", Location::RecordAttributes),
            Col::Body,
        ],
        Signal::Spans => &[
            RESOURCE,
            SCOPE,
            Col::Map("attributes", Location::RecordAttributes),
            // Names and messages are free text too; credentials end up in
            // them (`auth failed for Bearer ...`).
            Col::Text("name", Location::SpanName),
            Col::Text("status_message", Location::SpanName),
            Col::ListText("events", "name", Location::SpanName),
            Col::ListMap("events", "attributes", Location::EventAttributes),
            Col::ListMap("links", "attributes", Location::LinkAttributes),
        ],
        Signal::Metrics => &[
            RESOURCE,
            SCOPE,
            Col::Map("attributes", Location::MetricAttributes),
            Col::Map("metric_metadata", Location::MetricAttributes),
            Col::ListMap(
                "exemplars",
                "filtered_attributes",
                Location::MetricAttributes,
            ),
        ],
        // Written by the collector itself, never received.
        Signal::Anomalies => &[],
    }
}

/// Redacts a batch of `signal` in its store schema. `Ok(None)` when every
/// record was dropped.
pub fn redact_batch(
    signal: Signal,
    batch: &RecordBatch,
    redactor: &Redactor,
    report: &mut Report,
) -> Result<Option<RecordBatch>, ArrowError> {
    let cols = columns_of(signal);
    let batch = if redactor.has_record_rules() {
        let keep = keep_mask(batch, cols, redactor, report)?;
        match keep.true_count() {
            0 => return Ok(None),
            n if n == batch.num_rows() => batch.clone(),
            _ => filter_record_batch(batch, &keep)?,
        }
    } else {
        batch.clone()
    };
    let mut columns = batch.columns().to_vec();
    let mut resource_changed = false;
    for col in cols {
        match *col {
            Col::Map(name, loc) => {
                let Some(i) = index(&batch, name) else {
                    continue;
                };
                let map = as_map(&columns[i], name)?;
                let new = rewrite_map(map, |k, v| redactor.redact_attribute(loc, k, v, report))?;
                if let Some(new) = new {
                    resource_changed |= name == "resource_attributes";
                    columns[i] = Arc::new(new);
                }
            }
            Col::ListMap(name, child, loc) => {
                let Some(i) = index(&batch, name) else {
                    continue;
                };
                let new = rewrite_list_child(&columns[i], name, child, |c| {
                    let map = as_map(c, child)?;
                    let new =
                        rewrite_map(map, |k, v| redactor.redact_attribute(loc, k, v, report))?;
                    Ok(new.map(|m| Arc::new(m) as ArrayRef))
                })?;
                if let Some(new) = new {
                    columns[i] = new;
                }
            }
            Col::ListText(name, child, loc) => {
                let Some(i) = index(&batch, name) else {
                    continue;
                };
                let new = rewrite_list_child(&columns[i], name, child, |c| {
                    let text = as_str(c, child)?;
                    let new = rewrite_strings(text, |_, s| redactor.redact_text(loc, s, report));
                    Ok(new.map(|a| Arc::new(a) as ArrayRef))
                })?;
                if let Some(new) = new {
                    columns[i] = new;
                }
            }
            Col::Text(name, loc) => {
                let Some(i) = index(&batch, name) else {
                    continue;
                };
                let text = as_str(&columns[i], name)?;
                if let Some(new) =
                    rewrite_strings(text, |_, s| redactor.redact_text(loc, s, report))
                {
                    columns[i] = Arc::new(new);
                }
            }
            Col::Body => redact_body(&batch, &mut columns, redactor, report)?,
        }
    }
    if resource_changed {
        // `service_name` is derived from the resource; it must not keep a
        // value the rules removed or masked there.
        if let (Some(si), Some(ri)) = (
            index(&batch, "service_name"),
            index(&batch, "resource_attributes"),
        ) {
            columns[si] = Arc::new(service_names(as_map(&columns[ri], "resource_attributes")?));
        }
    }
    RecordBatch::try_new(batch.schema(), columns).map(Some)
}

/// Overwrites, in resource, scope and record attributes, values of `keys`
/// (ASCII case-insensitive) that name a tenant other than `tenant`; returns
/// the batch and how many values were overwritten.
pub fn enforce_tenant_fields(
    batch: &RecordBatch,
    tenant: &str,
    keys: &[&str],
) -> Result<(RecordBatch, u64), ArrowError> {
    let mut columns = batch.columns().to_vec();
    let mut count = 0u64;
    for name in ["resource_attributes", "scope_attributes", "attributes"] {
        let Some(i) = index(batch, name) else {
            continue;
        };
        let map = as_map(&columns[i], name)?;
        let new = rewrite_map(map, |k, v| match v {
            Some(v) if v != tenant && keys.iter().any(|t| t.eq_ignore_ascii_case(k)) => {
                count += 1;
                AttrOutcome::Replace(tenant.to_owned())
            }
            _ => AttrOutcome::Keep,
        })?;
        if let Some(new) = new {
            columns[i] = Arc::new(new);
        }
    }
    if count == 0 {
        return Ok((batch.clone(), 0));
    }
    Ok((RecordBatch::try_new(batch.schema(), columns)?, count))
}

fn index(batch: &RecordBatch, name: &str) -> Option<usize> {
    batch.schema().index_of(name).ok()
}

fn as_map<'a>(a: &'a ArrayRef, name: &str) -> Result<&'a MapArray, ArrowError> {
    a.as_map_opt()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not a map")))
}

fn as_str<'a>(a: &'a ArrayRef, name: &str) -> Result<&'a StringArray, ArrowError> {
    a.as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not Utf8")))
}

fn map_strings(map: &MapArray) -> Result<(&StringArray, &StringArray), ArrowError> {
    match (
        map.keys().as_string_opt::<i32>(),
        map.values().as_string_opt::<i32>(),
    ) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(ArrowError::SchemaError(
            "attribute map is not Map<Utf8, Utf8>".into(),
        )),
    }
}

fn value(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// Rebuilds a map with `f` deciding each entry; `None` when all are kept.
fn rewrite_map(
    map: &MapArray,
    mut f: impl FnMut(&str, Option<&str>) -> AttrOutcome,
) -> Result<Option<MapArray>, ArrowError> {
    let (keys, values) = map_strings(map)?;
    let offsets = map.value_offsets();
    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    let outcomes: Vec<AttrOutcome> = (first..last)
        .map(|e| f(keys.value(e), value(values, e)))
        .collect();
    if outcomes.iter().all(|o| *o == AttrOutcome::Keep) {
        return Ok(None);
    }
    let mut new_keys = Vec::with_capacity(outcomes.len());
    let mut new_values: Vec<Option<&str>> = Vec::with_capacity(outcomes.len());
    let mut new_offsets = Vec::with_capacity(offsets.len());
    new_offsets.push(0i32);
    for row in 0..map.len() {
        for e in offsets[row] as usize..offsets[row + 1] as usize {
            match &outcomes[e - first] {
                AttrOutcome::Keep => new_values.push(value(values, e)),
                AttrOutcome::Replace(v) => new_values.push(Some(v)),
                AttrOutcome::Drop => continue,
            }
            new_keys.push(keys.value(e));
        }
        new_offsets.push(new_keys.len() as i32);
    }
    let DataType::Map(entries_field, sorted) = map.data_type() else {
        return Err(ArrowError::SchemaError("not a map type".into()));
    };
    let DataType::Struct(fields) = entries_field.data_type() else {
        return Err(ArrowError::SchemaError(
            "map entries are not a struct".into(),
        ));
    };
    let entries = StructArray::try_new(
        fields.clone(),
        vec![
            Arc::new(StringArray::from(new_keys)) as ArrayRef,
            Arc::new(StringArray::from(new_values)),
        ],
        None,
    )?;
    MapArray::try_new(
        entries_field.clone(),
        OffsetBuffer::new(new_offsets.into()),
        entries,
        map.nulls().cloned(),
        *sorted,
    )
    .map(Some)
}

/// Rewrites the field `child` of a `List<Struct>` column's items with `g`
/// (`None`: unchanged).
fn rewrite_list_child(
    column: &ArrayRef,
    name: &str,
    child: &str,
    g: impl FnOnce(&ArrayRef) -> Result<Option<ArrayRef>, ArrowError>,
) -> Result<Option<ArrayRef>, ArrowError> {
    let list = column
        .as_list_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not a list")))?;
    let items = list
        .values()
        .as_struct_opt()
        .ok_or_else(|| ArrowError::SchemaError(format!("items of {name} are not structs")))?;
    let Some(ci) = items.fields().iter().position(|f| f.name() == child) else {
        return Ok(None);
    };
    let Some(new) = g(items.column(ci))? else {
        return Ok(None);
    };
    let mut children = items.columns().to_vec();
    children[ci] = new;
    let items = StructArray::try_new(items.fields().clone(), children, items.nulls().cloned())?;
    let DataType::List(item_field) = list.data_type() else {
        return Err(ArrowError::SchemaError(format!(
            "column {name} is not a list"
        )));
    };
    let list = ListArray::try_new(
        item_field.clone(),
        list.offsets().clone(),
        Arc::new(items),
        list.nulls().cloned(),
    )?;
    Ok(Some(Arc::new(list)))
}

/// Applies `f` to every non-null value; `None` when nothing changed.
fn rewrite_strings(
    a: &StringArray,
    mut f: impl FnMut(usize, &str) -> Option<String>,
) -> Option<StringArray> {
    let changed: Vec<(usize, String)> = (0..a.len())
        .filter(|&i| a.is_valid(i))
        .filter_map(|i| f(i, a.value(i)).map(|s| (i, s)))
        .collect();
    if changed.is_empty() {
        return None;
    }
    let mut out: Vec<Option<&str>> = (0..a.len()).map(|i| value(a, i)).collect();
    for (i, s) in &changed {
        out[*i] = Some(s);
    }
    Some(StringArray::from(out))
}

/// Bodies: JSON (`array`, `kvlist`) leaf by leaf, other kinds as text. A
/// number, bool or bytes body that had to be masked is text now, so its
/// `body_type` becomes `string`.
fn redact_body(
    batch: &RecordBatch,
    columns: &mut [ArrayRef],
    redactor: &Redactor,
    report: &mut Report,
) -> Result<(), ArrowError> {
    let (Some(bi), Some(ti)) = (index(batch, "body"), index(batch, "body_type")) else {
        return Ok(());
    };
    let types = as_str(&columns[ti], "body_type")?.clone();
    let mut retyped = Vec::new();
    let new = rewrite_strings(as_str(&columns[bi], "body")?, |i, body| {
        let kind = value(&types, i).unwrap_or("string");
        let out = match kind {
            "array" | "kvlist" => redactor.redact_json_body(body, report),
            _ => redactor.redact_text(Location::Body, body, report),
        };
        if out.is_some() && !matches!(kind, "string" | "array" | "kvlist") {
            retyped.push(i);
        }
        out
    });
    if let Some(new) = new {
        columns[bi] = Arc::new(new);
    }
    if !retyped.is_empty() {
        let mut t: Vec<Option<&str>> = (0..types.len()).map(|i| value(&types, i)).collect();
        for i in retyped {
            t[i] = Some("string");
        }
        columns[ti] = Arc::new(StringArray::from(t));
    }
    Ok(())
}

/// `service_name` from the `service.name` resource attribute (last wins).
fn service_names(resource: &MapArray) -> StringArray {
    let Ok((keys, values)) = map_strings(resource) else {
        return StringArray::new_null(resource.len());
    };
    let offsets = resource.value_offsets();
    (0..resource.len())
        .map(|row| {
            (offsets[row] as usize..offsets[row + 1] as usize)
                .rev()
                .find(|&e| keys.value(e) == "service.name")
                .and_then(|e| value(values, e))
        })
        .collect()
}

/// Rows to keep; each dropped row is counted against the rule that matched.
fn keep_mask(
    batch: &RecordBatch,
    cols: &[Col],
    redactor: &Redactor,
    report: &mut Report,
) -> Result<BooleanArray, ArrowError> {
    let mut decided: Vec<Option<String>> = vec![None; batch.num_rows()];
    let mut judge = |row: usize, loc: Location, key: Option<&str>, v: Option<&str>| {
        if decided[row].is_none() {
            if let Some(rule) = redactor.drop_rule_for(loc, key, v) {
                decided[row] = Some(rule.to_owned());
            }
        }
    };
    for col in cols {
        match *col {
            Col::Map(name, loc) => {
                let Some(i) = index(batch, name) else {
                    continue;
                };
                let map = as_map(batch.column(i), name)?;
                let (keys, values) = map_strings(map)?;
                let offsets = map.value_offsets();
                for row in 0..map.len() {
                    for e in offsets[row] as usize..offsets[row + 1] as usize {
                        judge(row, loc, Some(keys.value(e)), value(values, e));
                    }
                }
            }
            Col::ListMap(name, child, loc) => {
                let Some(i) = index(batch, name) else {
                    continue;
                };
                let Some(list) = batch.column(i).as_list_opt::<i32>() else {
                    continue;
                };
                let Some(items) = list.values().as_struct_opt() else {
                    continue;
                };
                let Some(col) = items.column_by_name(child) else {
                    continue;
                };
                let map = as_map(col, child)?;
                let (keys, values) = map_strings(map)?;
                let (lo, mo) = (list.value_offsets(), map.value_offsets());
                for row in 0..list.len() {
                    for item in lo[row] as usize..lo[row + 1] as usize {
                        for e in mo[item] as usize..mo[item + 1] as usize {
                            judge(row, loc, Some(keys.value(e)), value(values, e));
                        }
                    }
                }
            }
            Col::ListText(name, child, loc) => {
                let Some(i) = index(batch, name) else {
                    continue;
                };
                let Some(list) = batch.column(i).as_list_opt::<i32>() else {
                    continue;
                };
                let Some(col) = list
                    .values()
                    .as_struct_opt()
                    .and_then(|s| s.column_by_name(child))
                else {
                    continue;
                };
                let text = as_str(col, child)?;
                let lo = list.value_offsets();
                for row in 0..list.len() {
                    for item in lo[row] as usize..lo[row + 1] as usize {
                        judge(row, loc, None, value(text, item));
                    }
                }
            }
            Col::Text(name, loc) => {
                let Some(i) = index(batch, name) else {
                    continue;
                };
                let text = as_str(batch.column(i), name)?;
                for row in 0..text.len() {
                    judge(row, loc, None, value(text, row));
                }
            }
            Col::Body => {
                let Some(i) = index(batch, "body") else {
                    continue;
                };
                let text = as_str(batch.column(i), "body")?;
                for row in 0..text.len() {
                    if text.is_valid(row) {
                        judge(row, Location::Body, None, Some(text.value(row)));
                    }
                }
            }
        }
    }
    for rule in decided.iter().flatten() {
        report.record_dropped(rule);
    }
    Ok(decided.iter().map(|d| Some(d.is_none())).collect())
}

#[cfg(test)]
mod tests;
