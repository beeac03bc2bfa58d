//! The daemon's command line: every flag has an environment fallback so the
//! DaemonSet can set them either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vpblu_messages::{Backend, NodeName, RotationPhase};
use vpblu_runtime::{LogFormat, parse_duration};

use crate::uninstall::RemoveOnStop;
use crate::wireguard::WireGuardGo;

/// vpblu daemon: runs on every node, owns its WireGuard device, routes and
/// eBPF programs, and applies what the controller sends over the stream.
#[derive(Clone, Debug, Parser)]
#[command(name = "vpblu-daemon", version)]
pub struct Args {
    /// The Kubernetes Node this daemon runs on.
    #[arg(long, env = "NODE_NAME", value_parser = parse_node_name)]
    pub node_name: NodeName,

    /// The controller's stream endpoint (reached over the host network,
    /// never through the mesh). Several, comma-separated, are tried in
    /// turn (controller replicas without a Service in front).
    #[arg(
        long,
        env = "VPBLU_CONTROLLER_ADDR",
        default_value = "https://vpblu-controller.vpblu-system.svc:9443"
    )]
    pub controller_addr: String,

    /// PEM CA bundle that signed the controller's certificate (from a
    /// ConfigMap; re-read at every connect).
    #[arg(long, env = "VPBLU_CA_FILE", default_value = "/etc/vpblu/ca/ca.crt")]
    pub ca_file: PathBuf,

    /// Name the controller's certificate must carry, whatever
    /// --controller-addr dials (so an IP address can be dialed).
    #[arg(long, env = "VPBLU_CONTROLLER_SERVER_NAME", default_value = "vpblu-controller.vpblu-system.svc")]
    pub controller_server_name: String,

    /// This Pod's projected service-account token (audience vpblu), sent
    /// to the controller; re-read at every connect (the kubelet rotates it).
    #[arg(long, env = "VPBLU_TOKEN_FILE", default_value = "/var/run/secrets/vpblu/token")]
    pub token_file: PathBuf,

    /// Development only: plaintext http:// to the controller and no token.
    /// Logged as a warning at every start.
    #[arg(long, env = "VPBLU_INSECURE_DEV")]
    pub insecure_dev: bool,

    /// Chaos tests only: `POST /debug/panic/<child>` on the metrics port
    /// makes that supervised actor panic (and be restarted). Never set it
    /// in production; without it the route does not exist.
    #[arg(long, env = "VPBLU_FAULT_INJECTION")]
    pub fault_injection: bool,

    /// Directory for the private key (0700; the key file is 0600).
    #[arg(long, env = "VPBLU_KEY_DIR", default_value = "/var/lib/vpblu")]
    pub key_dir: PathBuf,

    /// bpffs directory where maps and links are pinned.
    #[arg(long, env = "VPBLU_BPFFS", default_value = "/sys/fs/bpf/vpblu")]
    pub bpffs: PathBuf,

    /// Name of the WireGuard device.
    #[arg(long, env = "VPBLU_INTERFACE", default_value = "wg-mesh", value_parser = parse_ifname)]
    pub interface: String,

    /// Name of the lane device: the spare WireGuard device (on the lane
    /// port) that carries traffic while a key rotates. Unique on the
    /// machine, like --interface, and different from it.
    #[arg(long, env = "VPBLU_LANE_INTERFACE", default_value = "wg-lane", value_parser = parse_ifname)]
    pub lane_interface: String,

    /// Test-only fault injection: when this node reaches the given key
    /// rotation phase it does not do its part and reports an error (to
    /// prove rollback). Only with --fault-injection; never in production.
    #[arg(long, env = "VPBLU_FAIL_ROTATION_PHASE", value_enum, requires = "fault_injection")]
    pub fail_rotation_phase: Option<FaultPhase>,

    /// Bytes WireGuard adds per packet: mesh MTU = underlay MTU - this.
    #[arg(long, env = "VPBLU_MTU_OVERHEAD", default_value_t = 80, value_parser = clap::value_parser!(u32).range(60..=200))]
    pub mtu_overhead: u32,

    /// /healthz, /readyz and /metrics.
    #[arg(long, env = "VPBLU_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "VPBLU_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// What a stopping daemon does with the data plane: `auto` removes
    /// vpblu from the node (devices, programs and pins, rules, routes,
    /// keys) when its DaemonSet (`--daemonset`) is gone or being deleted,
    /// i.e. on uninstall, and keeps it for the next daemon otherwise;
    /// `always` and `never` do not ask.
    #[arg(long, env = "VPBLU_REMOVE_ON_STOP", value_enum, default_value = "auto")]
    pub remove_on_stop: RemoveOnStop,

    /// The DaemonSet that runs this daemon, looked up (in
    /// `--pod-namespace`) when it stops, for `--remove-on-stop=auto`.
    #[arg(long, env = "VPBLU_DAEMONSET", requires = "pod_namespace")]
    pub daemonset: Option<String>,

    /// This pod's namespace (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// Directory where the applied generation is recorded, so a restarted
    /// daemon's Hello says what is really in force.
    #[arg(long, env = "VPBLU_STATE_DIR", default_value = "/var/lib/vpblu/state")]
    pub state_dir: PathBuf,

    /// Drop traffic to cluster CIDRs that have no tunnel instead of letting
    /// it leave in clear (`--strict=false` turns it off).
    #[arg(
        long,
        env = "VPBLU_STRICT",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = parse_bool,
    )]
    pub strict: bool,

    /// Pod-facing interfaces that get the classify program: names, or
    /// prefixes ending in `*`, comma-separated.
    #[arg(
        long,
        env = "VPBLU_POD_INTERFACES",
        value_delimiter = ',',
        default_values = crate::pod_interfaces::DEFAULT_PATTERNS,
        value_parser = parse_pod_interface_pattern,
    )]
    pub pod_interfaces: Vec<String>,

    /// WireGuard backend: the kernel module, a userspace wireguard-go, or
    /// auto (the kernel when it has WireGuard).
    #[arg(long, env = "VPBLU_BACKEND", value_enum, default_value = "auto")]
    pub backend: BackendChoice,

    /// The wireguard-go the userspace backend starts when no device answers;
    /// `external` never starts one (a sidecar runs `wireguard-go -f NAME`).
    /// Default: the build of tools/wireguard-go, else `wireguard-go` on PATH.
    #[arg(long, env = "VPBLU_WIREGUARD_GO", value_parser = parse_wireguard_go)]
    pub wireguard_go: Option<WireGuardGo>,

    /// How often WireGuard peers and BPF counters are read back for
    /// /metrics and the controller: a number with ms, s, m or h.
    #[arg(long, env = "VPBLU_OBSERVE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub observe_interval: Duration,
}

