//! The generated pages of the docs site (`make docs`): the CRD fields from
//! the committed CRD schemas, both binaries' flags from clap, the Helm
//! values from the chart's schema and defaults, and the alerts from the
//! chart's rule file. tests/tests/docs_site.rs keeps each committed page
//! equal to what these render (the metrics reference has its own test,
//! tests/tests/metrics_reference.rs).

mod alerts;
mod crds;
mod flags;
mod helm_values;
mod markdown;

use std::path::Path;

/// The command that rewrites every generated page.
pub const REGENERATE: &str = "VPBLU_WRITE_DOCS=1 cargo test -p vpblu-e2e --test docs_site";

/// The first line of every generated page.
fn banner(source: &str) -> String {
    format!(
        "<!-- Generated from {source} by tests/src/docs_reference; do not edit. Regenerate: {REGENERATE} -->\n\n"
    )
}

/// Every generated page: its path under `docs/` and its content, rendered
/// from the repository at `root` and the two binaries' command lines
/// (`Args::command()` of each; this crate only has them as
/// dev-dependencies).
pub fn pages(root: &Path, controller: clap::Command, daemon: clap::Command) -> Vec<(&'static str, String)> {
    vec![
        ("reference/crds.md", crds::render(&root.join("k8s/crds"))),
        ("reference/controller-flags.md", flags::render(controller, "actors/controller/src/args.rs")),
        ("reference/daemon-flags.md", flags::render(daemon, "actors/daemon/src/args.rs")),
        ("reference/helm-values.md", helm_values::render(&root.join("chart/vpblu"))),
        ("reference/alerts.md", alerts::render(&root.join("chart/vpblu/files/prometheus-rules.yaml"))),
    ]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> serde_json::Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}
