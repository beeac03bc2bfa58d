//! `vpblu-daemon`: parses flags, starts logging and the supervision tree,
//! exits 0 after SIGTERM and non-zero when the tree gives up.

use std::process::ExitCode;

use clap::Parser;
use vpblu_daemon::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (log_format, fault_injection, node) = (args.log_format, args.fault_injection, args.node_name.clone());
    // Every line the daemon logs, from every actor, names the node once.
    let span = || tracing::info_span!("daemon", node = %node);
    vpblu_runtime::run_binary("vpblu-daemon", log_format, fault_injection, span, vpblu_daemon::run(args))
        .await
}
