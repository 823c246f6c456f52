//! The SQL sandbox: per-request sessions over one tenant's tables, read-only
//! statements, and bounds on concurrency, time, memory, result rows and
//! bytes: the tenant's own (`[query]` of its policy) within the engine's.
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::QueryLimits as TenantQueryLimits;
use bulkhead_rules::TenantId;
use bulkhead_store::{Signal, Store};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider,
};
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::catalog::{AuditTable, TenantTable, UnionTable};
use crate::error::QueryError;
use crate::limits::TenantLimits;
use crate::{udf, udwf};
use bulkhead_store::audit::AuditLog;

/// Bounds of the whole engine (server configuration `[query]`); each
/// tenant's own limits (`[query]` of its policy) apply within them.
#[derive(Clone, Debug)]
pub struct EngineLimits {
    /// The longest any query may run, whatever its tenant's policy says.
    pub timeout: Duration,
    /// The most rows any answer may carry, whatever its tenant's policy says.
    pub max_rows: usize,
    /// The memory pool all running queries share; operators that can spill
    /// do, others fail.
    pub memory_bytes: usize,
    /// Disk all spilling queries may use together.
    pub max_spill_bytes: u64,
    /// Parsed Parquet footers kept across queries (all tenants together).
    pub metadata_cache_bytes: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            memory_bytes: 512 << 20,
            max_spill_bytes: 4 << 30,
            metadata_cache_bytes: 256 << 20,
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

/// The threads queries run on: a runtime of their own, one thread a core.
/// An operator's single step can be long whatever the yields between
/// operators do (a nested-loop join compares a batch of one side with all
/// of the other before it hands anything on); on the server's runtime it
/// held a thread that every tenant's ingest also needs, and two such
/// queries held both threads of a two-core server. Here they hold query
/// threads, which the operating system time-slices with the rest.
struct QueryThreads(Option<tokio::runtime::Runtime>);

/// Stack of each query thread: the engine walks a statement's expression
/// tree by recursion, so room for [`crate::nesting::MAX_OPERATORS`] levels
/// several times over (reserved, not used, until needed).
pub const QUERY_THREAD_STACK: usize = 64 << 20;

impl QueryThreads {
    fn new() -> Result<Self, QueryError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("bulkhead-query")
            .thread_stack_size(QUERY_THREAD_STACK)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("starting the query threads: {e}")))?;
        Ok(Self(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime lives as long as the engine"),
        }
    }
}

