//! The bpffs the maps and links are pinned on. Pins are what let the data
//! plane outlive the daemon: the kernel keeps a pinned map or link alive
//! with no process holding it.

use std::io;
use std::path::{Path, PathBuf};

use super::BpfError;

/// Where bpffs is conventionally mounted.
pub const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Makes sure `pin_dir` exists on a bpffs. When it lies under
/// /sys/fs/bpf and nothing is mounted there (per /proc/mounts), mounts
/// bpffs there first.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<(), BpfError> {
    let mount_point = Path::new(BPFFS_MOUNT_POINT);
    if pin_dir.starts_with(mount_point) && !bpffs_mounted_at(mount_point)? {
        rustix::mount::mount("bpf", mount_point, "bpf", rustix::mount::MountFlags::empty(), None)
            .map_err(|e| BpfError::MountBpffs { mount_point: mount_point.into(), source: e.into() })?;
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| BpfError::PinDir { path: pin_dir.into(), source })?;
    if !is_bpffs(pin_dir)? {
        return Err(BpfError::NotBpffs { path: pin_dir.into() });
    }
    Ok(())
}

/// True when `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool, BpfError> {
    let stat =
        rustix::fs::statfs(path).map_err(|e| BpfError::PinDir { path: path.into(), source: e.into() })?;
    #[allow(clippy::unnecessary_cast, reason = "f_type's width differs between architectures")]
    Ok(stat.f_type as u64 == BPF_FS_MAGIC)
}

/// True when /proc/mounts lists a bpf filesystem at `mount_point`.
fn bpffs_mounted_at(mount_point: &Path) -> Result<bool, BpfError> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|source| BpfError::PinDir { path: PathBuf::from("/proc/mounts"), source })?;
    Ok(mounts_have_bpffs(&mounts, mount_point))
}

fn mounts_have_bpffs(mounts: &str, mount_point: &Path) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fs_type) = (fields.next(), fields.next(), fields.next());
        target.map(Path::new) == Some(mount_point) && fs_type == Some("bpf")
    })
}

/// Removes a pin (map or link). A pin that is already gone is not an error.
pub fn remove_pin(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bpffs_in_proc_mounts() {
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,nosuid 0 0\n";
        assert!(mounts_have_bpffs(mounts, Path::new("/sys/fs/bpf")));
        assert!(!mounts_have_bpffs("sysfs /sys sysfs rw 0 0\n", Path::new("/sys/fs/bpf")));
        assert!(!mounts_have_bpffs("none /sys/fs/bpf tmpfs rw 0 0\n", Path::new("/sys/fs/bpf")));
    }
}
