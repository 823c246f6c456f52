//! Shared detection: nodes that split a tenant's traffic find what one node
//! seeing all of it finds, and a new leader goes on where the last stopped.
use std::path::Path;

use bulkhead_rules::ManualClock;
use bulkhead_store::{FlushConfig, StorageConfig, Store};

use super::tests::{logs, normal, T0};
use super::*;

type Found = Arc<Mutex<Vec<(i64, SeriesKind, String)>>>;

struct Node {
    engine: AnomalyEngine,
    found: Found,
}

impl Node {
    fn local(dir: &Path, clock: Arc<ManualClock>) -> Self {
        Self {
            engine: AnomalyEngine::new(dir.to_path_buf(), clock, Arc::new(Telemetry::default())),
            found: Found::default(),
        }
    }

    fn shared(root: &Path, name: &str, clock: Arc<ManualClock>) -> Self {
        let (store, _) = Store::open_storage(
            &StorageConfig::Local {
                root: root.to_path_buf(),
            },
            name,
            None,
            FlushConfig::default(),
            clock.clone(),
        )
        .unwrap();
        Self {
            engine: AnomalyEngine::shared(Arc::new(store), clock, Arc::new(Telemetry::default())),
            found: Found::default(),
        }
    }

    fn keep(&self, findings: &[Finding]) {
        self.found.lock().extend(
            findings
                .iter()
                .map(|f| (f.minute_secs, f.kind, f.series.clone())),
        );
    }

    /// Feeds `count` records in `minute`.
    fn receive(&self, minute: i64, count: u64) {
        if count == 0 {
            return;
        }
        let tenant = TenantId::new("acme").unwrap();
        let found = self.engine.observe(
            &tenant,
            &AnomalyPolicy::default(),
            Signal::Logs,
            &logs(minute, &[count]),
        );
        self.keep(&found);
    }

    fn tick(&self) {
        self.engine
            .tick(|_| Some(AnomalyPolicy::default()), |_, f| self.keep(f));
    }

    fn leads(&self, clock: &ManualClock) -> bool {
        self.engine
            .shared
            .as_ref()
            .is_some_and(|s| s.holds(clock.now_nanos()))
    }
}

/// 300 quiet minutes, a burst, then quiet again.
fn traffic() -> Vec<u64> {
    let mut counts = normal(0..300);
    counts.extend([200, 21, 22, 20]);
    counts.extend(normal(304..312));
    counts
}

/// Delivers `traffic()` minute by minute: `route(minute, count)` says what
/// each node receives; then every node ticks every 10 s of the minute, as
/// the server's housekeeping does (publish; the leader takes in).
fn run(
    nodes: &[&Node],
    clock: &ManualClock,
    minutes: std::ops::Range<i64>,
    route: impl Fn(i64, u64) -> Vec<u64>,
) {
    let counts = traffic();
    for m in minutes {
        for (node, n) in nodes.iter().zip(route(m, counts[m as usize])) {
            node.receive(m, n);
        }
        for pass in 1..=6 {
            clock.set((T0 + (m + 1) * 60 + pass * 10) * 1_000_000_000);
            for node in nodes {
                node.tick();
            }
        }
    }
}

fn sorted(found: &[&Found]) -> Vec<(i64, SeriesKind, String)> {
    let mut all: Vec<_> = found.iter().flat_map(|f| f.lock().clone()).collect();
    all.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    all
}

fn reference() -> Vec<(i64, SeriesKind, String)> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1_000_000_000));
    let one = Node::local(dir.path(), clock.clone());
    run(&[&one], &clock, 0..312, |_, n| vec![n]);
    let found = sorted(&[&one.found]);
    assert_eq!(found.len(), 1, "one node finds the burst only: {found:?}");
    assert_eq!(found[0].0, T0 + 300 * 60);
    found
}

