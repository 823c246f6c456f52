//! Fair turns at the ingest pipeline's CPU stage.
//!
//! Decompressing, decoding, converting and redacting a request is CPU work;
//! on a node with a few cores, whoever has the most requests in flight gets
//! most of it. So that a tenant sending as fast as it can does not starve
//! the others, the CPU stage has a fixed number of slots (about the number
//! of cores) and requests that find them taken wait in a queue of their
//! tenant's. A freed slot goes to the tenant next in turn (round-robin over
//! the tenants that are waiting), then to that tenant's oldest request. A
//! tenant with a thousand requests queued thus gets one turn per round,
//! like a tenant with one: a small tenant's request waits for at most one
//! request of each other waiting tenant. And one tenant may hold at most
//! one slot fewer than all (the pipeline has one slot more than cores):
//! alone it keeps every core busy, and another tenant's request finds the
//! last slot free instead of waiting for the flood's work in progress.
//!
//! The wait for the write-ahead log's fsync holds no slot (the pipeline
//! gives its turn back once the entry is encoded), so few slots cost no
//! throughput. A tenant's flushes and merges take their turns here too.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bulkhead_rules::TenantId;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The gate in front of the CPU stage.
#[derive(Debug)]
pub struct FairGate {
    slots: usize,
    /// The most slots one tenant holds at once.
    per_tenant: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots nobody holds. Above zero while someone waits only when every
    /// waiting tenant holds its most.
    free: usize,
    /// Slots held, per tenant holding any.
    held: HashMap<TenantId, usize>,
    /// Tenants with a request waiting, in the order their turns come.
    ring: VecDeque<TenantId>,
    /// Each waiting tenant's requests, oldest first.
    queues: HashMap<TenantId, VecDeque<oneshot::Sender<()>>>,
    waiting: usize,
}

/// One slot of the CPU stage, held until released or dropped.
#[derive(Debug)]
pub struct Turn {
    gate: Option<(Arc<FairGate>, TenantId)>,
}

impl Turn {
    /// A turn of no gate (work run directly, as in tests of the pipeline).
    pub fn ungated() -> Self {
        Self { gate: None }
    }

    /// Gives the slot to whoever is next; the work goes on without it.
    pub fn release(&mut self) {
        if let Some((gate, tenant)) = self.gate.take() {
            gate.hand_over(&tenant);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

/// A request in its tenant's queue; if it is given up (the client went
/// away) after its turn was handed to it, the turn goes on to the next.
struct Waiting {
    rx: oneshot::Receiver<()>,
    gate: Arc<FairGate>,
    tenant: TenantId,
    granted: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.gate.hand_over(&self.tenant);
        }
    }
}

/// How many requests wait, per tenant (for metrics and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GateLoad {
    pub free: usize,
    pub waiting: usize,
    pub tenants_waiting: usize,
}

impl FairGate {
    /// A gate of `slots` (at least one) slots, any tenant taking all.
    pub fn new(slots: usize) -> Arc<Self> {
        Self::with_tenant_limit(slots, slots)
    }

