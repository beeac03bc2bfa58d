//! `k8s/crds/` must hold exactly what the Rust types render.

use std::{collections::BTreeMap, fs, path::Path};

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let expected: BTreeMap<String, String> = vpblu_k8s::render_crd_dir().into_iter().collect();

    let mut committed = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries {
            let path = entry.expect("k8s/crds is readable").path();
            if path.extension().is_some_and(|ext| ext == "yaml") {
                let name = path.file_name().expect("a file has a name").to_string_lossy().into_owned();
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                committed.insert(name, text);
            }
        }
    }

    let mut problems = Vec::new();
    for (name, text) in &expected {
        match committed.get(name) {
            None => problems.push(format!("missing: k8s/crds/{name}")),
            Some(old) if old != text => problems.push(format!("stale: k8s/crds/{name}")),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|name| !expected.contains_key(*name)) {
        problems.push(format!("extra (no type renders it): k8s/crds/{name}"));
    }

    assert!(
        problems.is_empty(),
        "k8s/crds is out of date with the Rust types:\n  {}\nRegenerate with `{}` (from the workspace root) and commit the result.",
        problems.join("\n  "),
        vpblu_k8s::CRDGEN_COMMAND,
    );
}
