//! The daemon binary runs, serves health and stops cleanly.

const EXE: &str = env!("CARGO_BIN_EXE_vpblu-daemon");

#[test]
fn serves_health_and_stops_on_sigterm() {
    vpblu_e2e::binary_lifecycle::serves_health_and_stops_on_sigterm(EXE, &["--node-name", "node-1"], &[]);
}

#[test]
fn exits_non_zero_when_its_port_is_taken() {
    vpblu_e2e::binary_lifecycle::fails_when_its_port_is_taken(EXE, &["--node-name", "node-1"], &[]);
}
