//! docs/reference/metrics.md, generated from what the binaries' registries
//! render (`vpblu_controller::metrics::ControllerMetrics::example` and
//! `vpblu_daemon::metrics_example`); tests/tests/metrics_reference.rs keeps
//! the committed file equal to it.

use std::fmt::Write as _;

/// The command that rewrites the reference.
pub const REGENERATE: &str =
    "VPBLU_WRITE_METRICS_REFERENCE=1 cargo test -p vpblu-e2e --test metrics_reference";

/// One metric family as an operator queries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The name to query: a counter's with `_total`, a histogram's base
    /// name (`_bucket`, `_sum`, `_count` follow).
    pub name: String,
    /// counter, gauge, histogram, ...
    pub kind: String,
    /// Its HELP text.
    pub help: String,
    /// Label names seen on its samples (`le` left out), in order.
    pub labels: Vec<String>,
    /// How many samples the page had.
    pub samples: usize,
}

/// The families of an OpenMetrics page, in page order.
pub fn families(page: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(Family {
                name: name.to_owned(),
                kind: String::new(),
                help: help.replace("\\\"", "\"").replace("\\\\", "\\"),
                labels: Vec::new(),
                samples: 0,
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match out.last_mut() {
                Some(family) if family.name == name => family.kind = kind.to_owned(),
                _ => out.push(Family {
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    help: String::new(),
                    labels: Vec::new(),
                    samples: 0,
                }),
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let Some(family) = out.last_mut() else { continue };
            family.samples += 1;
            for label in label_names(line) {
                if label != "le" && !family.labels.contains(&label) {
                    family.labels.push(label);
                }
            }
        }
    }
    for family in &mut out {
        if family.kind == "counter" {
            family.name.push_str("_total");
        }
    }
    out
}

/// The label names of one sample line.
fn label_names(line: &str) -> Vec<String> {
    let Some(open) = line.find('{') else { return Vec::new() };
    let mut names = Vec::new();
    let mut rest = &line[open + 1..];
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_owned());
        // Skip the quoted value, minding escapes.
        let mut escaped = false;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[(end + 1).min(after.len())..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// The markdown reference of the two binaries' pages. Panics naming a
/// family the example left without samples (its labels would be unknown).
pub fn render(controller_page: &str, daemon_page: &str) -> String {
    let mut out = String::from(
        "<!-- Generated from the metrics registries by tests/tests/metrics_reference.rs; do not edit.\n     \
         Regenerate: ",
    );
    out.push_str(REGENERATE);
    out.push_str(
        " -->\n\
         # Metrics reference\n\n\
         Both binaries serve `/metrics` (the controller on `--metrics-addr`, default port 9090; the daemon on \
         port 9091 of its node): OpenMetrics to a scraper that asks for it (Prometheus does), the classic \
         text format otherwise, so `curl -s http://ADDR/metrics | promtool check metrics` works.\n\n\
         Names follow the Prometheus conventions: base units in the name (`_seconds`, `_bytes`), counters \
         end in `_total`, one prefix per binary and component (`vpblu_controller_stream_…`, \
         `vpblu_daemon_…`). Labels are bounded: a peer is named by its node (`peer`), never by its key or \
         endpoint. The node a daemon runs on is not a label of its own metrics: attach it in the scrape \
         config as the target label `node` (the chart's PodMonitor and the common `kubernetes-pods` job \
         relabel `__meta_kubernetes_pod_node_name` to `node`); the alerts and the Grafana dashboard use it.\n\n\
         The peer families follow the WireGuard exporters: byte counters per peer and the latest handshake \
         as a Unix timestamp (0: none yet), so a handshake's age is \
         `time() - vpblu_daemon_peer_last_handshake_timestamp_seconds`.\n",
    );
    for (title, page) in [("Controller", controller_page), ("Daemon", daemon_page)] {
        let families = families(page);
        let silent: Vec<&str> = families.iter().filter(|f| f.samples == 0).map(|f| f.name.as_str()).collect();
        assert!(
            silent.is_empty(),
            "the {title} example page has no sample of {silent:?}, so the reference cannot list their labels: \
             touch one series of each in its example (see `touch_examples`)"
        );
        let _ = write!(out, "\n## {title}\n\n| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n");
        for family in &families {
            let labels = if family.labels.is_empty() {
                "—".to_owned()
            } else {
                family.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
            };
            let help = family.help.replace('|', "\\|");
            let _ = writeln!(out, "| `{}` | {} | {labels} | {help} |", family.name, family.kind);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_name_counters_with_total_and_collect_label_names() {
        let page = "# HELP vpblu_a Things.\n# TYPE vpblu_a counter\nvpblu_a_total{x=\"1\",y=\"a\\\"}b\"} 2\n\
                    # HELP vpblu_h_seconds Time.\n# TYPE vpblu_h_seconds histogram\n\
                    vpblu_h_seconds_bucket{le=\"1.0\",command=\"X\"} 0\n# EOF\n";
        let families = families(page);
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].name, "vpblu_a_total");
        assert_eq!(families[0].labels, ["x", "y"]);
        assert_eq!(families[1].name, "vpblu_h_seconds");
        assert_eq!(families[1].labels, ["command"]);
    }
}
