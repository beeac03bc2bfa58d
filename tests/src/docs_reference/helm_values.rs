//! `reference/helm-values.md`: every value of the chart, from
//! `values.schema.json` (types, allowed values, descriptions) and
//! `values.yaml` (defaults).

use std::path::Path;

use serde_json::Value;

use super::markdown::{cell, code, table};
use super::{banner, read, yaml};

pub(super) fn render(chart: &Path) -> String {
    let schema_path = chart.join("values.schema.json");
    let schema: Value = serde_json::from_str(&read(&schema_path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", schema_path.display()));
    let defaults = yaml(&chart.join("values.yaml"));
    let mut rows = Vec::new();
    walk("", &schema, &schema, &defaults, &mut rows);
    let mut out = banner("chart/vpblu/values.schema.json and values.yaml");
    out.push_str(
        "# Helm values\n\nEvery value `chart/vpblu` takes. The chart's schema rejects anything else \
         (unknown keys included) with a message naming the value. Defaults are `values.yaml`'s.\n\n",
    );
    out.push_str(&table(&["Value", "Type", "Default", "Description"], &rows));
    out
}

/// Follows a `$ref` to `#/definitions/...` in `root`.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str().and_then(|r| r.strip_prefix("#/definitions/")) {
        Some(name) => &root["definitions"][name],
        None => node,
    }
}

fn walk(path: &str, root: &Value, node: &Value, defaults: &Value, rows: &mut Vec<Vec<String>>) {
    let target = resolve(root, node);
    let properties = target["properties"].as_object();
    if !path.is_empty() && (properties.is_none() || node["description"].is_string()) {
        let description = node["description"].as_str().or(target["description"].as_str()).unwrap_or("");
        let default =
            if properties.is_some() || defaults.is_null() { String::new() } else { code(&compact(defaults)) };
        rows.push(vec![code(path), type_of(target), default, describe(description, target)]);
    }
    for (name, child) in properties.into_iter().flatten() {
        let child_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        walk(&child_path, root, child, &defaults[name], rows);
    }
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_of(node: &Value) -> String {
    match &node["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ if node["oneOf"].is_array() => node["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["type"].as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    }
}

fn describe(description: &str, node: &Value) -> String {
    let mut text = cell(description);
    if text.is_empty() {
        // Booleans and counts whose name says it all still get a line.
        text = "See `values.yaml`.".to_owned();
    }
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| code(&compact(v))).collect();
        text.push_str(&format!(" One of {}.", values.join(", ")));
    }
    let range = match (node["minimum"].as_i64(), node["maximum"].as_i64()) {
        (Some(min), Some(max)) => format!("{min} to {max}"),
        (Some(min), None) => format!("At least {min}"),
        _ => String::new(),
    };
    // A definition's own description often says its range already.
    if !range.is_empty() && !text.contains(&range) {
        text.push_str(&format!(" {range}."));
    }
    text
}