    /// A gate of `slots` slots of which one tenant holds at most
    /// `per_tenant` (at least one) at once: with one fewer than the slots,
    /// one is always left for the other tenants, so a small tenant's request
    /// need not wait for a flood's work in progress to finish.
    pub fn with_tenant_limit(slots: usize, per_tenant: usize) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Self {
            slots,
            per_tenant: per_tenant.clamp(1, slots),
            state: Mutex::new(State {
                free: slots,
                ..State::default()
            }),
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Waits (without holding a thread) for a slot for `tenant`'s request.
    pub async fn turn(self: &Arc<Self>, tenant: &TenantId) -> Turn {
        let rx = {
            let mut s = self.state.lock();
            let holds = s.held.get(tenant).copied().unwrap_or(0);
            if s.free > 0 && holds < self.per_tenant {
                // a free slot means every tenant waiting holds its most:
                // no one who could take it is passed over
                s.free -= 1;
                s.held.insert(tenant.clone(), holds + 1);
                return Turn {
                    gate: Some((self.clone(), tenant.clone())),
                };
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.queues.entry(tenant.clone()).or_default();
            let first = queue.is_empty();
            queue.push_back(tx);
            if first {
                s.ring.push_back(tenant.clone());
            }
            s.waiting += 1;
            rx
        };
        let mut waiting = Waiting {
            rx,
            gate: self.clone(),
            tenant: tenant.clone(),
            granted: false,
        };
        // the sender is only ever dropped after sending, or with the gate
        // (which this future holds): the result is always Ok
        let _ = (&mut waiting.rx).await;
        waiting.granted = true;
        Turn {
            gate: Some((self.clone(), tenant.clone())),
        }
    }

    /// [`FairGate::turn`] for work on a blocking thread (a flush, a merge).
    pub fn turn_blocking(self: &Arc<Self>, tenant: &TenantId) -> Turn {
        futures::executor::block_on(self.turn(tenant))
    }

    /// Takes back the slot `from` held and hands it to the next tenant in
    /// turn that holds fewer than its most, or frees it.
    fn hand_over(&self, from: &TenantId) {
        let mut s = self.state.lock();
        let left = s.held.get(from).copied().unwrap_or(1).saturating_sub(1);
        if left == 0 {
            s.held.remove(from);
        } else {
            s.held.insert(from.clone(), left);
        }
        loop {
            // the first tenant in turn that may take one more
            let eligible = s
                .ring
                .iter()
                .position(|t| s.held.get(t).copied().unwrap_or(0) < self.per_tenant);
            let Some(at) = eligible else {
                s.free += 1;
                return;
            };
            let Some(tenant) = s.ring.remove(at) else {
                s.free += 1;
                return;
            };
            let (tx, more) = match s.queues.get_mut(&tenant) {
                Some(q) => (q.pop_front(), !q.is_empty()),
                None => (None, false),
            };
            if more {
                s.ring.push_back(tenant.clone());
            } else {
                s.queues.remove(&tenant);
            }
            let Some(tx) = tx else { continue };
            s.waiting -= 1;
            // counted as the tenant's before it can run, so it cannot be
            // handed past the tenant's most meanwhile
            *s.held.entry(tenant.clone()).or_default() += 1;
            // a request given up before its turn came is passed over (a
            // send only schedules the waiting task: no lock of ours is
            // taken by it)
            if tx.send(()).is_ok() {
                return;
            }
            let left = s.held.get(&tenant).copied().unwrap_or(1).saturating_sub(1);
            if left == 0 {
                s.held.remove(&tenant);
            } else {
                s.held.insert(tenant, left);
            }
        }
    }

    /// Slots free and requests waiting now.
    pub fn load(&self) -> GateLoad {
        let s = self.state.lock();
        GateLoad {
            free: s.free,
            waiting: s.waiting,
            tenants_waiting: s.ring.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn t(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    /// Drives the gate on a current-thread runtime: `arrivals` are queued
    /// in order while every slot is held, then the slots are released one
    /// at a time; returns the tenants in the order they were served.
    fn serve_order(slots: usize, arrivals: &[TenantId]) -> Vec<TenantId> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = FairGate::new(slots);
            let held: Vec<Turn> = {
                let mut v = Vec::new();
                for _ in 0..slots {
                    v.push(gate.turn(&t("holder")).await);
                }
                v
            };
            let order = Arc::new(Mutex::new(Vec::new()));
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            for tenant in arrivals {
                let (gate, order, tenant, done) =
                    (gate.clone(), order.clone(), tenant.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let turn = gate.turn(&tenant).await;
                    order.lock().push(tenant);
                    // the next release is the test's to make
                    done.send(turn).unwrap();
                });
            }
            // every arrival queued before any slot frees
            for _ in 0..arrivals.len() * 2 + 4 {
                tokio::task::yield_now().await;
            }
            assert_eq!(gate.load().waiting, arrivals.len());
            drop(held);
            for _ in 0..arrivals.len() {
                let turn = done_rx.recv().await.unwrap();
                drop(turn);
            }
            let out = order.lock().clone();
            out
        })
    }

    #[test]
    fn a_flood_gets_one_turn_per_round() {
        // one tenant queues 50 requests, then five others one each
        let mut arrivals = vec![t("flood"); 50];
        for i in 0..5 {
            arrivals.push(t(&format!("small-{i}")));
        }
        let order = serve_order(1, &arrivals);
        // each small tenant is served within the first round: at most one
        // flood request before each of them
        for i in 0..5 {
            let at = order
                .iter()
                .position(|x| x.as_str() == format!("small-{i}"))
                .unwrap();
            assert!(at <= 2 * (i + 1), "small-{i} served at {at}: {order:?}");
        }
        assert_eq!(order.len(), 55);
    }

    #[test]
    fn slots_are_taken_and_given_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = FairGate::new(2);
            let a = gate.turn(&t("a")).await;
            let b = gate.turn(&t("a")).await;
            assert_eq!(gate.load().free, 0);
            drop(a);
            assert_eq!(gate.load().free, 1);
            drop(b);
            assert_eq!(
                gate.load(),
                GateLoad {
                    free: 2,
                    waiting: 0,
                    tenants_waiting: 0
                }
            );
        });
    }

    #[test]
    fn a_request_given_up_passes_its_turn_on() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = FairGate::new(1);
            let held = gate.turn(&t("a")).await;
            // b gives up while waiting; c waits
            let b = tokio::spawn({
                let gate = gate.clone();
                async move { gate.turn(&t("b")).await }
            });
            let served = Arc::new(AtomicUsize::new(0));
            let c = tokio::spawn({
                let (gate, served) = (gate.clone(), served.clone());
                async move {
                    let _turn = gate.turn(&t("c")).await;
                    served.fetch_add(1, Ordering::SeqCst);
                }
            });
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            b.abort();
            let _ = b.await;
            drop(held);
            c.await.unwrap();
            assert_eq!(served.load(Ordering::SeqCst), 1);
            assert_eq!(gate.load().free, 1, "no slot lost");
        });
    }

    #[test]
    fn one_tenant_leaves_a_slot_for_the_others() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = FairGate::with_tenant_limit(3, 2);
            let a1 = gate.turn(&t("flood")).await;
            let a2 = gate.turn(&t("flood")).await;
            // the flood's third waits although a slot is free...
            let third = tokio::spawn({
                let gate = gate.clone();
                async move { gate.turn(&t("flood")).await }
            });
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            assert_eq!(gate.load().free, 1);
            assert_eq!(gate.load().waiting, 1);
            // ... and another tenant takes that slot at once
            let small = gate.turn(&t("small")).await;
            assert_eq!(gate.load().free, 0);
            // a flood turn given back goes to the flood's waiting request
            drop(a1);
            let a3 = third.await.unwrap();
            drop((a2, a3, small));
            assert_eq!(
                gate.load(),
                GateLoad {
                    free: 3,
                    waiting: 0,
                    tenants_waiting: 0
                }
            );
            // alone, a tenant uses its most, not more
            let b: Vec<Turn> = vec![gate.turn(&t("b")).await, gate.turn(&t("b")).await];
            assert_eq!(gate.load().free, 1);
            drop(b);
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the arrivals, while a tenant waits no other tenant is
        /// served twice, every request is served once, and no slot is lost.
        #[test]
        fn round_robin_bound(
            picks in proptest::collection::vec(0usize..6, 1..80),
            slots in 1usize..4,
        ) {
            let arrivals: Vec<TenantId> =
                picks.iter().map(|i| t(&format!("t{i}"))).collect();
            let order = serve_order(slots, &arrivals);
            prop_assert_eq!(order.len(), arrivals.len());
            let mut sorted_in = arrivals.clone();
            sorted_in.sort();
            let mut sorted_out = order.clone();
            sorted_out.sort();
            prop_assert_eq!(sorted_in, sorted_out);
            // all arrivals were queued at once: between two turns of one
            // tenant every other tenant still waiting gets at most one turn
            for (i, x) in order.iter().enumerate() {
                let Some(j) = order[i + 1..].iter().position(|y| y == x) else { continue };
                let between = &order[i + 1..i + 1 + j];
                for y in between {
                    let n = between.iter().filter(|z| *z == y).count();
                    prop_assert!(n <= 1, "{y} served {n} times between two turns of {x}: {order:?}");
                }
            }
        }
    }
}
