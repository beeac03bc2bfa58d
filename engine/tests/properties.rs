//! Property tests for `desired_state` over random dual-stack clusters of
//! 2 to 12 nodes with random readiness, keys, isolation, draining, tunnel,
//! route and block policies (including overlaps, unknown names and
//! conflicts), and up to two recorded key rotations in any phase.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vpblu_engine::{
    BlockInput, BlockPolicyInput, FindingReason, Inputs, NodeAction, NodeInput, Output, Peering, Previous,
    RotationInput, RouteInput, RoutePolicyInput, TunnelPolicyInput, compute, compute_after, compute_node,
};
use vpblu_messages::{BlockRule, Cidr, NodeDesiredState, NodeName, PublicKey, RotationPhase, apply, diff};

/// CIDRs that nest and overlap with each other and with the nodes' own.
const POOL: &[&str] = &[
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.2.0/24",
    "10.0.1.128/25",
    "10.0.0.0/8",
    "192.0.2.0/24",
    "192.0.2.0/25",
    "fd00::/48",
    "fd00:0:0:1::/64",
    "fd00:0:0:2::/64",
    "fd00:0:0:1:8000::/65",
    "2001:db8::/64",
    "2001:db8::/65",
    "::/0",
];

fn pool_cidr() -> impl Strategy<Value = Cidr> {
    prop::sample::select(POOL).prop_map(|s| s.parse().unwrap())
}

fn name(i: usize) -> NodeName {
    NodeName::new(format!("n{i}")).unwrap()
}

/// A node index, or (when `i == n`) a name no node has.
fn node_ref(n: usize) -> impl Strategy<Value = NodeName> {
    (0..=n).prop_map(move |i| if i == n { NodeName::new("ghost").unwrap() } else { name(i) })
}

#[derive(Clone, Debug)]
struct NodeSpec {
    ready: bool,
    /// 0: own key, 1: none, 2: node 0's key.
    key: u8,
    /// 0: IPv4, 1: IPv6, 2: none.
    ip: u8,
    /// 0: own dual stack, 1: own IPv4 only, 2: from the pool, 3: none.
    shape: u8,
    pooled: Vec<Cidr>,
    deleting: bool,
    created: i64,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        prop::bool::weighted(0.85),
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![6 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8), 1 => Just(3u8)],
        prop::collection::vec(pool_cidr(), 1..3),
        prop::bool::weighted(0.1),
        0i64..4,
    )
        .prop_map(|(ready, key, ip, shape, pooled, deleting, created)| NodeSpec {
            ready,
            key,
            ip,
            shape,
            pooled,
            deleting,
            created,
        })
}

fn node(i: usize, spec: &NodeSpec) -> NodeInput {
    let own_v4: Cidr = format!("10.1.{i}.0/24").parse().unwrap();
    let own_v6: Cidr = format!("fd01:0:0:{i:x}::/64").parse().unwrap();
    let own_key = |k: usize| PublicKey::from_bytes([k as u8 + 1; 32]);
    NodeInput {
        name: name(i),
        internal_ip: match spec.ip {
            0 => Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, i as u8 + 1))),
            1 => Some(IpAddr::V6(Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, i as u16 + 1))),
            _ => None,
        },
        pod_cidrs: match spec.shape {
            0 => vec![own_v6, own_v4],
            1 => vec![own_v4],
            2 => spec.pooled.clone(),
            _ => Vec::new(),
        },
        ready: spec.ready,
        deleting: spec.deleting,
        public_key: match spec.key {
            0 => Some(own_key(i)),
            1 => None,
            _ => Some(own_key(0)),
        },
        created: spec.created,
    }
}

fn tunnel_policy(n: usize) -> impl Strategy<Value = TunnelPolicyInput> {
    let pairs = prop::collection::vec((node_ref(n), node_ref(n)), 0..8);
    (
        prop::sample::select(&["t-a", "t-b", "t-c"][..]),
        0i64..3,
        prop::option::of(pairs),
        1u16..4,
        prop::option::of(1u16..30),
    )
        .prop_map(|(policy, created, pairs, port, keepalive)| TunnelPolicyInput {
            name: policy.into(),
            created,
            peering: pairs.map_or(Peering::FullMesh, Peering::Explicit),
            listen_port: 51819 + port,
            persistent_keepalive: keepalive,
        })
}

