//! Crash safety of the real binary: a `bulkhead serve` child process under
//! continuous OTLP/HTTP load from several clients is killed with SIGKILL at
//! random moments, cycle after cycle. After every restart each acknowledged
//! record is queryable exactly once, no record is there twice, every Parquet
//! file reads back and no temporary file the crash left survives the restart.
//!
//! The cycle count is kept small for CI; `BULKHEAD_CRASH_CYCLES` runs more
//! (e.g. 100 for a soak run), `BULKHEAD_CRASH_SEED` replays one schedule.
mod common;
use common::{files_under, load, query_bodies, start, write_config, CLIENTS, RECORDS_PER_REQUEST};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_collector::tenants;
use bulkhead_rules::Scopes;
use rand::{Rng, SeedableRng};

/// Whether any manifest commit under `store` added a merged file.
fn compacted(store: &Path) -> bool {
    let mut files = Vec::new();
    files_under(store, &mut files);
    files.iter().any(|f| {
        f.to_string_lossy().contains("_manifest")
            && std::fs::read_to_string(f).is_ok_and(|t| t.contains("\"level\":1"))
    })
}

/// The temporary files under `store` (commits in progress, or a crash's leftovers).
fn temp_files(store: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(store, &mut files);
    files.retain(|f| {
        bulkhead_store::objects::is_staging_name(&f.file_name().unwrap().to_string_lossy())
    });
    files
}

/// Every committed file reads back (decrypted with the tenant's keys: the
/// keyring and master key on disk), is encrypted (no key, no read), and
/// none of the temporary files the crash left (`leftovers`, listed before
/// the restart) is there any more; new ones may be commits of the
/// restarted server in progress.
fn check_store(config: &Path, store: &Path, leftovers: &[PathBuf]) {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    for f in leftovers {
        assert!(!f.exists(), "temporary file left: {}", f.display());
    }
    let config = bulkhead::Config::load(config).unwrap();
    let keys = config
        .open_keys(|_| None)
        .unwrap()
        .expect("encryption is on by default");
    let storage = Arc::new(
        bulkhead_store::objects::Storage::open_beside_server(&config.storage_config()).unwrap(),
    );
    let tenant = bulkhead_rules::TenantId::new("crash").unwrap();
    let props = bulkhead_store::crypto::decryption_properties(keys, storage, &tenant).unwrap();
    let mut files = Vec::new();
    files_under(store, &mut files);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            let bytes = bytes::Bytes::from(std::fs::read(&f).unwrap());
            assert!(
                ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).is_err(),
                "{} reads without its key",
                f.display()
            );
            let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
                bytes,
                ArrowReaderOptions::new().with_file_decryption_properties(props.clone()),
            )
            .unwrap_or_else(|e| panic!("{} is unreadable: {e}", f.display()))
            .build()
            .unwrap();
            for b in reader {
                b.unwrap_or_else(|e| panic!("{} is unreadable: {e}", f.display()));
            }
        }
    }
}

/// Tenant `crash` in `policies`, and its key (ingest and query).
fn crash_tenant(policies: &std::path::Path) -> String {
    tenants::create_tenant(policies, "crash").unwrap();
    tenants::create_key(
        policies,
        "crash",
        Scopes::parse_list("ingest,query").unwrap(),
    )
    .unwrap()
    .expose()
}

