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
//! While other tenants are sending (one asked for a slot within the last
//! [`BESIDE_OTHERS`], for a request or for a flush or merge of its data), a
//! tenant holds at most one slot fewer than the cores (one at least): its
//! work then leaves a core to the others' requests and to what the server
//! does around all requests (reading them off the network, writing the
//! log, answering), which otherwise queue behind it in the operating
//! system's run queue. On two cores that halves what a
//! flood holds beside others; it costs the flood less than that, since the
//! server's own work for its requests needs the other core anyway (see
//! docs/performance.md, "Fairness").
//!
//! Beside those, a few *spare* slots (the pipeline has one a core) are for
//! requests of tenants that hold no slot for requests (and, beside their
//! own background work, send one request at a time; see below): a tenant
//! with one request at a time does not queue behind the other small
//! tenants for the one slot the flood leaves, its one request shares the
//! cores with the rest as a thread of its own. A spare slot counts towards
//! its tenant's most, so the flood gains no more by them than one slot fewer
//! than all, and they are bounded, so a crowd of tenants is still queued.
//!
//! The wait for the write-ahead log's fsync holds no slot (the pipeline
//! gives its turn back once the entry is encoded), so few slots cost no
//! throughput.
//!
//! A tenant's flushes and merges take their turns here too, as
//! *background* turns ([`FairGate::background_turn`]): they count towards
//! the tenant's most like its requests, but they never take a spare slot,
//! and a request of a tenant whose slots are all held by its background
//! work may take a spare one if it arrived with no other request of its
//! tenant in flight or queued (a tenant sending two or more at a time, a
//! flood, gets no slot beside its flush that way). The tenant pays for its flushes in turns
//! (a flood's requests wait behind its own flushes), but an acknowledgement
//! does not wait for its tenant's buffer to be encoded: on two cores a
//! small tenant's flush holds its only slot for tens of milliseconds.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_rules::{Clock, TenantId};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The gate in front of the CPU stage.
#[derive(Debug)]
pub struct FairGate {
    slots: usize,
    /// The most slots one tenant holds at once while no other tenant has
    /// asked for one lately.
    per_tenant: usize,
    /// The most while another tenant has asked for one in the last
    /// [`BESIDE_OTHERS`].
    per_tenant_beside_others: usize,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// How long after another tenant's last request a tenant keeps to
/// [`GateLimits::per_tenant_beside_others`]. Its most rises again at the
/// next request or slot given back after that (nothing wakes the gate
/// when the time is up).
pub const BESIDE_OTHERS: Duration = Duration::from_secs(1);

/// The gate's clock: monotonic, so a step of the wall clock does not hold
/// a tenant to its most beside others (or free it from it).
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> i64 {
        i64::try_from(self.0.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }
}

/// The slots of a [`FairGate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    /// Slots of the CPU stage (at least one).
    pub slots: usize,
    /// The most one tenant holds at once (at least one, at most `slots`).
    pub per_tenant: usize,
    /// The most one tenant holds at once while another tenant has asked
    /// for a slot within the last [`BESIDE_OTHERS`] (at least one, at most
    /// `per_tenant`): what the others' work and the server's own (the
    /// runtime that reads requests, the log's writes) have left of the
    /// cores then.
    pub per_tenant_beside_others: usize,
    /// Slots beside `slots` for requests of tenants that hold none.
    pub spare: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Slots nobody holds. Above zero while someone waits only when every
    /// waiting tenant holds its most.
    free: usize,
    /// Spare slots nobody holds. Above zero while someone waits only when
    /// no waiting request may take one ([`State::spare_for_queued`]).
    spare_free: usize,
    /// Slots held, per tenant holding any.
    held: HashMap<TenantId, usize>,
    /// Of those, slots held for background work (flushes, merges).
    background: HashMap<TenantId, usize>,
    /// Tenants with a request or background work waiting, in the order
    /// their turns come.
    ring: VecDeque<TenantId>,
    /// Each waiting tenant's requests and background work, oldest first;
    /// each is sent its grant.
    queues: HashMap<TenantId, VecDeque<Waiter>>,
    waiting: usize,
    /// The two tenants that asked for a slot last (distinct, the latest
    /// first), with when.
    recent: [Option<(TenantId, i64)>; 2],
}

/// One fewer for `tenant` in `counts`, which holds no zeros.
fn count_down(counts: &mut HashMap<TenantId, usize>, tenant: &TenantId) {
    if let Some(n) = counts.get_mut(tenant) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(tenant);
        }
    }
}

