//! The docs site (`make docs`): every generated reference page is what the
//! code renders now, the site builds with the pinned mdBook, every internal
//! link and anchor of the built site resolves, and headless Chromium
//! renders the landing page (the screenshot is kept for people to look at).
//!
//! Needs cargo (mdBook is built from crates.io on first use) and Debian's
//! chromium; fails, never skips, without them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::CommandFactory;
use vpblu_e2e::built_tools::{mdbook, repo_root};
use vpblu_e2e::chromium;
use vpblu_e2e::docs_reference::{REGENERATE, pages};

fn docs() -> PathBuf {
    repo_root().join("docs")
}

#[test]
fn generated_reference_pages_are_fresh() {
    let write = std::env::var_os("VPBLU_WRITE_DOCS").is_some();
    let mut stale = Vec::new();
    let commands = (vpblu_controller::Args::command(), vpblu_daemon::Args::command());
    for (path, want) in pages(&repo_root(), commands.0, commands.1) {
        let file = docs().join(path);
        if write {
            std::fs::write(&file, &want).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        }
        if std::fs::read_to_string(&file).unwrap_or_default() != want {
            stale.push(file.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with the code: {}; regenerate with `{REGENERATE}` and commit them",
        stale.join(", ")
    );
}

/// Builds the site into a fresh directory; the directory and mdBook's output.
fn build() -> (tempfile::TempDir, String) {
    let out = tempfile::tempdir().expect("a temporary directory");
    let result = Command::new(mdbook())
        .arg("build")
        .arg(docs())
        .arg("--dest-dir")
        .arg(out.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", mdbook().display()));
    let log =
        format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    assert!(result.status.success(), "mdbook build failed ({}):\n{log}", result.status);
    (out, log)
}

#[test]
fn the_site_builds_and_every_internal_link_resolves() {
    let (site, log) = build();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "mdbook complained:\n{log}");
    let html = html_files(site.path());
    for page in
        ["index.html", "guide/install.html", "reference/crds.html", "reference/metrics.html", "runbooks.html"]
    {
        assert!(html.contains_key(&site.path().join(page)), "the site has no {page}: {:?}", html.keys());
    }
    let mut broken = BTreeSet::new();
    for (file, text) in &html {
        for target in links(text) {
            if let Some(problem) = resolve(site.path(), file, &target, &html) {
                broken.insert(format!(
                    "{}: {target}: {problem}",
                    file.strip_prefix(site.path()).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken internal links:\n{}",
        broken.len(),
        broken.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn chromium_renders_the_landing_page() {
    let chromium = chromium::require();
    let (site, _) = build();
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| repo_root().join("target"), PathBuf::from);
    std::fs::create_dir_all(&target).expect("create the target directory");
    let shot = target.join("docs-landing.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("file://{}", site.path().join("index.html").display());
    // Text and the architecture diagram; a blank page is a few KB.
    chromium::screenshot(&chromium, &url, &shot, (1280, 900), 40_000);
    println!("landing page screenshot: {}", shot.display());
}

fn html_files(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "html") {
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.insert(path, text);
            }
        }
    }
    out
}

/// Every `href` and `src` value of a page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
            }
        }
    }
    out
}

/// Why `target`, linked from `file`, does not resolve inside the site.
fn resolve(root: &Path, file: &Path, target: &str, html: &BTreeMap<PathBuf, String>) -> Option<String> {
    let external = ["http://", "https://", "mailto:", "javascript:", "data:"];
    if target.is_empty() || external.iter().any(|p| target.starts_with(p)) {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let path = path.split('?').next().unwrap_or("");
    // The site is served from its root, so `/x` is the site's `x`.
    let resolved = match path.strip_prefix('/') {
        _ if path.is_empty() => file.to_path_buf(),
        Some(from_root) => normalize(&root.join(from_root)),
        None => normalize(&file.parent().unwrap_or(root).join(path)),
    };
    if !resolved.starts_with(root) {
        return Some("points outside the site".to_owned());
    }
    if !resolved.exists() {
        return Some(format!("{} does not exist", resolved.display()));
    }
    match (fragment, html.get(&resolved)) {
        (Some(fragment), Some(page)) if !fragment.is_empty() => {
            let found = page.contains(&format!("id=\"{fragment}\""))
                || page.contains(&format!("name=\"{fragment}\""));
            (!found).then(|| format!("no anchor #{fragment} in {}", resolved.display()))
        }
        _ => None,
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
