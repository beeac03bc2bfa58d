//! The container images `make images` builds (tools/images/build.sh),
//! built here from the debug binaries `make build` left: each image's OCI
//! layout is read back (index → manifest → config and layer), its layer
//! unpacked, and its programs run in a chroot of that root filesystem, as a
//! container runtime would start them. Needs root (chroot); fails, never
//! skips, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use vpblu_e2e::built_tools::repo_root;
use vpblu_e2e::lab::LabBinaries;

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest =
        digest.as_str().unwrap_or_else(|| panic!("a descriptor without digest in {}", layout.display()));
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    layout.join("blobs").join("sha256").join(hex)
}

/// An image read back from its OCI layout and unpacked.
struct Unpacked {
    config: Value,
    rootfs: PathBuf,
}

fn unpack(layout: &Path, into: &Path) -> Unpacked {
    assert!(layout.join("oci-layout").is_file(), "{} has no oci-layout", layout.display());
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(layout, &index["manifests"][0]["digest"]));
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let config = json(&blob(layout, &manifest["config"]["digest"]));
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert!(!layers.is_empty(), "{}: no layers", layout.display());
    let rootfs = into.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap_or_else(|e| panic!("cannot create {}: {e}", rootfs.display()));
    for layer in &layers {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        run(Command::new("tar").arg("-xzf").arg(blob(layout, &layer["digest"])).arg("-C").arg(&rootfs));
    }
    // docker load reads this; it must name the same config and layers.
    let docker = json(&layout.join("manifest.json"));
    assert_eq!(
        blob(layout, &manifest["config"]["digest"]),
        layout.join(docker[0]["Config"].as_str().unwrap_or_default())
    );
    Unpacked { config, rootfs }
}

/// Runs `program args` inside `rootfs` as `user` (uid:gid), returning stdout.
fn in_chroot(rootfs: &Path, user: &str, program: &str, args: &[&str]) -> String {
    let output =
        run(Command::new("chroot").arg(format!("--userspec={user}")).arg(rootfs).arg(program).args(args));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn both_images_run_their_programs_from_their_own_root_filesystem() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test unpacks the images and runs their programs with chroot(8), which needs root: run it as root \
         (CI does)"
    );
    let binaries = LabBinaries::find();
    let bin_dir = binaries.controller.parent().expect("binaries live in a directory").to_owned();
    // TempDir removes everything when dropped, panics included.
    let work = tempfile::Builder::new().prefix("vpblu-images-").tempdir().expect("a temporary directory");
    let out = work.path().join("images");
    let script = repo_root().join("tools/images/build.sh");
    let started = std::time::Instant::now();
    let built = run(Command::new("bash").arg(&script).arg(&bin_dir).arg(&out));
    let report = String::from_utf8_lossy(&built.stdout);
    println!("built from {} in {:.1} s:\n{report}", bin_dir.display(), started.elapsed().as_secs_f64());
    for name in ["vpblu-controller", "vpblu-daemon"] {
        assert!(report.contains(name), "build.sh printed no size for {name}:\n{report}");
        let archives: Vec<_> = std::fs::read_dir(&out)
            .expect("the output directory")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{name}-")))
            .collect();
        assert_eq!(archives.len(), 1, "one docker-load archive for {name} in {}", out.display());
    }

    let controller = unpack(&out.join("vpblu-controller"), &work.path().join("controller"));
    assert_eq!(controller.config["config"]["User"], "65532:65532", "the controller runs as non-root");
    assert_eq!(controller.config["config"]["Entrypoint"][0], "/usr/local/bin/vpblu-controller");
    let version =
        in_chroot(&controller.rootfs, "65532:65532", "/usr/local/bin/vpblu-controller", &["--version"]);
    assert!(version.starts_with("vpblu-controller "), "{version}");
    let help = in_chroot(&controller.rootfs, "65532:65532", "/usr/local/bin/vpblu-controller", &["--help"]);
    assert!(help.contains("--tls-cert-file"), "{help}");
    assert!(!controller.rootfs.join("usr/sbin/nft").exists(), "nft belongs in the daemon image only");

    let daemon = unpack(&out.join("vpblu-daemon"), &work.path().join("daemon"));
    assert_eq!(daemon.config["config"]["Entrypoint"][0], "/usr/local/bin/vpblu-daemon");
    let version = in_chroot(&daemon.rootfs, "0:0", "/usr/local/bin/vpblu-daemon", &["--version"]);
    assert!(version.starts_with("vpblu-daemon "), "{version}");
    let nft = in_chroot(&daemon.rootfs, "0:0", "/usr/sbin/nft", &["--version"]);
    assert!(nft.starts_with("nftables v"), "{nft}");
    let wg = in_chroot(&daemon.rootfs, "0:0", "/usr/local/bin/wireguard-go", &["--version"]);
    assert!(wg.contains("wireguard-go"), "{wg}");
    let passwd = std::fs::read_to_string(daemon.rootfs.join("etc/passwd")).expect("/etc/passwd in the image");
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    assert!(daemon.rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file(), "the CA bundle");
}
