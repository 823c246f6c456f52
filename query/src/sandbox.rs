//! The SQL sandbox: per-request sessions over one tenant's tables, read-only
//! statements, and bounds on time, memory and result rows.
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::TenantId;
use bulkhead_store::{Signal, Store};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::catalog::{AuditTable, TenantTable};
use crate::error::QueryError;
use crate::{udf, udwf};
use bulkhead_store::audit::AuditLog;

/// Bounds every tenant query runs within.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Shared by all running queries; operators that can spill do, others fail.
    pub memory_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            memory_bytes: 512 << 20,
        }
    }
}

/// A finished query's result.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
}

/// Runs tenant SQL. One per process; sessions are built per request.
#[derive(Debug)]
pub struct QueryEngine {
    store: Arc<Store>,
    audit: Option<Arc<AuditLog>>,
    runtime: Arc<RuntimeEnv>,
    limits: QueryLimits,
}

impl QueryEngine {
    pub fn new(store: Arc<Store>, limits: QueryLimits) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_bytes)))
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        Ok(Self {
            store,
            audit: None,
            runtime,
            limits,
        })
    }

    /// Records every query in `log`, and gives tenants their `audit` table.
    pub fn with_audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// A session that can name only `tenant`'s tables. URL tables are never
    /// enabled and no file-reading table function is registered.
    pub fn session(&self, tenant: &TenantId) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("tenant", "public");
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        for signal in Signal::ALL {
            let table = TenantTable::new(tenant.clone(), signal, self.store.clone());
            ctx.register_table(signal.name(), Arc::new(table))
                .map_err(QueryError::from_datafusion)?;
        }
        if let Some(log) = &self.audit {
            let table = AuditTable::new(tenant.clone(), log.clone());
            ctx.register_table("audit", Arc::new(table))
                .map_err(QueryError::from_datafusion)?;
        }
        ctx.register_udf(udf::attr());
        ctx.register_udwf(udwf::anomaly_score());
        ctx.register_udwf(udwf::anomaly_detect());
        Ok(ctx)
    }

    /// Plans `sql` in `ctx`, refusing anything but a read query.
    async fn dataframe(
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<datafusion::dataframe::DataFrame, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        ctx.sql_with_options(sql, options).await.map_err(|e| {
            let msg = e.find_root().to_string();
            if msg.contains("not supported")
                && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
            {
                QueryError::NotAllowed(msg)
            } else {
                QueryError::from_datafusion(e)
            }
        })
    }

    /// The result schema of a read-only statement for `tenant`, planned but
    /// not run (Flight SQL answers it before the data is asked for).
    pub async fn plan_schema(&self, tenant: &TenantId, sql: &str) -> Result<SchemaRef, QueryError> {
        let ctx = self.session(tenant)?;
        let plan = async {
            let df = Self::dataframe(&ctx, sql).await?;
            Ok(Arc::new(df.schema().as_arrow().clone()))
        };
        tokio::time::timeout(self.limits.timeout, plan)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))?
    }

    /// The tables `tenant`'s session can name, with their schemas, by name.
    pub async fn tables(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(String, datafusion::arrow::datatypes::Schema)>, QueryError> {
        let ctx = self.session(tenant)?;
        let Some(schema) = ctx.catalog("tenant").and_then(|c| c.schema("public")) else {
            return Ok(Vec::new());
        };
        let mut names = schema.table_names();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(table) = schema
                .table(&name)
                .await
                .map_err(QueryError::from_datafusion)?
            {
                out.push((name, table.schema().as_ref().clone()));
            }
        }
        Ok(out)
    }

    /// Plans and runs one read-only statement for `tenant`.
    pub async fn execute(&self, tenant: &TenantId, sql: &str) -> Result<QueryOutput, QueryError> {
        let ctx = self.session(tenant)?;
        let run = async {
            let df = Self::dataframe(&ctx, sql).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df
                .execute_stream()
                .await
                .map_err(QueryError::from_datafusion)?;
            let mut batches = Vec::new();
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                rows += batch.num_rows();
                if rows > self.limits.max_rows {
                    return Err(QueryError::TooManyRows(self.limits.max_rows));
                }
                batches.push(batch);
            }
            Ok(QueryOutput {
                schema,
                batches,
                rows,
            })
        };
        tokio::time::timeout(self.limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))?
    }
}
