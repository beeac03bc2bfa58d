//! Kubernetes objects → the pure engine's inputs.
//!
//! The API server rejects most bad input (CEL on CIDRs, names, ports).
//! What still arrives malformed (objects stored before a rule existed, a
//! Node with a garbage podCIDR, a key that does not decode) is not
//! dropped silently: the offending item is skipped and reported as an
//! `Invalid` finding on its object, and the rest of the object applies.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use vpblu_k8s::{BlockPolicy, IDLE_PHASE, NodeActionKind, RoutePolicy, TunnelMode, TunnelPolicy, VpbluNode};
use vpblu_messages::{Cidr, NodeName, PublicKey, RotationPhase};

use vpblu_engine::{
    BlockInput, BlockPolicyInput, Finding, FindingReason, Inputs, NodeAction, NodeInput, Peering, PolicyRef,
    RotationInput, RouteInput, RoutePolicyInput, SubjectKind, TunnelPolicyInput,
};

/// The objects desired state is computed from, as the informers hold them
/// (borrowed: a pass over 1000 Nodes copies none of them).
#[derive(Clone, Debug, Default)]
pub struct Objects<'a> {
    /// Nodes.
    pub nodes: Vec<&'a Node>,
    /// VpbluNodes (their status carries the published public keys).
    pub vpblu_nodes: Vec<&'a VpbluNode>,
    /// TunnelPolicies.
    pub tunnel_policies: Vec<&'a TunnelPolicy>,
    /// RoutePolicies.
    pub route_policies: Vec<&'a RoutePolicy>,
    /// BlockPolicies.
    pub block_policies: Vec<&'a BlockPolicy>,
}

/// Converts `objects`; every item that could not be converted is a finding.
pub fn inputs_from(objects: Objects<'_>) -> (Inputs, Vec<Finding>) {
    let mut findings = Findings::default();
    // One pass over the VpbluNodes, so a Node finds its key by name in O(1).
    let vpblu_nodes: HashMap<&str, &VpbluNode> =
        objects.vpblu_nodes.iter().filter_map(|v| Some((v.metadata.name.as_deref()?, *v))).collect();
    let inputs = Inputs {
        nodes: objects.nodes.iter().filter_map(|n| node_input(n, &vpblu_nodes, &mut findings)).collect(),
        tunnel_policies: objects
            .tunnel_policies
            .iter()
            .filter_map(|p| tunnel_policy_input(p, &mut findings))
            .collect(),
        route_policies: objects.route_policies.iter().map(|p| route_policy_input(p, &mut findings)).collect(),
        block_policies: objects.block_policies.iter().map(|p| block_policy_input(p, &mut findings)).collect(),
        rotations: objects
            .vpblu_nodes
            .iter()
            .filter_map(|v| match rotation_of(v) {
                Ok(rotation) => rotation,
                Err(message) => {
                    findings.invalid(SubjectKind::Node, &v.name_any(), message);
                    None
                }
            })
            .collect(),
        ..Inputs::default()
    };
    let mut findings = findings.0;
    findings.sort();
    findings.dedup();
    (inputs, findings)
}

/// The `Invalid` findings of one conversion.
#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn invalid(&mut self, kind: SubjectKind, name: &str, message: String) {
        self.0.push(Finding { subject: PolicyRef::new(kind, name), reason: FindingReason::Invalid, message });
    }

    /// A reporter for the items of object `name`.
    fn on<'f>(&'f mut self, kind: SubjectKind, name: &'f str) -> impl FnMut(String) + 'f {
        move |message| self.invalid(kind, name, message)
    }
}

/// A Node, with the public key its VpbluNode publishes. Borrows the Node's
/// spec and status: nothing of it is cloned but the strings kept.
fn node_input(
    node: &Node,
    vpblu_nodes: &HashMap<&str, &VpbluNode>,
    findings: &mut Findings,
) -> Option<NodeInput> {
    let name = node.name_any();
    let mut report = findings.on(SubjectKind::Node, &name);
    let node_name = parse_name(&name, "metadata.name", &mut report)?;
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let cidr_texts = match spec.and_then(|s| s.pod_cidrs.as_deref()) {
        Some(cidrs) if !cidrs.is_empty() => cidrs,
        _ => spec.and_then(|s| s.pod_cidr.as_ref()).map(std::slice::from_ref).unwrap_or_default(),
    };
    let pod_cidrs = cidr_texts
        .iter()
        .filter_map(|text| {
            text.parse::<Cidr>()
                .map_err(|e| report(format!("spec.podCIDRs: {e}; fix the Node's podCIDRs")))
                .ok()
        })
        .collect();
    let internal_ip = status
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<IpAddr>().ok());
    let ready = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let public_key = vpblu_nodes
        .get(name.as_str())
        .and_then(|v| v.status.as_ref()?.public_key.as_deref())
        .and_then(|text| {
            text.parse::<PublicKey>().map_err(|e| report(format!("VpbluNode status.publicKey: {e}"))).ok()
        });
    Some(NodeInput {
        name: node_name,
        internal_ip,
        pod_cidrs,
        ready,
        deleting: node.metadata.deletion_timestamp.is_some(),
        public_key,
        created: created(node),
    })
}