fn route_policy(n: usize) -> impl Strategy<Value = RoutePolicyInput> {
    let route = (pool_cidr(), node_ref(n)).prop_map(|(cidr, via)| RouteInput { cidr, via });
    (
        prop::sample::select(&["r-a", "r-b", "r-c"][..]),
        0i64..3,
        prop::collection::vec(route, 0..4),
        prop::bool::weighted(0.5),
    )
        .prop_map(|(policy, created, routes, allow_egress_via_node)| RoutePolicyInput {
            name: policy.into(),
            created,
            routes,
            allow_egress_via_node,
        })
}

fn block_policy(n: usize) -> impl Strategy<Value = BlockPolicyInput> {
    let own_or_pool = prop_oneof![
        pool_cidr(),
        (0..n).prop_map(|i| format!("10.1.{i}.0/24").parse().unwrap()),
        (0..n).prop_map(|i| format!("fd01:0:0:{i:x}::/64").parse().unwrap()),
    ];
    let block = (own_or_pool.clone(), own_or_pool, any::<bool>())
        .prop_map(|(from, to, bidirectional)| BlockInput { from, to, bidirectional });
    let action = (node_ref(n), prop_oneof![Just(NodeAction::Isolate), Just(NodeAction::Drain)]);
    (
        prop::sample::select(&["b-a", "b-b"][..]),
        prop::collection::vec(block, 0..4),
        prop::collection::vec(action, 0..3),
    )
        .prop_map(|(policy, blocks, nodes)| BlockPolicyInput {
            name: policy.into(),
            created: 1,
            blocks,
            nodes,
        })
}

/// The key a rotating node stages: no node has it.
fn new_key(k: u8) -> PublicKey {
    PublicKey::from_bytes([0xE0 + k; 32])
}

fn rotation(n: usize) -> impl Strategy<Value = RotationInput> {
    (node_ref(n), 1u64..4, prop::sample::select(&RotationPhase::ALL[..]), prop::option::of(0u8..2)).prop_map(
        |(node, id, phase, key)| RotationInput { node, id, phase, new_public_key: key.map(new_key) },
    )
}

fn cluster() -> impl Strategy<Value = Inputs> {
    (2usize..=12).prop_flat_map(|n| {
        (
            prop::collection::vec(node_spec(), n),
            prop::collection::vec(tunnel_policy(n), 0..3),
            prop::collection::vec(route_policy(n), 0..3),
            prop::collection::vec(block_policy(n), 0..3),
            prop::collection::vec(rotation(n), 0..3),
            prop::collection::vec(pool_cidr(), 0..2),
        )
            .prop_map(
                |(specs, tunnel_policies, route_policies, block_policies, rotations, service_cidrs)| Inputs {
                    nodes: specs.iter().enumerate().map(|(i, s)| node(i, s)).collect(),
                    tunnel_policies,
                    route_policies,
                    block_policies,
                    rotations,
                    service_cidrs,
                },
            )
    })
}

/// A deterministic shuffle driven by proptest's seed (xorshift).
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        items.swap(i, (*seed % (i as u64 + 1)) as usize);
    }
}

fn shuffled(inputs: &Inputs, seed: u64) -> Inputs {
    let mut seed = seed | 1;
    let mut out = inputs.clone();
    shuffle(&mut out.nodes, &mut seed);
    for node in &mut out.nodes {
        shuffle(&mut node.pod_cidrs, &mut seed);
    }
    shuffle(&mut out.tunnel_policies, &mut seed);
    for t in &mut out.tunnel_policies {
        if let Peering::Explicit(pairs) = &mut t.peering {
            shuffle(pairs, &mut seed);
        }
    }
    shuffle(&mut out.route_policies, &mut seed);
    for r in &mut out.route_policies {
        shuffle(&mut r.routes, &mut seed);
    }
    shuffle(&mut out.block_policies, &mut seed);
    for b in &mut out.block_policies {
        shuffle(&mut b.blocks, &mut seed);
        shuffle(&mut b.nodes, &mut seed);
    }
    shuffle(&mut out.rotations, &mut seed);
    out
}

