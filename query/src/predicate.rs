//! Row predicates of erasure requests: a SQL boolean expression over one
//! table's columns (`attr(attributes, 'user.id') = 'u-42'`, say), checked
//! once when the request is made and evaluated on each stored batch while
//! the erasure runs.
//!
//! Only deterministic, row-by-row expressions are taken: no subquery, no
//! aggregate or window function, nothing volatile (`random()`, `now()`), so
//! running the same request again matches the same rows.
use std::sync::Arc;

use bulkhead_store::Signal;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

/// A compiled row predicate for one table.
#[derive(Debug, Clone)]
pub struct RowPredicate {
    signal: Signal,
    schema: SchemaRef,
    expr: Arc<dyn PhysicalExpr>,
}

/// What a function whose output its arguments size (`repeat`, `lpad`, ...)
/// may make for one batch of a predicate: the default of a tenant's query
/// memory (`query.memory`, 256 MiB). Before this bound an erasure predicate
/// of `length(repeat(body, 1500000)) < 0` took the server from 190 MB to
/// about 2 GB.
fn max_value_bytes() -> usize {
    bulkhead_rules::QueryLimits::default().memory.as_usize()
}

impl RowPredicate {
    /// Parses and checks `sql` against `signal`'s columns; the error names
    /// the problem (unknown column, not boolean, a subquery, ...).
    pub fn compile(signal: Signal, sql: &str) -> Result<Self, String> {
        if sql.trim().is_empty() {
            return Err("the predicate is empty: name the rows to erase (for example attr(attributes, 'user.id') = 'u-42'); use true to erase every row of the range".into());
        }
        crate::nesting::check_operators(sql)
            .map_err(|e| format!("the predicate is not valid: {e}"))?;
        let schema = bulkhead_store::schema::file_schema(&signal.schema());
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| e.to_string())?;
        let ctx = SessionContext::new();
        ctx.register_udf(crate::udf::attr());
        // `repeat` and its kind reckon what they would make, as in queries:
        // a predicate is evaluated batch by batch outside the query pool
        crate::bounded::register(&ctx, max_value_bytes());
        let expr = ctx
            .parse_sql_expr(sql, &df_schema)
            .map_err(|e| format!("the predicate is not valid: {}", strip(e)))?;
        let mut refused = None;
        expr.apply(|e| {
            let what = match e {
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                    Some("a subquery")
                }
                Expr::AggregateFunction(_) => Some("an aggregate function"),
                Expr::WindowFunction(_) => Some("a window function"),
                Expr::Placeholder(_) => Some("a placeholder"),
                // now(), random(), ...: a resumed job would match other rows
                Expr::ScalarFunction(f)
                    if f.func.signature().volatility
                        != datafusion::logical_expr::Volatility::Immutable =>
                {
                    Some("a function whose result changes between runs (now(), random(), ...)")
                }
                _ => None,
            };
            if let Some(what) = what {
                refused = Some(what);
                return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .map_err(|e| e.to_string())?;
        if let Some(what) = refused {
            return Err(format!(
                "the predicate holds {what}: only an expression over one row's columns is taken"
            ));
        }
        if expr.is_volatile() {
            return Err("the predicate calls a volatile function (random(), now(), ...): it must match the same rows every time it is evaluated".into());
        }
        let physical = ctx
            .create_physical_expr(expr, &df_schema)
            .map_err(|e| format!("the predicate does not apply to {signal}: {}", strip(e)))?;
        let ty = physical
            .data_type(&schema)
            .map_err(|e| format!("the predicate does not apply to {signal}: {}", strip(e)))?;
        if ty != DataType::Boolean && ty != DataType::Null {
            return Err(format!(
                "the predicate gives {ty}, not true or false: compare something (for example severity_text = 'DEBUG')"
            ));
        }
        Ok(Self {
            signal,
            schema,
            expr: physical,
        })
    }

    /// The table the predicate is for.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Whether each row of `batch` (a stored batch of the table, without
    /// the tenant column) matches; null where the expression is null.
    /// Columns are taken by name; a column the batch lacks (a file written
    /// before the column existed) is null.
    pub fn matches(&self, batch: &RecordBatch) -> Result<BooleanArray, String> {
        let columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                batch
                    .column_by_name(f.name())
                    .cloned()
                    .unwrap_or_else(|| new_null_array(f.data_type(), batch.num_rows()))
            })
            .collect();
        let aligned = RecordBatch::try_new_with_options(
            Arc::new(relaxed(&self.schema)),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| format!("the stored batch does not fit the table's columns: {e}"))?;
        let value = self
            .expr
            .evaluate(&aligned)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| format!("evaluating the predicate: {}", strip(e)))?;
        if value.data_type() == &DataType::Null {
            return Ok(BooleanArray::new_null(batch.num_rows()));
        }
        value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| format!("the predicate gave {}, not booleans", value.data_type()))
    }
}