impl Drop for QueryThreads {
    fn drop(&mut self) {
        // the engine may be dropped on an async thread, where waiting for
        // a runtime's threads is not allowed; a step still running ends at
        // its next yield
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A query's task on the query threads: given up (its joins' filters stop,
/// see [`crate::deadline`]) and aborted when its answer is no longer
/// awaited (time limit, or the client went away).
struct Running<T> {
    task: tokio::task::JoinHandle<T>,
    given_up: crate::deadline::GivenUp,
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.given_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.abort();
    }
}

/// Where a tenant's query limits come from (its policy).
pub type PolicyLimits = Arc<dyn Fn(&TenantId) -> TenantQueryLimits + Send + Sync>;

/// Runs tenant SQL. One per process: one runtime and memory pool for all,
/// a session per request cloned from one built at start.
pub struct QueryEngine {
    store: Arc<Store>,
    audit: Option<Arc<AuditLog>>,
    runtime: Arc<RuntimeEnv>,
    base: SessionState,
    limits: EngineLimits,
    tenants: TenantLimits,
    policy: PolicyLimits,
    threads: Arc<QueryThreads>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    pub fn new(store: Arc<Store>, limits: EngineLimits) -> Result<Self, QueryError> {
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(limits.memory_bytes));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .with_metadata_cache_limit(limits.metadata_cache_bytes)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_max_temp_directory_size(limits.max_spill_bytes),
            )
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        // the tenant tables read committed files through the store's own
        // object store (local disk or a bucket)
        let url = ObjectStoreUrl::parse(bulkhead_store::OBJECT_STORE_URL)
            .map_err(QueryError::from_datafusion)?;
        runtime.register_object_store(url.as_ref(), store.object_store());
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("tenant", "public");
        let mut base = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.clone())
            .with_default_features()
            // after the default rules: every operator yields now and then
            .with_physical_optimizer_rule(Arc::new(crate::yielding::YieldBetweenOperators))
            .build();
        // added to the default functions (the builder's setters would replace them)
        base.register_udf(Arc::new(udf::attr()))
            .map_err(QueryError::from_datafusion)?;
        for f in [udwf::anomaly_score(), udwf::anomaly_detect()] {
            base.register_udwf(Arc::new(f))
                .map_err(QueryError::from_datafusion)?;
        }
        Ok(Self {
            store,
            audit: None,
            runtime,
            base,
            limits,
            tenants: TenantLimits::new(pool),
            policy: Arc::new(|_| TenantQueryLimits::default()),
            threads: Arc::new(QueryThreads::new()?),
        })
    }

    /// The query threads' runtime, for other work that runs the engine's
    /// plans (forensic extracts).
    pub fn query_threads(&self) -> tokio::runtime::Handle {
        self.threads.handle().clone()
    }

    /// Tasks alive on the query threads (queries running, and their
    /// operators' tasks).
    pub fn running_tasks(&self) -> usize {
        self.threads.handle().metrics().num_alive_tasks()
    }

    /// Records every query in `log`, and gives tenants their `audit` table.
    pub fn with_audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Takes each tenant's limits from `policy` (called per query, so
    /// policy changes apply to the next query).
    pub fn with_policy_limits(mut self, policy: PolicyLimits) -> Self {
        self.policy = policy;
        self
    }

    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    /// Bytes `tenant`'s running queries hold of the shared pool.
    pub fn memory_used(&self, tenant: &TenantId) -> usize {
        let limits = (self.policy)(tenant);
        self.tenants.pool(tenant, limits.memory.as_usize()).used()
    }

    /// A session that can name only `tenant`'s tables, drawing memory
    /// through the tenant's pool. URL tables are never enabled and no
    /// file-reading table function is registered.
    pub fn session(&self, tenant: &TenantId) -> Result<SessionContext, QueryError> {
        let limits = (self.policy)(tenant);
        self.session_with(tenant, &limits)
    }

    fn session_with(
        &self,
        tenant: &TenantId,
        limits: &TenantQueryLimits,
    ) -> Result<SessionContext, QueryError> {
        let pool = self.tenants.pool(tenant, limits.memory.as_usize());
        let runtime = Arc::new(RuntimeEnv {
            memory_pool: pool,
            ..self.runtime.as_ref().clone()
        });
        let ctx = self.context(runtime)?;
        crate::bounded::register(&ctx, limits.memory.as_usize());
        for signal in Signal::ALL {
            let table = TenantTable::new(tenant.clone(), signal, self.store.clone());
            ctx.register_table(signal.name(), Arc::new(table))
                .map_err(QueryError::from_datafusion)?;
        }
        if let Some(log) = &self.audit {
            let table = AuditTable::new(tenant.clone(), log.clone(), self.store.clone());
            ctx.register_table("audit", Arc::new(table))
                .map_err(QueryError::from_datafusion)?;
        }
        Ok(ctx)
    }

    /// An empty session on `runtime`, cloned from the base state.
    fn context(&self, runtime: Arc<RuntimeEnv>) -> Result<SessionContext, QueryError> {
        // a catalog of the session's own: the base state's is shared by
        // every clone of it, and tenant tables must never land there
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema("public", Arc::new(MemorySchemaProvider::new()))
            .map_err(QueryError::from_datafusion)?;
        catalogs.register_catalog("tenant".into(), catalog);
        let state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(catalogs)
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// A session whose tables hold the rows of every tenant of `tenants`
    /// (operator federation; each row keeps its `tenant` column). It runs
    /// on the engine's shared pool, within the engine's limits.
    pub fn federated_session(&self, tenants: &[TenantId]) -> Result<SessionContext, QueryError> {
        if tenants.is_empty() {
            return Err(QueryError::Invalid("no tenant to query".into()));
        }
        let ctx = self.context(self.runtime.clone())?;
        crate::bounded::register(&ctx, TenantQueryLimits::default().memory.as_usize());
        for signal in Signal::ALL {
            let parts = tenants
                .iter()
                .map(|t| Arc::new(TenantTable::new(t.clone(), signal, self.store.clone())) as _)
                .collect();
            let table = UnionTable::new(signal.schema(), parts);
            ctx.register_table(signal.name(), Arc::new(table))
                .map_err(QueryError::from_datafusion)?;
        }
        if let Some(log) = &self.audit {
            let parts: Vec<Arc<dyn datafusion::catalog::TableProvider>> = tenants
                .iter()
                .map(|t| Arc::new(AuditTable::new(t.clone(), log.clone(), self.store.clone())) as _)
                .collect();
            let table = UnionTable::new(parts[0].schema(), parts);
            ctx.register_table("audit", Arc::new(table))
                .map_err(QueryError::from_datafusion)?;
        }
        Ok(ctx)
    }

    /// Runs one read-only statement over `tenants` together (see
    /// [`QueryEngine::federated_session`]).
    pub async fn execute_federated(
        &self,
        tenants: &[TenantId],
        sql: &str,
    ) -> Result<QueryOutput, QueryError> {
        let ctx = self.federated_session(tenants)?;
        let defaults = TenantQueryLimits::default();
        self.collect(
            &ctx,
            sql,
            self.limits.max_rows,
            defaults.max_result_size.as_usize(),
            self.limits.timeout,
            None,
        )
        .await
    }

    /// The wall time a query of `limits`' tenant may take.
    fn timeout(&self, limits: &TenantQueryLimits) -> Duration {
        limits.timeout.0.min(self.limits.timeout)
    }

    /// Plans `sql` in `ctx`, refusing anything but a read query.
    async fn dataframe(
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<datafusion::dataframe::DataFrame, QueryError> {
        crate::nesting::check_operators(sql).map_err(QueryError::Invalid)?;
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
        let limits = (self.policy)(tenant);
        let ctx = self.session_with(tenant, &limits)?;
        let sql = sql.to_string();
        let plan = async move {
            let df = Self::dataframe(&ctx, &sql).await?;
            Ok(Arc::new(df.schema().as_arrow().clone()))
        };
        // planned on the query threads, as a query is (planning a large
        // statement takes seconds)
        self.on_query_threads(plan, Default::default(), self.timeout(&limits))
            .await
    }

    /// Runs `work` on the query threads within `timeout`; past it, or when
    /// the caller stops waiting, `given_up` is raised and the task aborted.
    async fn on_query_threads<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
        given_up: crate::deadline::GivenUp,
        timeout: Duration,
    ) -> Result<T, QueryError> {
        let mut running = Running {
            task: self.threads.handle().spawn(work),
            given_up,
        };
        match tokio::time::timeout(timeout, &mut running.task).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => Err(QueryError::Internal(format!("the query's task: {e}"))),
            // dropping `running` aborts the task
            Err(_) => Err(QueryError::Timeout(timeout)),
        }
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

    /// Plans and runs one read-only statement for `tenant`, within the
    /// tenant's limits (and the engine's).
    pub async fn execute(&self, tenant: &TenantId, sql: &str) -> Result<QueryOutput, QueryError> {
        let limits = (self.policy)(tenant);
        let Some(slot) = self.tenants.enter(tenant, limits.max_concurrent) else {
            return Err(QueryError::Busy(limits.max_concurrent));
        };
        let ctx = self.session_with(tenant, &limits)?;
        let max_rows = usize::try_from(limits.max_rows)
            .unwrap_or(usize::MAX)
            .min(self.limits.max_rows);
        let max_bytes = limits.max_result_size.as_usize();
        self.collect(
            &ctx,
            sql,
            max_rows,
            max_bytes,
            self.timeout(&limits),
            Some(slot),
        )
        .await
    }

    /// Plans and runs `sql` in `ctx`, bounded in rows, bytes and time.
    async fn collect(
        &self,
        ctx: &SessionContext,
        sql: &str,
        max_rows: usize,
        max_bytes: usize,
        timeout: Duration,
        slot: Option<crate::limits::Slot>,
    ) -> Result<QueryOutput, QueryError> {
        let (ctx, sql) = (ctx.clone(), sql.to_string());
        let given_up = crate::deadline::GivenUp::default();
        let stop = given_up.clone();
        let run = async move {
            // the tenant's slot is held until the work ends, not only until
            // the answer is given (an aborted task ends at its next turn)
            let _slot = slot;
            let df = Self::dataframe(&ctx, &sql).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let plan = df
                .create_physical_plan()
                .await
                .map_err(QueryError::from_datafusion)?;
            let plan = crate::deadline::stoppable_joins(plan, &stop)
                .map_err(QueryError::from_datafusion)?;
            let mut stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
                .map_err(QueryError::from_datafusion)?;
            let mut batches = Vec::new();
            let (mut rows, mut bytes) = (0usize, 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                rows += batch.num_rows();
                if rows > max_rows {
                    return Err(QueryError::TooManyRows(max_rows));
                }
                bytes = bytes.saturating_add(batch.get_array_memory_size());
                if bytes > max_bytes {
                    return Err(QueryError::TooLarge(max_bytes));
                }
                batches.push(batch);
            }
            Ok(QueryOutput {
                schema,
                batches,
                rows,
            })
        };
        // planned and run on the query threads; the operators' own tasks
        // are spawned there too
        self.on_query_threads(run, given_up, timeout).await
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_rules::SystemClock;
    use bulkhead_store::FlushConfig;

    /// An engine of default limits over an empty store in `dir`.
    fn engine_in(dir: &std::path::Path) -> QueryEngine {
        let store =
            Arc::new(Store::open(dir, FlushConfig::default(), Arc::new(SystemClock)).unwrap());
        QueryEngine::new(store, EngineLimits::default()).unwrap()
    }

    /// A cross join of rows already in memory makes batches without reading
    /// again: without a yield between operators its task never returned to
    /// the runtime, so when the time limit dropped the query the task could
    /// not be stopped and went on holding a thread of the server's runtime
    /// (two such queries and every tenant's requests waited). The limit
    /// must end the query, and its tasks must be gone soon after.
    #[test]
    fn a_query_past_its_time_limit_stops_working() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // as the server's runtime on two cores
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(
                Store::open(dir.path(), FlushConfig::default(), Arc::new(SystemClock)).unwrap(),
            );
            let limits = EngineLimits {
                timeout: Duration::from_millis(300),
                ..EngineLimits::default()
            };
            let engine = QueryEngine::new(store, limits).unwrap();
            let a = TenantId::new("a").unwrap();
            let started = std::time::Instant::now();
            let out = rt.block_on(engine.execute(
                &a,
                "WITH v AS (SELECT unnest(range(1, 50000)) AS n) \
                 SELECT sum(x.n + y.n) FROM v x, v y",
            ));
            let took = started.elapsed();
            // the query's tasks: aborted, they end at their next yield
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while engine.running_tasks() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = tx.send((out.map(|o| o.rows), took, engine.running_tasks()));
        });
        let (out, took, alive) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the query was still running a minute later: its time limit never fired");
        assert!(matches!(out, Err(QueryError::Timeout(_))), "{out:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(
            alive, 0,
            "tasks of the query still running 5 s after its time limit"
        );
    }

    /// A nested-loop join whose filter matches nothing hands nothing on,
    /// so it never yields: two such queries ran on the server's runtime,
    /// answered their 1.5 s limit after two minutes (debug build) and held
    /// both of its threads meanwhile, every tenant's ingest waiting. They
    /// run on the engine's own threads now, so the caller's runtime keeps
    /// answering, they get their time limit on time, and their joins'
    /// filters stop at the limit, so nothing of them runs on after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_step_of_a_query_does_not_hold_the_callers_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(dir.path(), FlushConfig::default(), Arc::new(SystemClock)).unwrap(),
        );
        let limits = EngineLimits {
            timeout: Duration::from_millis(1500),
            ..EngineLimits::default()
        };
        let engine = Arc::new(QueryEngine::new(store, limits).unwrap());
        let queries: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|t| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let out = engine
                        .execute(
                            &TenantId::new(t).unwrap(),
                            "SELECT count(*) FROM generate_series(1, 200000) x \
                             JOIN generate_series(1, 200000) y ON x.value > y.value + 1000000",
                        )
                        .await;
                    (out.map(|o| o.rows), started.elapsed())
                })
            })
            .collect();
        // a task of the caller's runtime (as a request's) is started and
        // finished again and again while the queries run
        let (probe_until, mut worst) = (
            std::time::Instant::now() + Duration::from_secs(3),
            Duration::ZERO,
        );
        while std::time::Instant::now() < probe_until {
            let asked = std::time::Instant::now();
            tokio::spawn(async {}).await.unwrap();
            worst = worst.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            worst < Duration::from_millis(500),
            "a task of the caller's runtime waited {worst:?} for a thread"
        );
        for q in queries {
            let (out, took) = q.await.unwrap();
            assert!(matches!(out, Err(QueryError::Timeout(_))), "{out:?}");
            assert!(took < Duration::from_secs(3), "answered after {took:?}");
        }
        // and the joins stop: nothing of them runs on a little later
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while engine.running_tasks() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            engine.running_tasks(),
            0,
            "the queries' joins still run 5 s after their time limit"
        );
    }

    /// A statement past the operator bound, and a pattern that does not
    /// compile, are the user's errors (400), named; the engine serves on.
    #[tokio::test]
    async fn deep_chains_and_bad_patterns_are_the_users_errors() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_in(dir.path());
        let a = TenantId::new("a").unwrap();
        let ors = (0..2_000)
            .map(|i| format!("body = 'v{i}'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!("SELECT count(*) FROM logs WHERE {ors}");
        match engine.execute(&a, &sql).await {
            Err(QueryError::Invalid(m)) => assert!(m.contains("at most 1000"), "{m}"),
            other => panic!("{:?}", other.map(|o| o.rows)),
        }
        match engine.execute(&a, "SELECT 'a' ~ '('").await {
            Err(e @ QueryError::Invalid(_)) => {
                assert!(e.to_string().contains("unclosed group"), "{e}")
            }
            other => panic!("{:?}", other.map(|o| o.rows)),
        }
        let ors = (0..50)
            .map(|i| format!("body = 'v{i}'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let out = engine
            .execute(&a, &format!("SELECT count(*) FROM logs WHERE {ors}"))
            .await
            .unwrap();
        assert_eq!(out.rows, 1);
    }

    /// Functions whose output size their arguments set are refused, with
    /// the function and the limit named, when one call would make more
    /// than the tenant's query memory; at ordinary sizes they answer as
    /// the built-ins do.
    #[tokio::test]
    async fn functions_that_make_large_values_keep_to_the_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_in(dir.path());
        let a = TenantId::new("a").unwrap();
        for (sql, name) in [
            ("SELECT length(repeat('x', 2000000000))", "repeat()"),
            (
                "SELECT cardinality(array_repeat(1, 2000000000))",
                "array_repeat()",
            ),
            ("SELECT length(lpad('x', 2000000000))", "lpad()"),
            ("SELECT length(rpad('x', 2000000000, 'y'))", "rpad()"),
            ("SELECT cardinality(range(0, 2000000000))", "range()"),
            (
                "SELECT cardinality(generate_series(1, 2000000000))",
                "generate_series()",
            ),
            (
                "SELECT cardinality(array_resize(make_array(1), 2000000000))",
                "array_resize()",
            ),
            (
                "SELECT length(replace(repeat('x', 1000000), 'x', repeat('y', 1000)))",
                "replace()",
            ),
            (
                "SELECT length(regexp_replace(repeat('x', 1000000), 'x', repeat('y', 1000), 'g'))",
                "regexp_replace()",
            ),
        ] {
            match engine.execute(&a, sql).await {
                Err(QueryError::Memory(m)) => {
                    assert!(m.contains(name) && m.contains("query.memory"), "{sql}: {m}")
                }
                other => panic!("{sql}: {:?}", other.map(|o| o.rows)),
            }
        }
        let out = engine
            .execute(
                &a,
                "SELECT repeat('ab', 3) AS r, lpad('x', 3, '-') AS l, cardinality(range(5)) AS n, \
                 replace('abc', 'b', 'xx') AS p, length(repeat('x', 1000000)) AS big",
            )
            .await
            .unwrap();
        let batch = &out.batches[0];
        let text = |c: &str| {
            let col = datafusion::arrow::compute::cast(
                batch.column_by_name(c).unwrap(),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            col.as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap()
                .value(0)
                .to_string()
        };
        assert_eq!(
            (text("r"), text("l"), text("n"), text("p"), text("big")),
            (
                "ababab".into(),
                "--x".into(),
                "5".into(),
                "axxc".into(),
                "1000000".into()
            )
        );
    }

    #[tokio::test]
    async fn every_session_has_a_catalog_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_in(dir.path());
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        for tenant in [&a, &b, &a] {
            let ctx = engine.session(tenant).unwrap();
            let names = ctx
                .catalog("tenant")
                .unwrap()
                .schema("public")
                .unwrap()
                .table_names();
            assert!(names.contains(&"logs".to_string()), "{names:?}");
        }
        // nothing was registered where sessions are cloned from
        let base = engine
            .base
            .catalog_list()
            .catalog("tenant")
            .and_then(|c| c.schema("public"))
            .map(|s| s.table_names())
            .unwrap_or_default();
        assert!(base.is_empty(), "{base:?}");
        let out = engine
            .execute(&b, "SELECT count(*) FROM logs")
            .await
            .unwrap();
        assert_eq!(out.rows, 1);
        // the built-in functions are all there beside ours
        let out = engine
            .execute(
                &b,
                "SELECT lpad('x', 3, 'y'), repeat('z', 2), attr(map(['k'], ['v']), 'k')",
            )
            .await
            .unwrap();
        assert_eq!(out.rows, 1);
    }
}
