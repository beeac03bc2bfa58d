//! The Go-built tools the tests run, found through their build scripts
//! (which build them on first use and answer "up to date" in milliseconds
//! afterwards). A failed build fails the test with the script's output; it
//! never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `tools/<tool>/build.sh` and returns the bin directory it prints as
/// its last line, checking that every file in `expect` is there.
pub fn bin_dir(tool: &str, expect: &[&str]) -> PathBuf {
    let script = repo_root().join("tools").join(tool).join("build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}), so there is no {tool} to test with.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        script.display(),
        output.status
    );
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    for exe in expect {
        assert!(
            dir.join(exe).is_file(),
            "{} succeeded but printed {dir:?}, which has no {exe}; stderr:\n{stderr}",
            script.display()
        );
    }
    dir
}

/// The pinned wireguard-go, built (or found up to date) once per process.
pub fn wireguard_go() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| bin_dir("wireguard-go", &["wireguard-go"]).join("wireguard-go"))
}

/// The pinned mdBook (tools/mdbook), built (or found up to date) once per
/// process.
pub fn mdbook() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| bin_dir("mdbook", &["mdbook"]).join("mdbook"))
}

/// The pinned helm (tools/helm), built (or found up to date) once per process.
pub fn helm() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| bin_dir("helm", &["helm"]).join("helm"))
}
