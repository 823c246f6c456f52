//! Lower operating-system priority for the CPU work of backlogged tenants
//! (see [`crate::pipeline::Pipeline::with_backlog_nice`]).
//!
//! The fair gate ([`crate::fair`]) decides whose request gets a slot of the
//! CPU stage; it cannot order what runs outside its slots: other tenants'
//! write-ahead log syncs, their responses on the async runtime, the
//! receivers' framing. On a node with few cores a flood's work in its slot
//! and that work are ready at the same time, and the operating system's
//! scheduler shares the cores between them evenly. Work given a turn while
//! its tenant had more requests queued ([`crate::fair::Turn::backlogged`])
//! therefore runs on threads a few steps of nice below the rest: when the
//! node is idle otherwise they have every core, and when another tenant's
//! work is ready it gets a core first.
use crate::fair::Turn;

/// A runtime whose threads (its blocking pool) run at a lower priority.
#[derive(Debug)]
pub struct Backlog {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Backlog {
    /// Threads `nice` steps below the priority of the thread that starts
    /// them (at most 19, the lowest).
    pub fn new(nice: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ingest-backlog")
            .on_thread_start(move || lower_priority(nice))
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("only taken when dropped")
            .handle()
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        // without waiting: a pipeline may be dropped on an async thread
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `work` with its turn on a blocking thread: one of `backlog`'s when
/// the turn is backlogged and there is one, else the current runtime's.
pub async fn run<T: Send + 'static>(
    backlog: Option<&Backlog>,
    turn: Turn,
    work: impl FnOnce(Turn) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    match backlog {
        Some(b) if turn.backlogged() => b.handle().spawn_blocking(move || work(turn)).await,
        _ => tokio::task::spawn_blocking(move || work(turn)).await,
    }
}

/// Lowers the calling thread's priority by `nice` steps (on Linux,
/// `setpriority` of process 0 sets the calling thread's nice value alone).
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    use rustix::process::{getpriority_process, setpriority_process};
    let lowered = getpriority_process(None)
        .and_then(|now| setpriority_process(None, now.saturating_add(nice).min(19)));
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "could not lower an ingest-backlog thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::fair::FairGate;
    use bulkhead_rules::TenantId;
    use rustix::process::getpriority_process;
    use std::sync::Arc;

    fn nice_now() -> i32 {
        getpriority_process(None).unwrap()
    }

    /// The flood holds the gate's one slot, then two more of its requests
    /// queue; the slot is let go: the first one's turn, and where the
    /// second's comes once the first lets go of the slot.
    async fn two_queued(
        gate: &Arc<FairGate>,
        flood: &TenantId,
    ) -> (Turn, tokio::sync::mpsc::UnboundedReceiver<Turn>) {
        let held = gate.turn(flood).await;
        assert!(!held.backlogged(), "a free slot has no queue behind it");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 {
            let (gate, flood, tx) = (gate.clone(), flood.clone(), tx.clone());
            tokio::spawn(async move { tx.send(gate.turn(&flood).await).unwrap() });
        }
        while gate.load().waiting < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        (rx.recv().await.unwrap(), rx)
    }

    #[test]
    fn backlogged_work_runs_at_the_lower_priority_and_the_rest_does_not() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let base = nice_now();
        let backlog = Backlog::new(5).unwrap();
        let flood = TenantId::new("flood").unwrap();
        rt.block_on(async {
            let gate = FairGate::new(1);
            let (first, mut rest) = two_queued(&gate, &flood).await;
            assert!(first.backlogged(), "one more was queued behind it");
            let seen = run(Some(&backlog), first, |_turn| nice_now())
                .await
                .unwrap();
            assert_eq!(seen, (base + 5).min(19));
            let last = rest.recv().await.unwrap();
            assert!(!last.backlogged(), "nothing queued behind the last");
            let seen = run(Some(&backlog), last, |_turn| nice_now()).await.unwrap();
            assert_eq!(seen, base);
            // without a backlog runtime everything runs at the base priority
            let free = gate.turn(&flood).await;
            let seen = run(None, free, |_turn| nice_now()).await.unwrap();
            assert_eq!(seen, base);
        });
    }

    #[test]
    fn a_panic_in_backlogged_work_is_that_works_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let backlog = Backlog::new(3).unwrap();
        let flood = TenantId::new("flood").unwrap();
        rt.block_on(async {
            let gate = FairGate::new(1);
            let (first, mut rest) = two_queued(&gate, &flood).await;
            assert!(first.backlogged());
            let failed = run(Some(&backlog), first, |_turn| -> u32 { panic!("injected") }).await;
            assert!(failed.unwrap_err().is_panic());
            // the slot came back with the panic and the threads still work
            let next = rest.recv().await.unwrap();
            assert_eq!(run(Some(&backlog), next, |_turn| 7).await.unwrap(), 7);
            assert_eq!(gate.load().free, 1);
        });
    }
}
