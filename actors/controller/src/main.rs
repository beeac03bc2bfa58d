//! `vpblu-controller`: parses flags, starts logging and the supervision tree,
//! exits 0 after SIGTERM and non-zero when the tree gives up.

use std::process::ExitCode;

use clap::Parser;
use tracing::Instrument as _;
use vpblu_controller::Args;

/// mimalloc rather than glibc malloc: at 1000 nodes every change frees and
/// allocates a million peer entries across threads, and glibc spent more
/// than half the controller's CPU in malloc and kept the freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    vpblu_runtime::init_logging(args.log_format);
    if args.fault_injection {
        vpblu_runtime::fault::enable();
    }
    // Every line the controller logs, from every actor, names the replica once.
    let span = tracing::info_span!("controller", identity = %args.identity);
    let exit = async {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), grpc = %args.grpc_addr, "vpblu-controller starting");
        vpblu_controller::run(args).await
    };
    exit.instrument(span).await.into_exit_code("vpblu-controller")
}
