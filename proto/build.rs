//! Generates the Rust bindings for mesh.proto with a vendored protoc, so a
//! build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=mesh.proto");
    tonic_prost_build::configure().compile_with_config(config, &["mesh.proto"], &["."])?;
    Ok(())
}
