//! `vpblu-daemon`: parses flags, starts logging and the supervision tree,
//! exits 0 after SIGTERM and non-zero when the tree gives up.

use std::process::ExitCode;

use clap::Parser;
use tracing::Instrument as _;
use vpblu_daemon::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    vpblu_runtime::init_logging(args.log_format);
    if args.fault_injection {
        vpblu_runtime::fault::enable();
    }
    // Every line the daemon logs, from every actor, names the node once.
    let span = tracing::info_span!("daemon", node = %args.node_name);
    let exit = async {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "vpblu-daemon starting");
        vpblu_daemon::run(args).await
    };
    exit.instrument(span).await.into_exit_code("vpblu-daemon")
}