/// The `--backend` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The kernel when it has WireGuard, else userspace.
    Auto,
    /// The in-kernel WireGuard, over netlink.
    Kernel,
    /// wireguard-go, over its UAPI socket.
    Userspace,
}

impl BackendChoice {
    /// The backend, or `None` for auto-detection.
    pub fn backend(self) -> Option<Backend> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Kernel => Some(Backend::Kernel),
            BackendChoice::Userspace => Some(Backend::Userspace),
        }
    }
}

/// The `--fail-rotation-phase` values: the phases a node can fail at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultPhase {
    /// Do not stage a key.
    Prepare,
    /// Do not configure the lane.
    Distribute,
    /// Do not move traffic into the lane.
    Activate,
    /// Do not switch the main device to the new key.
    Retire,
    /// Do not move traffic back to the main device.
    Settle,
}

impl FaultPhase {
    /// The rotation phase.
    pub fn phase(self) -> RotationPhase {
        match self {
            FaultPhase::Prepare => RotationPhase::Prepare,
            FaultPhase::Distribute => RotationPhase::Distribute,
            FaultPhase::Activate => RotationPhase::Activate,
            FaultPhase::Retire => RotationPhase::Retire,
            FaultPhase::Settle => RotationPhase::Settle,
        }
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean: use true or false")),
    }
}

/// An interface name, or a prefix of one followed by `*`.
fn parse_pod_interface_pattern(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('*').unwrap_or(text);
    let bad = name.len() > 15
        || name.is_empty()
        || name.contains('*')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if bad {
        return Err(format!(
            "{text:?} is not a pod interface pattern: an interface name (1 to 15 letters, digits, '-', '_', \
             '.'), or a prefix of one ending in '*', such as veth*"
        ));
    }
    Ok(text.to_owned())
}

fn parse_wireguard_go(text: &str) -> Result<WireGuardGo, String> {
    match text {
        "external" => Ok(WireGuardGo::External),
        "" => Err("--wireguard-go is empty: give the path of a wireguard-go binary, or external".to_owned()),
        path => Ok(WireGuardGo::Path(PathBuf::from(path))),
    }
}

fn parse_node_name(text: &str) -> Result<NodeName, String> {
    NodeName::new(text).map_err(|e| e.to_string())
}

