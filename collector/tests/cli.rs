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
    // only the one good tenant file exists
    let files: Vec<_> = std::fs::read_dir(dir.path().join("data/policies"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
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