fn isolated_names(inputs: &Inputs) -> BTreeSet<NodeName> {
    let live: BTreeSet<&NodeName> = inputs.nodes.iter().filter(|n| !n.deleting).map(|n| &n.name).collect();
    inputs
        .block_policies
        .iter()
        .flat_map(|b| &b.nodes)
        .filter(|(n, a)| *a == NodeAction::Isolate && live.contains(n))
        .map(|(n, _)| n.clone())
        .collect()
}

fn state_or_empty(out: &Output, node: &NodeName) -> NodeDesiredState {
    out.nodes.get(node).cloned().unwrap_or_else(|| NodeDesiredState::empty(node.clone()))
}

proptest! {
    // 512 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn states_are_valid_and_never_peer_themselves(inputs in cluster()) {
        let out = compute(&inputs);
        for (node, state) in &out.nodes {
            prop_assert_eq!(&state.node, node);
            prop_assert!(!state.peers.contains_key(node), "{} peers itself", node);
            // Also: no two peers share an allowed IP, no shared keys.
            if let Err(e) = state.validate() {
                prop_assert!(false, "state of {} is invalid: {}", node, e);
            }
            for u in &state.unreachable {
                let routed = state.routes().any(|(c, _)| *c == u.cidr);
                prop_assert!(!routed, "{} routed and unreachable on {}", u.cidr, node);
            }
        }
        prop_assert!(out.findings.windows(2).all(|w| w[0] < w[1]), "findings sorted and unique");
        let deleting: BTreeSet<&NodeName> =
            inputs.nodes.iter().filter(|n| n.deleting).map(|n| &n.name).collect();
        for state in out.nodes.values() {
            for peer in state.peers.keys() {
                prop_assert!(!deleting.contains(peer), "{} peers deleted node {}", state.node, peer);
            }
        }
    }

    #[test]
    fn peering_is_symmetric(inputs in cluster()) {
        // Holds for any tunnel policy, and so for the full mesh.
        let out = compute(&inputs);
        for (a, state) in &out.nodes {
            for b in state.peers.keys() {
                prop_assert!(out.nodes[b].peers.contains_key(a), "{} has {} but not the reverse", a, b);
            }
        }
    }

    #[test]
    fn full_mesh_without_routes_is_symmetric_and_complete(mut inputs in cluster()) {
        inputs.route_policies.clear();
        inputs.tunnel_policies.iter_mut().for_each(|t| t.peering = Peering::FullMesh);
        let out = compute(&inputs);
        let with_peers: Vec<&NodeName> =
            out.nodes.iter().filter(|(_, s)| !s.peers.is_empty()).map(|(n, _)| n).collect();
        for (a, state) in &out.nodes {
            for (b, peer) in &state.peers {
                prop_assert!(out.nodes[b].peers.contains_key(a), "{} has {} but not the reverse", a, b);
                // Without routes an entry is the same on every viewer.
                for c in with_peers.iter().filter(|c| **c != b) {
                    prop_assert_eq!(&out.nodes[*c].peers[b], peer);
                }
            }
            if !state.peers.is_empty() {
                prop_assert_eq!(state.peers.len(), with_peers.len() - 1, "{} misses an eligible node", a);
            }
        }
    }

    #[test]
    fn blocks_are_enforced_by_every_node_they_touch(inputs in cluster()) {
        let out = compute(&inputs);
        for block in inputs.block_policies.iter().flat_map(|b| &b.blocks) {
            if block.from.is_ipv4() != block.to.is_ipv4() || covers_a_node(&inputs, block) {
                continue;
            }
            let mut rules = vec![BlockRule { from: block.from, to: block.to }];
            if block.bidirectional {
                rules.push(BlockRule { from: block.to, to: block.from });
            }
            for rule in rules {
                for state in out.nodes.values() {
                    let pods = &state.settings.pod_cidrs;
                    let touches = pods.iter().any(|c| c.overlaps(&rule.from) || c.overlaps(&rule.to));
                    if touches {
                        prop_assert!(state.blocks.contains(&rule), "{} lacks {:?}", state.node, rule);
                    }
                }
            }
        }
    }

    #[test]
    fn hazardous_routes_are_refused_unless_opted_in(inputs in cluster()) {
        let out = compute(&inputs);
        let hazardous = |cidr: &Cidr| {
            cidr.prefix_len() == 0
                || inputs.nodes.iter().filter_map(|n| n.internal_ip).any(|ip| cidr.contains_ip(ip))
                || inputs.service_cidrs.iter().any(|s| s.overlaps(cidr))
        };
        for policy in inputs.route_policies.iter().filter(|p| !p.allow_egress_via_node) {
            for route in policy.routes.iter().filter(|r| hazardous(&r.cidr)) {
                prop_assert!(
                    out.findings.iter().any(|f| f.subject.name == policy.name && matches!(
                        f.reason,
                        FindingReason::DefaultRoute | FindingReason::CoversNodeAddress | FindingReason::CoversServiceCidr
                    )),
                    "{} routes {} unreported", policy.name, route.cidr
                );
                let claimed_elsewhere = inputs.route_policies.iter().any(|p| {
                    p.allow_egress_via_node && p.routes.iter().any(|r| r.cidr == route.cidr)
                }) || inputs.nodes.iter().any(|n| n.pod_cidrs.contains(&route.cidr));
                if !claimed_elsewhere {
                    for state in out.nodes.values() {
                        prop_assert!(
                            !state.routes().any(|(c, _)| *c == route.cidr),
                            "{} routes {} though {} was refused", state.node, route.cidr, policy.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn blocks_covering_a_node_address_are_refused_and_reported(inputs in cluster()) {
        let out = compute(&inputs);
        for policy in &inputs.block_policies {
            // A block mixing families is skipped for that before anything else.
            let same_family = |b: &&BlockInput| b.from.is_ipv4() == b.to.is_ipv4();
            for block in policy.blocks.iter().filter(same_family).filter(|b| covers_a_node(&inputs, b)) {
                let rule = BlockRule { from: block.from, to: block.to };
                for state in out.nodes.values() {
                    // Another block of the same ends may be enforced; this one never is.
                    let same_elsewhere = inputs.block_policies.iter().flat_map(|b| &b.blocks).any(|b| {
                        !covers_a_node(&inputs, b) && b.from == block.from && b.to == block.to
                    });
                    prop_assert!(same_elsewhere || !state.blocks.contains(&rule), "{} enforces {:?}", state.node, rule);
                }
                prop_assert!(
                    out.findings.iter().any(|f| f.subject.name == policy.name && f.reason == FindingReason::CoversUnderlay),
                    "{} not reported", policy.name
                );
            }
        }
    }

    #[test]
    fn isolated_nodes_peer_nobody(inputs in cluster()) {
        let out = compute(&inputs);
        for isolated in isolated_names(&inputs) {
            let state = &out.nodes[&isolated];
            prop_assert!(state.settings.isolated);
            prop_assert!(state.peers.is_empty(), "isolated {} has peers", isolated);
            for other in out.nodes.values() {
                let peers_it = other.peers.contains_key(&isolated);
                prop_assert!(!peers_it, "{} peers isolated {}", other.node, isolated);
            }
        }
    }

    #[test]
    fn a_rotation_reaches_its_node_and_its_peers_only(inputs in cluster()) {
        let out = compute(&inputs);
        let Some(rotation) = inputs.rotations.iter().min() else {
            prop_assert!(out.nodes.values().all(|s| s.rotation.is_none()));
            return Ok(());
        };
        let rotating = &rotation.node;
        let lanes_in_use = rotation.phase != RotationPhase::Prepare && rotation.new_public_key.is_some();
        for (node, state) in &out.nodes {
            let takes_part = node == rotating || state.peers.contains_key(rotating);
            prop_assert_eq!(state.rotation.is_some(), takes_part, "{} and the rotation of {}", node, rotating);
            let Some(held) = &state.rotation else { continue };
            prop_assert_eq!((held.id, held.phase, &held.node), (rotation.id, rotation.phase, rotating));
            if !lanes_in_use {
                prop_assert!(held.lane.is_empty(), "{}: lane before the new key is known", node);
            } else if node == rotating {
                let lane: Vec<&NodeName> = held.lane.keys().collect();
                let main: Vec<&NodeName> = state.peers.keys().collect();
                prop_assert_eq!(lane, main, "the rotating node's lane holds its peers");
                for (peer, entry) in &held.lane {
                    prop_assert_eq!(entry.public_key, state.peers[peer].public_key);
                    prop_assert_eq!(entry.endpoint.port(), state.peers[peer].endpoint.port() + 1);
                }
            } else {
                let lane = &held.lane[rotating];
                prop_assert_eq!(held.lane.len(), 1);
                prop_assert_eq!(Some(lane.public_key), rotation.new_public_key);
                prop_assert_eq!(&lane.allowed_ips, &state.peers[rotating].allowed_ips);
                let main_key = state.peers[rotating].public_key;
                prop_assert_eq!(main_key == lane.public_key, rotation.phase.main_uses_new_key());
            }
        }
    }

    #[test]
    fn result_does_not_depend_on_input_order(inputs in cluster(), seed in any::<u64>()) {
        prop_assert_eq!(compute(&shuffled(&inputs, seed)), compute(&inputs));
    }

    #[test]
    fn compute_node_agrees_with_compute(inputs in cluster()) {
        let out = compute(&inputs);
        for node in &inputs.nodes {
            let alone = compute_node(&inputs, &node.name);
            prop_assert_eq!(alone.as_ref(), out.nodes.get(&node.name));
        }
        prop_assert_eq!(compute_node(&inputs, &NodeName::new("ghost").unwrap()), None);
    }

    #[test]
    fn diff_applied_to_old_gives_new(a in cluster(), b in cluster()) {
        let (old, new) = (compute(&a), compute(&b));
        for i in 0..12 {
            let node = name(i);
            let (from, to) = (state_or_empty(&old, &node), state_or_empty(&new, &node));
            let mut replay = from.clone();
            for command in diff(&from, &to) {
                apply(&mut replay, &command);
            }
            prop_assert_eq!(replay, to);
        }
    }
}

/// Whether either end of `block` holds some node's internal IP.
fn covers_a_node(inputs: &Inputs, block: &BlockInput) -> bool {
    inputs
        .nodes
        .iter()
        .filter_map(|n| n.internal_ip)
        .any(|ip| block.from.contains_ip(ip) || block.to.contains_ip(ip))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// Reusing a previous output never changes the result, whatever the
    /// previous inputs were.
    #[test]
    fn computing_after_any_previous_output_gives_the_same_states(before in cluster(), after in cluster()) {
        let previous = compute(&before);
        let reused = compute_after(&after, &Previous::of(previous.nodes.values()));
        prop_assert_eq!(reused, compute(&after));
    }

    /// With unchanged inputs every peer entry is the previous `Arc`, and
    /// each state compares equal to its previous self. (Entries a route
    /// overrides for some viewers are rebuilt: only their values are kept.)
    #[test]
    fn unchanged_inputs_reuse_every_entry(mut inputs in cluster()) {
        inputs.rotations.clear();
        inputs.route_policies.clear();
        let first = compute(&inputs);
        let second = compute_after(&inputs, &Previous::of(first.nodes.values()));
        prop_assert_eq!(&second, &first);
        for (node, state) in &second.nodes {
            for (peer, entry) in &state.peers {
                let old = &first.nodes[node].peers[peer];
                let reused = std::sync::Arc::ptr_eq(entry, old) || first.nodes.values().any(|s| {
                    s.peers.get(peer).is_some_and(|o| std::sync::Arc::ptr_eq(o, entry))
                });
                prop_assert!(reused, "{}'s entry for {} was rebuilt", node, peer);
            }
        }
    }
}
