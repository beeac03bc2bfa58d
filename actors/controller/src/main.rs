//! `vpblu-controller`: parses flags, starts logging and the supervision tree,
//! exits 0 after SIGTERM and non-zero when the tree gives up.

use std::process::ExitCode;

use clap::Parser;
use vpblu_controller::Args;

/// mimalloc rather than glibc malloc: at 1000 nodes every change frees and
/// allocates a million peer entries across threads, and glibc spent more
/// than half the controller's CPU in malloc and kept the freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (log_format, fault_injection, identity) =
        (args.log_format, args.fault_injection, args.identity.clone());
    // Every line the controller logs, from every actor, names the replica once.
    let span = || tracing::info_span!("controller", identity = %identity);
    let work = async move {
        match args.job {
            Some(vpblu_controller::Job::Uninstall { timeout }) => {
                vpblu_controller::uninstall::run(&args, timeout).await
            }
            None => vpblu_controller::run(args).await,
        }
    };
    vpblu_runtime::run_binary("vpblu-controller", log_format, fault_injection, span, work).await
}
