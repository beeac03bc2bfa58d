use super::*;

fn config(duration_ms: u64, renew_ms: u64) -> LeaderConfig {
    LeaderConfig {
        namespace: "ns".into(),
        name: "lease".into(),
        identity: "me".into(),
        lease_duration: Duration::from_millis(duration_ms),
        renew: Duration::from_millis(renew_ms),
        outage_grace: Duration::from_secs(60),
    }
}

#[test]
fn timings_that_cannot_hold_a_lease_are_refused() {
    assert!(config(15_000, 5_000).check().is_ok());
    for (duration, renew) in [(5_000, 5_000), (3_000, 4_000)] {
        let err = config(duration, renew).check().unwrap_err().to_string();
        assert!(err.contains("--lease-renew") && err.contains("--lease-duration"), "{err}");
    }
    assert_eq!(config(15_000, 5_000).renew_deadline(), Duration::from_secs(10));
    assert_eq!(config(2_500, 1_000).duration_seconds(), 3, "rounded up");
}

#[test]
fn only_an_unreachable_api_server_is_an_outage() {
    let api = |code: u16| LeaderError::Api {
        lease: "ns/lease".into(),
        source: kube::Error::Api(Box::new(kube::core::Status::failure("test", "Test").with_code(code))),
    };
    assert!(api(503).is_outage() && api(500).is_outage() && api(429).is_outage());
    assert!(LeaderError::Timeout(Duration::from_secs(1)).is_outage());
    assert!(!api(403).is_outage(), "an API server that refuses is reachable");
    assert!(!LeaderError::Conflict { lease: "ns/lease".into() }.is_outage());
}

#[test]
fn a_lease_expires_by_the_clock_and_by_our_own_observation() {
    let now = Timestamp::now();
    let spec = |renewed_secs_ago: i64| LeaseSpec {
        holder_identity: Some("other".into()),
        lease_duration_seconds: Some(3),
        renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
        ..LeaseSpec::default()
    };
    let seen = |secs_ago: u64| Observed {
        version: "1".into(),
        at: Instant::now().checked_sub(Duration::from_secs(secs_ago)).expect("the clock is past boot"),
    };
    assert!(expired(&spec(10), now, Some(&seen(4))));
    assert!(!expired(&spec(1), now, Some(&seen(4))), "renewed a second ago by the holder's clock");
    assert!(!expired(&spec(10), now, Some(&seen(1))), "we have not watched it long enough");
    assert!(!expired(&spec(10), now, None));
}
