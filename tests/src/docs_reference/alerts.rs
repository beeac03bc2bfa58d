//! `reference/alerts.md`: every alert the chart ships, from the rule file,
//! each linked to its runbook.

use std::path::Path;

use super::markdown::{cell, code, one_line, table};
use super::{banner, yaml};

pub(super) fn render(rules: &Path) -> String {
    let file = yaml(rules);
    let mut out = banner("chart/vpblu/files/prometheus-rules.yaml");
    out.push_str(
        "# Alerts\n\nThe alerts the chart ships (`metrics.prometheusRule.enabled`, or load \
         `chart/vpblu/files/prometheus-rules.yaml` with `rule_files`). Each links to its runbook.\n\n",
    );
    let mut rows = Vec::new();
    for group in file["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let Some(alert) = rule["alert"].as_str() else { continue };
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
            // The annotation points into docs/runbooks.md; from
            // reference/ that is one level up.
            let link = match runbook.strip_prefix("docs/") {
                Some(target) => format!("[runbook](../{target})"),
                None => cell(runbook),
            };
            rows.push(vec![
                code(alert),
                cell(rule["labels"]["severity"].as_str().unwrap_or("")),
                cell(rule["for"].as_str().unwrap_or("0s")),
                code(&one_line(rule["expr"].as_str().unwrap_or(""))),
                link,
            ]);
        }
    }
    out.push_str(&table(&["Alert", "Severity", "For", "Expression", "Runbook"], &rows));
    out
}
