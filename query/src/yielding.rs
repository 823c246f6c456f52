//! Every operator of a query gives the async runtime a turn now and then.
//!
//! DataFusion's own rule makes the leaves (scans) take from tokio's
//! cooperative budget, so a plan that keeps reading gives way regularly.
//! An operator that makes many batches from few (a cross join of data
//! already read, a generated range joined with itself) can run for hours
//! without reading again: its task never returns to the runtime, so its
//! thread is lost to every other tenant's work, the query's time limit
//! (a timer polled by the same task) never fires, and dropping the query
//! cannot stop it. This rule, run after every other, puts a cooperative
//! step above every operator's children as well, so each batch passed
//! between operators takes from the budget: a busy task yields within a
//! few hundred batches, and the time limit and cancellation take effect.
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::ExecutionPlan;

/// The rule (see the module's documentation).
#[derive(Debug, Default)]
pub struct YieldBetweenOperators;

impl PhysicalOptimizerRule for YieldBetweenOperators {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let children = node.children();
            if children.is_empty()
                || node.is::<CooperativeExec>()
                || children.iter().all(|c| c.is::<CooperativeExec>())
            {
                return Ok(Transformed::no(node));
            }
            let wrapped = children
                .into_iter()
                .map(|c| {
                    if c.is::<CooperativeExec>() {
                        c.clone()
                    } else {
                        Arc::new(CooperativeExec::new(c.clone())) as Arc<dyn ExecutionPlan>
                    }
                })
                .collect();
            Ok(Transformed::yes(replace_children_if_necessary(
                node, wrapped,
            )?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "yield_between_operators"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
