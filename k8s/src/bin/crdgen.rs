//! Regenerates `k8s/crds/*.yaml` from the Rust types.
//!
//! `cargo run -p vpblu-k8s --bin crdgen` rewrites the files and their
//! `kustomization.yaml` (and removes stale `*.yaml` there); `--stdout` prints
//! just the CRDs as one multi-document YAML stream instead, e.g. for
//! `| kubectl apply --server-side -f -`.

use std::{fs, path::Path, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            match write_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"), &vpblu_k8s::render_crd_dir())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("crdgen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        [flag] if flag == "--stdout" => {
            for (_, yaml) in vpblu_k8s::render_all() {
                print!("---\n{yaml}");
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: crdgen [--stdout]\n  writes k8s/crds/*.yaml, or prints them with --stdout");
            ExitCode::from(2)
        }
    }
}

fn write_dir(dir: &Path, rendered: &[(String, String)]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Remove YAML files no type renders any more (a renamed or dropped kind).
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        let is_yaml = path.extension().is_some_and(|ext| ext == "yaml");
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
