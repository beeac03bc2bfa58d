//! The shipped alert rules (chart/vpblu/files/prometheus-rules.yaml) pass
//! `promtool check rules` and their unit tests (tests/prometheus/
//! rules-test.yaml, `promtool test rules`), and every alert has a test and
//! a runbook section. Needs Go (for the pinned promtool); fails, never
//! skips, without it.

use std::path::PathBuf;

use vpblu_e2e::built_tools::repo_root;
use vpblu_e2e::prometheus;

fn rules() -> PathBuf {
    repo_root().join("chart/vpblu/files/prometheus-rules.yaml")
}

/// Every `alert:` name in the rule file.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(rules()).expect("the rule file");
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(|n| n.trim().to_owned()))
        .collect();
    assert!(names.len() >= 10, "the rule file has the alerts the docs promise: {names:?}");
    names
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    let checked = prometheus::check_rules(&rules()).unwrap_or_else(|e| panic!("{e}"));
    let tests = repo_root().join("tests/prometheus/rules-test.yaml");
    let tested = prometheus::test_rules(&tests).unwrap_or_else(|e| panic!("{e}"));
    println!("{checked}{tested}");
}

#[test]
fn every_alert_has_a_unit_test_and_a_runbook() {
    let tests = std::fs::read_to_string(repo_root().join("tests/prometheus/rules-test.yaml"))
        .expect("rules-test.yaml");
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md")).expect("docs/runbooks.md");
    let rules = std::fs::read_to_string(rules()).expect("the rule file");
    let mut missing = Vec::new();
    for name in alert_names() {
        if !tests.contains(&format!("alertname: {name}\n        exp_alerts:\n          - exp_labels")) {
            missing.push(format!("{name}: no test case in rules-test.yaml expects it to fire"));
        }
        if !runbooks.contains(&format!("\n## {name}\n")) {
            missing.push(format!("{name}: no `## {name}` section in docs/runbooks.md"));
        }
        let anchor = format!("runbook: \"docs/runbooks.md#{}\"", name.to_lowercase());
        if !rules.contains(&anchor) {
            missing.push(format!("{name}: no `{anchor}` annotation"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