/// A TunnelPolicy; `None` when its port is unusable (the policy is ignored).
fn tunnel_policy_input(policy: &TunnelPolicy, findings: &mut Findings) -> Option<TunnelPolicyInput> {
    let name = policy.name_any();
    let mut report = findings.on(SubjectKind::TunnelPolicy, &name);
    let Some(listen_port) = u16::try_from(policy.spec.listen_port).ok().filter(|p| *p != 0) else {
        report(format!(
            "spec.listenPort {} is not a port (1-65535); the policy is ignored",
            policy.spec.listen_port
        ));
        return None;
    };
    let persistent_keepalive = match policy.spec.persistent_keepalive_seconds {
        None | Some(0) => None,
        Some(s) => u16::try_from(s)
            .map_err(|_| {
                report(format!(
                    "spec.persistentKeepaliveSeconds {s} is out of range (0-65535); keepalive is off"
                ))
            })
            .ok(),
    };
    let peering = match policy.spec.mode {
        TunnelMode::FullMesh => Peering::FullMesh,
        TunnelMode::Explicit => Peering::Explicit(
            policy
                .spec
                .peers
                .iter()
                .filter_map(|pair| {
                    let a = parse_name(&pair.a, "spec.peers[].a", &mut report)?;
                    let b = parse_name(&pair.b, "spec.peers[].b", &mut report)?;
                    Some((a, b))
                })
                .collect(),
        ),
    };
    Some(TunnelPolicyInput {
        name: name.clone(),
        created: created(policy),
        peering,
        listen_port,
        persistent_keepalive,
    })
}

/// A RoutePolicy; a route that does not parse is skipped.
fn route_policy_input(policy: &RoutePolicy, findings: &mut Findings) -> RoutePolicyInput {
    let name = policy.name_any();
    let mut report = findings.on(SubjectKind::RoutePolicy, &name);
    let routes = policy
        .spec
        .routes
        .iter()
        .filter_map(|r| {
            let cidr = parse_cidr(&r.cidr, "spec.routes[].cidr", &mut report)?;
            let via = parse_name(&r.via, "spec.routes[].via", &mut report)?;
            Some(RouteInput { cidr, via })
        })
        .collect();
    RoutePolicyInput {
        name: name.clone(),
        created: created(policy),
        routes,
        allow_egress_via_node: policy.spec.allow_egress_via_node,
    }
}

/// A BlockPolicy; a block or node entry that does not parse is skipped.
fn block_policy_input(policy: &BlockPolicy, findings: &mut Findings) -> BlockPolicyInput {
    let name = policy.name_any();
    let mut report = findings.on(SubjectKind::BlockPolicy, &name);
    let blocks = policy
        .spec
        .blocks
        .iter()
        .filter_map(|b| {
            let from = parse_cidr(&b.from, "spec.blocks[].from", &mut report)?;
            let to = parse_cidr(&b.to, "spec.blocks[].to", &mut report)?;
            Some(BlockInput { from, to, bidirectional: b.bidirectional })
        })
        .collect();
    let nodes = policy
        .spec
        .nodes
        .iter()
        .filter_map(|n| {
            let node = parse_name(&n.node, "spec.nodes[].node", &mut report)?;
            let action = match n.action {
                NodeActionKind::Isolate => NodeAction::Isolate,
                NodeActionKind::Drain => NodeAction::Drain,
            };
            Some((node, action))
        })
        .collect();
    BlockPolicyInput { name: name.clone(), created: created(policy), blocks, nodes }
}

