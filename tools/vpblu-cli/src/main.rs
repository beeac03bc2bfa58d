//! `vpblu`: the mesh at a glance from the Kubernetes API. Installed also
//! as `kubectl-vpblu`, so `kubectl vpblu status` runs it.
//!
//! `vpblu status` reads VpbluNodes, the four policy kinds, the controller's
//! Lease and recent Events (never the controller itself, so it answers
//! while the controller is down) and prints a summary, a per-node table,
//! the policies that are not Ready and the rotation in progress.
//!
//! Exit codes: 0 healthy, 1 degraded (the problems are printed), 2 the
//! cluster could not be read (one line saying what and what to do).

mod read;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use vpblu_view::MeshView;

use crate::read::{ReadError, Target};

/// How often `--wait` looks again.
const WAIT_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(name = "vpblu", version, about = "vpblu: the node-to-node WireGuard mesh at a glance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Is the mesh healthy, and which peer is down? Exit 0 healthy,
    /// 1 degraded, 2 when the cluster cannot be read.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
    /// Wait until the mesh is healthy (or --timeout passes), then report.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "2m", value_parser = vpblu_runtime::parse_duration)]
    timeout: Duration,
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the controller (its leader Lease).
    #[arg(short = 'n', long, default_value = "vpblu-system")]
    namespace: String,
    /// Name of the controller's leader Lease.
    #[arg(long, default_value = "vpblu-controller")]
    lease: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// Summary and tables.
    Table,
    /// The read model, as the dashboard's JSON API serves it.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vpblu: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Status(args) => runtime.block_on(status(args)),
    }
}

async fn status(args: StatusArgs) -> ExitCode {
    let target =
        Target { kubeconfig: args.kubeconfig.clone(), namespace: args.namespace.clone(), lease: args.lease };
    let deadline = Instant::now() + if args.wait { args.timeout } else { Duration::ZERO };
    let outcome = loop {
        let outcome = read_once(&target).await;
        let done = matches!(&outcome, Ok(view) if view.verdict.healthy);
        if done || Instant::now() >= deadline {
            break outcome;
        }
        tokio::time::sleep(WAIT_POLL).await;
    };
    match outcome {
        Ok(view) => {
            report(&view, args.output);
            if view.verdict.healthy { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("vpblu: {e}");
            ExitCode::from(2)
        }
    }
}

async fn read_once(target: &Target) -> Result<MeshView, ReadError> {
    let (client, url) = read::connect(target).await?;
    read::read(&client, &url, target).await
}

fn report(view: &MeshView, output: Output) {
    match output {
        Output::Table => print!("{}", table::render(view)),
        Output::Json => match serde_json::to_string_pretty(view) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("vpblu: cannot print the view as JSON: {e}"),
        },
    }
}
