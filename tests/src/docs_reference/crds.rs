//! `reference/crds.md`: every field of every vpblu CRD, from the committed
//! schemas (which `make crds` generates from the Rust types).

use std::path::Path;

use serde_json::Value;

use super::markdown::{cell, code, table};
use super::{banner, yaml};

pub(super) fn render(dir: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    let mut out = banner("the CRD schemas in k8s/crds");
    out.push_str("# Custom Resources\n\nEvery field of vpblu's Custom Resources (`vpblu.dev/v1alpha1`), as the API server validates them.\n");
    for file in files {
        let crd = yaml(&file);
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("?");
        let scope = crd["spec"]["scope"].as_str().unwrap_or("?");
        let short: Vec<&str> = crd["spec"]["names"]["shortNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let version = &crd["spec"]["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"];
        out.push_str(&format!("\n## {kind}\n\n"));
        out.push_str(&format!(
            "`{}/{}`, {scope}; `kubectl get {}`{}.\n\n{}\n\n",
            crd["spec"]["group"].as_str().unwrap_or("?"),
            version["name"].as_str().unwrap_or("?"),
            crd["spec"]["names"]["plural"].as_str().unwrap_or("?"),
            if short.is_empty() { String::new() } else { format!(" (short: `{}`)", short.join("`, `")) },
            cell(schema["description"].as_str().unwrap_or("")),
        ));
        let mut rows = Vec::new();
        for part in ["spec", "status"] {
            if schema["properties"][part].is_object() {
                fields(part, &schema["properties"][part], &mut rows);
            }
        }
        out.push_str(&table(&["Field", "Type", "Description"], &rows));
    }
    out
}

/// Rows for `node` at `path` and everything under it.
fn fields(path: &str, node: &Value, rows: &mut Vec<Vec<String>>) {
    rows.push(vec![code(path), type_of(node), describe(node)]);
    if path.ends_with(".conditions") {
        // Standard meta/v1 Conditions: their fields are Kubernetes'.
        return;
    }
    if let Some(properties) = node["properties"].as_object() {
        for (name, child) in properties {
            fields(&format!("{path}.{name}"), child, rows);
        }
    }
    if node["items"]["properties"].is_object() {
        for (name, child) in node["items"]["properties"].as_object().into_iter().flatten() {
            fields(&format!("{path}[].{name}"), child, rows);
        }
    }
}

fn type_of(node: &Value) -> String {
    match node["type"].as_str() {
        Some("array") => format!("[]{}", node["items"]["type"].as_str().unwrap_or("object")),
        Some(t) => t.to_owned(),
        None if node["x-kubernetes-int-or-string"] == true => "int or string".to_owned(),
        None => "any".to_owned(),
    }
}

fn describe(node: &Value) -> String {
    let mut text = cell(node["description"].as_str().unwrap_or(""));
    let mut facts = Vec::new();
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| code(v.as_str().unwrap_or(&v.to_string()))).collect();
        facts.push(format!("one of {}", values.join(", ")));
    }
    if !node["default"].is_null() {
        facts.push(format!("default {}", code(&node["default"].to_string())));
    }
    for (key, word) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(n) = node[key].as_i64() {
            facts.push(format!("{word} {n}"));
        }
    }
    if !facts.is_empty() {
        text.push_str(&format!(" ({})", facts.join("; ")));
    }
    text
}
