//! The metrics reference (docs/reference/metrics.md) is what the binaries'
//! registries render, and every page either binary can serve passes
//! `promtool check metrics` in the classic text format that `curl` gets:
//! a controller fresh or on standby, a daemon just started, with no peers,
//! and with every family present. Needs Go (for the pinned promtool);
//! fails, never skips, without it.

use vpblu_controller::metrics::ControllerMetrics;
use vpblu_e2e::metrics_reference::{REGENERATE, render};
use vpblu_e2e::prometheus;
use vpblu_runtime::exposition::classic_text;

fn page<'a>(pages: &'a [(&'static str, String)], name: &str) -> &'a str {
    pages
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p.as_str())
        .unwrap_or_else(|| panic!("no {name} page"))
}

#[test]
fn the_committed_reference_matches_the_registries() {
    let controller = ControllerMetrics::examples();
    let daemon = vpblu_daemon::metrics_examples();
    let want = render(page(&controller, "every family"), page(&daemon, "every family"));
    let path = vpblu_e2e::built_tools::repo_root().join("docs/reference/metrics.md");
    if std::env::var_os("VPBLU_WRITE_METRICS_REFERENCE").is_some() {
        std::fs::write(&path, &want).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date with the metrics registries; regenerate it with `{REGENERATE}` and commit it",
        path.display()
    );
}

#[test]
fn every_page_either_binary_serves_passes_promtool_check_metrics() {
    let mut problems = Vec::new();
    let pages = ControllerMetrics::examples()
        .into_iter()
        .map(|(name, page)| (format!("controller, {name}"), page))
        .chain(
            vpblu_daemon::metrics_examples()
                .into_iter()
                .map(|(name, page)| (format!("daemon, {name}"), page)),
        );
    let mut checked = 0;
    for (name, page) in pages {
        assert!(!page.contains("NaN"), "{name}: a NaN in\n{page}");
        if let Err(e) = prometheus::check_metrics(&classic_text(&page)) {
            problems.push(format!("{name}: {e}"));
        }
        checked += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!("promtool check metrics: {checked} pages clean");
}
