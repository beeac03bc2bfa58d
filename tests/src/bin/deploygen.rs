//! Regenerates `k8s/deploy/*.yaml` (not `samples/`) from the Helm chart:
//! `helm template` with `chart/vpblu/ci/k8s-deploy-values.yaml`, one file
//! per chart template, and the `kustomization.yaml` listing them.
//!
//! `cargo run -p vpblu-e2e --bin deploygen` (builds the pinned helm first,
//! via tools/helm/build.sh, when it is not built yet).

use std::process::ExitCode;

use vpblu_e2e::chart;

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: deploygen\n  writes k8s/deploy/*.yaml from chart/vpblu");
        return ExitCode::from(2);
    }
    match chart::render_deploy()
        .and_then(|files| vpblu_k8s::write_generated_dir(&chart::deploy_dir(), &files))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deploygen: {e}");
            ExitCode::FAILURE
        }
    }
}