#[test]
fn sigkill_under_load_loses_and_duplicates_nothing_acknowledged() {
    let cycles: usize = std::env::var("BULKHEAD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("BULKHEAD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("crash test: {cycles} cycles, seed {seed} (BULKHEAD_CRASH_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("bulkhead.toml");
    write_config(
        &config,
        &data,
        r#"[flush]
# commits (and WAL segment deletions) happen all through the load
max_age = "200ms"
[wal]
segment_size = "64KiB"
[compaction]
# merges (and their commits) happen all through the load too
interval = "100ms"
min_files = 2
[query]
max_rows = 10000000
"#,
    );
    let policies = data.join("policies");
    let key = crash_tenant(&policies);

    let next = Arc::new(Mutex::new(HashMap::new()));
    let mut acked: HashSet<String> = HashSet::new();
    let mut maybe: HashSet<String> = HashSet::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for cycle in 0..=cycles {
        let leftovers = temp_files(&data.join("store"));
        let mut server = start(&config);
        // after a restart: everything acknowledged so far is there, once
        check_store(&config, &data.join("store"), &leftovers);
        let bodies = query_bodies(&server.api, &key);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for b in &bodies {
            *seen.entry(b.as_str()).or_default() += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(
            dups.is_empty(),
            "cycle {cycle}: records stored twice: {dups:?}"
        );
        let lost: Vec<_> = acked
            .iter()
            .filter(|id| !seen.contains_key(id.as_str()))
            .take(5)
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} of {} acknowledged records lost, e.g. {lost:?}",
            acked
                .iter()
                .filter(|id| !seen.contains_key(id.as_str()))
                .count(),
            acked.len()
        );
        let unknown: Vec<_> = seen
            .keys()
            .filter(|id| !acked.contains(**id) && !maybe.contains(**id))
            .take(5)
            .collect();
        assert!(unknown.is_empty(), "records never sent: {unknown:?}");
        if cycle == cycles {
            // the files the cycles left are merged (compaction commits ran
            // through the load as well), and the rows are still there once
            common::wait_for_log(&server, "compacted", Duration::from_secs(30));
            assert!(compacted(&data.join("store")));
            let after = query_bodies(&server.api, &key);
            assert_eq!(after.len(), bodies.len(), "rows changed in compaction");
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            break;
        }

        // load from several clients, then SIGKILL at a random moment: after
        // a random number of acknowledged requests, while the others are in
        // flight
        let (tx, rx) = std::sync::mpsc::channel();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                rt.spawn(load(
                    server.http.clone(),
                    key.clone(),
                    c + cycle * CLIENTS,
                    next.clone(),
                    tx.clone(),
                ))
            })
            .collect();
        drop(tx);
        let after: usize = rng.random_range(1..120);
        for _ in 0..after {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("acknowledgements stopped coming");
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().unwrap();
        for c in clients {
            let (a, u) = rt.block_on(c).unwrap();
            acked.extend(a);
            maybe.extend(u);
        }
        eprintln!(
            "cycle {cycle}: killed after {after} acknowledged requests; {} records acknowledged so far",
            acked.len()
        );
    }
    assert!(
        acked.len() >= cycles * RECORDS_PER_REQUEST,
        "the load barely ran: {} records acknowledged",
        acked.len()
    );
}

/// `wal.path` puts the log on another directory (an operator's own device
/// for it): acknowledged records are there, not under the data directory,
/// and a restart after SIGKILL replays them from there; a second server
/// given the same log is refused while the first runs.
#[test]
fn a_log_at_wal_path_is_replayed_after_sigkill_and_held_by_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log-device").join("wal");
    let extra = format!(
        r#"[flush]
# nothing is committed before the kill: every row comes back from the log
max_age = "1h"
[wal]
path = {log:?}
"#
    );
    let config = dir.path().join("bulkhead.toml");
    write_config(&config, &data, &extra);
    let policies = data.join("policies");
    let key = crash_tenant(&policies);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut server = start(&config);
    let (tx, rx) = std::sync::mpsc::channel();
    let client = rt.spawn(load(
        server.http.clone(),
        key.clone(),
        0,
        Arc::new(Mutex::new(HashMap::new())),
        tx,
    ));
    for _ in 0..20 {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("acknowledgements stopped coming");
    }

    // a second server on its own data directory but the same log
    let other = dir.path().join("other.toml");
    write_config(&other, &dir.path().join("other-data"), &extra);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["serve", "--config"])
        .arg(&other)
        .env_remove("BULKHEAD_DATA_DIR")
        .env_remove("BULKHEAD_POLICY_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // its stderr ends when it exits: wait for that, at most a minute
    let mut stderr = second.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
        let _ = tx.send(said);
    });
    let Ok(said) = rx.recv_timeout(Duration::from_secs(60)) else {
        second.kill().unwrap();
        second.wait().unwrap();
        panic!("a second server ran on the same log for a minute");
    };
    let status = second.wait().unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains("in use by another process"), "{said}");

    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let (acked, _) = rt.block_on(client).unwrap();
    assert!(acked.len() >= 20 * RECORDS_PER_REQUEST);
    let mut at_log = Vec::new();
    files_under(&log, &mut at_log);
    assert!(
        at_log
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "wal")),
        "no segment at wal.path: {at_log:?}"
    );
    assert!(!data.join("wal").exists(), "a log under the data directory");
    let mut stored = Vec::new();
    files_under(&data.join("store"), &mut stored);
    assert!(
        !stored
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet")),
        "rows were committed before the kill: {stored:?}"
    );

    let server = start(&config);
    let bodies: HashSet<String> = query_bodies(&server.api, &key).into_iter().collect();
    let lost = acked.iter().filter(|id| !bodies.contains(*id)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged records lost",
        acked.len()
    );
}

/// What `/proc/<pid>/status` says of a process's transparent huge pages
/// flag (`THP_enabled`, Linux 5.0 and later).
#[cfg(target_os = "linux")]
fn huge_pages_enabled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("a THP_enabled line");
    line.trim() == "1"
}

/// The server turns transparent huge pages off for itself unless its
/// configuration allows them (docs/configuration.md,
/// `transparent_huge_pages`).
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages_unless_allowed() {
    for allow in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bulkhead.toml");
        let extra = format!("transparent_huge_pages = {allow}\n");
        write_config(&config, &dir.path().join("data"), &extra);
        let server = start(&config);
        assert_eq!(
            huge_pages_enabled(server.child.id()),
            allow,
            "allowed: {allow}"
        );
    }
}
