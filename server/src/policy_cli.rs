//! Operator commands over policies: `bulkhead check`, `bulkhead policy show`
//! and `bulkhead policy diff`.
use std::path::Path;

use bulkhead_rules::{PolicySet, TenantId, TenantPolicy};

use crate::config::Config;

/// Validates the configuration and every policy, reporting every problem
/// with its file and line. Returns the report, or every problem.
pub fn check(config: &Config) -> Result<String, String> {
    let dir = config.policy_dir();
    let set = PolicySet::load_dir(&dir).map_err(|errors| {
        let mut out = format!("{} problem(s) in {}:\n", errors.len(), dir.display());
        for e in errors {
            out.push_str(&format!("  {e}\n"));
        }
        out
    })?;
    let mut out = format!(
        "ok: {} tenant(s) in {}\n",
        set.policies.len(),
        dir.display()
    );
    for p in set.policies.values() {
        let active = p.keys.iter().filter(|k| !k.revoked).count();
        out.push_str(&format!(
            "  {}: version {}, {} active key(s)\n",
            p.tenant, p.version, active
        ));
    }
    Ok(out)
}

/// A policy file read as `as_tenant`'s, merged over the default policy of
/// `config`'s policy directory (so its version is the one the server gives).
fn read_policy(
    config: &Config,
    path: &Path,
    as_tenant: &TenantId,
) -> Result<(String, TenantPolicy), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let defaults = PolicySet::load_defaults(&config.policy_dir()).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    // validated as if it were the tenant's file, so the name check applies
    let named = path.with_file_name(format!("{as_tenant}.toml"));
    let policy = TenantPolicy::parse_with(&named, &text, defaults.as_ref()).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                let line = e.line.map(|l| format!(":{l}")).unwrap_or_default();
                format!("{}{line}: {}", path.display(), e.message)
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok((text, policy))
}

/// The tenant's policy in force, with its version.
pub fn show(config: &Config, tenant: &str) -> Result<String, String> {
    let tenant = TenantId::new(tenant)?;
    let path = PolicySet::path_for(&config.policy_dir(), &tenant);
    if !path.exists() {
        return Err(format!(
            "no tenant {tenant} ({} does not exist)",
            path.display()
        ));
    }
    let (text, policy) = read_policy(config, &path, &tenant)?;
    let inherits = if config
        .policy_dir()
        .join(bulkhead_rules::DEFAULTS_FILE)
        .exists()
    {
        format!(
            ", the version of this file merged over {}, which it inherits",
            config
                .policy_dir()
                .join(bulkhead_rules::DEFAULTS_FILE)
                .display()
        )
    } else {
        String::new()
    };
    Ok(format!(
        "# {} version {}{inherits}\n{text}",
        path.display(),
        policy.version
    ))
}

/// How a proposed policy file differs from the one in force: validated
/// first, then a line diff with both versions.
pub fn diff(config: &Config, tenant: &str, proposed: &Path) -> Result<String, String> {
    let tenant = TenantId::new(tenant)?;
    let current_path = PolicySet::path_for(&config.policy_dir(), &tenant);
    let (old_text, old) = if current_path.exists() {
        let (t, p) = read_policy(config, &current_path, &tenant)?;
        (t, Some(p))
    } else {
        (String::new(), None)
    };
    let (new_text, new) = read_policy(config, proposed, &tenant)?;
    let mut out = format!(
        "--- {} (version {})\n+++ {} (version {})\n",
        current_path.display(),
        old.as_ref().map(|p| p.version.as_str()).unwrap_or("none"),
        proposed.display(),
        new.version
    );
    let lines = line_diff(&old_text, &new_text);
    if lines.iter().all(|(tag, _)| *tag == ' ') {
        out.push_str("(no changes)\n");
    }
    for (tag, line) in lines.into_iter().filter(|(tag, _)| *tag != ' ') {
        out.push_str(&format!("{tag}{line}\n"));
    }
    Ok(out)
}

/// A minimal line diff (longest common subsequence): `' '`, `'-'` or `'+'`
/// per line. Policy files are small, so quadratic is fine.
fn line_diff<'a>(a: &'a str, b: &'a str) -> Vec<(char, &'a str)> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(('+', b[j]));
            j += 1;
        } else {
            out.push(('-', a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_changes() {
        let d = line_diff("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(d, vec![(' ', "a"), ('-', "b"), (' ', "c"), ('+', "d")]);
        assert!(line_diff("x\n", "x\n").iter().all(|(t, _)| *t == ' '));
    }

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        }
    }

    #[test]
    fn check_reports_every_problem_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        bulkhead_collector::tenants::create_tenant(&c.policy_dir(), "good").unwrap();
        assert!(check(&c).unwrap().contains("ok: 1 tenant(s)"));
        std::fs::write(
            c.policy_dir().join("bad.toml"),
            "tenant = \"bad\"\n\n[anomaly]\nseries_limit = 0\n",
        )
        .unwrap();
        std::fs::write(
            c.policy_dir().join("worse.toml"),
            "tenant = \"worse\"\nkeys = 3\n",
        )
        .unwrap();
        let e = check(&c).unwrap_err();
        assert!(e.starts_with("2 problem(s)"), "{e}");
        assert!(e.contains("bad.toml:3: anomaly.series_limit"), "{e}");
        assert!(e.contains("worse.toml:2:"), "{e}");
    }

    #[test]
    fn diff_validates_and_shows_versions() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        bulkhead_collector::tenants::create_tenant(&c.policy_dir(), "acme").unwrap();
        let shown = show(&c, "acme").unwrap();
        assert!(
            shown.contains("version ") && shown.contains("tenant = \"acme\""),
            "{shown}"
        );
        let proposed = dir.path().join("proposed.toml");
        std::fs::write(
            &proposed,
            "tenant = \"acme\"\n\n[anomaly]\nseries_limit = 50\n",
        )
        .unwrap();
        let d = diff(&c, "acme", &proposed).unwrap();
        assert!(d.contains("+series_limit = 50"), "{d}");
        assert!(d.contains("+[anomaly]"), "{d}");
        std::fs::write(&proposed, "tenant = \"other\"\n").unwrap();
        let e = diff(&c, "acme", &proposed).unwrap_err();
        assert!(e.contains("proposed.toml") && e.contains("acme"), "{e}");
        assert!(show(&c, "ghost").unwrap_err().contains("no tenant ghost"));
    }
}
