//! The controller's command line: every flag has an environment fallback so
//! the Deployment can set them either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vpblu_messages::Cidr;
use vpblu_runtime::LogFormat;
pub use vpblu_runtime::parse_duration;

use crate::stream::ServiceAccountName;

/// vpblu controller: turns vpblu Custom Resources into per-node desired
/// state and pushes it to every node's daemon over a warm gRPC stream.
#[derive(Clone, Debug, Parser)]
#[command(name = "vpblu-controller", version)]
pub struct Args {
    /// Where daemons connect (the gRPC stream server).
    #[arg(long, env = "VPBLU_GRPC_ADDR", default_value = "0.0.0.0:9443")]
    pub grpc_addr: SocketAddr,

    /// /healthz, /readyz and /metrics.
    #[arg(long, env = "VPBLU_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// The built-in web dashboard (read-only). Loopback by default: it
    /// shows the whole mesh to anyone who reaches it, so reach it with
    /// `kubectl port-forward`, or set the pod IP deliberately.
    #[arg(long, env = "VPBLU_DASHBOARD_ADDR", default_value = "127.0.0.1:8082")]
    pub dashboard_addr: SocketAddr,

    /// Name of the coordination.k8s.io Lease that elects the leader.
    #[arg(long, env = "VPBLU_LEASE_NAME", default_value = "vpblu-controller")]
    pub lease_name: String,

    /// Namespace of that Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "vpblu-system")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "vpblu-controller")]
    pub identity: String,

    /// How long a Lease holds without renewal.
    #[arg(long, env = "VPBLU_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews the Lease.
    #[arg(long, env = "VPBLU_LEASE_RENEW", default_value = "5s", value_parser = parse_duration)]
    pub lease_renew: Duration,

    /// While the API server cannot be reached (no answer, 5xx, 429), the
    /// leader keeps leading, and its daemons' streams open, this long past
    /// its renew deadline, unless it sees another holder first. Meanwhile a
    /// replica that can still reach the API server may take the Lease once
    /// it expires; this bounds how long both serve streams.
    #[arg(long, env = "VPBLU_LEASE_OUTAGE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub lease_outage_grace: Duration,

    /// Period of the resync: every daemon applies its whole desired state again (a KeepState when it holds it).
    #[arg(long, env = "VPBLU_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// PEM certificate chain the stream server presents to daemons (the
    /// `tls.crt` of its Secret); re-read when the file changes.
    #[arg(long, env = "VPBLU_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of that certificate (`tls.key`).
    #[arg(long, env = "VPBLU_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Audience a daemon's token must be issued for (its projected token).
    #[arg(long, env = "VPBLU_TOKEN_AUDIENCE", default_value = "vpblu")]
    pub token_audience: String,

    /// The daemons' service account, as TokenReview names it.
    #[arg(
        long,
        env = "VPBLU_DAEMON_SERVICE_ACCOUNT",
        default_value = "system:serviceaccount:vpblu-system:vpblu-daemon"
    )]
    pub daemon_service_account: ServiceAccountName,

    /// DaemonSet (in that account's namespace) that must control a daemon's
    /// Pod; empty: not checked.
    #[arg(long, env = "VPBLU_DAEMON_DAEMONSET", default_value = "vpblu-daemon")]
    pub daemon_daemonset: String,

    /// Development only: plaintext streams and no daemon authentication, so
    /// anyone who reaches --grpc-addr can speak for any node. Logged as a
    /// warning at every start.
    #[arg(long, env = "VPBLU_INSECURE_DEV")]
    pub insecure_dev: bool,

    /// Chaos tests only: `POST /debug/panic/<child>` on the metrics port
    /// makes that supervised actor panic (and be restarted). Never set it
    /// in production; without it the route does not exist.
    #[arg(long, env = "VPBLU_FAULT_INJECTION")]
    pub fault_injection: bool,

    /// Log line format.
    #[arg(long, env = "VPBLU_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// The cluster's Service CIDRs (comma-separated; kubeadm's and kind's
    /// default is 10.96.0.0/12). A RoutePolicy route overlapping one is
    /// refused unless the policy sets `allowEgressViaNode`.
    #[arg(
        long = "service-cidr",
        env = "VPBLU_SERVICE_CIDR",
        value_delimiter = ',',
        default_value = "10.96.0.0/12"
    )]
    pub service_cidrs: Vec<Cidr>,

    /// A one-off job instead of the controller.
    #[command(subcommand)]
    pub job: Option<Job>,
}

/// One-off jobs the controller image runs.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Job {
    /// Removes vpblu from every node (Helm's pre-delete hook): deletes the
    /// daemon DaemonSet (`--daemon-daemonset`, in `--lease-namespace`) in
    /// the foreground, so each daemon, still able to read it, removes what
    /// it put on its node as it stops; waits until every daemon pod is gone.
    Uninstall {
        /// How long to wait for the daemon pods to stop.
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_bad_addresses_are_refused() {
        let args = Args::try_parse_from(["vpblu-controller"]).unwrap();
        assert_eq!(args.grpc_addr.port(), 9443);
        assert_eq!(args.resync_interval, Duration::from_secs(300));
        let err = Args::try_parse_from(["vpblu-controller", "--grpc-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    #[test]
    fn service_cidrs_default_to_kubeadms_and_refuse_nonsense() {
        let args = Args::try_parse_from(["vpblu-controller"]).unwrap();
        assert_eq!(args.service_cidrs, vec!["10.96.0.0/12".parse::<Cidr>().unwrap()]);
        let args = Args::try_parse_from(["vpblu-controller", "--service-cidr", "10.43.0.0/16,fd00:43::/108"])
            .unwrap();
        assert_eq!(args.service_cidrs.len(), 2);
        let err = Args::try_parse_from(["vpblu-controller", "--service-cidr", "10.43.0.1/16"]).unwrap_err();
        assert!(err.to_string().contains("10.43.0.1/16"), "{err}");
    }
}