/// One request or piece of background work in its tenant's queue.
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Grant>,
    background: bool,
    /// A request that arrived while its tenant had no other request in
    /// flight or queued.
    lone: bool,
}

impl State {
    /// Slots `tenant` holds for its requests (not for background work).
    fn request_holds(&self, tenant: &TenantId) -> usize {
        let held = self.held.get(tenant).copied().unwrap_or(0);
        held.saturating_sub(self.background.get(tenant).copied().unwrap_or(0))
    }

    /// `tenant`'s oldest queued request (not background work) whose
    /// requester still waits.
    fn oldest_request(&self, tenant: &TenantId) -> Option<&Waiter> {
        self.queues
            .get(tenant)?
            .iter()
            .find(|w| !w.background && !w.tx.is_closed())
    }

    /// Whether a spare slot may go to `tenant`'s oldest queued request:
    /// its tenant holds no slot for requests, and either none for
    /// background work or the request arrived alone (a tenant sending one
    /// at a time; a flood does not get a slot beside its flush).
    fn spare_for_queued(&self, tenant: &TenantId) -> bool {
        let background = self.background.get(tenant).copied().unwrap_or(0);
        self.request_holds(tenant) == 0
            && self
                .oldest_request(tenant)
                .is_some_and(|w| background == 0 || w.lone)
    }

    /// `tenant` asks for a slot at `now`.
    fn note(&mut self, tenant: &TenantId, now: i64) {
        match &mut self.recent[0] {
            Some((t, at)) if t == tenant => *at = now,
            _ => {
                self.recent[1] = self.recent[0].take();
                self.recent[0] = Some((tenant.clone(), now));
            }
        }
    }

    /// Whether a tenant other than `tenant` asked for a slot within
    /// [`BESIDE_OTHERS`] of `now`.
    fn others_active(&self, tenant: &TenantId, now: i64) -> bool {
        self.recent
            .iter()
            .flatten()
            .find(|(t, _)| t != tenant)
            .is_some_and(|(_, at)| now.saturating_sub(*at) < BESIDE_OTHERS.as_nanos() as i64)
    }
}

/// What a waiting request is handed: a slot, spare or not, whether its
/// tenant still had requests queued behind it, and whether it is for
/// background work.
#[derive(Clone, Copy, Debug, Default)]
struct Grant {
    spare: bool,
    backlog: bool,
    background: bool,
}

/// One slot of the CPU stage, held until released or dropped.
#[derive(Debug)]
pub struct Turn {
    /// The gate and the tenant.
    gate: Option<(Arc<FairGate>, TenantId)>,
    grant: Grant,
}

impl Turn {
    /// A turn of no gate (work run directly, as in tests of the pipeline).
    pub fn ungated() -> Self {
        Self {
            gate: None,
            grant: Grant::default(),
        }
    }

    /// Whether, when this turn was given, the tenant had more requests
    /// queued at the gate: it sends faster than its share is worked off
    /// (a flood), where a tenant with one request at a time never has.
    /// The pipeline runs such work at a lower operating-system priority
    /// ([`crate::pipeline::Pipeline::with_backlog_nice`]).
    pub fn backlogged(&self) -> bool {
        self.grant.backlog
    }