/// Linux interface names: 1 to 15 bytes, no '/', no whitespace.
fn parse_ifname(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.len() > 15
        || text.contains(['/', ':'])
        || text.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "{text:?} is not a Linux interface name: 1 to 15 characters, no '/', ':' or spaces"
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_is_validated() {
        let err = Args::try_parse_from(["vpblu-daemon", "--node-name", "Bad_Name"]).unwrap_err();
        assert!(err.to_string().contains("Bad_Name"), "{err}");
        let args = Args::try_parse_from(["vpblu-daemon", "--node-name", "node-1"]).unwrap();
        assert_eq!(args.node_name.as_str(), "node-1");
        assert_eq!(args.interface, "wg-mesh");
        assert_eq!(args.lane_interface, "wg-lane");
        assert_eq!(args.fail_rotation_phase, None);
        assert_eq!(args.mtu_overhead, 80);
    }

    #[test]
    fn bad_interface_and_overhead_are_refused() {
        let err =
            Args::try_parse_from(["vpblu-daemon", "--node-name", "n", "--interface", "much-too-long-name0"])
                .unwrap_err();
        assert!(err.to_string().contains("much-too-long-name0"), "{err}");
        assert!(Args::try_parse_from(["vpblu-daemon", "--node-name", "n", "--mtu-overhead", "10"]).is_err());
    }

    #[test]
    fn lane_and_fault_flags() {
        let args = Args::try_parse_from([
            "vpblu-daemon",
            "--node-name",
            "n",
            "--lane-interface",
            "wgl0",
            "--fault-injection",
            "--fail-rotation-phase",
            "activate",
        ])
        .unwrap();
        assert_eq!(args.lane_interface, "wgl0");
        assert_eq!(args.fail_rotation_phase.map(FaultPhase::phase), Some(RotationPhase::Activate));
        for (flag, value) in
            [("--lane-interface", "much-too-long-lane0"), ("--fail-rotation-phase", "rollback")]
        {
            let err =
                Args::try_parse_from(["vpblu-daemon", "--node-name", "n", "--fault-injection", flag, value])
                    .unwrap_err();
            assert!(err.to_string().contains(value), "{err}");
        }
        let err =
            Args::try_parse_from(["vpblu-daemon", "--node-name", "n", "--fail-rotation-phase", "activate"])
                .unwrap_err();
        assert!(
            err.to_string().contains("--fault-injection"),
            "a rotation fault needs --fault-injection: {err}"
        );
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["vpblu-daemon", "--node-name", "n"].iter().chain(extra))
    }

    #[test]
    fn data_plane_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.state_dir, PathBuf::from("/var/lib/vpblu/state"));
        assert!(args.strict);
        assert_eq!(args.pod_interfaces, crate::pod_interfaces::DEFAULT_PATTERNS.map(String::from).to_vec());
        assert_eq!(args.backend, BackendChoice::Auto);
        assert_eq!(args.backend.backend(), None);
        assert_eq!(args.wireguard_go, None);
        assert_eq!(args.observe_interval, Duration::from_secs(10));
    }

    #[test]
    fn data_plane_flags() {
        let args = parse(&[
            "--strict=false",
            "--pod-interfaces",
            "cni0,eth*",
            "--backend",
            "userspace",
            "--wireguard-go",
            "/opt/wg/wireguard-go",
            "--observe-interval",
            "500ms",
            "--state-dir",
            "/tmp/s",
        ])
        .unwrap();
        assert!(!args.strict);
        assert_eq!(args.pod_interfaces, ["cni0", "eth*"]);
        assert_eq!(args.backend.backend(), Some(Backend::Userspace));
        assert_eq!(args.wireguard_go, Some(WireGuardGo::Path("/opt/wg/wireguard-go".into())));
        assert_eq!(args.observe_interval, Duration::from_millis(500));
        assert_eq!(args.state_dir, PathBuf::from("/tmp/s"));
        assert!(parse(&["--strict"]).unwrap().strict);
        assert!(parse(&["--strict=true"]).unwrap().strict);
        assert_eq!(parse(&["--wireguard-go", "external"]).unwrap().wireguard_go, Some(WireGuardGo::External));
        assert_eq!(parse(&["--backend", "kernel"]).unwrap().backend.backend(), Some(Backend::Kernel));
    }

    #[test]
    fn bad_data_plane_values_are_named() {
        for (flag, value) in [
            ("--strict", "maybe"),
            ("--pod-interfaces", "veth*,bad/name"),
            ("--pod-interfaces", "much-too-long-prefix*"),
            ("--pod-interfaces", "v*eth"),
            ("--pod-interfaces", "cni0,*"),
            ("--backend", "ebpf"),
            ("--observe-interval", "10 parsecs"),
            ("--observe-interval", "0s"),
        ] {
            let arg = format!("{flag}={value}");
            let err = parse(&[&arg]).expect_err(&arg).to_string();
            let named = value.split(',').next_back().unwrap_or(value);
            assert!(err.contains(named), "{arg}: the error names {named:?}: {err}");
        }
    }
}
