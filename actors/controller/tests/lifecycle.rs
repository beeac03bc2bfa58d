//! The controller binary runs, serves health and stops cleanly.

const EXE: &str = env!("CARGO_BIN_EXE_vpblu-controller");

#[test]
fn serves_health_and_stops_on_sigterm() {
    let grpc = vpblu_e2e::process::free_addr().to_string();
    let dashboard = vpblu_e2e::process::free_addr().to_string();
    vpblu_e2e::binary_lifecycle::serves_health_and_stops_on_sigterm(
        EXE,
        &["--grpc-addr", &grpc, "--dashboard-addr", &dashboard],
    );
}

#[test]
fn exits_non_zero_when_its_port_is_taken() {
    vpblu_e2e::binary_lifecycle::fails_when_its_port_is_taken(EXE, &[]);
}
