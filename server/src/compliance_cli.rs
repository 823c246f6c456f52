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
    crate::outln!("{}", describe(&job))?;
    if wait {
        follow(&storage, &job.id)
    } else {
        crate::outln!(
            "a running server takes the job within seconds; `bulkhead erase status {}` tells how it went",
            job.id
        )?;
        Ok(())
    }
}

/// Polls job `id` until it ends; an error unless it ended done.
fn follow(storage: &Storage, id: &str) -> Result<(), String> {
    let mut last = None;
    loop {
        let job = jobs::get(storage, id).map_err(|e| e.to_string())?;
        if last != Some(job.status) {
            crate::errln!("{}", describe(&job));
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
    jobs::check_room(&storage(config)?, &tenant).map_err(|e| e.to_string())?;
    submit(config, job, wait)
}

/// `bulkhead erase list`.
pub fn erase_list(config: &Config, tenant: Option<&str>) -> Result<(), String> {
    let storage = storage(config)?;
    for job in jobs::list(&storage).map_err(|e| e.to_string())? {
        if tenant.is_none_or(|t| t == job.tenant) {
            crate::outln!("{}", describe(&job))?;
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
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(&job).map_err(|e| e.to_string())?
    )?;
    Ok(())
}

/// `bulkhead erase cancel`.
pub fn erase_cancel(config: &Config, id: &str) -> Result<(), String> {
    let storage = storage(config)?;
    let job = jobs::cancel(&storage, id, now_nanos()).map_err(|e| e.to_string())?;
    crate::outln!("{}", describe(&job))?;
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
    // as the admin API: a name with neither a policy nor stored data is a
    // typo or a tenant not created yet, and offboarding it would mark the
    // name shredded for good
    let policy = bulkhead_rules::PolicySet::path_for(&config.policy_dir(), &tenant);
    let removed = bulkhead_collector::tenants::removed_marker(&config.policy_dir(), &tenant);
    if !policy.exists()
        && !removed.exists()
        && !storage(config)?
            .holds_tenant(&tenant)
            .map_err(|e| format!("looking for tenant {tenant}'s data: {e}"))?
    {
        return Err(format!(
            "there is no tenant {tenant} to offboard: it has no policy and no stored data"
        ));
    }
    submit(
        config,
        Job::offboard(&tenant, "cli", "cli", now_nanos()),
        wait,
    )
}

/// What `bulkhead extract create` asks for.
#[derive(Debug)]
pub struct ExtractArgs {
    /// The API's base URL (`http://host:port`).
    pub url: String,
    /// A tenant key with the `extract` scope.
    pub key: String,
    pub request: serde_json::Value,
    pub out: std::path::PathBuf,
}

/// `bulkhead extract create`: asks the server for the extract and streams
/// it into `out` (written under a temporary name, renamed when whole), with
/// a progress bar on a terminal.
pub fn extract_create(args: &ExtractArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        use futures::StreamExt;
        use std::io::Write;
        let waiting = indicatif::ProgressBar::new_spinner()
            .with_message("the server is reading the tenant's data into the extract");
        waiting.enable_steady_tick(Duration::from_millis(120));
        let url = format!("{}/api/v1/extracts", args.url.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&args.key)
            .json(&args.request)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        waiting.finish_and_clear();
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(format!(
                "the server refused the extract ({status}): {}",
                body["error"].as_str().unwrap_or("no reason given")
            ));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (id, rows) = (
            header("x-bulkhead-extract-id"),
            header("x-bulkhead-extract-rows"),
        );
        let bar = indicatif::ProgressBar::new(response.content_length().unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .map_err(|e| e.to_string())?,
        );
        let dir = args
            .out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("the download broke off: {e}"))?;
            tmp.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        tmp.as_file()
            .sync_all()
            .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
        tmp.persist(&args.out)
            .map_err(|e| format!("{}: {e}", args.out.display()))?;
        crate::outln!(
            "extract {id}: {rows} rows in {}; check it with `bulkhead extract verify {} --public-key <the instance's key>`",
            args.out.display(),
            args.out.display()
        )?;
        Ok(())
    })
}

/// `bulkhead extract verify`: true when the bundle is whole and signed by
/// the key.
pub fn extract_verify(bundle: &std::path::Path, public_key: &str) -> Result<(), String> {
    let key = crate::extract::read_public_key(public_key)?;
    let verdict = crate::extract::verify(bundle, &key)?;
    if verdict.ok() {
        let m = verdict
            .manifest
            .as_ref()
            .expect("a verified bundle has a manifest");
        crate::outln!(
            "OK: signature and all {} file(s) match; extract {} of tenant {} ({} rows, {} to {}, requested by {}, audit head {}:{})",
            m.files.len(),
            m.id,
            m.tenant,
            m.total_rows(),
            m.from,
            m.to,
            m.requested_by,
            m.audit_head.seq,
            m.audit_head.hash
        )?;
        Ok(())
    } else {
        for p in verdict.problems() {
            crate::errln!("{p}");
        }
        Err(format!(
            "{} does not verify ({} problem(s) above)",
            bundle.display(),
            verdict.problems().len()
        ))
    }
}

/// `bulkhead extract public-key`: the key that signs this deployment's
/// extracts, hex.
pub fn extract_public_key(config: &Config) -> Result<(), String> {
    let path = config.signing_key_path();
    if !path.exists() {
        return Err(format!(
            "no signing key at {} yet: the server makes it at its first start",
            path.display()
        ));
    }
    crate::outln!(
        "{}",
        crate::extract::Signer::load_or_create(&path)?.public_hex()
    )?;
    Ok(())
}
