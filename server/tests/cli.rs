//! The `bulkhead` command line: tenants and keys are created as an operator
//! would, keys are printed once (last line) and stored only as hashes.
use std::path::Path;
use std::process::{Command, Output};

fn bulkhead(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("BULKHEAD_DATA_DIR")
        .env_remove("BULKHEAD_POLICY_DIR")
        .output()
        .expect("run bulkhead")
}

fn config_in(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bulkhead.toml");
    std::fs::write(&path, format!("data_dir = {:?}\n", dir.join("data"))).unwrap();
    path
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tenant_and_key_creation() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = bulkhead(&config, &["tenant", "create", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("created tenant acme"));

    let out = bulkhead(
        &config,
        &[
            "key",
            "create",
            "--tenant",
            "acme",
            "--scopes",
            "ingest,query",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let key = text.lines().last().unwrap();
    assert!(
        key.starts_with("bhk_") && key.len() == 4 + 16 + 1 + 64,
        "{key}"
    );

    let policy = std::fs::read_to_string(dir.path().join("data/policies/acme.toml")).unwrap();
    assert!(
        !policy.contains(&key[21..]),
        "the secret must not be stored"
    );
    assert!(policy.contains(&key[4..20]), "the key id is stored");
    assert!(policy.contains("\"ingest\"") && policy.contains("\"query\""));

    let out = bulkhead(
        &config,
        &["key", "revoke", "--tenant", "acme", "--id", &key[4..20]],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let policy = std::fs::read_to_string(dir.path().join("data/policies/acme.toml")).unwrap();
    assert!(policy.contains("revoked = true"), "{policy}");
    let out = bulkhead(
        &config,
        &["key", "revoke", "--tenant", "acme", "--id", &key[4..20]],
    );
    assert!(!out.status.success() && stderr(&out).contains("already revoked"));
}

/// A server keeps its policies and keys as they were while any policy file
/// does not load, so a key revoked then would go on working: the command
/// that wrote the change says so and fails.
/// Keys created at the same moment by several processes are all kept: each
/// command changes the tenant's file under the policy directory's write lock
/// (the admin API and offboarding take it too). Without it two commands
/// could read the file before either wrote it, and the second write dropped
/// the first key, whose secret had been shown.
#[test]
fn keys_created_by_processes_at_once_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = bulkhead(&config, &["tenant", "create", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let children: Vec<_> = (0..12)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_bulkhead"))
                .args(["key", "create", "--tenant", "acme", "--scopes", "ingest"])
                .arg("--config")
                .arg(&config)
                .env_remove("BULKHEAD_DATA_DIR")
                .env_remove("BULKHEAD_POLICY_DIR")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out).lines().last().unwrap()[4..20].to_string()
        })
        .collect();
    let policy = std::fs::read_to_string(dir.path().join("data/policies/acme.toml")).unwrap();
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| !policy.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "keys shown but not kept: {lost:?}");
}

#[test]
fn changes_a_broken_directory_keeps_from_the_server_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    for t in ["acme", "other"] {
        assert!(bulkhead(&config, &["tenant", "create", t]).status.success());
    }
    let out = bulkhead(
        &config,
        &["key", "create", "--tenant", "acme", "--scopes", "query"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap()[4..20].to_string();
    let broken = dir.path().join("data/policies/other.toml");
    let text = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(&broken, format!("{text}\nbroken = [\n")).unwrap();

    let out = bulkhead(&config, &["key", "revoke", "--tenant", "acme", "--id", &id]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("revoked key {id}")));
    let err = stderr(&out);
    assert!(
        err.contains("the revocation is written")
            && err.contains("other.toml")
            && err.contains("keeps its policies and keys as they were"),
        "{err}"
    );
    let policy = std::fs::read_to_string(dir.path().join("data/policies/acme.toml")).unwrap();
    assert!(policy.contains("revoked = true"), "{policy}");
    for args in [
        &["key", "create", "--tenant", "acme", "--scopes", "ingest"][..],
        &["tenant", "create", "third"],
        &["tenant", "remove", "third"],
    ] {
        let out = bulkhead(&config, args);
        assert!(
            !out.status.success() && stderr(&out).contains("other.toml"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    std::fs::write(&broken, text).unwrap();
    let out = bulkhead(&config, &["tenant", "create", "fourth"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn listing_tenants_where_there_are_none_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = bulkhead(&config, &["tenant", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "the header alone");
    let policies = dir.path().join("data/policies");
    assert!(
        stderr(&out).contains(&format!("no policy directory at {}", policies.display())),
        "{}",
        stderr(&out)
    );
    // something else in its place is an error, not "no tenants"
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(&policies, "not a directory").unwrap();
    let out = bulkhead(&config, &["tenant", "list"]);
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains("no policy directory"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&policies).unwrap();
    let out = bulkhead(&config, &["tenant", "create", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bulkhead(&config, &["tenant", "list"]);
    assert!(stdout(&out).lines().nth(1).unwrap().starts_with("acme\t"));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn bad_names_scopes_and_duplicates_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    for bad in ["../etc", "a/b", "%2e%2e", "Acme", "a b", &"x".repeat(64)] {
        let out = bulkhead(&config, &["tenant", "create", bad]);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(
            stderr(&out).contains("tenant name"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
    assert!(bulkhead(&config, &["tenant", "create", "acme"])
        .status
        .success());
    let out = bulkhead(&config, &["tenant", "create", "acme"]);
    assert!(!out.status.success() && stderr(&out).contains("already exists"));

    let out = bulkhead(
        &config,
        &[
            "key",
            "create",
            "--tenant",
            "acme",
            "--scopes",
            "ingest,write",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("unknown scope \"write\""),
        "{}",
        stderr(&out)
    );
    let out = bulkhead(
        &config,
        &["key", "create", "--tenant", "nobody", "--scopes", "query"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("tenant create nobody"),
        "{}",
        stderr(&out)
    );
    // only the one good tenant file exists (beside the write lock's file)
    let files: Vec<_> = std::fs::read_dir(dir.path().join("data/policies"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".write.lock")
        .collect();
    assert_eq!(files, ["acme.toml"]);
}

#[test]
fn a_broken_config_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[listen]\ngrpc = \"not an address\"\n").unwrap();
    let out = bulkhead(&path, &["tenant", "create", "acme"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
}

/// `bulkhead serve` without a config in `dir`, every listener on a port of
/// the system's choosing but the query API's, on `api`.
fn try_out(dir: &Path, api: &str) -> Command {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    serve
        .arg("serve")
        .current_dir(dir)
        .env("BULKHEAD_GRPC_LISTEN", "127.0.0.1:0")
        .env("BULKHEAD_HTTP_LISTEN", "127.0.0.1:0")
        .env("BULKHEAD_API_LISTEN", api)
        .env("BULKHEAD_METRICS_LISTEN", "127.0.0.1:0")
        .env("BULKHEAD_FLIGHT_LISTEN", "127.0.0.1:0")
        .env_remove("BULKHEAD_DATA_DIR")
        .env_remove("BULKHEAD_POLICY_DIR");
    serve
}

/// Sends the server SIGTERM; it must exit with success.
fn stops_cleanly(mut child: std::process::Child) {
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// `bulkhead serve` without a config: a local try-out with two demo tenants
/// whose keys are printed once, and a clean stop on SIGTERM.
#[test]
fn try_out_mode_creates_demo_tenants_once_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        try_out(dir.path(), "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let run = |mut child: std::process::Child| -> Vec<String> {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            lines.push(line.trim_end().to_string());
            if line.starts_with("local try-out") {
                break;
            }
            line.clear();
        }
        stops_cleanly(child);
        lines
    };
    let first = run(start());
    let keys: Vec<&String> = first
        .iter()
        .filter(|l| l.starts_with("demo tenant"))
        .collect();
    assert_eq!(keys.len(), 2, "{first:?}");
    assert!(keys[0].contains("demo-a") && keys[0].contains("bhk_"));
    assert!(keys[1].contains("demo-b") && keys[1].contains("bhk_"));
    assert!(first.last().unwrap().contains("./bulkhead-data"));
    let policies = dir.path().join("bulkhead-data/policies");
    assert!(policies.join("demo-a.toml").exists() && policies.join("demo-b.toml").exists());
    // a second start reuses the tenants and prints no secret
    let second = run(start());
    assert!(second.iter().all(|l| !l.contains("bhk_")), "{second:?}");
}

#[test]
fn anomaly_backtest_scores_a_csv() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("series.csv");
    let mut text = String::from("timestamp,value\n");
    for m in 0..240 {
        let v = if m == 200 { 900 } else { 100 + m % 5 };
        text.push_str(&format!("2025-03-01T{:02}:{:02}:00Z,{v}\n", m / 60, m % 60));
    }
    std::fs::write(&input, text).unwrap();
    let output = dir.path().join("scores.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["anomaly", "backtest", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--settings", "sensitivity=0.6,seasonality=none"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("scored 240 points, 1 anomalies"),
        "{}",
        stdout(&out)
    );
    let scores = std::fs::read_to_string(&output).unwrap();
    let flagged: Vec<&str> = scores
        .lines()
        .filter(|l| l.split(',').nth(3) == Some("true"))
        .collect();
    assert_eq!(flagged.len(), 1);
    assert!(
        flagged[0].starts_with("2025-03-01T03:20:00Z,900,"),
        "{}",
        flagged[0]
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["anomaly", "backtest", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--settings", "sensitivity=2"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("sensitivity"), "{}", stderr(&bad));
}

#[test]
fn audit_verify_finds_an_edited_entry() {
    use bulkhead_store::audit::{AuditLog, EventKind, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    // tenant and key creation go on the record when no server holds it
    assert!(bulkhead(&config, &["tenant", "create", "acme"])
        .status
        .success());
    assert!(bulkhead(
        &config,
        &["key", "create", "--tenant", "acme", "--scopes", "query"]
    )
    .status
    .success());
    let audit_dir = dir.path().join("data/audit");
    {
        let log =
            AuditLog::open(&audit_dir, std::sync::Arc::new(bulkhead_rules::SystemClock)).unwrap();
        let t = bulkhead_rules::TenantId::new("acme").unwrap();
        log.append(NewEvent::new(EventKind::PolicyChanged).tenant(&t))
            .unwrap();
    }
    let out = bulkhead(&config, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("audit trail intact: 3 entries"),
        "{}",
        stdout(&out)
    );
    let log_file = audit_dir.join("audit.log");
    let text = std::fs::read_to_string(&log_file).unwrap();
    assert!(text.lines().next().unwrap().contains("tenant_created"));
    assert!(text.lines().nth(1).unwrap().contains("key_created"));
    std::fs::write(&log_file, text.replacen("key_created", "key_revoked", 1)).unwrap();
    let out = bulkhead(&config, &["audit", "verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}

/// `operator key` prints a `[[federation]]` entry that the configuration
/// takes as it is, and the key once; the key's secret is nowhere in the entry.
#[test]
fn an_operator_key_entry_goes_into_the_config_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "operator",
            "key",
            "--name",
            "sre-team",
            "--tenants",
            "acme, globex",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let key = text.lines().last().unwrap().to_string();
    assert!(key.starts_with("bhk_"), "{text}");
    let entry: String = text
        .lines()
        .filter(|l| !l.starts_with('#') && *l != key)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!entry.contains(&key[21..]), "{entry}");
    assert!(
        entry.contains("tenants = [\"acme\", \"globex\"]"),
        "{entry}"
    );
    let config = config_in(dir.path());
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&entry);
    std::fs::write(&config, toml).unwrap();
    let out = bulkhead(&config, &["check"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // a broken grant is named by `check`
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "data_dir = {:?}\n[[federation]]\nname = \"x\"\nkey_id = \"zz\"\nkey_sha256 = \"00\"\ntenants = []\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = bulkhead(&bad, &["check"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("federation[0]") && err.contains("key_id"),
        "{err}"
    );
}

/// `operator key --admin` prints an `[[admin]]` entry the configuration
/// takes as printed; `--tenants` or `--admin` is required, not both; a
/// broken entry is named by `check`.
#[test]
fn an_admin_key_entry_goes_into_the_config_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["operator", "key", "--name", "ops", "--admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let key = text.lines().last().unwrap().to_string();
    assert!(key.starts_with("bhk_"), "{text}");
    let entry: String = text
        .lines()
        .filter(|l| !l.starts_with('#') && *l != key)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(entry.starts_with("[[admin]]\n"), "{entry}");
    assert!(!entry.contains(&key[21..]), "{entry}");
    let config = config_in(dir.path());
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&entry);
    std::fs::write(&config, toml).unwrap();
    let out = bulkhead(&config, &["check"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    assert!(!run(&["operator", "key", "--name", "ops"]).status.success());
    assert!(!run(&[
        "operator",
        "key",
        "--name",
        "ops",
        "--admin",
        "--tenants",
        "a"
    ])
    .status
    .success());

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "data_dir = {:?}\n[[admin]]\nname = \"x\"\nkey_id = \"zz\"\nkey_sha256 = \"00\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = bulkhead(&bad, &["check"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("admin[0]") && err.contains("key_id"), "{err}");
}

/// A pipe whose reading end is already closed: every write to it fails
/// (EPIPE), as when `bulkhead ... | head -1` has read its line.
fn closed_pipe() -> std::process::Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// `bulkhead serve | head -c 1`: the banner cannot be written, and the
/// server serves on regardless, then stops cleanly. Its log (standard
/// error) says when it is up and where.
#[test]
fn serve_keeps_serving_when_its_output_is_closed() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let mut child = try_out(dir.path(), "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let api_addr: std::net::SocketAddr = loop {
        line.clear();
        let n = log.read_line(&mut line).unwrap();
        assert!(n > 0, "the log ended before the server started");
        if !line.contains("bulkhead started") {
            continue;
        }
        // `api_addr=<ip:port>`, once any colour codes are taken out
        let mut plain = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                plain.push(c);
            }
        }
        let addr = plain
            .split_whitespace()
            .find_map(|field| field.strip_prefix("api_addr="))
            .unwrap_or_else(|| panic!("no api_addr in {plain}"));
        break addr.parse().unwrap();
    };
    // the rest of the log is read as it comes, so the server never waits
    // on a full pipe
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = log.read_to_string(&mut rest);
    });
    let reply = raw_http(
        api_addr,
        "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // a server that died writing its banner (before or after this answer)
    // exits 101, not 0, whenever the signal comes
    stops_cleanly(child);
    drain.join().unwrap();
}

/// A command whose output cannot be written fails with an error that says
/// so (exit 1), not a panic (exit 101).
#[test]
fn a_command_whose_output_is_closed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    assert!(bulkhead(&config, &["tenant", "create", "acme"])
        .status
        .success());
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "key", "create", "--tenant", "acme", "--scopes", "ingest", "--config",
        ])
        .arg(&config)
        .env_remove("BULKHEAD_DATA_DIR")
        .env_remove("BULKHEAD_POLICY_DIR")
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: writing to standard output"),
        "{}",
        stderr(&out)
    );
    // the key exists without anyone having seen it: the error says which
    // one to revoke, and the command it names works
    let err = stderr(&out);
    let revoke = err
        .split('\'')
        .find(|s| s.starts_with("bulkhead key revoke"))
        .unwrap_or_else(|| panic!("no revoke command in {err}"));
    let args: Vec<&str> = revoke.split_whitespace().skip(1).collect();
    let out = bulkhead(&config, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("revoked key"), "{}", stdout(&out));
}

/// Sends `request` (HTTP/1.1 with `connection: close`) to `addr`; the
/// whole reply.
fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

/// POSTs `sql` to the query API at `api` with `key`; the status line and
/// the body.
fn query_over_http(api: std::net::SocketAddr, key: &str, sql: &str) -> (String, String) {
    let body = format!("{{\"sql\":{sql:?}}}");
    let reply = raw_http(
        api,
        &format!(
            "POST /api/v1/query HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let status = reply.lines().next().unwrap_or_default().to_string();
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// A statement of a thousand operators (a tree a thousand levels deep) is
/// answered by the server as built, whose threads have the stack for it
/// (a few hundred levels once overflowed a thread's stack and ended the
/// process for every tenant); one past the bound is refused by name.
#[test]
fn the_server_answers_a_statement_at_the_operator_bound() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_addr = api.local_addr().unwrap();
    drop(api);
    let mut child = try_out(dir.path(), &api_addr.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut key = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("demo tenant demo-a") {
            key = line.split_whitespace().last().map(str::to_string);
        }
        if line.starts_with("local try-out") {
            break;
        }
    }
    let key = key.expect("a demo key");
    let at_bound = format!("SELECT {} AS x", vec!["1"; 1_001].join(" + "));
    let (status, body) = query_over_http(api_addr, &key, &at_bound);
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(body.contains("1001"), "{body}");
    let ors = (0..501)
        .map(|i| format!("body = 'v{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let past = format!("SELECT count(*) FROM logs WHERE {ors}");
    let (status, body) = query_over_http(api_addr, &key, &past);
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(
        body.contains("operators") && body.contains("at most 1000"),
        "{body}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the server ended");
    stops_cleanly(child);
}

/// A name whose tenant was removed with its data kept is not given to a new
/// tenant by accident (it would read that data): `--restore` brings the
/// removed tenant back on purpose.
#[test]
fn a_name_with_data_from_before_is_only_taken_back_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let kept = dir
        .path()
        .join("data/store/tenant=acme/signal=logs/date=2026-01-01/hour=00");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("kept.parquet"), b"from before").unwrap();
    let out = bulkhead(&config, &["tenant", "create", "acme"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("data from before") && stderr(&out).contains("--restore"),
        "{}",
        stderr(&out)
    );
    let list = bulkhead(&config, &["tenant", "list"]);
    assert!(!stdout(&list).contains("acme"), "{}", stdout(&list));
    // another name is free
    assert!(bulkhead(&config, &["tenant", "create", "globex"])
        .status
        .success());
    let out = bulkhead(&config, &["tenant", "create", "acme", "--restore"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&bulkhead(&config, &["tenant", "list"])).contains("acme"));
    // a removal is remembered whatever was stored (rows may still be
    // buffered by a running server)
    assert!(bulkhead(&config, &["tenant", "remove", "globex"])
        .status
        .success());
    let out = bulkhead(&config, &["tenant", "create", "globex"]);
    assert!(
        !out.status.success() && stderr(&out).contains("--restore"),
        "{}",
        stderr(&out)
    );
    assert!(
        bulkhead(&config, &["tenant", "create", "globex", "--restore"])
            .status
            .success()
    );
    // restoring a name nothing is known of (a typo) does not quietly make
    // a new, empty tenant
    let out = bulkhead(&config, &["tenant", "create", "acmee", "--restore"]);
    assert!(
        !out.status.success() && stderr(&out).contains("nothing to restore"),
        "{}",
        stderr(&out)
    );
    let list = bulkhead(&config, &["tenant", "list"]);
    assert!(!stdout(&list).contains("acmee"), "{}", stdout(&list));
}
