//! Regenerates `k8s/crds/*.yaml` and `chart/vpblu/crds/*.yaml` from the
//! Rust types.
//!
//! `cargo run -p vpblu-k8s --bin crdgen` rewrites the files (and
//! `k8s/crds/kustomization.yaml`; the chart's directory holds CRDs only) and
//! removes stale `*.yaml` there; `--stdout` prints just the CRDs as one
//! multi-document YAML stream instead, e.g. for
//! `| kubectl apply --server-side -f -`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let written =
                vpblu_k8s::write_generated_dir(&vpblu_k8s::crds_dir(), &vpblu_k8s::render_crd_dir())
                    .and_then(|()| {
                        vpblu_k8s::write_generated_dir(&vpblu_k8s::chart_crds_dir(), &vpblu_k8s::render_all())
                    });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("crdgen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        [flag] if flag == "--stdout" => {
            for (_, yaml) in vpblu_k8s::render_all() {
                print!("---\n{yaml}");
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: crdgen [--stdout]\n  writes k8s/crds/*.yaml and chart/vpblu/crds/*.yaml, or prints them with --stdout"
            );
            ExitCode::from(2)
        }
    }
}