/// The rotation in progress recorded in `vpblu_node`'s status: `None` when
/// there is none (no rotation status, or phase `Idle`), `Err` naming the
/// field that does not parse (the rotation is then ignored).
pub fn rotation_of(vpblu_node: &VpbluNode) -> Result<Option<RotationInput>, String> {
    let Some(status) = vpblu_node.status.as_ref() else { return Ok(None) };
    let Some(rotation) = status.rotation.as_ref() else { return Ok(None) };
    let phase = match rotation.phase.as_deref() {
        None | Some(IDLE_PHASE) => return Ok(None),
        Some(text) => RotationPhase::parse(text).ok_or_else(|| {
            format!(
                "VpbluNode status.rotation.phase {text:?} is not a rotation phase (Prepare, Distribute, \
                 Activate, Retire, Settle, RollingBack or Idle); the rotation is ignored"
            )
        })?,
    };
    let node = NodeName::new(vpblu_node.name_any())
        .map_err(|e| format!("VpbluNode metadata.name: {e}; its rotation is ignored"))?;
    let id = rotation.id.and_then(|id| u64::try_from(id).ok()).ok_or_else(|| {
        format!(
            "VpbluNode status.rotation.id {:?} is not a rotation id (a number from 0); the rotation is ignored",
            rotation.id
        )
    })?;
    let new_public_key = match status.staged_public_key.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<PublicKey>()
                .map_err(|e| format!("VpbluNode status.stagedPublicKey: {e}; the rotation is ignored"))?,
        ),
    };
    Ok(Some(RotationInput { node, id, phase, new_public_key }))
}

fn parse_name(text: &str, field: &str, report: &mut impl FnMut(String)) -> Option<NodeName> {
    NodeName::new(text).map_err(|e| report(format!("{field}: {e}; this entry is ignored"))).ok()
}

fn parse_cidr(text: &str, field: &str, report: &mut impl FnMut(String)) -> Option<Cidr> {
    text.parse().map_err(|e| report(format!("{field}: {e}; this entry is ignored"))).ok()
}

