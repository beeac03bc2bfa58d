//! The generated schemas must be ones a real API server (v1.37) accepts:
//! structural, every CEL rule with a message, and cheap enough for the
//! static CEL cost estimate. These checks catch most rejections without a
//! cluster; the e2e harness applies the CRDs to a real kube-apiserver.

use serde_json::Value;

/// Walks every schema node, with its JSON path, and calls `check` on it.
fn walk(path: &str, schema: &Value, check: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Some(obj) = schema.as_object() else {
        panic!("{path}: schema is not an object: {schema}");
    };
    check(path, obj);
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            walk(&format!("{path}.{name}"), sub, check);
        }
    }
    if let Some(items) = obj.get("items") {
        walk(&format!("{path}[]"), items, check);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), extra, check);
    }
}

/// Whether `schema` or anything below it carries CEL rules.
fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(obj) => obj.contains_key("x-kubernetes-validations") || obj.values().any(has_rules),
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

fn schemas() -> Vec<(String, Value)> {
    vpblu_k8s::all_crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let version = crd.spec.versions.into_iter().next().expect("one version");
            let schema = version.schema.and_then(|s| s.open_api_v3_schema).expect("a schema");
            (name, serde_json::to_value(schema).expect("schema serializes"))
        })
        .collect()
}

#[test]
fn schemas_are_structural() {
    for (crd, schema) in schemas() {
        walk(&crd, &schema, &mut |path, obj| {
            for forbidden in ["anyOf", "oneOf", "allOf", "not", "$ref", "const", "definitions", "$defs"] {
                assert!(!obj.contains_key(forbidden), "{path}: `{forbidden}` is not structural");
            }
            let preserves = obj.contains_key("x-kubernetes-preserve-unknown-fields")
                || obj.contains_key("x-kubernetes-int-or-string");
            assert!(obj.contains_key("type") || preserves, "{path}: every node needs a `type`");
            if let Some(format) = obj.get("format").and_then(Value::as_str) {
                // Formats the API server recognises; others only earn a warning
                // on apply, which would mislead whoever applies the CRDs.
                assert!(
                    ["int32", "int64", "date-time", "byte"].contains(&format),
                    "{path}: format {format:?}"
                );
            }
        });
    }
}

#[test]
fn every_cel_rule_has_a_message_and_a_bounded_input() {
    let mut rules = 0;
    for (crd, schema) in schemas() {
        walk(&crd, &schema, &mut |path, obj| {
            let Some(validations) = obj.get("x-kubernetes-validations") else { return };
            for v in validations.as_array().expect("validations are a list") {
                rules += 1;
                let rule = v["rule"].as_str().unwrap_or_default();
                let message = v["message"].as_str().unwrap_or_default();
                assert!(!rule.is_empty(), "{path}: empty rule");
                assert!(message.len() >= 10, "{path}: rule {rule:?} needs a readable message");
            }
            if obj.get("type") == Some(&Value::from("string")) {
                assert!(obj.contains_key("maxLength"), "{path}: a string with CEL rules needs maxLength");
            }
        });
        // Every list on the way to a rule must be bounded, or the API server's
        // static cost estimate assumes a list as long as a whole request.
        walk(&crd, &schema, &mut |path, obj| {
            if obj.get("type") == Some(&Value::from("array")) && obj.get("items").is_some_and(has_rules) {
                assert!(obj.contains_key("maxItems"), "{path}: a list of CEL-checked items needs maxItems");
            }
        });
    }
    assert!(rules >= 10, "expected the CIDR, pairing and schedule rules, found {rules}");
}

#[test]
fn cidr_fields_check_syntax_and_host_bits() {
    let mut cidr_fields = Vec::new();
    for (crd, schema) in schemas() {
        walk(&crd, &schema, &mut |path, obj| {
            let rules: Vec<&str> = obj
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(|r| r["rule"].as_str()).collect())
                .unwrap_or_default();
            if rules.contains(&"isCIDR(self)") {
                assert!(rules.iter().any(|r| r.contains("masked()")), "{path}: host-bits rule missing");
                cidr_fields.push(path.rsplit('.').next().unwrap_or_default().to_owned());
            }
        });
    }
    assert_eq!(cidr_fields, ["cidr", "from", "to"]);
}

#[test]
fn node_name_fields_are_dns_subdomains() {
    let mut node_fields = Vec::new();
    for (crd, schema) in schemas() {
        walk(&crd, &schema, &mut |path, obj| {
            if obj.get("pattern").and_then(Value::as_str).is_some_and(|p| p.starts_with("^[a-z0-9]")) {
                assert_eq!(obj.get("maxLength"), Some(&Value::from(253)), "{path}");
                node_fields.push(path.rsplit('.').next().unwrap_or_default().to_owned());
            }
        });
    }
    assert_eq!(node_fields, ["a", "b", "via", "node"]);
}
