//! Writing a directory of generated files (`k8s/crds/`, the chart's
//! `crds/`, `k8s/deploy/`) so that it holds exactly what was rendered.

use std::{fs, path::Path};

/// Makes the `*.yaml` files directly in `dir` exactly `rendered`
/// (`(file name, text)`): writes what changed, removes `*.yaml` files
/// nothing renders any more (a renamed or dropped kind), leaves
/// subdirectories and other files alone. Prints what it did.
///
/// # Errors
///
/// The path and the I/O error of the first file that cannot be listed,
/// written or removed.
pub fn write_generated_dir(dir: &Path, rendered: &[(String, String)]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        let is_yaml = path.is_file() && path.extension().is_some_and(|ext| ext == "yaml");
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if is_yaml && !rendered.iter().any(|(name, _)| name == file_name) {
            fs::remove_file(&path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    let mut changed = 0;
    for (name, yaml) in rendered {
        let path = dir.join(name);
        if fs::read_to_string(&path).is_ok_and(|old| old == *yaml) {
            continue;
        }
        fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
        changed += 1;
    }
    if changed == 0 {
        println!("{} is up to date", dir.display());
    }
    Ok(())
}

/// The differences between the `*.yaml` files directly in `dir` and
/// `expected`, one line each (`missing: …`, `stale: …`, `extra: …`, paths
/// shown as `shown/NAME`); empty when they match.
pub fn generated_dir_problems(dir: &Path, shown: &str, expected: &[(String, String)]) -> Vec<String> {
    let mut committed = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == "yaml") {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            committed.insert(name, fs::read_to_string(&path).unwrap_or_default());
        }
    }
    let mut problems = Vec::new();
    for (name, text) in expected {
        match committed.get(name) {
            None => problems.push(format!("missing: {shown}/{name}")),
            Some(old) if old != text => problems.push(format!("stale: {shown}/{name}")),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|name| !expected.iter().any(|(n, _)| n == *name)) {
        problems.push(format!("extra (nothing renders it): {shown}/{name}"));
    }
    problems
}
