//! One QEMU guest: a lab node on the underlay bridge through a tap in the
//! bridge's namespace, its serial console in a file, driven through its
//! 9p share by `tools/kvm/guest-agent.sh`, killed by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::image::{Accel, GuestImage};
use crate::netns::Bridge;
use crate::process::Guarded;

/// A running guest.
#[derive(Debug)]
pub struct Guest {
    /// 1-based node index (its underlay address ends in it).
    pub index: u8,
    /// Its hostname and node name, `node-N`.
    pub name: String,
    /// Its underlay address.
    pub v4: String,
    /// The directory it sees read-write at /vpblu.
    pub share: PathBuf,
    /// When QEMU was started.
    pub launched: Instant,
    serial: PathBuf,
    qemu: Option<Guarded>,
    next: AtomicU32,
}

/// What a guest is booted with.
#[derive(Debug)]
pub struct GuestSpec<'a> {
    /// The image.
    pub image: &'a GuestImage,
    /// Accelerator.
    pub accel: Accel,
    /// Memory, MiB.
    pub memory_mb: u32,
    /// The underlay it joins (the tap is made in the bridge's namespace).
    pub underlay: &'a Bridge,
    /// The lab id (for the MAC address).
    pub lab_id: u8,
    /// Read-only at /host in the guest (the built binaries).
    pub bin_dir: &'a Path,
    /// Where the guest's share and serial log go.
    pub dir: &'a Path,
}

impl Guest {
    /// Boots node `index` with underlay address `v4`; returns at once (see
    /// [`Guest::wait_ready`]).
    pub fn boot(spec: &GuestSpec<'_>, index: u8, v4: &str) -> Guest {
        let name = format!("node-{index}");
        let share = spec.dir.join(&name);
        std::fs::create_dir_all(share.join("cmd"))
            .unwrap_or_else(|e| panic!("create {}: {e}", share.display()));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let agent = repo.join("tools/kvm/guest-agent.sh");
        std::fs::copy(&agent, share.join("guest.sh"))
            .unwrap_or_else(|e| panic!("copy {} into the guest's share: {e}", agent.display()));
        for script in ["guest-node.sh", "guest-daemon.sh"] {
            let from = repo.join("tools/kvm").join(script);
            std::fs::copy(&from, share.join(script))
                .unwrap_or_else(|e| panic!("copy {} into the guest's share: {e}", from.display()));
        }
        let tap = format!("tap{index}");
        let ns = spec.underlay.netns();
        ns.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        ns.ip(&["link", "set", &tap, "master", Bridge::NAME, "up"]);
        let serial = spec.dir.join(format!("{name}.serial"));
        let append = format!(
            "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 quiet loglevel=4 vpblu.name={name}"
        );
        let drive = format!("file={},if=virtio,format=raw,snapshot=on", spec.image.root().display());
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
        let nic = format!("virtio-net-pci,netdev=n0,mac=52:54:00:{:02x}:00:{index:02x}", spec.lab_id);
        let host =
            format!("local,path={},mount_tag=host,security_model=none,readonly=on", spec.bin_dir.display());
        let run = format!("local,path={},mount_tag=run,security_model=none", share.display());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(spec.accel.qemu_args())
            .args(["-m", &spec.memory_mb.to_string(), "-smp", "1", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-no-reboot"])
            .args(["-serial", &format!("file:{}", serial.display())])
            .args(["-kernel", &spec.image.vmlinux().display().to_string()])
            .args(["-initrd", &spec.image.initrd().display().to_string()])
            .args(["-append", &append, "-drive", &drive, "-netdev", &netdev, "-device", &nic])
            .args(["-virtfs", &host, "-virtfs", &run])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(spec.dir.join(format!("{name}.qemu.log")))
                    .unwrap_or_else(|e| panic!("create the QEMU log: {e}")),
            ));
        let launched = Instant::now();
        let child = ns.spawn_in(&mut cmd);
        Guest {
            index,
            name,
            v4: v4.to_owned(),
            share,
            launched,
            serial,
            qemu: Some(Guarded::new(child)),
            next: AtomicU32::new(0),
        }
    }

    /// QEMU's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.qemu.as_ref().map(Guarded::pid)
    }

    /// Waits until the guest's agent runs; time since launch.
    pub fn wait_ready(&mut self, within: Duration) -> Duration {
        let ready = self.share.join("ready");
        loop {
            if ready.exists() {
                return self.launched.elapsed();
            }
            let exited = self.qemu.as_mut().and_then(|q| q.wait_timeout(Duration::ZERO));
            assert!(
                exited.is_none() && self.launched.elapsed() < within,
                "guest {} was not ready within {within:?} (QEMU exit: {exited:?}); serial console:\n{}",
                self.name,
                self.serial()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` (sh) in the guest; its exit code and output.
    pub fn exec(&self, script: &str, within: Duration) -> (i32, String) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.share.join("cmd");
        let tmp = dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, script).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, dir.join(format!("{id}.sh")))
            .unwrap_or_else(|e| panic!("hand command {id} to {}: {e}", self.name));
        let rc = dir.join(format!("{id}.rc"));
        let start = Instant::now();
        while !rc.exists() {
            assert!(
                start.elapsed() < within,
                "{}: `{script}` did not finish within {within:?}; output so far:\n{}",
                self.name,
                std::fs::read_to_string(dir.join(format!("{id}.out"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let code = std::fs::read_to_string(&rc).unwrap_or_default().trim().parse().unwrap_or(-1);
        let out = std::fs::read_to_string(dir.join(format!("{id}.out"))).unwrap_or_default();
        (code, out)
    }

    /// Runs `script`; its output, or a panic with it when it fails.
    pub fn exec_ok(&self, script: &str, within: Duration) -> String {
        let (code, out) = self.exec(script, within);
        assert_eq!(code, 0, "{}: `{script}` exited {code}:\n{out}", self.name);
        out
    }

    /// Its serial console so far.
    pub fn serial(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// The daemon's log (written by `guest-daemon.sh`).
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.share.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // No clean shutdown needed: the root disk is a snapshot.
        drop(self.qemu.take());
    }
}