#[test]
fn nodes_that_split_a_tenant_find_what_one_node_finds() {
    let expected = reference();
    // traffic moves from node a to node b at minute 200 (a failover)
    let shift = |m: i64, n: u64| if m < 200 { vec![n, 0] } else { vec![0, n] };

    // each node on its own: a sees a drop to zero, b a fresh baseline
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(T0 * 1_000_000_000));
    let (a, b) = (
        Node::local(da.path(), clock.clone()),
        Node::local(db.path(), clock.clone()),
    );
    run(&[&a, &b], &clock, 0..312, shift);
    assert_ne!(
        sorted(&[&a.found, &b.found]),
        expected,
        "detection per node misreads a failover"
    );

    // shared through one store: exactly what one node finds, for a
    // failover and for traffic split within every minute
    let halves = |_: i64, n: u64| vec![n.div_ceil(2), n / 2];
    for (what, route) in [
        ("failover", &shift as &dyn Fn(i64, u64) -> Vec<u64>),
        ("halves", &halves),
    ] {
        let root = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0 * 1_000_000_000));
        let a = Node::shared(root.path(), "a", clock.clone());
        let b = Node::shared(root.path(), "b", clock.clone());
        run(&[&a, &b], &clock, 0..312, route);
        assert_eq!(sorted(&[&a.found, &b.found]), expected, "{what}");
        assert!(a.leads(&clock) != b.leads(&clock), "{what}: one leader");
    }
}

/// Both nodes receive half of every minute; the leader saves its states at
/// minute `saved`, goes on to minute `dies` and dies without a word; the
/// survivor takes over and receives everything from then on.
fn leader_dies(saved: i64, dies: i64) {
    let expected = reference();
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1_000_000_000));
    let a = Node::shared(root.path(), "a", clock.clone());
    let b = Node::shared(root.path(), "b", clock.clone());
    let halves = |_: i64, n: u64| vec![n.div_ceil(2), n / 2];
    run(&[&a, &b], &clock, 0..saved, halves);
    for n in [&a, &b] {
        n.engine.checkpoint_all().unwrap();
    }
    // what the leader takes in from here on is in no saved state
    run(&[&a, &b], &clock, saved..dies, halves);
    let (leader, survivor) = if a.leads(&clock) { (a, b) } else { (b, a) };
    let before = sorted(&[&leader.found, &survivor.found]);
    drop(leader);
    // the survivor takes over once the lease runs out, from the saved
    // states and every partials object taken in after them
    run(&[&survivor], &clock, dies..312, |_, n| vec![n]);
    assert!(survivor.leads(&clock));
    let mut all = before;
    all.extend(sorted(&[&survivor.found]));
    assert_eq!(all, expected);
}

#[test]
fn a_new_leader_goes_on_where_the_last_one_stopped() {
    leader_dies(240, 250);
}

/// Fifty minutes after the last saved state (within the hour partials are
/// kept): the new leader reads the backlog, some two hundred objects, over
/// several ticks, and the wall clock closes no minute before it has caught
/// up.
#[test]
fn a_new_leader_catches_up_on_a_long_backlog_before_closing_minutes() {
    leader_dies(150, 200);
}

#[test]
fn a_leader_that_shuts_down_hands_over_at_once() {
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1_000_000_000));
    let a = Node::shared(root.path(), "a", clock.clone());
    a.tick();
    assert!(a.leads(&clock));
    let b = Node::shared(root.path(), "b", clock.clone());
    b.tick();
    assert!(!b.leads(&clock), "the lease is a's");
    a.engine.shutdown().unwrap();
    clock.advance(std::time::Duration::from_secs(1));
    b.tick();
    assert!(b.leads(&clock), "given up at shutdown, not waited out");
}

#[test]
fn damaged_objects_in_the_bucket_do_not_stop_detection() {
    let expected = reference();
    let root = tempfile::tempdir().unwrap();
    // a partials object and the tenant's state that are not JSON
    let anomaly = root.path().join("_anomaly");
    std::fs::create_dir_all(anomaly.join("partials/broken")).unwrap();
    std::fs::write(
        anomaly.join("partials/broken/00000000000000000001.json"),
        "{not json",
    )
    .unwrap();
    std::fs::create_dir_all(anomaly.join("state")).unwrap();
    std::fs::write(anomaly.join("state/tenant=acme.json"), [0xff, 0x00]).unwrap();
    // and a lease nobody can read
    std::fs::create_dir_all(anomaly.join("leader")).unwrap();
    std::fs::write(anomaly.join("leader/00000000000000000000.json"), "garbage").unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1_000_000_000));
    let a = Node::shared(root.path(), "a", clock.clone());
    run(&[&a], &clock, 0..312, |_, n| vec![n]);
    assert_eq!(sorted(&[&a.found]), expected);
}
