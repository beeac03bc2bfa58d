//! The message targets' seed inputs are real traffic: what the engine
//! computes from the hand-written `from_k8s` seeds
//! (`fuzz/seeds/from_k8s/seed-*.json`), as the controller would send it, and
//! what daemons answer. Seeds live apart from the corpora (`fuzz/seeds/`), so
//! minimizing a corpus (`cargo fuzz cmin`) never removes them. This test
//! checks that the committed message seeds are still exactly that;
//! `VPBLU_WRITE_FUZZ_SEEDS=1 cargo test -p vpblu-fuzz --test seeds` rewrites
//! them after a change to the wire or the engine.

use std::path::Path;
use std::time::Duration;

use prost::Message as _;
use vpblu_controller::from_k8s::{Objects, inputs_from};
use vpblu_engine::compute;
use vpblu_fuzz::K8sObjects;
use vpblu_messages::{
    Backend, Command, DigestKey, Downstream, Envelope, Generation, Hello, NodeDesiredState, PeerObservation,
    RotationPhase, RotationReport, Upstream, diff,
};
use vpblu_proto as pb;

fn states(root: &Path, seed: &str) -> Vec<NodeDesiredState> {
    let path = root.join("seeds/from_k8s").join(seed);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let objects: K8sObjects = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{} is not the objects JSON: {e}", path.display()));
    let (inputs, findings) = inputs_from(Objects {
        nodes: objects.nodes.iter().collect(),
        vpblu_nodes: objects.vpblu_nodes.iter().collect(),
        tunnel_policies: objects.tunnel_policies.iter().collect(),
        route_policies: objects.route_policies.iter().collect(),
        block_policies: objects.block_policies.iter().collect(),
    });
    assert!(findings.is_empty(), "the seed {seed} should convert cleanly: {findings:?}");
    let output = compute(&inputs);
    assert!(
        output.nodes.len() >= 3,
        "the seed {seed} should give at least 3 nodes a state: {:?}",
        output.nodes.keys()
    );
    output.nodes.into_values().collect()
}

/// (target, file name, bytes) of every message seed.
fn seeds(root: &Path) -> Vec<(&'static str, String, Vec<u8>)> {
    let mesh = states(root, "seed-mesh.json");
    let explicit = states(root, "seed-explicit.json");
    assert!(mesh.iter().any(|s| s.rotation.is_some()), "the mesh seed should have a rotation under way");
    let mut out = Vec::new();
    let mut down = |name: String, generation: u64, command: Command| {
        let envelope = Envelope { generation: Generation(generation), body: Downstream::State(command) };
        out.push(("controller_message", name, pb::ControllerMessage::from(&envelope).encode_to_vec()));
    };
    for state in &mesh {
        down(format!("seed-sync-{}", state.node), 1, Command::SyncState(state.clone()));
    }
    for (old, new) in mesh.iter().zip(&explicit) {
        for (i, command) in diff(old, new).into_iter().enumerate() {
            down(format!("seed-diff-{}-{i}", old.node), 2 + i as u64, command);
        }
    }
    let state = &mesh[0];
    let key = DigestKey::from_bytes([0x5e; 16]);
    let held = state.digest(&key);
    down(format!("seed-keep-{}", state.node), 9, Command::KeepState(held));
    let peer = state.peers.values().next().expect("the seed state has peers");
    for (name, upstream) in [
        (
            "seed-hello",
            Upstream::Hello(Hello {
                node: state.node.clone(),
                public_key: peer.public_key,
                staged_public_key: Some(peer.public_key),
                applied_generation: Generation(41),
                backend: Backend::Userspace,
                mtu: 1420,
                version: "0.1.0".to_owned(),
                digest_key: Some(key),
                held: Some(held),
            }),
        ),
        ("seed-ack", Upstream::Ack { generation: Generation(42), result: Ok(()) }),
        (
            "seed-nack",
            Upstream::Ack {
                generation: Generation(43),
                result: Err("route 10.244.2.0/24: File exists".to_owned()),
            },
        ),
        (
            "seed-observed",
            Upstream::Observed(vec![PeerObservation {
                node: peer.node.clone(),
                public_key: peer.public_key,
                last_handshake_age: Some(Duration::from_millis(4_250)),
                rx_bytes: 1 << 20,
                tx_bytes: 7,
            }]),
        ),
        (
            "seed-rotation-report",
            Upstream::RotationReport(RotationReport {
                rotation_id: 7,
                phase: RotationPhase::Activate,
                result: Ok(()),
                staged_public_key: Some(peer.public_key),
            }),
        ),
    ] {
        out.push(("daemon_message", name.to_owned(), pb::DaemonMessage::from(&upstream).encode_to_vec()));
    }
    out
}

#[test]
fn message_seeds_are_what_the_engine_and_daemons_send_today() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = std::env::var_os("VPBLU_WRITE_FUZZ_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds(root) {
        let dir = root.join("seeds").join(target);
        let path = dir.join(&name);
        if write {
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(format!("fuzz/seeds/{target}/{name}"));
        }
        // Every seed passes its own target, or it would not be a seed.
        let check = vpblu_fuzz::TARGETS.iter().find(|(t, _)| *t == target).expect("a target").1;
        check(&bytes);
    }
    assert!(
        stale.is_empty(),
        "stale fuzz seeds (run VPBLU_WRITE_FUZZ_SEEDS=1 cargo test -p vpblu-fuzz --test seeds): {stale:?}"
    );
}
