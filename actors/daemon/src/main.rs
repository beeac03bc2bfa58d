//! `vpblu-daemon`: parses flags, starts logging and the supervision tree,
//! exits 0 after SIGTERM and non-zero when the tree gives up.

use std::process::ExitCode;

use clap::Parser;
use vpblu_daemon::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    vpblu_runtime::init_logging(args.log_format);
    if args.fault_injection {
        vpblu_runtime::fault::enable();
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), node = %args.node_name, "vpblu-daemon starting");
    vpblu_daemon::run(args).await.into_exit_code("vpblu-daemon")
}
