//! Headless Chromium for the tests that look at a page as a person would
//! (the dashboard, the docs site): Debian's `chromium`, with the flags
//! this machine needs (no sandbox as root, no background connections to
//! hosts it cannot reach), a fresh profile per run, and a time limit so a
//! page that never finishes loading fails the test instead of hanging it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How long one Chromium run may take.
const TIME_LIMIT_SECONDS: &str = "60";

/// Chromium's path; panics (the test fails, never skips) naming the
/// package when it is not installed.
pub fn require() -> PathBuf {
    crate::netns::which("chromium").unwrap_or_else(|| {
        panic!(
            "chromium is not installed: this test needs it (tools/install-deps.sh installs it; or apt-get \
             install chromium)"
        )
    })
}

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`);
/// panics with its stderr when it fails.
pub fn run(chromium: &Path, args: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().expect("a fresh Chromium profile");
    let output = Command::new("timeout")
        .arg(TIME_LIMIT_SECONDS)
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", chromium.display()));
    assert!(output.status.success(), "chromium {args:?} {url}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The DOM of `url` once it has loaded.
pub fn dom(chromium: &Path, url: &str) -> String {
    String::from_utf8_lossy(&run(chromium, &["--dump-dom"], url).stdout).into_owned()
}

/// A `width`x`height` PNG of `url` into `file`; panics unless it holds at
/// least `min_bytes` (a blank page compresses to a few KB).
pub fn screenshot(chromium: &Path, url: &str, file: &Path, (width, height): (u32, u32), min_bytes: u64) {
    let shot = format!("--screenshot={}", file.display());
    let size = format!("--window-size={width},{height}");
    run(chromium, &[&shot, &size], url);
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", file.display()));
    assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", file.display());
    assert!(png.len() as u64 > min_bytes, "{} looks empty ({} bytes)", file.display(), png.len());
}
