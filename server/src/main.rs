//! The `bulkhead` command.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bulkhead::config::Config;
use bulkhead::{compliance_cli, policy_cli};
use bulkhead_collector::tenants;
use bulkhead_rules::{PolicySet, Scopes, SystemClock, TenantId};
use bulkhead_store::audit::{AuditError, AuditLog, EventKind, NewEvent};
use clap::{Parser, Subcommand};

/// Bulkhead: a tenant-isolated OpenTelemetry pipeline.
#[derive(Parser)]
#[command(name = "bulkhead", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Without --config: a local try-out on 127.0.0.1 with
    /// data under ./bulkhead-data and two demo tenants.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Validate the configuration and every tenant policy; reports every
    /// problem with its file and line, exits non-zero if there is any.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect tenant policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Operator keys for federated queries over several tenants.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Anomaly detection tools.
    Anomaly {
        #[command(subcommand)]
        command: AnomalyCommand,
    },
    /// Erasure requests: remove a tenant's rows matching a predicate in a
    /// time range (run by the server as jobs).
    Erase {
        #[command(subcommand)]
        command: EraseCommand,
    },
    /// Forensic extracts: signed bundles of a tenant's data.
    Extract {
        #[command(subcommand)]
        command: ExtractCommand,
    },
}

#[derive(Subcommand)]
enum ExtractCommand {
    /// Ask the server for an extract (the tenant is the key's) and save the
    /// bundle, a tar archive.
    Create {
        /// A tenant key with the extract scope.
        #[arg(long, env = "BULKHEAD_API_KEY", hide_env_values = true)]
        key: String,
        /// Tables, comma-separated (default: logs, spans and metrics).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Start of the event-time range (RFC 3339, inclusive).
        #[arg(long)]
        from: String,
        /// End of the event-time range (RFC 3339, exclusive).
        #[arg(long)]
        to: String,
        /// SQL predicate over one row, applied to every table.
        #[arg(long = "where")]
        filter: Option<String>,
        /// Encrypt the files under this 256-bit key (64 hex characters).
        #[arg(long)]
        recipient_key: Option<String>,
        /// Where to save the bundle.
        #[arg(long)]
        out: PathBuf,
        /// The API's URL; default: the configuration's listen.api.
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a bundle: its signature and every file's hash; names each file
    /// that does not match. Needs only the bundle and the public key.
    Verify {
        bundle: PathBuf,
        /// The instance's public key: 64 hex characters or a file holding them.
        #[arg(long)]
        public_key: String,
    },
    /// Print the public key that signs this deployment's extracts.
    PublicKey {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EraseCommand {
    /// Ask for an erasure; prints the job's id.
    Create {
        #[arg(long)]
        tenant: String,
        /// logs, spans, metrics or anomalies.
        #[arg(long)]
        table: String,
        /// Start of the event-time range (RFC 3339, inclusive).
        #[arg(long)]
        from: String,
        /// End of the event-time range (RFC 3339, exclusive).
        #[arg(long)]
        to: String,
        /// SQL predicate naming the rows, e.g. "attr(attributes, 'user.id') = 'u-42'".
        #[arg(long = "where")]
        predicate: String,
        /// Follow the job until it ends (fails unless it ends done).
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Every job (of one tenant with --tenant), oldest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One job, as JSON.
    Status {
        id: String,
        /// Wait for the job to end first.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Cancel a job that has not started.
    Cancel {
        id: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that no entry was edited, removed or reordered; exits non-zero
    /// naming the first bad line. Safe to run next to a live server.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        /// `SEQ:HASH` of an entry known from elsewhere (catches a cut tail).
        #[arg(long)]
        anchor: Vec<String>,
        /// Also require every head this node published to the store.
        #[arg(long)]
        published: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print a tenant's policy file with its version.
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a proposed policy file and show how it differs from the one
    /// in force, with both versions.
    Diff {
        #[arg(long)]
        tenant: String,
        /// The proposed policy file.
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AnomalyCommand {
    /// Run the streaming detector over a CSV series (header `timestamp,value`)
    /// and write `timestamp,value,score,anomaly,expected,lower,upper`.
    Backtest {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Detector settings: a TOML file, or `key=value,...` such as
        /// `sensitivity=0.7,seasonality=daily,warmup_points=60`.
        #[arg(long)]
        settings: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (a policy file with no keys yet).
    Create {
        name: String,
        /// Bring back a tenant removed with its data kept, data included
        /// (without it, a name with stored data from before is refused).
        #[arg(long)]
        restore: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List every tenant: name, policy version, live and revoked keys.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Remove a tenant's policy: its keys stop working at the server's next
    /// reload. Data already stored for it is not deleted.
    Remove {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Destroy a tenant's encryption keys: none of its files, log entries
    /// or extracts can be read again, by anyone, wherever copies live.
    /// Irreversible; asks for `--yes`.
    Shred {
        name: String,
        /// Confirms that the tenant's data is to become unreadable for good.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Remove everything of a tenant: its policy and keys, every stored
    /// object, and its encryption keys (shredded). Run by the server as a
    /// job; refused under a legal hold. Irreversible; asks for `--yes`.
    Offboard {
        name: String,
        #[arg(long)]
        yes: bool,
        /// Follow the job until it ends.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Rotate a tenant's key-encryption key: its data keys are re-wrapped
    /// under a new version and the old version is destroyed; no data file
    /// is rewritten.
    RotateKey {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Make an operator key granted `--tenants`; prints the `[[federation]]`
    /// entry to add to the server configuration (id and hash only) and, as
    /// the last line, the key itself, shown once.
    Key {
        /// Who holds it (recorded on the audit trail of every tenant queried
        /// or changed).
        #[arg(long)]
        name: String,
        /// Comma-separated tenant names (a `[[federation]]` key).
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        tenants: Option<String>,
        /// A key for the admin API instead (an `[[admin]]` entry): create,
        /// list and remove tenants and keys, set the default policy.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Revoke a key (by its id, the part after `bhk_`); it stops working at
    /// the server's next policy reload.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create a key for a tenant; the key is printed once, as the last line.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated: ingest, query, extract (forensic extracts), admin
        /// (erasure requests for the tenant).
        #[arg(long, default_value = "ingest")]
        scopes: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    let mut config = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    Ok(config)
}

/// After a command changed the policy directory: an error when the
/// directory as a whole does not load, since a running server then keeps
/// the policies and keys it has, without this change, until every problem
/// is fixed (a revoked key would go on working).
fn in_force(c: &Config, change: &str) -> Result<(), String> {
    let dir = c.policy_dir();
    match PolicySet::load_dir(&dir) {
        Ok(_) => Ok(()),
        Err(errors) => Err(format!(
            "{change} is written to its policy file, but {} does not load, so a running server keeps its policies and keys as they were, without this change, until every problem is fixed:\n  {}\nThe admin API (docs/configuration.md) takes a change to one tenant in at once even so.",
            dir.display(),
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  ")
        )),
    }
}

/// Records an operator action when no server holds the audit trail; a
/// running server records it itself when it picks the change up.
fn audit_offline(config: &Config, event: NewEvent) {
    match AuditLog::open(&config.audit_dir(), Arc::new(SystemClock)) {
        Ok(log) => {
            if let Err(e) = log.append(event) {
                bulkhead::errln!("warning: audit trail: {e}");
            }
        }
        Err(AuditError::Locked(_)) => {}
        Err(e) => bulkhead::errln!("warning: audit trail: {e}"),
    }
}

/// The keyring and the store's objects, for key commands run beside (or
/// without) a server.
fn open_keys_offline(
    config: &Config,
) -> Result<
    (
        Arc<bulkhead_store::crypto::DataKeys>,
        bulkhead_store::objects::Storage,
    ),
    String,
> {
    let keys = config
        .open_keys(|k| std::env::var(k).ok())?
        .ok_or_else(|| {
            format!(
                "encryption is off and there is no keyring at {}: no tenant has keys to change",
                config.keyring_path().display()
            )
        })?;
    let storage = bulkhead_store::objects::Storage::open_beside_server(&config.storage_config())
        .map_err(|e| e.to_string())?;
    Ok((keys, storage))
}

const DEMO_TENANTS: [&str; 2] = ["demo-a", "demo-b"];

/// Stack of each of the server's runtime threads, as the query engine's
/// own (statements are planned and run there; kept here as well for
/// anything else that walks a statement).
const SERVER_THREAD_STACK: usize = bulkhead_query::sandbox::QUERY_THREAD_STACK;

/// Try-out mode: make sure the demo tenants exist, printing fresh keys for
/// any created now (the only time their secrets are shown).
fn ensure_demo_tenants(config: &Config) -> Result<usize, String> {
    let dir = config.policy_dir();
    let _dir = tenants::lock_writes(&dir)?;
    let mut created = 0;
    for name in DEMO_TENANTS {
        let tenant = TenantId::new(name)?;
        if PolicySet::path_for(&dir, &tenant).exists() {
            continue;
        }
        tenants::create_tenant(&dir, name)?;
        let key = tenants::create_key(&dir, name, Scopes::parse_list("ingest,query")?)?;
        // shown once; a server whose output is gone (`| head -1`) serves
        // on, and `bulkhead key create` makes another key
        let _ = bulkhead::outln!(
            "demo tenant {name}: key (scopes ingest,query) {}",
            key.expose()
        );
        created += 1;
    }
    Ok(created)
}

async fn serve(path: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(path.as_ref())?;
    let created = if path.is_none() {
        Some(ensure_demo_tenants(&config)?)
    } else {
        None
    };
    let server = bulkhead::start(&config, Arc::new(SystemClock)).await?;
    // Handlers are in place before anything says the server is up.
    let stop = stop_signals()?;
    let token = server.shutdown_token();
    tokio::spawn(async move {
        stop.await;
        token.cancel();
    });
    // The banner is best-effort: a closed output does not stop a server.
    let replay = server.replay_report();
    if replay.entries_replayed > 0 || !replay.wal.truncated.is_empty() {
        let _ = bulkhead::outln!(
            "recovered from the write-ahead log: {} entries ({} rows); {} torn or corrupt segment tails cut",
            replay.entries_replayed,
            replay.rows_replayed,
            replay.wal.truncated.len()
        );
    }
    if created.is_none() {
        let _ = bulkhead::outln!(
            "bulkhead ready: OTLP gRPC {}, OTLP HTTP {}, API {}, Flight SQL {}",
            server.grpc_addr,
            server.http_addr,
            server.api_addr,
            server.flight_addr
        );
    }
    if let Some(created) = created {
        let _ = bulkhead::outln!(
            "local try-out: data in {}, OTLP gRPC {} / HTTP {}, SQL http://{}/api/v1/query and Flight SQL grpc://{}",
            config.data_dir.display(),
            server.grpc_addr,
            server.http_addr,
            server.api_addr,
            server.flight_addr
        );
        if created == 0 {
            let _ = bulkhead::outln!("  demo tenants exist already; their keys were shown when they were created. New key: 'bulkhead key create --tenant demo-a --scopes ingest,query'");
        }
    }
    server.stopped().await;
    tracing::info!("stopping: finishing requests and flushing buffers");
    server.shutdown().await.map(|_| ())
}

/// Resolves on SIGTERM or Ctrl-C; registered when called, not when awaited.
fn stop_signals() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // a log line that cannot be written (stderr on a full disk) is
        // dropped; reporting it would print to that same stderr, which
        // panics when it fails, in whatever thread logged
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => tokio::runtime::Builder::new_multi_thread()
            // the query engine walks a statement's expression tree by
            // recursion: room for bulkhead_query::nesting::MAX_OPERATORS
            // levels several times over (reserved, not used, until needed)
            .thread_stack_size(SERVER_THREAD_STACK)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(serve(config))),
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    restore,
                    config,
                },
        } => load_config(config.as_ref()).and_then(|c| {
            let tenant = bulkhead_rules::TenantId::new(&name)?;
            // held from the check to the write, as the admin API's
            let _dir = tenants::lock_writes(&c.policy_dir())?;
            let storage = bulkhead_store::objects::Storage::open_beside_server(&c.storage_config())
                .map_err(|e| format!("opening the store: {e}"))?;
            // an offboarded name: its shred is in the keyring (not opened
            // when there is none, so no master key is made here)
            let shredded_at = if c.keyring_path().exists() {
                match c.open_keys(|k| std::env::var(k).ok())?.map(|k| k.check(&tenant)) {
                    Some(Err(bulkhead_store::crypto::KeyError::Shredded { at, .. })) => Some(at),
                    Some(Err(e)) => return Err(format!("the keyring: {e}")),
                    _ => None,
                }
            } else {
                None
            };
            bulkhead::admin::check_name_free(
                &storage,
                &c.policy_dir(),
                &tenant,
                restore,
                shredded_at,
            )?;
            let p = tenants::create_tenant(&c.policy_dir(), &name)?;
            audit_offline(&c, NewEvent::new(EventKind::TenantCreated).tenant(&p.tenant));
            bulkhead::outln!(
                "created tenant {} ({})",
                p.tenant,
                PolicySet::path_for(&c.policy_dir(), &p.tenant).display()
            )?;
            in_force(&c, "the new tenant")
        }),
        Command::Tenant {
            command: TenantCommand::List { config },
        } => load_config(config.as_ref()).and_then(|c| {
            let dir = c.policy_dir();
            if matches!(dir.try_exists(), Ok(false)) {
                // an empty table alone would not tell a fresh node from a
                // command run in the wrong directory or with the wrong config
                bulkhead::errln!(
                    "no tenants: there is no policy directory at {} (the data directory \
                     or policy_dir from --config, BULKHEAD_DATA_DIR or BULKHEAD_POLICY_DIR)",
                    std::path::absolute(&dir).unwrap_or_else(|_| dir.clone()).display()
                );
            }
            let all = tenants::list_tenants(&dir)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut write = || -> std::io::Result<()> {
                writeln!(out, "tenant\tversion\tlive_keys\trevoked_keys")?;
                for t in &all {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        t.tenant, t.version, t.live_keys, t.revoked_keys
                    )?;
                }
                out.flush()
            };
            write().map_err(|e| format!("writing the list: {e}"))
        }),
        Command::Tenant {
            command: TenantCommand::Remove { name, config },
        } => load_config(config.as_ref()).and_then(|c| {
            let p = {
                let _dir = tenants::lock_writes(&c.policy_dir())?;
                tenants::remove_tenant(&c.policy_dir(), &name)?
            };
            audit_offline(&c, NewEvent::new(EventKind::TenantRevoked).tenant(&p.tenant));
            bulkhead::outln!(
                "removed tenant {}: its {} key(s) stop working at the server's next policy reload; data already stored for it is kept",
                p.tenant, p.live_keys
            )?;
            in_force(&c, "the removal")
        }),
        Command::Tenant {
            command: TenantCommand::Shred { name, yes, config },
        } => load_config(config.as_ref()).and_then(|c| {
            let tenant = TenantId::new(&name).map_err(|e| e.to_string())?;
            if !yes {
                return Err(format!(
                    "shredding destroys tenant {tenant}'s keys: none of its data can be read again, by anyone; run again with --yes to go ahead"
                ));
            }
            let (keys, storage) = open_keys_offline(&c)?;
            let at = chrono::Utc::now().to_rfc3339();
            let deleted = keys
                .shred(&storage, &tenant, &at)
                .map_err(|e| e.to_string())?;
            audit_offline(
                &c,
                NewEvent::new(EventKind::TenantShredded)
                    .tenant(&tenant)
                    .detail("at", &at)
                    .detail("data_keys_deleted", deleted)
                    .detail("by", "cli"),
            );
            bulkhead::outln!(
                "shredded tenant {tenant}: key-encryption keys destroyed, {deleted} data key(s) deleted; its files and log entries can no longer be read"
            )?;
            Ok(())
        }),
        Command::Tenant {
            command:
                TenantCommand::Offboard {
                    name,
                    yes,
                    wait,
                    config,
                },
        } => load_config(config.as_ref())
            .and_then(|c| compliance_cli::offboard(&c, &name, yes, wait)),
        Command::Erase {
            command:
                EraseCommand::Create {
                    tenant,
                    table,
                    from,
                    to,
                    predicate,
                    wait,
                    config,
                },
        } => load_config(config.as_ref()).and_then(|c| {
            let request = bulkhead::jobs::ErasureRequest {
                table,
                from,
                to,
                predicate,
            };
            compliance_cli::erase_create(&c, &tenant, &request, wait)
        }),
        Command::Erase {
            command: EraseCommand::List { tenant, config },
        } => load_config(config.as_ref())
            .and_then(|c| compliance_cli::erase_list(&c, tenant.as_deref())),
        Command::Erase {
            command: EraseCommand::Status { id, wait, config },
        } => load_config(config.as_ref()).and_then(|c| compliance_cli::erase_status(&c, &id, wait)),
        Command::Erase {
            command: EraseCommand::Cancel { id, config },
        } => load_config(config.as_ref()).and_then(|c| compliance_cli::erase_cancel(&c, &id)),
        Command::Extract {
            command:
                ExtractCommand::Create {
                    key,
                    tables,
                    from,
                    to,
                    filter,
                    recipient_key,
                    out,
                    url,
                    config,
                },
        } => {
            let url = match url {
                Some(u) => Ok(u),
                None => load_config(config.as_ref()).and_then(|c| {
                    if c.listen.api.port() == 0 {
                        Err("the configuration's listen.api has port 0 (any free port): give the server's API address with --url".to_string())
                    } else {
                        Ok(format!("http://{}", c.listen.api))
                    }
                }),
            };
            url.and_then(|url| {
                compliance_cli::extract_create(&compliance_cli::ExtractArgs {
                    url,
                    key,
                    request: serde_json::json!({
                        // left out: every table (an empty list is refused)
                        "tables": (!tables.is_empty()).then_some(tables),
                        "from": from,
                        "to": to,
                        "where": filter,
                        "recipient_key": recipient_key,
                    }),
                    out,
                })
            })
        }
        Command::Extract {
            command: ExtractCommand::Verify { bundle, public_key },
        } => compliance_cli::extract_verify(&bundle, &public_key),
        Command::Extract {
            command: ExtractCommand::PublicKey { config },
        } => load_config(config.as_ref()).and_then(|c| compliance_cli::extract_public_key(&c)),
        Command::Tenant {
            command: TenantCommand::RotateKey { name, config },
        } => load_config(config.as_ref()).and_then(|c| {
            let tenant = TenantId::new(&name).map_err(|e| e.to_string())?;
            let (keys, storage) = open_keys_offline(&c)?;
            let r = keys.rotate(&storage, &tenant).map_err(|e| e.to_string())?;
            audit_offline(
                &c,
                NewEvent::new(EventKind::KeyRotated)
                    .tenant(&tenant)
                    .detail("kek_version", r.kek_version)
                    .detail("data_keys_rewrapped", r.data_keys_rewrapped)
                    .detail("versions_retired", format!("{:?}", r.versions_retired))
                    .detail("by", "cli"),
            );
            bulkhead::outln!(
                "rotated tenant {tenant}'s key: now version {}, {} data key(s) re-wrapped, version(s) {:?} destroyed; no data file rewritten",
                r.kek_version, r.data_keys_rewrapped, r.versions_retired
            )?;
            Ok(())
        }),
        Command::Key {
            command: KeyCommand::Create { tenant, scopes, config },
        } => load_config(config.as_ref()).and_then(|c| {
            let scopes = Scopes::parse_list(&scopes)?;
            let key = {
                let _dir = tenants::lock_writes(&c.policy_dir())?;
                tenants::create_key(&c.policy_dir(), &tenant, scopes)?
            };
            if let Ok(t) = TenantId::new(&tenant) {
                audit_offline(
                    &c,
                    NewEvent::new(EventKind::KeyCreated)
                        .tenant(&t)
                        .key_id(key.id())
                        .detail("scopes", scopes),
                );
            }
            bulkhead::outln!("created key {} for tenant {tenant} with scopes {scopes}; store it now, it is not shown again:", key.id())
                .and_then(|()| bulkhead::outln!("{}", key.expose()))
                .map_err(|e| {
                    format!(
                        "{e}: key {id} was created but its secret could not be shown; revoke it with 'bulkhead key revoke --tenant {tenant} --id {id}' and create another",
                        id = key.id()
                    )
                })
                .and_then(|()| in_force(&c, "the new key"))
        }),
        Command::Operator {
            command:
                OperatorCommand::Key {
                    name, admin: true, ..
                },
        } => {
            let key = bulkhead_rules::ApiKey::from_random(rand::random(), rand::random());
            let grant = bulkhead::admin::AdminGrant {
                name,
                key_id: key.id().to_string(),
                key_sha256: key.digest().iter().map(|b| format!("{b:02x}")).collect(),
            };
            bulkhead::admin::AdminKeys::new(std::slice::from_ref(&grant)).and_then(|_| {
                bulkhead::outln!("# add to the server configuration, then restart:")?;
                bulkhead::outln!("[[admin]]")?;
                bulkhead::outln!("name = {:?}", grant.name)?;
                bulkhead::outln!("key_id = {:?}", grant.key_id)?;
                bulkhead::outln!("key_sha256 = {:?}", grant.key_sha256)?;
                bulkhead::outln!("# the key, shown once:")?;
                bulkhead::outln!("{}", key.expose())
            })
        }
        Command::Operator {
            command: OperatorCommand::Key { name, tenants, .. },
        } => {
            let tenants = tenants.unwrap_or_default();
            let grant = bulkhead_query::federation::Grant {
                name: name.clone(),
                key_id: String::new(),
                key_sha256: String::new(),
                tenants: tenants
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            };
            let key = bulkhead_rules::ApiKey::from_random(rand::random(), rand::random());
            let grant = bulkhead_query::federation::Grant {
                key_id: key.id().to_string(),
                key_sha256: key.digest().iter().map(|b| format!("{b:02x}")).collect(),
                ..grant
            };
            bulkhead_query::federation::Federation::new(std::slice::from_ref(&grant)).and_then(|_| {
                bulkhead::outln!("# add to the server configuration, then restart:")?;
                bulkhead::outln!("[[federation]]")?;
                bulkhead::outln!("name = {:?}", grant.name)?;
                bulkhead::outln!("key_id = {:?}", grant.key_id)?;
                bulkhead::outln!("key_sha256 = {:?}", grant.key_sha256)?;
                bulkhead::outln!("tenants = {:?}", grant.tenants)?;
                bulkhead::outln!("# the key, shown once:")?;
                bulkhead::outln!("{}", key.expose())
            })
        }
        Command::Audit {
            command: AuditCommand::Verify { config, anchor, published },
        } => load_config(config.as_ref()).and_then(|c| {
            use bulkhead_store::audit::{verify_with, Anchor, VerifyOptions};
            let mut anchors = anchor
                .iter()
                .map(|a| a.parse::<Anchor>().map_err(|e| format!("--anchor {a}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if published {
                let storage = bulkhead_store::objects::Storage::open_beside_server(&c.storage_config())
                    .map_err(|e| format!("opening the store: {e}"))?;
                let heads = bulkhead_store::audit::published_heads(&storage, &c.node_name)
                    .map_err(|e| e.to_string())?;
                let Some(last) = heads.last() else {
                    return Err(format!("node {} has published no audit head to the store yet", c.node_name));
                };
                bulkhead::outln!(
                    "{} head(s) node {} published, the last {} (at {})",
                    heads.len(),
                    last.node,
                    last.anchor(),
                    last.at
                )?;
                anchors.extend(heads.iter().map(|h| h.anchor()));
            }
            let report = verify_with(&c.audit_dir(), &VerifyOptions { anchors }).map_err(|e| e.to_string())?;
            bulkhead::outln!("audit trail intact: {} entries, head {}", report.entries, report.head)?;
            Ok(())
        }),
        Command::Key {
            command: KeyCommand::Revoke { tenant, id, config },
        } => load_config(config.as_ref()).and_then(|c| {
            {
                let _dir = tenants::lock_writes(&c.policy_dir())?;
                tenants::revoke_key(&c.policy_dir(), &tenant, &id)?;
            }
            if let Ok(t) = TenantId::new(&tenant) {
                audit_offline(&c, NewEvent::new(EventKind::KeyRevoked).tenant(&t).key_id(id.clone()));
            }
            bulkhead::outln!("revoked key {id} of tenant {tenant}")?;
            in_force(&c, "the revocation")
        }),
        Command::Check { config } => load_config(config.as_ref()).and_then(|c| {
            bulkhead::console::stdout_text(&policy_cli::check(&c)?)?;
            Ok(())
        }),
        Command::Policy {
            command: PolicyCommand::Show { tenant, config },
        } => load_config(config.as_ref()).and_then(|c| {
            bulkhead::console::stdout_text(&policy_cli::show(&c, &tenant)?)?;
            Ok(())
        }),
        Command::Policy {
            command: PolicyCommand::Diff { tenant, file, config },
        } => load_config(config.as_ref()).and_then(|c| {
            bulkhead::console::stdout_text(&policy_cli::diff(&c, &tenant, &file)?)?;
            Ok(())
        }),
        Command::Anomaly {
            command: AnomalyCommand::Backtest { input, output, settings },
        } => bulkhead::backtest::parse_settings(settings.as_deref()).and_then(|s| {
            let summary = bulkhead::backtest::run(&input, &output, &s)?;
            for (line, why) in &summary.skipped {
                bulkhead::errln!("warning: {}: line {line} skipped: {why}", input.display());
            }
            bulkhead::outln!(
                "scored {} points, {} anomalies, {} lines skipped; settings: {}",
                summary.points,
                summary.anomalies,
                summary.skipped.len(),
                s.describe()
            )?;
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            bulkhead::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
