//! The deployment files, checked with what runs here (no Docker, no
//! Kubernetes): the systemd unit by `systemd-analyze verify`; the Helm chart
//! rendered and the compose file and load balancer parsed by
//! tests/python/check_deploy.py; and every configuration they hand to
//! bulkhead parsed and validated by bulkhead's own configuration loader,
//! with every environment variable they set one that bulkhead reads. (The
//! compose topology itself runs in two_nodes.rs, with the same
//! bulkhead.toml.)
use std::path::Path;
use std::process::Command;

use bulkhead::Config;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("systemd/bulkhead.service")).unwrap();
    assert!(unit
        .contains("ExecStart=/usr/local/bin/bulkhead serve --config /etc/bulkhead/bulkhead.toml"));
    // verified against the binary this build made, where the unit expects it
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bulkhead.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/bulkhead", env!("CARGO_BIN_EXE_bulkhead")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // it exits 0 on unknown keys and bad values, but says so
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_chart_and_compose_files_render_and_hand_bulkhead_valid_configuration() {
    let out = Command::new(bulkhead_testkit::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/check_deploy.py"))
        .arg(deploy())
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    for (what, text) in report["configs"].as_object().unwrap() {
        let mut config =
            Config::parse(text.as_str().unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
        // with the environment the files give it, as every node starts
        config
            .apply_env(|v| match v {
                "BULKHEAD_NODE_NAME" => Some("node-a".into()),
                "BULKHEAD_S3_ENDPOINT" => Some("http://s3:9000".into()),
                _ => None,
            })
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            matches!(
                config.storage_config(),
                bulkhead_store::StorageConfig::S3(_)
            ),
            "{what}: the scale-out shape needs a shared bucket"
        );
    }
    for name in report["env"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            !name.starts_with("BULKHEAD_") || Config::ENV_VARS.contains(&name),
            "{name} is set by a deployment file but bulkhead does not read it"
        );
    }
}

#[test]
fn the_example_configuration_documents_every_environment_override() {
    let text = std::fs::read_to_string(deploy().join("bulkhead.toml")).unwrap();
    for name in Config::ENV_VARS {
        assert!(
            text.contains(name),
            "deploy/bulkhead.toml does not name {name}"
        );
    }
}
