//! Which text format `/metrics` answers in. prometheus-client writes
//! OpenMetrics, which Prometheus asks for; everything else (`curl`,
//! `promtool check metrics`, older scrapers) gets the classic text format
//! 0.0.4, as client_golang's exporters do. The two differ in what matters
//! here only in how a counter family is named (`x` in OpenMetrics with
//! samples `x_total`; `x_total` in the classic format), the `# UNIT` and
//! `# EOF` lines, and HELP escaping.

/// The Content-Type of an OpenMetrics page.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Content-Type of a classic text page.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus lists it
/// first; a plain `*/*` does not name it).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let refused = params.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The classic text format of an OpenMetrics page rendered by
/// prometheus-client.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A HELP line waits for its TYPE line, which says whether the family
    // is a counter (and so renamed).
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), false);
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let counter = kind == "counter";
            let pending = help.take();
            if pending.is_some_and(|(help_name, _)| help_name == name) {
                flush_help(&mut out, pending, counter);
            } else {
                flush_help(&mut out, pending, false);
            }
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                // Info, stateset and gauge histogram have no classic type.
                _ => "untyped",
            };
            let suffix = if counter { "_total" } else { "" };
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            // Not part of the classic format.
        } else {
            flush_help(&mut out, help.take(), false);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, help, false);
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, counter: bool) {
    let Some((name, text)) = help else { return };
    let suffix = if counter { "_total" } else { "" };
    // OpenMetrics escapes `"` in HELP; the classic format knows only `\\`
    // and `\n`, and its parsers refuse other escapes.
    let text = text.replace("\\\"", "\"");
    out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_total_suffix_and_openmetrics_lines_go() {
        let openmetrics = "# HELP vpblu_x Things \\\"done\\\".\n# TYPE vpblu_x counter\n# UNIT vpblu_x things\n\
                           vpblu_x_total{a=\"b\"} 3\n# HELP vpblu_g A gauge.\n# TYPE vpblu_g gauge\nvpblu_g 1.5\n\
                           # HELP vpblu_h_seconds Time.\n# TYPE vpblu_h_seconds histogram\n\
                           vpblu_h_seconds_sum 0.0\nvpblu_h_seconds_count 0\n\
                           vpblu_h_seconds_bucket{le=\"+Inf\"} 0\n# EOF\n";
        assert_eq!(
            classic_text(openmetrics),
            "# HELP vpblu_x_total Things \"done\".\n# TYPE vpblu_x_total counter\nvpblu_x_total{a=\"b\"} 3\n\
             # HELP vpblu_g A gauge.\n# TYPE vpblu_g gauge\nvpblu_g 1.5\n\
             # HELP vpblu_h_seconds Time.\n# TYPE vpblu_h_seconds histogram\n\
             vpblu_h_seconds_sum 0.0\nvpblu_h_seconds_count 0\nvpblu_h_seconds_bucket{le=\"+Inf\"} 0\n"
        );
    }

    #[test]
    fn only_an_accept_header_naming_openmetrics_gets_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                          application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text; q=0")));
        assert!(!wants_openmetrics(None));
    }
}
