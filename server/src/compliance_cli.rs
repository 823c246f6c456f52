//! The compliance commands: `bulkhead erase ...` and `bulkhead tenant
//! offboard`. They store jobs beside the tenants' data, where every
//! running server's job runner takes them (within 2 s); `--wait` follows a
//! job to its end.
use std::time::Duration;

use bulkhead_collector::tenants::TenantDirectory;
use bulkhead_rules::TenantId;
use bulkhead_store::objects::Storage;

use crate::config::Config;
use crate::jobs::{self, Job, Status};

fn storage(config: &Config) -> Result<Storage, String> {
    Storage::open_beside_server(&config.storage_config())
        .map_err(|e| format!("opening the store: {e}"))
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Refuses when the tenant's policy holds its data (the server checks again
/// when it runs the job).
fn check_hold(config: &Config, tenant: &TenantId) -> Result<(), String> {
    let dir = TenantDirectory::open(&config.policy_dir())?;
    if dir.policy(tenant).is_some_and(|p| p.retention.legal_hold) {
        return Err(format!(
            "tenant {tenant} is under a legal hold (retention.legal_hold in its policy): nothing of it may be erased until the hold is lifted"
        ));
    }
    Ok(())
}

/// One line about a job.
pub fn describe(job: &Job) -> String {
    let mut line = format!(
        "{} {} tenant={} {}",
        job.id,
        job.kind(),
        job.tenant,
        job.status.as_str()
    );
    if let jobs::Work::Erasure {
        table, from, to, ..
    } = &job.work
    {
        line.push_str(&format!(" table={table} from={from} to={to}"));
    }
    for (k, v) in &job.counts {
        line.push_str(&format!(" {k}={v}"));
    }
    if let Some(r) = &job.reason {
        line.push_str(&format!(" reason: {r}"));
    }
    line
}

/// Stores a new job, prints its id, and follows it to its end if `wait`.
fn submit(config: &Config, job: Job, wait: bool) -> Result<(), String> {
    let storage = storage(config)?;
    jobs::submit(&storage, &job).map_err(|e| e.to_string())?;
    println!("{}", describe(&job));
    if wait {
        follow(&storage, &job.id)
    } else {
        println!(
            "a running server takes the job within seconds; `bulkhead erase status {}` tells how it went",
            job.id
        );
        Ok(())
    }
}

/// Polls job `id` until it ends; an error unless it ended done.
fn follow(storage: &Storage, id: &str) -> Result<(), String> {
    let mut last = None;
    loop {
        let job = jobs::get(storage, id).map_err(|e| e.to_string())?;
        if last != Some(job.status) {
            eprintln!("{}", describe(&job));
            last = Some(job.status);
        }
        if job.status.finished() {
            return match job.status {
                Status::Done => Ok(()),
                s => Err(format!(
                    "job {id} {}{}",
                    s.as_str(),
                    job.reason.map(|r| format!(": {r}")).unwrap_or_default()
                )),
            };
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `bulkhead erase create`.
pub fn erase_create(
    config: &Config,
    tenant: &str,
    request: &jobs::ErasureRequest,
    wait: bool,
) -> Result<(), String> {
    let tenant = TenantId::new(tenant)?;
    check_hold(config, &tenant)?;
    let job = Job::erasure(&tenant, request, "cli", "cli", now_nanos())?;
    submit(config, job, wait)
}

/// `bulkhead erase list`.
pub fn erase_list(config: &Config, tenant: Option<&str>) -> Result<(), String> {
    let storage = storage(config)?;
    for job in jobs::list(&storage).map_err(|e| e.to_string())? {
        if tenant.is_none_or(|t| t == job.tenant) {
            println!("{}", describe(&job));
        }
    }
    Ok(())
}

/// `bulkhead erase status`: the job as JSON.
pub fn erase_status(config: &Config, id: &str, wait: bool) -> Result<(), String> {
    let storage = storage(config)?;
    if wait {
        follow(&storage, id)?;
    }
    let job = jobs::get(&storage, id).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&job).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// `bulkhead erase cancel`.
pub fn erase_cancel(config: &Config, id: &str) -> Result<(), String> {
    let storage = storage(config)?;
    let job = jobs::cancel(&storage, id, now_nanos()).map_err(|e| e.to_string())?;
    println!("{}", describe(&job));
    Ok(())
}

/// `bulkhead tenant offboard`.
pub fn offboard(config: &Config, tenant: &str, yes: bool, wait: bool) -> Result<(), String> {
    let tenant = TenantId::new(tenant)?;
    if !yes {
        return Err(format!(
            "offboarding removes everything of tenant {tenant}: its policy and keys, every stored object, and (with encryption) its encryption keys, so no copy can be read again; run again with --yes to go ahead"
        ));
    }
    check_hold(config, &tenant)?;
    submit(
        config,
        Job::offboard(&tenant, "cli", "cli", now_nanos()),
        wait,
    )
}
