//! The runbooks stay true: every alert of deploy/observability/alerts.yml has a section in
//! docs/operations.md, and every `shopctl` command the runbooks name exists (its `--help`
//! answers).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repository_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_alert_has_a_runbook() {
    let alerts: BTreeSet<String> = repository_file("deploy/observability/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(alerts.len() > 5, "alerts found: {alerts:?}");
    let runbooks: BTreeSet<String> = repository_file("docs/operations.md")
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|name| name.trim().to_owned())
        .collect();
    let missing: Vec<&String> = alerts.difference(&runbooks).collect();
    assert!(
        missing.is_empty(),
        "alerts without a runbook section (### NAME) in docs/operations.md: {missing:?}"
    );
    let stale: Vec<&String> = runbooks.difference(&alerts).collect();
    assert!(
        stale.is_empty(),
        "runbook sections for alerts that do not exist: {stale:?}"
    );
}

#[test]
fn every_command_the_runbooks_name_exists() {
    let docs = repository_file("docs/operations.md");
    let mut commands = BTreeSet::new();
    for piece in docs.split('`').skip(1).step_by(2) {
        let Some(rest) = piece.strip_prefix("shopctl ") else {
            continue;
        };
        // The command words: up to the first option or placeholder.
        let words: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| {
                w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
            })
            .take(2)
            .collect();
        if !words.is_empty() {
            commands.insert(words.join(" "));
        }
    }
    assert!(commands.len() >= 8, "commands found: {commands:?}");
    for command in &commands {
        let out = Command::new(env!("CARGO_BIN_EXE_shopctl"))
            .args(command.split(' '))
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docs/operations.md names `shopctl {command}`, which does not exist: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