/// `schema` with every field nullable (a missing column is filled with nulls).
fn relaxed(schema: &SchemaRef) -> datafusion::arrow::datatypes::Schema {
    datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    )
}

/// DataFusion's message without its error-kind prefix.
fn strip(e: datafusion::error::DataFusionError) -> String {
    let mut text = e.to_string();
    if let Some(inner) = text
        .strip_prefix("SQL error: ParserError(\"")
        .and_then(|t| t.strip_suffix("\")"))
    {
        text = format!("SQL error: {inner}");
    }
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "Execution error: ",
        "This feature is not implemented: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};

    fn logs(bodies: &[&str]) -> RecordBatch {
        let schema = bulkhead_store::schema::file_schema(&Signal::Logs.schema());
        let n = bodies.len();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "timestamp" => {
                    Arc::new(TimestampNanosecondArray::from(vec![1i64; n]).with_timezone("UTC"))
                        as ArrayRef
                }
                "body" => Arc::new(StringArray::from(bodies.to_vec())) as ArrayRef,
                _ => new_null_array(f.data_type(), n),
            })
            .collect();
        // only the columns the test needs: the rest are left out, as in an
        // old file
        let keep: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() == "timestamp" || f.name() == "body")
            .map(|(i, _)| i)
            .collect();
        RecordBatch::try_new(Arc::new(relaxed(&schema)), columns)
            .unwrap()
            .project(&keep)
            .unwrap()
    }

    #[test]
    fn a_predicate_matches_rows_by_column_name() {
        let p = RowPredicate::compile(Signal::Logs, "body LIKE '%alice%'").unwrap();
        let m = p.matches(&logs(&["hi alice", "hi bob", "alice!"])).unwrap();
        assert_eq!(m, BooleanArray::from(vec![true, false, true]));
        // a column the batch lacks is null, which matches nothing
        let p = RowPredicate::compile(Signal::Logs, "severity_text = 'DEBUG'").unwrap();
        let m = p.matches(&logs(&["a"])).unwrap();
        assert_eq!(m.true_count(), 0);
        let p = RowPredicate::compile(Signal::Logs, "attr(attributes, 'user.id') = 'u1'").unwrap();
        assert_eq!(p.matches(&logs(&["a"])).unwrap().true_count(), 0);
    }

    #[test]
    fn functions_that_make_large_values_are_bounded() {
        let p = RowPredicate::compile(Signal::Logs, "length(repeat(body, 2)) = 10").unwrap();
        assert_eq!(p.matches(&logs(&["hello", "hi"])).unwrap().true_count(), 1);
        let p = RowPredicate::compile(Signal::Logs, "length(repeat(body, 100000000)) < 0").unwrap();
        let err = p.matches(&logs(&["hello", "hi"])).unwrap_err();
        assert!(err.contains("repeat") && err.contains("bytes"), "{err}");
    }

    #[test]
    fn bad_predicates_are_refused_with_the_reason() {
        for (sql, says) in [
            ("", "empty"),
            ("nosuch = 1", "nosuch"),
            ("body", "not true or false"),
            ("body = (SELECT 1)", "subquery"),
            ("count(*) > 1", "aggregate"),
            ("random() < 0.5", "changes between runs"),
            ("now() > timestamp", "changes between runs"),
            ("body = ", "Expected"),
            ("1; DROP TABLE logs", "Expected"),
            ("1=1) OR (1=1", "Expected"),
        ] {
            let err = RowPredicate::compile(Signal::Logs, sql).unwrap_err();
            assert!(err.contains(says), "{sql:?}: {err}");
        }
        // a chain deep enough to overflow a stack when planned is refused
        // from its tokens (a stored job of it once crashed every start)
        let chain = (0..600)
            .map(|i| format!("body = 'v{i}'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let err = RowPredicate::compile(Signal::Logs, &chain).unwrap_err();
        assert!(err.contains("1199 operators"), "{err}");
    }
}
