//! Replays every committed fuzz input: the corpora the fuzzers grew
//! (`fuzz/corpus/<target>/`), the seeds they started from
//! (`fuzz/seeds/<target>/`) and the inputs that once found a bug
//! (`fuzz/regressions/<target>/`, named after what they found). No fuzzing
//! time: each input runs once through the target's checks.

use std::path::{Path, PathBuf};

use vpblu_fuzz::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("a readable directory entry").path()).collect();
    files.sort();
    files
}

#[test]
fn every_committed_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target} is empty: run `make fuzz` and commit what it grows"
        );
        let seeds = inputs(&root.join("seeds").join(target));
        let regressions = inputs(&root.join("regressions").join(target));
        for input in corpus.iter().chain(&seeds).chain(&regressions) {
            let data = std::fs::read(input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
            if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failed.push(format!("{target}: {}: {message}", input.display()));
            }
        }
        println!(
            "{target}: {} corpus inputs, {} seeds, {} regressions",
            corpus.len(),
            seeds.len(),
            regressions.len()
        );
    }
    assert!(failed.is_empty(), "inputs that fail their fuzz target:\n{}", failed.join("\n"));
}
