//! `k8s/crds/` and the chart's `chart/vpblu/crds/` must hold exactly what
//! the Rust types render.

#[test]
fn committed_crds_match_the_types() {
    let mut problems =
        vpblu_k8s::generated_dir_problems(&vpblu_k8s::crds_dir(), "k8s/crds", &vpblu_k8s::render_crd_dir());
    problems.extend(vpblu_k8s::generated_dir_problems(
        &vpblu_k8s::chart_crds_dir(),
        "chart/vpblu/crds",
        &vpblu_k8s::render_all(),
    ));
    assert!(
        problems.is_empty(),
        "the committed CRDs are out of date with the Rust types:\n  {}\nRegenerate with `{}` (from the workspace root) and commit the result.",
        problems.join("\n  "),
        vpblu_k8s::CRDGEN_COMMAND,
    );
}
