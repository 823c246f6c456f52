//! Per-tenant query limits on the one shared engine: how many queries a
//! tenant runs at once, and how much of the shared memory pool its running
//! queries may hold together (`[query]` in the tenant policy,
//! `bulkhead_rules::QueryLimits`).
//!
//! Memory: every tenant's queries run on one DataFusion runtime whose pool
//! is bounded (`query.memory_limit` of the server configuration). Each
//! tenant reaches that pool through a [`TenantPool`] that also counts what
//! the tenant holds and refuses growth past the tenant's own limit, so one
//! tenant's queries, however many, cannot take the whole pool. Operators
//! that can spill (sorts, aggregations) spill when refused; the rest fail
//! with an error naming the limit.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bulkhead_rules::TenantId;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One tenant's view of the shared memory pool.
#[derive(Debug)]
pub struct TenantPool {
    tenant: TenantId,
    inner: Arc<dyn MemoryPool>,
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl TenantPool {
    fn new(tenant: TenantId, inner: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            tenant,
            inner,
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes the tenant's running queries hold.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl std::fmt::Display for TenantPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tenant {} pool ({} of {} bytes) in {}",
            self.tenant,
            self.used(),
            self.limit.load(Ordering::Relaxed),
            self.inner
        )
    }
}

impl MemoryPool for TenantPool {
    fn name(&self) -> &str {
        "tenant"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::AcqRel);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::AcqRel);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let limit = self.limit.load(Ordering::Acquire);
        // claim first, so concurrent queries of the tenant cannot both pass
        let before = self.used.fetch_add(additional, Ordering::AcqRel);
        if before.saturating_add(additional) > limit {
            self.used.fetch_sub(additional, Ordering::AcqRel);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "tenant {}'s queries would hold {} bytes, over its limit of {} bytes (query.memory in the tenant policy)",
                self.tenant,
                before.saturating_add(additional),
                limit
            )));
        }
        if let Err(e) = self.inner.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit.load(Ordering::Relaxed))
    }
}

/// A running query's place among its tenant's concurrent queries.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Gate {
    permits: u32,
    semaphore: Arc<Semaphore>,
}

/// Per-tenant pools and concurrency gates.
#[derive(Debug)]
pub struct TenantLimits {
    shared: Arc<dyn MemoryPool>,
    pools: Mutex<HashMap<TenantId, Arc<TenantPool>>>,
    gates: Mutex<HashMap<TenantId, Gate>>,
}

impl TenantLimits {
    pub fn new(shared: Arc<dyn MemoryPool>) -> Self {
        Self {
            shared,
            pools: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// `tenant`'s pool, its limit set to `limit` (policies change).
    pub fn pool(&self, tenant: &TenantId, limit: usize) -> Arc<TenantPool> {
        let mut pools = self.pools.lock();
        let pool = pools.entry(tenant.clone()).or_insert_with(|| {
            Arc::new(TenantPool::new(tenant.clone(), self.shared.clone(), limit))
        });
        pool.limit.store(limit, Ordering::Release);
        pool.clone()
    }

    /// A place for one more query of `tenant`, or `None` when `max` run.
    pub fn enter(&self, tenant: &TenantId, max: u32) -> Option<Slot> {
        let semaphore = {
            let mut gates = self.gates.lock();
            let gate = gates.entry(tenant.clone()).or_insert_with(|| Gate {
                permits: max,
                semaphore: Arc::new(Semaphore::new(max as usize)),
            });
            if gate.permits != max {
                // a changed limit: queries running under the old one finish
                // on the old semaphore; new ones count afresh
                *gate = Gate {
                    permits: max,
                    semaphore: Arc::new(Semaphore::new(max as usize)),
                };
            }
            gate.semaphore.clone()
        };
        semaphore
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_tenant_cannot_grow_past_its_limit_and_others_still_can() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let limits = TenantLimits::new(shared.clone());
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let pa: Arc<dyn MemoryPool> = limits.pool(&a, 300);
        let pb: Arc<dyn MemoryPool> = limits.pool(&b, 800);
        let ra = MemoryConsumer::new("qa").register(&pa);
        let rb = MemoryConsumer::new("qb").register(&pb);
        ra.try_grow(300).unwrap();
        let err = ra.try_grow(1).unwrap_err().to_string();
        assert!(
            err.contains("query.memory") && err.contains("tenant a"),
            "{err}"
        );
        rb.try_grow(600).unwrap();
        assert_eq!(shared.reserved(), 900);
        // the shared pool bounds everyone together
        let ra2 = MemoryConsumer::new("qa2").register(&pa);
        ra.shrink(200);
        rb.try_grow(200).unwrap();
        assert_eq!(shared.reserved(), 900);
        let err = ra2.try_grow(150).unwrap_err().to_string();
        assert!(
            !err.contains("query.memory"),
            "the shared pool refused: {err}"
        );
        ra2.try_grow(100).unwrap();
        drop(ra);
        drop(ra2);
        drop(rb);
        assert_eq!(shared.reserved(), 0);
        assert_eq!(limits.pool(&a, 300).used(), 0);
    }

    #[test]
    fn concurrency_is_per_tenant_and_follows_limit_changes() {
        let limits = TenantLimits::new(Arc::new(GreedyMemoryPool::new(1)));
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let s1 = limits.enter(&a, 2).unwrap();
        let _s2 = limits.enter(&a, 2).unwrap();
        assert!(limits.enter(&a, 2).is_none());
        assert!(limits.enter(&b, 2).is_some());
        drop(s1);
        assert!(limits.enter(&a, 2).is_some());
        // raised: counts afresh
        assert!(limits.enter(&a, 3).is_some());
    }
}
