//! `vpblu-controller`: parses flags, starts logging and the supervision tree,
//! exits 0 after SIGTERM and non-zero when the tree gives up.

use std::process::ExitCode;

use clap::Parser;
use vpblu_controller::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    vpblu_runtime::init_logging(args.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), grpc = %args.grpc_addr, "vpblu-controller starting");
    vpblu_controller::run(args).await.into_exit_code("vpblu-controller")
}
