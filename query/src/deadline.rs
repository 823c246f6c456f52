//! A query's join filters stop working once the query is given up.
//!
//! A nested-loop join compares each batch of one side with all of the
//! other before it hands anything on; when its filter matches nothing it
//! hands nothing on at all, so the cooperative yields between operators
//! (`crate::yielding`) never come and the whole join is one step: a
//! `generate_series(1, 200000)` joined with itself on a condition that is
//! never true ran two minutes (debug build) after its 1.5 s limit had
//! answered the client, on threads every other query needs. Each filter
//! evaluation of such a join is a small piece of that step, so the filter
//! is wrapped: once the query's flag is raised (its time limit passed or
//! its client went away) the next evaluation fails and the join ends.
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::{FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{NestedLoopJoinExec, NestedLoopJoinExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

/// Raised when a query is given up; shared by its filters.
pub type GivenUp = Arc<AtomicBool>;

/// `plan` with the filter of every nested-loop join in it checking
/// `given_up` before each evaluation.
pub fn stoppable_joins(
    plan: Arc<dyn ExecutionPlan>,
    given_up: &GivenUp,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(filter) = join.filter() else {
            return Ok(Transformed::no(node));
        };
        if filter.expression().downcast_ref::<Stoppable>().is_some() {
            return Ok(Transformed::no(node));
        }
        let expression: Arc<dyn PhysicalExpr> = Arc::new(Stoppable {
            inner: Arc::clone(filter.expression()),
            given_up: Arc::clone(given_up),
        });
        let filter = JoinFilter::new(
            expression,
            filter.column_indices().to_vec(),
            Arc::clone(filter.schema()),
        );
        let rebuilt = NestedLoopJoinExecBuilder::from(join)
            .with_filter(Some(filter))
            .build()?;
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// An expression that fails once its query is given up, and is `inner`
/// until then.
#[derive(Debug)]
struct Stoppable {
    inner: Arc<dyn PhysicalExpr>,
    given_up: GivenUp,
}

impl PartialEq for Stoppable {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref() == other.inner.as_ref() && Arc::ptr_eq(&self.given_up, &other.given_up)
    }
}

impl Eq for Stoppable {}

impl Hash for Stoppable {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.as_ref().hash(state);
    }
}

impl fmt::Display for Stoppable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl PhysicalExpr for Stoppable {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        if self.given_up.load(Ordering::Relaxed) {
            return Err(DataFusionError::Execution(
                "the query was given up (its time limit passed or its client left)".into(),
            ));
        }
        self.inner.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match (children.pop(), children.is_empty()) {
            (Some(inner), true) => Ok(Arc::new(Stoppable {
                inner,
                given_up: Arc::clone(&self.given_up),
            })),
            _ => Err(DataFusionError::Internal(
                "a stoppable filter has one child".into(),
            )),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}
