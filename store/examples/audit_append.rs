//! Measures audit appends per second with fsync (see docs/audit.md):
//! one thread (one fsync per append) and several threads (group commit).
//!
//! `cargo run --release -p bulkhead-store --example audit_append [DIR]`
//! DIR (default: a temporary directory under the current one) should be on
//! the disk the collector's data directory uses; tmpfs makes fsync free.
use std::sync::Arc;
use std::time::Instant;

use bulkhead_rules::{SystemClock, TenantId};
use bulkhead_store::audit::{verify, AuditLog, NewEvent};

fn run(threads: usize, per_thread: usize) -> f64 {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    let log = Arc::new(AuditLog::open(dir.path(), Arc::new(SystemClock)).expect("open"));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let tenant = TenantId::new("acme").expect("tenant");
                let key = format!("k{t}");
                for i in 0..per_thread {
                    let sql = format!("SELECT * FROM logs WHERE service_name = 'svc{i}'");
                    log.append(NewEvent::query(&tenant, &key, &sql, i as u64))
                        .expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("appender");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = (threads * per_thread) as u64;
    let report = verify(log.path()).expect("the chain verifies");
    assert_eq!(report.entries, n);
    let bytes = std::fs::metadata(log.path()).expect("size").len();
    let rate = n as f64 / elapsed;
    println!(
        "{threads:>3} thread(s): {n:>6} appends in {elapsed:.2} s = {rate:>8.0} appends/s, {:.1} us/append, {:.1} appends/fsync, {} bytes/entry",
        elapsed * 1e6 / n as f64,
        n as f64 / log.fsyncs() as f64,
        bytes / n
    );
    let start = Instant::now();
    verify(log.path()).expect("the chain verifies");
    let v = start.elapsed().as_secs_f64();
    if threads == 1 {
        println!("            verify: {:.0} entries/s", n as f64 / v);
    }
    rate
}

fn main() {
    run(1, 2_000);
    run(4, 1_000);
    run(16, 500);
    run(64, 200);
}