    /// Gives the slot to whoever is next; the work goes on without it.
    pub fn release(&mut self) {
        if let Some((gate, tenant)) = self.gate.take() {
            gate.hand_over(&tenant, self.grant);
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
    rx: oneshot::Receiver<Grant>,
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
        if let Ok(grant) = self.rx.try_recv() {
            self.gate.hand_over(&self.tenant, grant);
        } else {
            // a request given up may have kept another of its tenant's from
            // a spare slot
            let mut s = self.gate.state.lock();
            self.gate.hand_out(&mut s, self.gate.clock.now_nanos());
        }
    }
}

/// How many requests wait, per tenant (for metrics and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GateLoad {
    pub free: usize,
    pub spare_free: usize,
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
        Self::with_limits(
            GateLimits {
                slots,
                per_tenant,
                per_tenant_beside_others: per_tenant,
                spare: 0,
            },
            Arc::new(MonotonicClock::new()),
        )
    }

    /// A gate of these limits (clamped to their bounds), on `clock`.
    pub fn with_limits(limits: GateLimits, clock: Arc<dyn Clock>) -> Arc<Self> {
        let slots = limits.slots.max(1);
        let per_tenant = limits.per_tenant.clamp(1, slots);
        Arc::new(Self {
            slots,
            per_tenant,
            per_tenant_beside_others: limits.per_tenant_beside_others.clamp(1, per_tenant),
            clock,
            state: Mutex::new(State {
                free: slots,
                spare_free: limits.spare,
                ..State::default()
            }),
        })
    }

    /// The most `tenant` may hold now.
    fn most(&self, s: &State, tenant: &TenantId, now: i64) -> usize {
        if s.others_active(tenant, now) {
            self.per_tenant_beside_others
        } else {
            self.per_tenant
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Waits (without holding a thread) for a slot for `tenant`'s request.
    pub async fn turn(self: &Arc<Self>, tenant: &TenantId) -> Turn {
        self.turn_for(tenant, false).await
    }

    /// Waits for a slot for `tenant`'s background work (a flush, a merge):
    /// never a spare one, and while it holds it the tenant's requests may
    /// take spare slots as if it held none, if they arrive one at a time
    /// (see [`State::spare_for_queued`]).
    pub async fn background_turn(self: &Arc<Self>, tenant: &TenantId) -> Turn {
        self.turn_for(tenant, true).await
    }

    async fn turn_for(self: &Arc<Self>, tenant: &TenantId, background: bool) -> Turn {
        let rx = {
            let now = self.clock.now_nanos();
            let mut s = self.state.lock();
            s.note(tenant, now);
            // waiting tenants whose most rose since (no one else sent
            // lately) go first
            self.hand_out(&mut s, now);
            let holds = s.held.get(tenant).copied().unwrap_or(0);
            if s.free > 0 && holds < self.most(&s, tenant, now) {
                // a free slot means every tenant waiting holds its most:
                // no one who could take it is passed over
                s.free -= 1;
                s.held.insert(tenant.clone(), holds + 1);
                let grant = Grant {
                    background,
                    ..Grant::default()
                };
                if background {
                    *s.background.entry(tenant.clone()).or_default() += 1;
                }
                return self.granted(tenant, grant);
            }
            let lone =
                !background && s.request_holds(tenant) == 0 && s.oldest_request(tenant).is_none();
            if lone && s.spare_free > 0 {
                // likewise: no request waiting may take a spare slot
                s.spare_free -= 1;
                s.held.insert(tenant.clone(), holds + 1);
                let spare = Grant {
                    spare: true,
                    ..Grant::default()
                };
                return self.granted(tenant, spare);
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.queues.entry(tenant.clone()).or_default();
            let first = queue.is_empty();
            queue.push_back(Waiter {
                tx,
                background,
                lone,
            });
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
        let grant = (&mut waiting.rx).await.unwrap_or_default();
        waiting.granted = true;
        self.granted(tenant, grant)
    }

    fn granted(self: &Arc<Self>, tenant: &TenantId, grant: Grant) -> Turn {
        Turn {
            gate: Some((self.clone(), tenant.clone())),
            grant,
        }
    }

    /// [`FairGate::background_turn`] on a blocking thread (a flush, a
    /// merge).
    pub fn background_turn_blocking(self: &Arc<Self>, tenant: &TenantId) -> Turn {
        futures::executor::block_on(self.background_turn(tenant))
    }

    /// Takes back the slot `from` held and hands out what is free.
    fn hand_over(&self, from: &TenantId, grant: Grant) {
        let mut s = self.state.lock();
        count_down(&mut s.held, from);
        if grant.background {
            count_down(&mut s.background, from);
        }
        if grant.spare {
            s.spare_free += 1;
        } else {
            s.free += 1;
        }
        self.hand_out(&mut s, self.clock.now_nanos());
    }

    /// Gives free slots to waiting requests that may take them, regular
    /// ones first, until none is left or no one may take one.
    fn hand_out(&self, s: &mut State, now: i64) {
        while self.hand_one(s, false, now) || self.hand_one(s, true, now) {}
    }

    /// Gives a free slot (a spare one if `spare`) to the first tenant in
    /// turn that may take it (a spare one: its oldest request, see
    /// [`State::spare_for_queued`]; else: its oldest request or background
    /// work, when it holds fewer than its most); whether one was given.
    fn hand_one(&self, s: &mut State, spare: bool, now: i64) -> bool {
        let free = if spare { s.spare_free } else { s.free };
        if free == 0 {
            return false;
        }
        loop {
            let eligible = s.ring.iter().position(|t| {
                if spare {
                    s.spare_for_queued(t)
                } else {
                    s.held.get(t).copied().unwrap_or(0) < self.most(s, t, now)
                }
            });
            let Some(tenant) = eligible.and_then(|at| s.ring.remove(at)) else {
                return false;
            };
            let (waiter, more, backlog) = match s.queues.get_mut(&tenant) {
                Some(q) => {
                    let at = if spare {
                        q.iter().position(|w| !w.background && !w.tx.is_closed())
                    } else {
                        Some(0)
                    };
                    let waiter = at.and_then(|at| q.remove(at));
                    (waiter, !q.is_empty(), q.iter().any(|w| !w.background))
                }
                None => (None, false, false),
            };
            if more {
                s.ring.push_back(tenant.clone());
            } else {
                s.queues.remove(&tenant);
            }
            let Some(Waiter { tx, background, .. }) = waiter else {
                continue;
            };
            s.waiting -= 1;
            // a request given up before its turn came is passed over (a
            // send only schedules the waiting task: no lock of ours is
            // taken by it)
            if tx
                .send(Grant {
                    spare,
                    backlog,
                    background,
                })
                .is_ok()
            {
                // counted as the tenant's before it can run, so it cannot
                // be handed past the tenant's most meanwhile
                if background {
                    *s.background.entry(tenant.clone()).or_default() += 1;
                }
                *s.held.entry(tenant).or_default() += 1;
                if spare {
                    s.spare_free -= 1;
                } else {
                    s.free -= 1;
                }
                return true;
            }
        }
    }

    /// Slots free and requests waiting now.
    pub fn load(&self) -> GateLoad {
        let s = self.state.lock();
        GateLoad {
            free: s.free,
            spare_free: s.spare_free,
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
        block_on(async {
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
    fn a_turn_says_whether_its_tenant_had_more_queued() {
        block_on(async {
            let gate = FairGate::new(1);
            let first = gate.turn(&t("flood")).await;
            assert!(!first.backlogged(), "a free slot: nothing queued");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for name in ["flood", "flood", "flood", "small"] {
                let (gate, tx) = (gate.clone(), tx.clone());
                tokio::spawn(async move {
                    let turn = gate.turn(&t(name)).await;
                    tx.send((name, turn.backlogged(), turn)).unwrap();
                });
            }
            while gate.load().waiting < 4 {
                tokio::task::yield_now().await;
            }
            drop(first);
            let mut seen = Vec::new();
            for _ in 0..4 {
                let (name, backlogged, turn) = rx.recv().await.unwrap();
                seen.push((name, backlogged));
                drop(turn);
            }
            // round-robin; the flood is backlogged while more of its own wait
            assert_eq!(
                seen,
                [
                    ("flood", true),
                    ("small", false),
                    ("flood", true),
                    ("flood", false)
                ]
            );
        });
    }

    #[test]
    fn slots_are_taken_and_given_back() {
        block_on(async {
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
                    spare_free: 0,
                    waiting: 0,
                    tenants_waiting: 0
                }
            );
        });
    }

    #[test]
    fn a_request_given_up_passes_its_turn_on() {
        block_on(async {
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
        block_on(async {
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
                    spare_free: 0,
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

    /// A gate of these limits on a clock of the test's.
    fn limits_gate(
        slots: usize,
        per_tenant: usize,
        per_tenant_beside_others: usize,
        spare: usize,
    ) -> (Arc<FairGate>, Arc<bulkhead_rules::ManualClock>) {
        let clock = Arc::new(bulkhead_rules::ManualClock::new(1_000_000_000));
        let gate = FairGate::with_limits(
            GateLimits {
                slots,
                per_tenant,
                per_tenant_beside_others,
                spare,
            },
            clock.clone(),
        );
        (gate, clock)
    }

    /// While another tenant sends, a tenant holds at most its most beside
    /// others; a second after the others' last request, its most again.
    #[test]
    fn beside_other_tenants_a_tenant_holds_fewer() {
        block_on(async {
            let (gate, clock) = limits_gate(3, 2, 1, 0);
            let waiter = |name: &'static str| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.turn(&t(name)).await })
            };
            // alone, the flood takes two
            let f1 = gate.turn(&t("flood")).await;
            let f2 = gate.turn(&t("flood")).await;
            let small = gate.turn(&t("small")).await;
            drop(small);
            // a small tenant has just sent: one flood slot given back is
            // not the flood's again while it holds one
            let f3 = waiter("flood");
            settle().await;
            drop(f1);
            settle().await;
            assert_eq!(gate.load().waiting, 1);
            assert_eq!(gate.load().free, 2);
            assert!(!f3.is_finished());
            // nor just before the second is up...
            clock.advance(BESIDE_OTHERS - Duration::from_millis(1));
            let f4 = waiter("flood");
            settle().await;
            assert_eq!(gate.load().waiting, 2);
            // ... but after it: the next event lets the flood take two
            clock.advance(Duration::from_millis(1));
            let f5 = waiter("flood");
            settle().await;
            let f3 = served(f3).await;
            assert_eq!(gate.load().waiting, 2, "the flood holds two again");
            assert_eq!(gate.load().free, 1);
            drop((f2, f3));
            let f4 = served(f4).await;
            let f5 = served(f5).await;
            drop((f4, f5));
            settle().await;
            assert_eq!(gate.load().free, 3);
        });
    }

    /// Every slot is free and nothing waits.
    fn all_back(gate: &FairGate, slots: usize, spare: usize) {
        assert_eq!(
            gate.load(),
            GateLoad {
                free: slots,
                spare_free: spare,
                waiting: 0,
                tenants_waiting: 0
            }
        );
    }

    /// Runs a test's body on a runtime of the test's own thread.
    fn block_on<F: std::future::Future>(body: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body)
    }

    /// Lets every spawned request run as far as it can.
    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    /// The turn of a waiting request that must be served by now.
    async fn served(task: tokio::task::JoinHandle<Turn>) -> Turn {
        for _ in 0..64 {
            if task.is_finished() {
                return task.await.unwrap();
            }
            tokio::task::yield_now().await;
        }
        panic!("a request that may take a free slot is still waiting");
    }

    #[test]
    fn spare_slots_go_to_tenants_holding_none() {
        block_on(async {
            let gate = limits_gate(3, 2, 2, 2).0;
            let waiter = |name: &'static str| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.turn(&t(name)).await })
            };
            let f1 = gate.turn(&t("flood")).await;
            let f2 = gate.turn(&t("flood")).await;
            let a = gate.turn(&t("a")).await;
            assert_eq!((gate.load().free, gate.load().spare_free), (0, 2));
            // the flood holds its most: no spare slot for it
            let f3 = waiter("flood");
            settle().await;
            assert_eq!(gate.load().waiting, 1);
            assert_eq!(gate.load().spare_free, 2);
            // a tenant holding none takes a spare slot at once...
            let b = gate.turn(&t("b")).await;
            let c = gate.turn(&t("c")).await;
            assert_eq!(gate.load().spare_free, 0);
            // ... while there is one; and one holding a slot does not
            let d = waiter("d");
            let a2 = waiter("a");
            settle().await;
            assert_eq!(gate.load().waiting, 3);
            // a spare slot given back goes to d (holding none), not to a or
            // the flood (holding some)
            drop(b);
            let d = served(d).await;
            assert_eq!(gate.load().waiting, 2);
            assert_eq!(gate.load().spare_free, 0);
            drop(c);
            settle().await;
            assert_eq!(gate.load().spare_free, 1, "no one waiting may take it");
            // a's slot given back: a's second request is next in turn; then
            // the flood's, as its own come back
            drop(a);
            let a2 = served(a2).await;
            drop(f1);
            let f3 = served(f3).await;
            drop((f2, f3, a2, d));
            settle().await;
            all_back(&gate, 3, 2);
        });
    }

    /// A tenant's flush holds the one slot it may hold beside others: its
    /// request takes a spare slot instead of waiting for the flush; its
    /// further background work waits, and never takes a spare slot.
    #[test]
    fn a_request_does_not_wait_for_its_tenants_background_work() {
        block_on(async {
            let gate = limits_gate(3, 2, 1, 2).0;
            let flood = gate.turn(&t("flood")).await;
            let flush = gate.background_turn(&t("small")).await;
            assert_eq!((gate.load().free, gate.load().spare_free), (1, 2));
            let request = gate.turn(&t("small")).await;
            assert_eq!(
                (gate.load().free, gate.load().spare_free),
                (1, 1),
                "the request took a spare slot"
            );
            // a second flush of the small tenant: not a spare slot, and not
            // the free one either (it holds its most)
            let merge = {
                let gate = gate.clone();
                tokio::spawn(async move { gate.background_turn(&t("small")).await })
            };
            settle().await;
            assert_eq!(gate.load().waiting, 1);
            assert_eq!((gate.load().free, gate.load().spare_free), (1, 1));
            // and with its request slot held, a second request waits too
            let second = {
                let gate = gate.clone();
                tokio::spawn(async move { gate.turn(&t("small")).await })
            };
            settle().await;
            assert_eq!(gate.load().waiting, 2);
            // the request done: the second, sent while the first was in
            // flight, is not one at a time, so no spare slot beside the flush
            drop(request);
            settle().await;
            assert_eq!(gate.load().waiting, 2);
            assert_eq!(gate.load().spare_free, 2);
            // the flush done: the merge, first in the queue, takes the slot
            drop(flush);
            let merge = served(merge).await;
            assert_eq!(gate.load().waiting, 1);
            // and the second request waits for it
            drop(merge);
            let second = served(second).await;
            drop((flood, second));
            settle().await;
            all_back(&gate, 3, 2);
        });
    }

    /// Background work counts towards its tenant's most: a flood's flush
    /// holding its one slot beside others keeps its requests waiting.
    #[test]
    fn background_work_counts_towards_its_tenants_most() {
        block_on(async {
            let gate = limits_gate(3, 2, 1, 2).0;
            let small = gate.turn(&t("small")).await;
            let flush = gate.background_turn(&t("flood")).await;
            let first = gate.turn(&t("flood")).await;
            assert_eq!(
                gate.load().spare_free,
                1,
                "a spare slot, as it held none for requests"
            );
            let waiter = || {
                let gate = gate.clone();
                tokio::spawn(async move { gate.turn(&t("flood")).await })
            };
            let (second, third) = (waiter(), waiter());
            settle().await;
            assert_eq!(gate.load().waiting, 2);
            assert_eq!(gate.load().free, 1, "free, but the flood holds its most");
            // a backlog beside its flush: no spare slot for it
            drop(first);
            settle().await;
            assert_eq!(gate.load().waiting, 2);
            assert_eq!(gate.load().spare_free, 2);
            // its flush done, its requests take the regular slot in turn
            drop(flush);
            let second = served(second).await;
            assert_eq!(gate.load().waiting, 1);
            drop(second);
            let third = served(third).await;
            drop((third, small));
            settle().await;
            all_back(&gate, 3, 2);
        });
    }

    /// A request waiting for a turn, or holding one.
    struct Request {
        tenant: usize,
        background: bool,
        /// Arrived while its tenant had no other request in flight or
        /// waiting.
        lone: bool,
        task: Option<tokio::task::JoinHandle<Turn>>,
        turn: Option<Turn>,
    }

    /// Lets the requests run, then takes the turns of those served.
    async fn take_turns(requests: &mut [Request]) {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        for r in requests {
            if r.task.as_ref().is_some_and(|t| t.is_finished()) {
                r.turn = Some(r.task.take().unwrap().await.unwrap());
            }
        }
    }

    /// Random arrivals of requests and background work, releases, and
    /// requests given up while waiting, against a gate with spare slots:
    /// after each step no tenant holds more than its most (one spare slot
    /// more beside its background work), background work holds no spare
    /// slot and a tenant one at most, at most the slots are held, nothing
    /// waits while a slot it may take is free (a spare one: a request whose
    /// tenant holds none for requests and, if it holds some for background
    /// work, that arrived with no other request of its tenant's in flight
    /// or waiting), and at the end every slot is back.
    fn check_spare_gate(
        (slots, per_tenant, beside, spare): (usize, usize, usize, usize),
        steps: &[(u8, usize)],
    ) {
        block_on(async {
            // the clock stands still: once another tenant asked, a tenant
            // keeps to its most beside others
            let gate = limits_gate(slots, per_tenant, beside, spare).0;
            let per_tenant = per_tenant.clamp(1, slots);
            let beside = beside.clamp(1, per_tenant);
            let mut asked = [false; 4];
            let mut requests: Vec<Request> = Vec::new();
            for (step, &(kind, n)) in steps.iter().enumerate() {
                let waiting: Vec<usize> = (0..requests.len())
                    .filter(|i| requests[*i].turn.is_none())
                    .collect();
                if kind == 3 && !waiting.is_empty() {
                    let r = requests.remove(waiting[n % waiting.len()]);
                    if let Some(task) = r.task {
                        task.abort();
                    }
                } else if kind > 0 || requests.is_empty() {
                    let tenant = n % 4;
                    let background = kind == 2;
                    let lone = !background
                        && !requests.iter().any(|r| r.tenant == tenant && !r.background);
                    asked[tenant] = true;
                    let gate = gate.clone();
                    let task = tokio::spawn(async move {
                        let tenant = t(&format!("t{tenant}"));
                        if background {
                            gate.background_turn(&tenant).await
                        } else {
                            gate.turn(&tenant).await
                        }
                    });
                    requests.push(Request {
                        tenant,
                        background,
                        lone,
                        task: Some(task),
                        turn: None,
                    });
                } else {
                    let held: Vec<usize> = (0..requests.len())
                        .filter(|i| requests[*i].turn.is_some())
                        .collect();
                    if !held.is_empty() {
                        requests.remove(held[n % held.len()]);
                    }
                }
                take_turns(&mut requests).await;
                let mut holds = [0usize; 4];
                let mut background = [0usize; 4];
                let mut spares = [0usize; 4];
                // [request, background work] waiting
                let mut waits = [[false; 2]; 4];
                // whether each tenant's oldest waiting request arrived alone
                let mut oldest_lone = [None; 4];
                for r in &requests {
                    if let Some(turn) = &r.turn {
                        holds[r.tenant] += 1;
                        background[r.tenant] += usize::from(r.background);
                        assert_eq!(turn.grant.background, r.background, "step {step}");
                        assert!(
                            !(r.background && turn.grant.spare),
                            "step {step}: background work on a spare slot"
                        );
                        spares[r.tenant] += usize::from(turn.grant.spare);
                    } else {
                        waits[r.tenant][usize::from(r.background)] = true;
                        if !r.background && oldest_lone[r.tenant].is_none() {
                            oldest_lone[r.tenant] = Some(r.lone);
                        }
                    }
                }
                assert!(spares.iter().all(|n| *n <= 1), "step {step}: {spares:?}");
                let load = gate.load();
                let total: usize = holds.iter().sum();
                for tenant in 0..4 {
                    let most = per_tenant + usize::from(background[tenant] > 0);
                    assert!(
                        holds[tenant] <= most,
                        "step {step}: {holds:?} {background:?}"
                    );
                    assert!(
                        background[tenant] <= per_tenant,
                        "step {step}: {background:?}"
                    );
                }
                assert_eq!(
                    total + load.free + load.spare_free,
                    slots + spare,
                    "step {step}"
                );
                for tenant in 0..4 {
                    let others = (0..4).any(|o| o != tenant && asked[o]);
                    let most = if others { beside } else { per_tenant };
                    let regular = load.free > 0 && holds[tenant] < most;
                    let spare_for_request = load.spare_free > 0
                        && holds[tenant] == background[tenant]
                        && oldest_lone[tenant].is_some_and(|lone| lone || background[tenant] == 0);
                    assert!(
                        !(waits[tenant][0] && (regular || spare_for_request)),
                        "step {step}: a request of t{tenant} waits beside a slot it may take: {load:?} {holds:?} {background:?}"
                    );
                    assert!(
                        !(waits[tenant][1] && regular),
                        "step {step}: background work of t{tenant} waits beside a slot it may take: {load:?} {holds:?} {background:?}"
                    );
                }
            }
            // everything served and given back
            for round in 0.. {
                if !requests.iter().any(|r| r.task.is_some()) {
                    break;
                }
                assert!(round < 1000, "requests still waiting with nothing held");
                requests.retain(|r| r.task.is_some());
                take_turns(&mut requests).await;
            }
            requests.clear();
            assert_eq!(
                gate.load(),
                GateLoad {
                    free: slots,
                    spare_free: spare,
                    waiting: 0,
                    tenants_waiting: 0
                }
            );
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

        #[test]
        fn spare_slots_keep_the_limits(
            steps in proptest::collection::vec((0u8..4, 0usize..64), 1..60),
            slots in 1usize..4,
            per_tenant in 1usize..4,
            beside in 1usize..4,
            spare in 0usize..3,
        ) {
            check_spare_gate((slots, per_tenant, beside, spare), &steps);
        }
    }
}