/// Creation time in unix seconds; 0 for an object not yet stored.
fn created(object: &impl kube::Resource) -> i64 {
    object.meta().creation_timestamp.as_ref().map_or(0, |t| t.0.as_second())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use vpblu_engine::compute;

    fn node(name: &str, ip: &str, cidrs: &[&str], ready: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": { "podCIDRs": cidrs },
            "status": {
                "addresses": [{ "type": "Hostname", "address": name }, { "type": "InternalIP", "address": ip }],
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            },
        }))
        .expect("a valid Node")
    }

    fn vnode(name: &str, key_byte: u8) -> VpbluNode {
        let key = PublicKey::from_bytes([key_byte; 32]).to_base64();
        serde_json::from_value(json!({
            "apiVersion": "vpblu.dev/v1alpha1", "kind": "VpbluNode",
            "metadata": { "name": name }, "spec": {}, "status": { "publicKey": key },
        }))
        .expect("a valid VpbluNode")
    }

    fn object<T: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> T {
        serde_json::from_value(json!({
            "apiVersion": "vpblu.dev/v1alpha1", "kind": kind,
            "metadata": { "name": name, "creationTimestamp": "2026-02-01T00:00:00Z" },
            "spec": spec,
        }))
        .expect("a valid object")
    }

    fn invalid_messages(findings: &[Finding]) -> Vec<String> {
        findings.iter().filter(|f| f.reason == FindingReason::Invalid).map(ToString::to_string).collect()
    }

    #[test]
    fn nodes_become_inputs_with_their_keys() {
        let nodes = [node("n1", "192.0.2.1", &["10.244.1.0/24", "fd00:1::/64"], true)];
        let vnodes = [vnode("n1", 1)];
        let (inputs, findings) = inputs_from(Objects {
            nodes: nodes.iter().collect(),
            vpblu_nodes: vnodes.iter().collect(),
            ..Objects::default()
        });
        assert!(findings.is_empty(), "{findings:?}");
        let n = &inputs.nodes[0];
        assert_eq!(n.name.as_str(), "n1");
        assert_eq!(n.internal_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(n.pod_cidrs.len(), 2);
        assert!(n.ready && !n.deleting);
        assert_eq!(n.public_key, Some(PublicKey::from_bytes([1; 32])));
        assert_eq!(n.created, 1_767_225_600);
    }

    #[test]
    fn keys_are_matched_by_name_among_many_vpblu_nodes_and_the_legacy_pod_cidr_counts() {
        let mut legacy = node("n2", "192.0.2.2", &[], true);
        legacy.spec.as_mut().unwrap().pod_cidr = Some("10.244.2.0/24".into());
        let nodes = [node("n1", "192.0.2.1", &["10.244.1.0/24"], true), legacy];
        let vnodes = [vnode("n3", 3), vnode("n2", 2), vnode("n1", 1)];
        let (inputs, findings) = inputs_from(Objects {
            nodes: nodes.iter().collect(),
            vpblu_nodes: vnodes.iter().collect(),
            ..Objects::default()
        });
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(inputs.nodes[0].public_key, Some(PublicKey::from_bytes([1; 32])));
        assert_eq!(inputs.nodes[1].public_key, Some(PublicKey::from_bytes([2; 32])));
        assert_eq!(inputs.nodes[1].pod_cidrs, vec!["10.244.2.0/24".parse::<Cidr>().unwrap()]);
    }

    #[test]
    fn a_garbage_pod_cidr_is_reported_and_the_rest_kept() {
        let nodes = [node("n1", "192.0.2.1", &["10.244.1.5/24", "fd00:1::/64"], true)];
        let (inputs, findings) = inputs_from(Objects { nodes: nodes.iter().collect(), ..Objects::default() });
        assert_eq!(inputs.nodes[0].pod_cidrs, vec!["fd00:1::/64".parse::<Cidr>().unwrap()]);
        let messages = invalid_messages(&findings);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("10.244.1.5/24") && messages[0].contains("n1"), "{messages:?}");
    }

    #[test]
    fn bad_policy_fields_are_findings_never_silent_drops() {
        let tunnels: [TunnelPolicy; 2] = [
            object("TunnelPolicy", "bad-port", json!({ "mode": "FullMesh", "listenPort": 0 })),
            object(
                "TunnelPolicy",
                "explicit",
                json!({
                    "mode": "Explicit", "listenPort": 51820,
                    "peers": [{ "a": "n1", "b": "n2" }, { "a": "N_3", "b": "n1" }],
                }),
            ),
        ];
        let routes: [RoutePolicy; 1] = [object(
            "RoutePolicy",
            "r",
            json!({
                "routes": [{ "cidr": "192.168.0.0/33", "via": "n1" }, { "cidr": "192.168.1.0/24", "via": "n2" }],
            }),
        )];
        let blocks: [BlockPolicy; 1] = [object(
            "BlockPolicy",
            "b",
            json!({
                "blocks": [{ "from": "10.244.1.0/24", "to": "junk" }, { "from": "10.244.1.0/24", "to": "10.244.2.0/24", "bidirectional": true }],
                "nodes": [{ "node": "n2", "action": "Drain" }],
            }),
        )];
        let (inputs, findings) = inputs_from(Objects {
            tunnel_policies: tunnels.iter().collect(),
            route_policies: routes.iter().collect(),
            block_policies: blocks.iter().collect(),
            ..Objects::default()
        });
        let messages = invalid_messages(&findings).join("\n");
        for needle in ["TunnelPolicy \"bad-port\"", "listenPort 0", "N_3", "192.168.0.0/33", "\"junk\""] {
            assert!(messages.contains(needle), "findings should mention {needle}:\n{messages}");
        }
        assert_eq!(inputs.tunnel_policies.len(), 1, "the policy without a usable port is skipped");
        assert_eq!(
            inputs.tunnel_policies[0].peering,
            Peering::Explicit(vec![(NodeName::new("n1").unwrap(), NodeName::new("n2").unwrap())])
        );
        assert_eq!(inputs.route_policies[0].routes.len(), 1);
        assert_eq!(inputs.block_policies[0].blocks.len(), 1);
        assert!(inputs.block_policies[0].blocks[0].bidirectional);
        assert_eq!(inputs.block_policies[0].nodes, vec![(NodeName::new("n2").unwrap(), NodeAction::Drain)]);
    }

    #[test]
    fn converted_objects_compute_a_mesh() {
        let nodes = [
            node("n1", "192.0.2.1", &["10.244.1.0/24"], true),
            node("n2", "192.0.2.2", &["10.244.2.0/24"], true),
            node("n3", "192.0.2.3", &["10.244.3.0/24"], false),
        ];
        let vnodes = [vnode("n1", 1), vnode("n2", 2), vnode("n3", 3)];
        let (inputs, _) = inputs_from(Objects {
            nodes: nodes.iter().collect(),
            vpblu_nodes: vnodes.iter().collect(),
            ..Objects::default()
        });
        let out = compute(&inputs);
        let n1 = &out.nodes[&NodeName::new("n1").unwrap()];
        let peers: Vec<&str> = n1.peers.keys().map(NodeName::as_str).collect();
        assert_eq!(peers, ["n2"], "n3 is not Ready");
        assert_eq!(n1.peers[&NodeName::new("n2").unwrap()].endpoint, "192.0.2.2:51820".parse().unwrap());
    }
}
