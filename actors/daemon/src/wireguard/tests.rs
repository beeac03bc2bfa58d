use super::*;

#[test]
fn names_must_fit_an_interface_and_a_socket_file() {
    for good in ["wg-mesh", "wg0", "wgt12345a", "a", "x.y_z-1", "abcdefghijklmno"] {
        validate_name(good).unwrap();
    }
    for bad in ["", "abcdefghijklmnop", "..", ".", "wg/0", "wg 0", "wg\n", "wgä"] {
        let err = validate_name(bad).unwrap_err();
        assert!(matches!(err, WireGuardError::InvalidName { .. }), "{bad:?}");
    }
}

#[test]
fn a_missing_wireguard_go_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = UserspaceOptions {
        program: WireGuardGo::Path("/nonexistent/wireguard-go".into()),
        socket_dir: dir.path().to_path_buf(),
        log_dir: dir.path().join("logs"),
        ..UserspaceOptions::default()
    };
    let wg = WireGuard::new(Backend::Userspace, options);
    let err = wg.ensure_device("wgnone0", 51820, &PrivateKey::generate()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, WireGuardError::Spawn { .. }), "{text}");
    assert!(text.contains("/nonexistent/wireguard-go"), "{text}");
    assert!(text.contains("wgnone0"), "{text}");
}

#[test]
fn an_external_wireguard_go_that_never_comes_times_out_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let options = UserspaceOptions {
        program: WireGuardGo::External,
        socket_dir: dir.path().to_path_buf(),
        start_timeout: std::time::Duration::from_millis(100),
        ..UserspaceOptions::default()
    };
    let wg = WireGuard::new(Backend::Userspace, options);
    let err = wg.ensure_device("wgext0", 51820, &PrivateKey::generate()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, WireGuardError::NotReady { .. }), "{text}");
    assert!(text.contains(&dir.path().join("wgext0.sock").display().to_string()), "{text}");
    assert!(text.contains("wireguard-go -f wgext0"), "{text}");
    assert!(wg.adopt_device("wgext0").unwrap().is_none());
}
