//! The daemon's command line: every flag has an environment fallback so the
//! DaemonSet can set them either way.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use vpblu_messages::NodeName;
use vpblu_runtime::LogFormat;

/// vpblu daemon: runs on every node, owns its WireGuard device, routes and
/// eBPF programs, and applies what the controller sends over the stream.
#[derive(Clone, Debug, Parser)]
#[command(name = "vpblu-daemon", version)]
pub struct Args {
    /// The Kubernetes Node this daemon runs on.
    #[arg(long, env = "NODE_NAME", value_parser = parse_node_name)]
    pub node_name: NodeName,

    /// The controller's stream endpoint (reached over the host network,
    /// never through the mesh).
    #[arg(
        long,
        env = "VPBLU_CONTROLLER_ADDR",
        default_value = "https://vpblu-controller.vpblu-system.svc:9443"
    )]
    pub controller_addr: String,

    /// Directory for the private key (0700; the key file is 0600).
    #[arg(long, env = "VPBLU_KEY_DIR", default_value = "/var/lib/vpblu")]
    pub key_dir: PathBuf,

    /// bpffs directory where maps and links are pinned.
    #[arg(long, env = "VPBLU_BPFFS", default_value = "/sys/fs/bpf/vpblu")]
    pub bpffs: PathBuf,

    /// Name of the WireGuard device.
    #[arg(long, env = "VPBLU_INTERFACE", default_value = "wg-mesh", value_parser = parse_ifname)]
    pub interface: String,

    /// Bytes WireGuard adds per packet: mesh MTU = underlay MTU - this.
    #[arg(long, env = "VPBLU_MTU_OVERHEAD", default_value_t = 80, value_parser = clap::value_parser!(u32).range(60..=200))]
    pub mtu_overhead: u32,

    /// /healthz, /readyz and /metrics.
    #[arg(long, env = "VPBLU_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "VPBLU_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
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
}
