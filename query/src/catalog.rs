//! The tenant catalog: a per-request set of tables (`logs`, `spans`,
//! `metrics`) that read only the caller's partition tree and buffers.
//!
//! Scans prune by event time: bounds on `timestamp` in the query's filters
//! select the files of the table's manifest whose time range they overlap
//! (no directory is listed), and the same filters go to the Parquet reader
//! for row-group pruning.
use std::sync::Arc;

use async_trait::async_trait;
use bulkhead_rules::TenantId;
use bulkhead_store::schema::TENANT_COLUMN;
use bulkhead_store::{Signal, Store, TimeRange, OBJECT_STORE_URL};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::EncryptionFactoryOptions;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::logical_expr::{
    utils::conjunction, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::parquet::encryption::decrypt::FileDecryptionProperties;
use datafusion::parquet::encryption::encrypt::FileEncryptionProperties;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

/// One table of one tenant.
#[derive(Debug)]
pub struct TenantTable {
    tenant: TenantId,
    signal: Signal,
    store: Arc<Store>,
    schema: SchemaRef,
}

impl TenantTable {
    pub fn new(tenant: TenantId, signal: Signal, store: Arc<Store>) -> Self {
        Self {
            tenant,
            signal,
            store,
            schema: signal.schema(),
        }
    }
}

#[async_trait]
impl TableProvider for TenantTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = time_range(filters);
        // listing directories is filesystem work: off the runtime's workers
        let (store, tenant, signal) = (self.store.clone(), self.tenant.clone(), self.signal);
        let snapshot = tokio::task::spawn_blocking(move || store.snapshot(&tenant, signal, range))
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !snapshot.files.is_empty() {
            inputs.push(self.file_scan(state, &snapshot.files, projection, filters, limit)?);
        }
        if !snapshot.buffered.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[snapshot.buffered],
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

impl TenantTable {
    /// A Parquet scan of committed files. Files hold every column but
    /// `tenant` (see `bulkhead_store::schema::file_schema`); the scan adds it
    /// as a partition column, from the tenant this table belongs to.
    fn file_scan(
        &self,
        state: &dyn Session,
        files: &[(ObjectPath, u64)],
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let url = ObjectStoreUrl::parse(OBJECT_STORE_URL)?;
        let tenant_at = self.schema.index_of(TENANT_COLUMN)?;
        let file_schema = bulkhead_store::schema::file_schema(&self.schema);
        let table_schema = TableSchema::builder(file_schema.clone())
            .with_table_partition_cols(vec![Arc::new(self.schema.field(tenant_at).clone())])
            .build();
        // the scan's columns are the file's, then `tenant`: map the table's
        // column numbers onto them
        let scan_index = |i: usize| match i.cmp(&tenant_at) {
            std::cmp::Ordering::Equal => file_schema.fields().len(),
            std::cmp::Ordering::Less => i,
            std::cmp::Ordering::Greater => i - 1,
        };
        let wanted: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| scan_index(*i)).collect(),
            None => (0..self.schema.fields().len()).map(scan_index).collect(),
        };
        // footers are cached across queries: files never change once
        // committed (each has a fresh name), so a warm query reads none
        let runtime = state.runtime_env();
        let readers = CachedParquetFileReaderFactory::new(
            runtime.object_store(&url)?,
            runtime.cache_manager.get_file_metadata_cache(),
        );
        let scan_schema = table_schema.table_schema().clone();
        let mut source =
            ParquetSource::new(table_schema).with_parquet_file_reader_factory(Arc::new(readers));
        // the tenant's files are decrypted with the tenant's data keys only
        let decryption = self
            .store
            .decryption(&self.tenant)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        if let Some(d) = decryption {
            source = source.with_encryption_factory(Arc::new(TenantDecryption(d)));
        }
        // filters on `tenant` hold for every row here; the rest prune row groups
        let prunable: Vec<Expr> = filters
            .iter()
            .filter(|f| !f.column_refs().iter().any(|c| c.name == TENANT_COLUMN))
            .cloned()
            .collect();
        if let Some(predicate) = conjunction(prunable) {
            let df_schema = DFSchema::try_from(scan_schema)?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let groups_wanted = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> =
            vec![Vec::new(); groups_wanted.min(files.len())];
        for (i, (path, size)) in files.iter().enumerate() {
            let n = groups.len();
            let mut file = PartitionedFile::new(path.to_string(), *size);
            file.partition_values = vec![ScalarValue::Utf8(Some(self.tenant.to_string()))];
            groups[i % n].push(file);
        }
        let config = FileScanConfigBuilder::new(url, Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(Some(wanted))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Decryption of one tenant's files: every file of a scan is the tenant's,
/// and the footer names the data key (see `bulkhead_store::crypto`).
#[derive(Debug)]
struct TenantDecryption(Arc<FileDecryptionProperties>);

#[async_trait]
impl EncryptionFactory for TenantDecryption {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        _file_path: &ObjectPath,
    ) -> Result<Option<Arc<FileEncryptionProperties>>> {
        // queries never write files
        Ok(None)
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _file_path: &ObjectPath,
    ) -> Result<Option<Arc<FileDecryptionProperties>>> {
        Ok(Some(self.0.clone()))
    }
}

/// The tenant's own audit events, read from the audit log at scan time:
/// none of an earlier tenant of the same name (entries up to its
/// offboarding in this node's log, and entries older than the offboarding
/// mark in the store, which covers an offboarding run by another node).
#[derive(Debug)]
pub struct AuditTable {
    tenant: TenantId,
    log: Arc<bulkhead_store::audit::AuditLog>,
    store: Arc<Store>,
}

impl AuditTable {
    pub fn new(
        tenant: TenantId,
        log: Arc<bulkhead_store::audit::AuditLog>,
        store: Arc<Store>,
    ) -> Self {
        Self { tenant, log, store }
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        bulkhead_store::audit::audit_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let external = |e: &dyn std::fmt::Display| {
            datafusion::error::DataFusionError::Execution(format!("audit log: {e}"))
        };
        let (log, store) = (self.log.clone(), self.store.clone());
        let (tenant, range) = (self.tenant.clone(), time_range(filters));
        let events = tokio::task::spawn_blocking(move || {
            let mut events = log.events_for(&tenant, range).map_err(|e| external(&e))?;
            if let Some(before) = store.offboarded_before(&tenant).map_err(|e| external(&e))? {
                events.retain(|e| e.time_nanos >= before);
            }
            Ok::<_, datafusion::error::DataFusionError>(events)
        })
        .await
        .map_err(|e| external(&e))??;
        let batch = bulkhead_store::audit::to_batch(&events).map_err(|e| external(&e))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// The event-time range implied by bounds on `timestamp` among `filters`
/// (all combined with AND). Anything it does not understand widens the range.
pub fn time_range(filters: &[Expr]) -> TimeRange {
    let mut range = TimeRange::ALL;
    for f in filters {
        narrow(f, &mut range);
    }
    range
}

fn narrow(expr: &Expr, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            narrow(left, range);
            narrow(right, range);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (left.as_ref(), right.as_ref()) {
                (l, r) if is_timestamp_column(l) => (*op, timestamp_nanos(r)),
                (l, r) if is_timestamp_column(r) => match op.swap() {
                    Some(op) => (op, timestamp_nanos(l)),
                    None => return,
                },
                _ => return,
            };
            let Some(v) = value else { return };
            match op {
                Operator::Eq => {
                    range.start = range.start.max(v);
                    range.end = range.end.min(v);
                }
                Operator::Gt | Operator::GtEq => range.start = range.start.max(v),
                Operator::Lt | Operator::LtEq => range.end = range.end.min(v),
                _ => {}
            }
        }
        Expr::Between(b) if !b.negated && is_timestamp_column(&b.expr) => {
            if let Some(lo) = timestamp_nanos(&b.low) {
                range.start = range.start.max(lo);
            }
            if let Some(hi) = timestamp_nanos(&b.high) {
                range.end = range.end.min(hi);
            }
        }
        _ => {}
    }
}

fn is_timestamp_column(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name == "timestamp",
        Expr::Cast(c) => is_timestamp_column(&c.expr),
        _ => false,
    }
}

fn timestamp_nanos(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => n.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(n), _) => n.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(n), _) => n.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(n: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(n),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_on_timestamp_narrow_the_range() {
        let r = time_range(&[col("timestamp")
            .gt_eq(ts(10))
            .and(col("timestamp").lt(ts(20)))]);
        assert_eq!(r, TimeRange { start: 10, end: 20 });
        let r = time_range(&[ts(30).gt(col("timestamp"))]);
        assert_eq!(
            r,
            TimeRange {
                start: i64::MIN,
                end: 30
            }
        );
        let r = time_range(&[col("timestamp").between(ts(1), ts(2))]);
        assert_eq!(r, TimeRange { start: 1, end: 2 });
        let ms = lit(ScalarValue::TimestampMillisecond(Some(5), None));
        assert_eq!(
            time_range(&[col("timestamp").eq(ms)]),
            TimeRange {
                start: 5_000_000,
                end: 5_000_000
            }
        );
    }

    #[test]
    fn other_filters_leave_the_range_open() {
        let r = time_range(&[
            col("timestamp").gt(ts(1)).or(col("timestamp").lt(ts(0))),
            col("severity_number").gt(lit(5)),
            col("timestamp").not_between(ts(1), ts(2)),
        ]);
        assert_eq!(r, TimeRange::ALL);
    }
}

/// One table over several tenants' tables of the same kind (operator
/// federation): their rows one after the other, each with its own `tenant`
/// column. Filters reach every part for pruning, as with one tenant.
#[derive(Debug)]
pub struct UnionTable {
    schema: SchemaRef,
    parts: Vec<Arc<dyn TableProvider>>,
}

impl UnionTable {
    /// `parts` must not be empty and must share `schema`.
    pub fn new(schema: SchemaRef, parts: Vec<Arc<dyn TableProvider>>) -> Self {
        Self { schema, parts }
    }
}

#[async_trait]
impl TableProvider for UnionTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut plans = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            plans.push(part.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(plans)
    }
}
