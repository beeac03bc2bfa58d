//! The guest image (built and cached by `tools/kvm/image.sh`) and how
//! QEMU accelerates it here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A built guest image: an uncompressed kernel, a busybox initrd and an
/// ext4 root (shared read-only by every guest through `snapshot=on`).
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// The cache directory it lives in (keyed by package versions).
    pub dir: PathBuf,
    /// Kernel and package versions, one per line.
    pub versions: String,
}

impl GuestImage {
    /// Builds the image (a no-op when cached; ~2 min with debootstrap when
    /// not). Panics with the builder's message, which names what is missing.
    pub fn build(repo_root: &Path) -> GuestImage {
        let script = repo_root.join("tools/kvm/image.sh");
        let out =
            Command::new(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        let versions = std::fs::read_to_string(dir.join("versions"))
            .unwrap_or_else(|e| panic!("the guest image at {} has no versions file: {e}", dir.display()));
        GuestImage { dir, versions }
    }

    /// The uncompressed kernel (booted through its PVH entry).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The busybox initrd.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.gz")
    }

    /// The ext4 root.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root.ext4")
    }
}

/// How QEMU runs the guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's emulator: where /dev/kvm is PVM (stock kernels do not boot
    /// under it) or missing.
    Tcg,
}

impl Accel {
    /// TCG when /dev/kvm is PVM (`/sys/module/kvm_pvm`) or absent, KVM
    /// otherwise.
    pub fn detect() -> Accel {
        let (accel, why) = if Path::new("/sys/module/kvm_pvm").exists() {
            (Accel::Tcg, "/dev/kvm is PVM, which stock Debian kernels do not boot under")
        } else if !Path::new("/dev/kvm").exists() {
            (Accel::Tcg, "no /dev/kvm (load kvm_intel or kvm_amd for speed)")
        } else {
            (Accel::Kvm, "/dev/kvm")
        };
        println!("kvm: QEMU accelerator {accel:?}: {why}");
        accel
    }

    /// QEMU's flags for it.
    pub fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg"],
        }
    }
}
