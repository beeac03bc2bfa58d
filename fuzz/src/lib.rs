//! What each fuzz target checks, one function per target, taking the raw
//! bytes a fuzzer (or a committed corpus file) gives it.
//!
//! Every function panics when, and only when, it finds a bug: the code
//! under test panicked, or a property it must keep did not hold. The same
//! functions run under cargo-fuzz (`fuzz/cargo-fuzz`, `make fuzz`) and over
//! the committed corpora in `make test` (`tests/corpora.rs`), so an input
//! that once crashed stays a regression test.
//!
//! | target | what it feeds | what must hold |
//! | --- | --- | --- |
//! | `controller_message` | bytes as a controller → daemon protobuf | decoding never panics; a message that converts to a domain value converts back to the same value |
//! | `daemon_message` | bytes as a daemon → controller protobuf | the same, upstream |
//! | `from_k8s` | JSON objects as the informers hold them | conversion and the engine never panic; every desired state validates; one node's state alone equals the whole mesh's |
//! | `uapi_get` | a WireGuard UAPI `get=1` reply | parsing never panics; peers' allowed IPs come back sorted |
//! | `key_file` | the content of a key file | parsing never panics; what parses is a 44-character key and parses the same twice |

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use prost::Message;
use serde::Deserialize;
use vpblu_controller::from_k8s::{Objects, inputs_from};
use vpblu_engine::{compute, compute_node};
use vpblu_k8s::{BlockPolicy, RoutePolicy, TunnelPolicy, VpbluNode};
use vpblu_messages::{Envelope, Upstream};
use vpblu_proto as pb;

/// A fuzz target: raw bytes in, a panic when it finds a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory has.
pub const TARGETS: &[(&str, Target)] = &[
    ("controller_message", controller_message),
    ("daemon_message", daemon_message),
    ("from_k8s", from_k8s),
    ("uapi_get", uapi_get),
    ("key_file", key_file),
];

/// Controller → daemon: protobuf bytes to an [`Envelope`] and back.
pub fn controller_message(data: &[u8]) {
    round_trip::<pb::ControllerMessage, Envelope>(data, "controller");
}

/// Daemon → controller: protobuf bytes to an [`Upstream`] and back.
pub fn daemon_message(data: &[u8]) {
    round_trip::<pb::DaemonMessage, Upstream>(data, "daemon");
}

/// Bytes as wire message `W`: decoding never panics, and a message that
/// converts to a domain value `D` converts back to the same value, through
/// the wire type and through its encoded bytes.
fn round_trip<W, D>(data: &[u8], side: &str)
where
    W: Message + Default + for<'a> From<&'a D>,
    D: for<'a> TryFrom<&'a W, Error: std::fmt::Display> + std::fmt::Debug + PartialEq,
{
    let Ok(wire) = W::decode(data) else { return };
    let Ok(value) = D::try_from(&wire) else { return };
    let again = W::from(&value);
    let back = D::try_from(&again).unwrap_or_else(|e| {
        panic!("{value:?} encoded by this side does not decode: {e}");
    });
    assert_eq!(back, value, "a {side} message changed on the way back");
    let bytes = again.encode_to_vec();
    let reread = W::decode(bytes.as_slice()).expect("our own bytes decode");
    let reread =
        D::try_from(&reread).unwrap_or_else(|e| panic!("our own bytes of {value:?} do not convert: {e}"));
    assert_eq!(reread, value, "our own bytes decode to another {side} message");
}

/// The objects a controller's informers could hold, as JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct K8sObjects {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// VpbluNodes.
    pub vpblu_nodes: Vec<VpbluNode>,
    /// TunnelPolicies.
    pub tunnel_policies: Vec<TunnelPolicy>,
    /// RoutePolicies.
    pub route_policies: Vec<RoutePolicy>,
    /// BlockPolicies.
    pub block_policies: Vec<BlockPolicy>,
}

/// Kubernetes objects → engine inputs → every node's desired state.
pub fn from_k8s(data: &[u8]) {
    let Ok(objects) = serde_json::from_slice::<K8sObjects>(data) else { return };
    let (inputs, _findings) = inputs_from(Objects {
        nodes: objects.nodes.iter().collect(),
        vpblu_nodes: objects.vpblu_nodes.iter().collect(),
        tunnel_policies: objects.tunnel_policies.iter().collect(),
        route_policies: objects.route_policies.iter().collect(),
        block_policies: objects.block_policies.iter().collect(),
    });
    let output = compute(&inputs);
    let mut alone = BTreeMap::new();
    for (node, state) in &output.nodes {
        if let Err(e) = state.validate() {
            panic!("the engine computed a desired state for {node} that its daemon refuses: {e}\n{state:?}");
        }
        alone.insert(node.clone(), compute_node(&inputs, node));
    }
    for (node, state) in &output.nodes {
        assert_eq!(alone[node].as_ref(), Some(state), "{node}'s state alone differs from the mesh's");
    }
}

/// A WireGuard UAPI `get=1` reply, as wireguard-go or boringtun sends it.
pub fn uapi_get(data: &[u8]) {
    let Ok(reply) = std::str::from_utf8(data) else { return };
    let Ok(device) = vpblu_daemon::wireguard::parse_uapi_get(reply) else { return };
    for peer in &device.peers {
        assert!(peer.allowed_ips.is_sorted(), "allowed IPs not sorted: {:?}", peer.allowed_ips);
    }
}

/// A key file's content.
pub fn key_file(data: &[u8]) {
    let Ok(key) = vpblu_daemon::keys::PrivateKey::from_key_file(data) else { return };
    assert_eq!(data.trim_ascii().len(), 44, "a key file of another length parsed");
    let again = vpblu_daemon::keys::PrivateKey::from_key_file(data).expect("parsed once, parses twice");
    assert_eq!(again.public_key(), key.public_key());
}
