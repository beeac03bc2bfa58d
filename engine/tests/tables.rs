//! Table tests for `desired_state`: one case per rule and per precedence
//! pair, each run for IPv4 and for IPv6. Every case also checks, through
//! `Case::run`, that each state validates, that `compute_node` agrees with
//! `compute`, that reversing every input list changes nothing, and that no
//! CIDR is both routed and unreachable on one node.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vpblu_engine::{
    BlockInput, BlockPolicyInput, FindingReason, Inputs, NodeAction, NodeInput, Output, Peering,
    RotationInput, RouteInput, RoutePolicyInput, SubjectKind, TunnelPolicyInput, compute, compute_node,
};
use vpblu_messages::{BlockRule, Cidr, NodeName, PublicKey, RotationPhase, UnreachableReason};

use FindingReason as R;
use SubjectKind as K;
use UnreachableReason::{Drained, Isolated, NoKey, NotPeered, NotReady};

#[derive(Clone, Copy, Debug)]
enum Fam {
    V4,
    V6,
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

impl Fam {
    /// Node `i`'s pod CIDR.
    fn pod(self, i: u8) -> Cidr {
        match self {
            Fam::V4 => cidr(&format!("10.0.{i}.0/24")),
            Fam::V6 => cidr(&format!("fd00:0:0:{i:x}::/64")),
        }
    }
    /// A block inside node `i`'s pod CIDR.
    fn pod_half(self, i: u8) -> Cidr {
        match self {
            Fam::V4 => cidr(&format!("10.0.{i}.128/25")),
            Fam::V6 => cidr(&format!("fd00:0:0:{i:x}:8000::/65")),
        }
    }
    /// Contains every `pod(i)`.
    fn wide(self) -> Cidr {
        match self {
            Fam::V4 => cidr("10.0.0.0/16"),
            Fam::V6 => cidr("fd00::/48"),
        }
    }
    /// Outside the cluster's pod CIDRs.
    fn ext(self) -> Cidr {
        match self {
            Fam::V4 => cidr("192.0.2.0/24"),
            Fam::V6 => cidr("2001:db8:0:1::/64"),
        }
    }
    /// Inside `ext`.
    fn ext_half(self) -> Cidr {
        match self {
            Fam::V4 => cidr("192.0.2.0/25"),
            Fam::V6 => cidr("2001:db8:0:1::/65"),
        }
    }
    /// Everything: a default route.
    fn any(self) -> Cidr {
        match self {
            Fam::V4 => cidr("0.0.0.0/0"),
            Fam::V6 => cidr("::/0"),
        }
    }
    /// Contains every node's internal IP.
    fn underlay(self) -> Cidr {
        match self {
            Fam::V4 => cidr("192.168.1.0/24"),
            Fam::V6 => cidr("fd10::/64"),
        }
    }
    /// A Service CIDR, outside everything else.
    fn services(self) -> Cidr {
        match self {
            Fam::V4 => cidr("10.96.0.0/12"),
            Fam::V6 => cidr("fd96::/108"),
        }
    }
    /// Inside `services`.
    fn services_part(self) -> Cidr {
        match self {
            Fam::V4 => cidr("10.96.0.0/16"),
            Fam::V6 => cidr("fd96::/112"),
        }
    }
    fn ip(self, i: u8) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(192, 168, 1, i)),
            Fam::V6 => IpAddr::V6(Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, u16::from(i))),
        }
    }
    fn other(self) -> Fam {
        match self {
            Fam::V4 => Fam::V6,
            Fam::V6 => Fam::V4,
        }
    }
}

/// Runs a case for both families as `name::ipv4` and `name::ipv6`.
macro_rules! both_families {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn ipv4() {
                super::$case(super::Fam::V4);
            }
            #[test]
            fn ipv6() {
                super::$case(super::Fam::V6);
            }
        }
    )*};
}

fn name(i: u8) -> NodeName {
    NodeName::new(format!("n{i}")).unwrap()
}

fn key(i: u8) -> PublicKey {
    PublicKey::from_bytes([i; 32])
}

struct Case {
    f: Fam,
    inputs: Inputs,
}

impl Case {
    /// Nodes n1..=n`count`, all eligible, n1 the oldest.
    fn nodes(f: Fam, count: u8) -> Self {
        let nodes = (1..=count)
            .map(|i| NodeInput {
                name: name(i),
                internal_ip: Some(f.ip(i)),
                pod_cidrs: vec![f.pod(i)],
                ready: true,
                deleting: false,
                public_key: Some(key(i)),
                created: 100 + i64::from(i),
            })
            .collect();
        Case { f, inputs: Inputs { nodes, ..Inputs::default() } }
    }

    fn node(&mut self, i: u8) -> &mut NodeInput {
        &mut self.inputs.nodes[usize::from(i) - 1]
    }

    fn tunnel(
        mut self,
        policy: &str,
        created: i64,
        pairs: Option<&[(u8, u8)]>,
        port: u16,
        keepalive: Option<u16>,
    ) -> Self {
        let peering = match pairs {
            None => Peering::FullMesh,
            Some(pairs) => Peering::Explicit(pairs.iter().map(|&(a, b)| (name(a), name(b))).collect()),
        };
        self.inputs.tunnel_policies.push(TunnelPolicyInput {
            name: policy.into(),
            created,
            peering,
            listen_port: port,
            persistent_keepalive: keepalive,
        });
        self
    }

    fn explicit(self, pairs: &[(u8, u8)]) -> Self {
        self.tunnel("tunnel", 1, Some(pairs), 51820, None)
    }

    fn routes(mut self, policy: &str, created: i64, routes: &[(Cidr, &str)]) -> Self {
        let routes = routes.iter().map(|(c, via)| RouteInput { cidr: *c, via: NodeName::new(*via).unwrap() });
        self.inputs.route_policies.push(RoutePolicyInput {
            name: policy.into(),
            created,
            routes: routes.collect(),
            allow_egress_via_node: false,
        });
        self
    }

    /// The last RoutePolicy added opts in to egress via a node.
    fn egress_opt_in(mut self) -> Self {
        self.inputs.route_policies.last_mut().expect("a RoutePolicy first").allow_egress_via_node = true;
        self
    }

    fn service_cidrs(mut self, cidrs: &[Cidr]) -> Self {
        self.inputs.service_cidrs = cidrs.to_vec();
        self
    }

    fn blocks(mut self, policy: &str, blocks: &[(Cidr, Cidr, bool)], nodes: &[(&str, NodeAction)]) -> Self {
        self.inputs.block_policies.push(BlockPolicyInput {
            name: policy.into(),
            created: 1,
            blocks: blocks
                .iter()
                .map(|&(from, to, bidirectional)| BlockInput { from, to, bidirectional })
                .collect(),
            nodes: nodes.iter().map(|(n, a)| (NodeName::new(*n).unwrap(), *a)).collect(),
        });
        self
    }

    fn isolate(self, node: &str) -> Self {
        self.blocks("isolate", &[], &[(node, NodeAction::Isolate)])
    }

    fn drain(self, node: &str) -> Self {
        self.blocks("drain", &[], &[(node, NodeAction::Drain)])
    }

    /// Node `i` rotating (rotation `id`) in `phase`, new key `key(new)` if given.
    fn rotating(mut self, i: u8, id: u64, phase: RotationPhase, new: Option<u8>) -> Self {
        self.inputs.rotations.push(RotationInput { node: name(i), id, phase, new_public_key: new.map(key) });
        self
    }

    /// Computes, and checks what must hold for every case.
    fn run(&self) -> Output {
        let f = self.f;
        let out = compute(&self.inputs);
        for (node, state) in &out.nodes {
            state.validate().unwrap_or_else(|e| panic!("{f:?}: state of {node} is invalid: {e}"));
            assert_eq!(compute_node(&self.inputs, node).as_ref(), Some(state), "{f:?}: compute_node({node})");
            for u in &state.unreachable {
                assert!(
                    !state.routes().any(|(c, _)| *c == u.cidr),
                    "{f:?}: {} is both routed and unreachable on {node}",
                    u.cidr
                );
            }
        }
        assert!(out.findings.windows(2).all(|w| w[0] < w[1]), "{f:?}: findings not sorted and unique");
        let mut reversed = self.inputs.clone();
        reversed.nodes.reverse();
        reversed.tunnel_policies.reverse();
        for t in &mut reversed.tunnel_policies {
            if let Peering::Explicit(pairs) = &mut t.peering {
                pairs.reverse();
            }
        }
        reversed.route_policies.reverse();
        reversed.route_policies.iter_mut().for_each(|p| p.routes.reverse());
        reversed.block_policies.reverse();
        for p in &mut reversed.block_policies {
            p.blocks.reverse();
            p.nodes.reverse();
        }
        reversed.rotations.reverse();
        assert_eq!(compute(&reversed), out, "{f:?}: result depends on input order");
        out
    }
}

/// Peer name and allowed IPs, for comparing.
fn p(node: &str, cidrs: &[Cidr]) -> (String, Vec<Cidr>) {
    (node.to_owned(), cidrs.to_vec())
}

fn peers(out: &Output, node: &str) -> Vec<(String, Vec<Cidr>)> {
    let state = &out.nodes[&NodeName::new(node).unwrap()];
    state.peers.values().map(|peer| (peer.node.to_string(), peer.allowed_ips.clone())).collect()
}

fn unreachable(out: &Output, node: &str) -> Vec<(Cidr, UnreachableReason)> {
    let state = &out.nodes[&NodeName::new(node).unwrap()];
    state.unreachable.iter().map(|u| (u.cidr, u.reason)).collect()
}

fn blocks(out: &Output, node: &str) -> Vec<BlockRule> {
    out.nodes[&NodeName::new(node).unwrap()].blocks.iter().copied().collect()
}

fn rule(from: Cidr, to: Cidr) -> BlockRule {
    BlockRule { from, to }
}

/// Findings as (kind, object, reason), in output order.
fn found(out: &Output) -> Vec<(SubjectKind, String, FindingReason)> {
    out.findings.iter().map(|f| (f.subject.kind, f.subject.name.clone(), f.reason)).collect()
}

fn finding(kind: SubjectKind, object: &str, reason: FindingReason) -> (SubjectKind, String, FindingReason) {
    (kind, object.to_owned(), reason)
}

/// The message of the only finding with `reason`, checked to name `values`.
fn message_names(out: &Output, reason: FindingReason, values: &[String]) {
    let messages: Vec<&str> =
        out.findings.iter().filter(|f| f.reason == reason).map(|f| f.message.as_str()).collect();
    assert_eq!(messages.len(), 1, "one {reason} finding: {messages:?}");
    for value in values {
        assert!(messages[0].contains(value.as_str()), "{:?} should name {value}", messages[0]);
    }
}

fn state<'o>(out: &'o Output, node: &str) -> &'o vpblu_messages::NodeDesiredState {
    &out.nodes[&NodeName::new(node).unwrap()]
}

// ---- derived from nodes ----

fn derived_full_mesh(f: Fam) {
    let out = Case::nodes(f, 3).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[f.pod(3)])]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)]), p("n3", &[f.pod(3)])]);
    assert_eq!(peers(&out, "n3"), vec![p("n1", &[f.pod(1)]), p("n2", &[f.pod(2)])]);
    let n1 = state(&out, "n1");
    let peer = &n1.peers[&name(2)];
    assert_eq!(peer.endpoint, SocketAddr::new(f.ip(2), 51820));
    assert_eq!(peer.public_key, key(2));
    assert_eq!(peer.persistent_keepalive, None);
    assert_eq!(n1.settings.listen_port, 51820);
    assert_eq!(n1.settings.pod_cidrs, vec![f.pod(1)]);
    assert!(!n1.settings.isolated && !n1.settings.drained);
    assert!(n1.unreachable.is_empty() && n1.blocks.is_empty());
    assert_eq!(found(&out), vec![]);
    // One shared entry per peer across viewers.
    assert!(std::sync::Arc::ptr_eq(&n1.peers[&name(3)], &state(&out, "n2").peers[&name(3)]));
}

fn dual_stack_node_keeps_both_families(f: Fam) {
    let mut case = Case::nodes(f, 2);
    case.node(2).pod_cidrs.push(f.other().pod(2));
    let out = case.run();
    let mut both = vec![f.pod(2), f.other().pod(2)];
    both.sort();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &both)]);
    assert_eq!(state(&out, "n2").settings.pod_cidrs, both);
}

fn not_ready_node_is_unreachable_and_has_no_peers(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.node(3).ready = false;
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(3), NotReady)]);
    assert_eq!(peers(&out, "n3"), vec![]);
    assert_eq!(unreachable(&out, "n3"), vec![(f.pod(1), NotReady), (f.pod(2), NotReady)]);
    assert_eq!(found(&out), vec![]);
}

fn keyless_node_is_unreachable_with_no_key(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.node(3).public_key = None;
    let out = case.run();
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)])]);
    assert_eq!(unreachable(&out, "n2"), vec![(f.pod(3), NoKey)]);
    assert_eq!(unreachable(&out, "n3"), vec![(f.pod(1), NoKey), (f.pod(2), NoKey)]);
}

fn unreachable_reason_precedence_isolated_not_ready_no_key(f: Fam) {
    let mut case = Case::nodes(f, 4);
    case.node(2).ready = false;
    case.node(2).public_key = None;
    case.node(3).ready = false;
    case.node(3).public_key = None;
    let out = case.isolate("n2").run();
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), Isolated), (f.pod(3), NotReady)]);
    // n4 keyless as viewer: its own NoKey, but the remote reasons are severer.
    let mut case = Case::nodes(f, 3);
    case.node(1).public_key = None;
    case.node(2).ready = false;
    let out = case.run();
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), NotReady), (f.pod(3), NoKey)]);
}

fn deleting_node_is_absent(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.node(3).deleting = true;
    let out = case.run();
    assert_eq!(out.nodes.keys().map(|n| n.to_string()).collect::<Vec<_>>(), vec!["n1", "n2"]);
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(unreachable(&out, "n1"), vec![]);
    assert_eq!(compute_node(&case.inputs, &name(3)), None);
    assert_eq!(compute_node(&case.inputs, &name(9)), None);
}

fn node_without_internal_ip_or_pod_cidr_is_not_ready(f: Fam) {
    let mut case = Case::nodes(f, 4);
    case.node(3).internal_ip = None;
    case.node(4).pod_cidrs.clear();
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(3), NotReady)]);
    assert_eq!(
        found(&out),
        vec![finding(K::Node, "n3", R::NoInternalIp), finding(K::Node, "n4", R::NoPodCidrs)]
    );
}

fn duplicate_public_key_stays_with_older_node(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.node(3).public_key = Some(key(2));
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(3), NoKey)]);
    assert_eq!(found(&out), vec![finding(K::Node, "n3", R::Conflict)]);
    message_names(&out, R::Conflict, &["n2".into(), "n3".into()]);
}

fn overlapping_pod_cidrs_longest_prefix_wins(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.node(1).pod_cidrs = vec![f.wide()];
    let out = case.run();
    // n1 is older, but n2's and n3's prefixes are longer: one conflict each.
    assert_eq!(peers(&out, "n3"), vec![p("n1", &[]), p("n2", &[f.pod(2)])]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[]), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![finding(K::Node, "n1", R::Conflict), finding(K::Node, "n1", R::Conflict)]);
    let out_messages: Vec<_> = out.findings.iter().map(|x| x.message.clone()).collect();
    assert!(out_messages.iter().any(|m| m.contains(&f.pod(2).to_string()) && m.contains("n2")));
    assert!(out_messages.iter().all(|m| m.contains(&f.wide().to_string()) && m.contains("n1")));
}

fn identical_pod_cidrs_oldest_node_then_name_wins(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.node(3).pod_cidrs = vec![f.pod(2)];
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[])]);
    assert_eq!(found(&out), vec![finding(K::Node, "n3", R::Conflict)]);
    // Same age: the name decides.
    case.node(3).created = case.node(2).created;
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[])]);
    // n3 older: n3 keeps it.
    case.node(3).created = 1;
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[]), p("n3", &[f.pod(2)])]);
    assert_eq!(found(&out), vec![finding(K::Node, "n2", R::Conflict)]);
}

// ---- tunnel policy ----

fn tunnel_policy_sets_port_and_keepalive(f: Fam) {
    let out = Case::nodes(f, 2).tunnel("t", 1, None, 51999, Some(25)).run();
    let n1 = state(&out, "n1");
    assert_eq!(n1.settings.listen_port, 51999);
    let peer = &n1.peers[&name(2)];
    assert_eq!(peer.endpoint, SocketAddr::new(f.ip(2), 51999));
    assert_eq!(peer.persistent_keepalive, Some(25));
}

fn oldest_tunnel_policy_wins_then_name(f: Fam) {
    let out = Case::nodes(f, 3)
        .tunnel("young", 20, None, 51000, None)
        .tunnel("old", 10, Some(&[(1, 2)]), 52000, None)
        .run();
    assert_eq!(state(&out, "n1").settings.listen_port, 52000);
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(found(&out), vec![finding(K::TunnelPolicy, "young", R::Conflict)]);
    message_names(&out, R::Conflict, &["young".into(), "old".into()]);
    let out = Case::nodes(f, 2).tunnel("b", 10, None, 51000, None).tunnel("a", 10, None, 52000, None).run();
    assert_eq!(state(&out, "n1").settings.listen_port, 52000);
    assert_eq!(found(&out), vec![finding(K::TunnelPolicy, "b", R::Conflict)]);
}

/// Tunnel > Derived: only the listed pairs peer; the rest is NotPeered.
fn tunnel_beats_derived_explicit_pairs(f: Fam) {
    let out = Case::nodes(f, 3).explicit(&[(2, 1)]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(3), NotPeered)]);
    assert_eq!(peers(&out, "n3"), vec![]);
    assert_eq!(unreachable(&out, "n3"), vec![(f.pod(1), NotPeered), (f.pod(2), NotPeered)]);
    assert_eq!(found(&out), vec![]);
}

fn explicit_pair_unknown_node_and_self_pair_are_reported(f: Fam) {
    let mut case = Case::nodes(f, 3);
    case.inputs.tunnel_policies.push(TunnelPolicyInput {
        name: "t".into(),
        created: 1,
        peering: Peering::Explicit(vec![
            (name(1), name(2)),
            (name(1), NodeName::new("ghost").unwrap()),
            (name(3), name(3)),
        ]),
        listen_port: 51820,
        persistent_keepalive: None,
    });
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(
        found(&out),
        vec![finding(K::TunnelPolicy, "t", R::UnknownNode), finding(K::TunnelPolicy, "t", R::SelfPair)]
    );
    message_names(&out, R::UnknownNode, &["ghost".into()]);
    message_names(&out, R::SelfPair, &["n3".into()]);
}

fn eligibility_still_applies_to_explicit_pairs(f: Fam) {
    let mut case = Case::nodes(f, 3).explicit(&[(1, 2), (1, 3)]);
    case.node(3).ready = false;
    let out = case.run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(3), NotReady)]);
    assert_eq!(unreachable(&out, "n2"), vec![(f.pod(3), NotReady)]);
}

// ---- route policy ----

fn route_adds_cidr_to_target_everywhere_but_on_target(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.ext()])), p("n3", &[f.pod(3)])]);
    assert_eq!(peers(&out, "n3"), vec![p("n1", &[f.pod(1)]), p("n2", &sorted(&[f.pod(2), f.ext()]))]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)]), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![]);
}

trait Sorted {
    fn sorted(self) -> Self;
}

impl Sorted for Vec<Cidr> {
    fn sorted(mut self) -> Self {
        self.sort();
        self
    }
}

fn sorted(cidrs: &[Cidr]) -> Vec<Cidr> {
    cidrs.to_vec().sorted()
}

/// Route > Derived: a route for exactly a node's pod CIDR moves it.
fn route_beats_derived_equal_pod_cidr(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.pod(3), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.pod(3)])), p("n3", &[])]);
    // Not on the target itself.
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)]), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::Overridden)]);
    message_names(&out, R::Overridden, &[f.pod(3).to_string(), "n3".into(), "n2".into()]);
}

/// Route > Derived: a route containing pod CIDRs takes them from their
/// owners (not from its own target).
fn route_beats_derived_containing_pod_cidrs(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.wide(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.wide()])), p("n3", &[])]);
    assert_eq!(peers(&out, "n3"), vec![p("n1", &[]), p("n2", &sorted(&[f.pod(2), f.wide()]))]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)]), p("n3", &[f.pod(3)])]);
    assert_eq!(
        found(&out),
        vec![finding(K::RoutePolicy, "r", R::Overridden), finding(K::RoutePolicy, "r", R::Overridden)]
    );
    // The entries on n1 and n3 for n2 are one shared Arc; n2's view differs.
    assert!(std::sync::Arc::ptr_eq(&state(&out, "n1").peers[&name(2)], &state(&out, "n3").peers[&name(2)]));
}

fn route_inside_pod_cidr_coexists(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.pod_half(3), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.pod_half(3)])), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![]);
}

fn nested_routes_coexist(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2"), (f.ext_half(), "n3")]).run();
    assert_eq!(
        peers(&out, "n1"),
        vec![p("n2", &sorted(&[f.pod(2), f.ext()])), p("n3", &sorted(&[f.pod(3), f.ext_half()]))]
    );
}

fn identical_routes_oldest_policy_then_name_then_target(f: Fam) {
    let out =
        Case::nodes(f, 3).routes("young", 20, &[(f.ext(), "n3")]).routes("old", 10, &[(f.ext(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.ext()])), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "young", R::Conflict)]);
    message_names(&out, R::Conflict, &[f.ext().to_string(), "old".into(), "n2".into(), "n3".into()]);
    let out = Case::nodes(f, 3).routes("b", 10, &[(f.ext(), "n2")]).routes("a", 10, &[(f.ext(), "n3")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &sorted(&[f.pod(3), f.ext()]))]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "b", R::Conflict)]);
    let out = Case::nodes(f, 3).routes("a", 10, &[(f.ext(), "n3"), (f.ext(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.ext()])), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "a", R::Conflict)]);
}

fn identical_route_to_same_target_is_no_conflict(f: Fam) {
    let out = Case::nodes(f, 2).routes("a", 1, &[(f.ext(), "n2")]).routes("b", 2, &[(f.ext(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.ext()]))]);
    assert_eq!(found(&out), vec![]);
}

fn route_via_unknown_node_is_ignored(f: Fam) {
    let out = Case::nodes(f, 2).routes("r", 1, &[(f.ext(), "ghost")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(unreachable(&out, "n1"), vec![]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::UnknownNode)]);
    message_names(&out, R::UnknownNode, &["ghost".into(), f.ext().to_string()]);
}

fn route_via_drained_node_is_unreachable(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]).drain("n2").run();
    // n2 stays a peer for its own pods.
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[f.pod(3)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.ext(), Drained)]);
    assert_eq!(unreachable(&out, "n3"), vec![(f.ext(), Drained)]);
    assert_eq!(unreachable(&out, "n2"), vec![]);
    assert!(state(&out, "n2").settings.drained);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::TargetDrained)]);
    message_names(&out, R::TargetDrained, &[f.ext().to_string(), "n2".into()]);
}

fn drained_route_target_keeps_its_own_pod_cidr(f: Fam) {
    // The route covers every pod CIDR; n2 is drained: the others' pods
    // become unreachable with the route, n2's own stay with n2.
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.wide(), "n2")]).drain("n2").run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.wide(), Drained)]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)]), p("n3", &[f.pod(3)])]);
    assert_eq!(unreachable(&out, "n2"), vec![]);
}

fn route_via_isolated_not_ready_or_keyless_node_is_unreachable(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]).isolate("n2").run();
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), Isolated), (f.ext(), Isolated)].sorted_by_cidr());
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::TargetIsolated)]);

    let mut case = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]);
    case.node(2).ready = false;
    let out = case.run();
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), NotReady), (f.ext(), NotReady)].sorted_by_cidr());
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::TargetNotReady)]);

    let mut case = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]);
    case.node(2).public_key = None;
    let out = case.run();
    assert_eq!(unreachable(&out, "n3"), vec![(f.pod(2), NoKey), (f.ext(), NoKey)].sorted_by_cidr());
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::TargetNoKey)]);

    let mut case = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]);
    case.node(2).deleting = true;
    let out = case.run();
    assert_eq!(unreachable(&out, "n3"), vec![(f.ext(), NotReady)]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::TargetNotReady)]);
}

trait SortedByCidr {
    fn sorted_by_cidr(self) -> Self;
}

impl SortedByCidr for Vec<(Cidr, UnreachableReason)> {
    fn sorted_by_cidr(mut self) -> Self {
        self.sort();
        self
    }
}

/// Route > Tunnel: a node the tunnel policy does not pair with n1 is
/// reached through a route via a node it does pair with.
fn route_beats_tunnel(f: Fam) {
    let out = Case::nodes(f, 3).explicit(&[(1, 2), (2, 3)]).routes("r", 1, &[(f.pod(3), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.pod(3)]))]);
    assert_eq!(unreachable(&out, "n1"), vec![]);
    assert_eq!(peers(&out, "n3"), vec![p("n2", &sorted(&[f.pod(2), f.pod(3)]))]);
}

fn route_to_unpeered_target_is_not_peered(f: Fam) {
    let out = Case::nodes(f, 3).explicit(&[(1, 3), (2, 3)]).routes("r", 1, &[(f.ext(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n3", &[f.pod(3)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), NotPeered), (f.ext(), NotPeered)].sorted_by_cidr());
    assert_eq!(peers(&out, "n3"), vec![p("n1", &[f.pod(1)]), p("n2", &sorted(&[f.pod(2), f.ext()]))]);
    // A route the viewer cannot use leaves the pod CIDR it equals with its owner.
    let out = Case::nodes(f, 3).explicit(&[(1, 3), (2, 3)]).routes("r", 1, &[(f.pod(3), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n3", &[f.pod(3)])]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), NotPeered)]);
}

// ---- block policy ----

// ---- guards: what routes and blocks must not cover ----

fn default_route_is_refused_unless_the_policy_opts_in(f: Fam) {
    let out = Case::nodes(f, 3).routes("egress", 1, &[(f.any(), "n2")]).run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[f.pod(3)])]);
    assert_eq!(unreachable(&out, "n1"), vec![]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "egress", R::DefaultRoute)]);
    message_names(&out, R::DefaultRoute, &[f.any().to_string(), "n2".into(), "allowEgressViaNode".into()]);

    // Opted in, it is a route like any other: it also takes the pod CIDRs
    // inside it (RoutePolicy beats derived), n3's included.
    let out = Case::nodes(f, 3).routes("egress", 1, &[(f.any(), "n2")]).egress_opt_in().run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.any(), f.pod(2)])), p("n3", &[])]);
    assert!(!found(&out).iter().any(|(_, _, r)| *r == R::DefaultRoute), "{:?}", found(&out));
}

fn route_covering_node_addresses_is_refused_unless_the_policy_opts_in(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.underlay(), "n2"), (f.ext(), "n3")]).run();
    // The safe route of the same policy still applies.
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &sorted(&[f.pod(3), f.ext()]))]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::CoversNodeAddress)]);
    message_names(&out, R::CoversNodeAddress, &[f.underlay().to_string(), f.ip(1).to_string(), "n1".into()]);

    let out = Case::nodes(f, 3).routes("r", 1, &[(f.underlay(), "n2")]).egress_opt_in().run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.underlay()])), p("n3", &[f.pod(3)])]);
    assert_eq!(found(&out), vec![]);
}

fn route_into_a_service_cidr_is_refused_unless_the_policy_opts_in(f: Fam) {
    let case =
        || Case::nodes(f, 2).service_cidrs(&[f.services()]).routes("r", 1, &[(f.services_part(), "n2")]);
    let out = case().run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(found(&out), vec![finding(K::RoutePolicy, "r", R::CoversServiceCidr)]);
    message_names(&out, R::CoversServiceCidr, &[f.services_part().to_string(), f.services().to_string()]);

    let out = case().egress_opt_in().run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &sorted(&[f.pod(2), f.services_part()]))]);
    assert_eq!(found(&out), vec![]);

    // Without a Service CIDR configured, the same route is just a route.
    let out = Case::nodes(f, 2).routes("r", 1, &[(f.services_part(), "n2")]).run();
    assert_eq!(found(&out), vec![]);
}

fn block_covering_node_addresses_is_refused(f: Fam) {
    let out =
        Case::nodes(f, 3).blocks("b", &[(f.pod(1), f.any(), false), (f.pod(1), f.pod(2), false)], &[]).run();
    // The block into everything would cut the underlay: refused; the
    // narrow one of the same policy applies.
    assert_eq!(blocks(&out, "n1"), vec![rule(f.pod(1), f.pod(2))]);
    assert_eq!(blocks(&out, "n3"), vec![]);
    assert_eq!(found(&out), vec![finding(K::BlockPolicy, "b", R::CoversUnderlay)]);
    message_names(&out, R::CoversUnderlay, &[f.any().to_string(), f.ip(1).to_string()]);

    let out = Case::nodes(f, 3).blocks("b", &[(f.underlay(), f.pod(2), true)], &[]).run();
    assert_eq!(blocks(&out, "n2"), vec![]);
    assert_eq!(found(&out), vec![finding(K::BlockPolicy, "b", R::CoversUnderlay)]);
}

fn block_is_enforced_by_sender_and_receiver_only(f: Fam) {
    let out = Case::nodes(f, 3).blocks("b", &[(f.pod(1), f.pod(2), false)], &[]).run();
    assert_eq!(blocks(&out, "n1"), vec![rule(f.pod(1), f.pod(2))]);
    assert_eq!(blocks(&out, "n2"), vec![rule(f.pod(1), f.pod(2))]);
    assert_eq!(blocks(&out, "n3"), vec![]);
    // Blocks make nothing unreachable and change no peer.
    assert_eq!(unreachable(&out, "n1"), vec![]);
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[f.pod(3)])]);
}

fn bidirectional_block_is_two_rules(f: Fam) {
    let out = Case::nodes(f, 3).blocks("b", &[(f.pod_half(1), f.pod(2), true)], &[]).run();
    let both = vec![rule(f.pod_half(1), f.pod(2)), rule(f.pod(2), f.pod_half(1))];
    let mut expected = both.clone();
    expected.sort();
    assert_eq!(blocks(&out, "n1"), expected);
    assert_eq!(blocks(&out, "n2"), expected);
    assert_eq!(blocks(&out, "n3"), vec![]);
}

fn block_on_wide_cidr_reaches_every_node(f: Fam) {
    let out = Case::nodes(f, 3).blocks("b", &[(f.wide(), f.ext(), false)], &[]).run();
    for n in ["n1", "n2", "n3"] {
        assert_eq!(blocks(&out, n), vec![rule(f.wide(), f.ext())], "{n}");
    }
}

fn block_with_mixed_families_is_skipped(f: Fam) {
    let out = Case::nodes(f, 2).blocks("b", &[(f.pod(1), f.other().pod(2), true)], &[]).run();
    assert_eq!(blocks(&out, "n1"), vec![]);
    assert_eq!(found(&out), vec![finding(K::BlockPolicy, "b", R::FamilyMismatch)]);
    message_names(&out, R::FamilyMismatch, &[f.pod(1).to_string(), f.other().pod(2).to_string()]);
}

/// Block > Route: the route target enforces blocks on what it routes.
fn block_beats_route(f: Fam) {
    let out = Case::nodes(f, 3)
        .routes("r", 1, &[(f.ext(), "n2")])
        .blocks("b", &[(f.pod(1), f.ext_half(), false)], &[])
        .run();
    assert_eq!(blocks(&out, "n1"), vec![rule(f.pod(1), f.ext_half())]);
    assert_eq!(blocks(&out, "n2"), vec![rule(f.pod(1), f.ext_half())]);
    assert_eq!(blocks(&out, "n3"), vec![]);
    // Isolating the route target: the route is unreachable, not routed.
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n2")]).isolate("n2").run();
    assert_eq!(peers(&out, "n1"), vec![p("n3", &[f.pod(3)])]);
}

/// Block > Tunnel: an explicit pair is still blocked, and isolation cuts it.
fn block_beats_tunnel(f: Fam) {
    let out = Case::nodes(f, 3).explicit(&[(1, 2)]).blocks("b", &[(f.pod(2), f.pod(1), false)], &[]).run();
    assert_eq!(blocks(&out, "n1"), vec![rule(f.pod(2), f.pod(1))]);
    assert_eq!(blocks(&out, "n2"), vec![rule(f.pod(2), f.pod(1))]);
    let out = Case::nodes(f, 3).explicit(&[(1, 2)]).isolate("n2").run();
    assert_eq!(peers(&out, "n1"), vec![]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), Isolated), (f.pod(3), NotPeered)]);
}

/// Block > Derived: an isolated node is in nobody's peer set, has no peers
/// and sees every remote CIDR as Isolated.
fn block_beats_derived_isolate(f: Fam) {
    let out = Case::nodes(f, 3).routes("r", 1, &[(f.ext(), "n3")]).isolate("n2").run();
    assert_eq!(peers(&out, "n1"), vec![p("n3", &sorted(&[f.pod(3), f.ext()]))]);
    assert_eq!(unreachable(&out, "n1"), vec![(f.pod(2), Isolated)]);
    let n2 = state(&out, "n2");
    assert!(n2.settings.isolated && !n2.settings.drained);
    assert_eq!(peers(&out, "n2"), vec![]);
    assert_eq!(
        unreachable(&out, "n2"),
        vec![(f.pod(1), Isolated), (f.pod(3), Isolated), (f.ext(), Isolated)].sorted_by_cidr()
    );
}

fn drain_keeps_node_a_peer(f: Fam) {
    let out = Case::nodes(f, 3).drain("n2").run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)]), p("n3", &[f.pod(3)])]);
    assert_eq!(peers(&out, "n2"), vec![p("n1", &[f.pod(1)]), p("n3", &[f.pod(3)])]);
    let n2 = state(&out, "n2");
    assert!(n2.settings.drained && !n2.settings.isolated);
    assert_eq!(found(&out), vec![]);
}

fn isolate_beats_drain(f: Fam) {
    let out = Case::nodes(f, 2).drain("n2").isolate("n2").run();
    let n2 = state(&out, "n2");
    assert!(n2.settings.isolated && !n2.settings.drained);
    assert_eq!(peers(&out, "n1"), vec![]);
    assert_eq!(found(&out), vec![finding(K::BlockPolicy, "drain", R::Overridden)]);
}

fn block_policy_naming_unknown_node(f: Fam) {
    let out = Case::nodes(f, 2).isolate("ghost").drain("phantom").run();
    assert_eq!(peers(&out, "n1"), vec![p("n2", &[f.pod(2)])]);
    assert_eq!(
        found(&out),
        vec![
            finding(K::BlockPolicy, "drain", R::UnknownNode),
            finding(K::BlockPolicy, "isolate", R::UnknownNode)
        ]
    );
}

fn isolated_node_still_enforces_its_blocks(f: Fam) {
    let out =
        Case::nodes(f, 2).blocks("b", &[(f.pod(1), f.pod(2), false)], &[("n2", NodeAction::Isolate)]).run();
    assert_eq!(blocks(&out, "n2"), vec![rule(f.pod(1), f.pod(2))]);
}

both_families!(
    derived_full_mesh,
    dual_stack_node_keeps_both_families,
    not_ready_node_is_unreachable_and_has_no_peers,
    keyless_node_is_unreachable_with_no_key,
    unreachable_reason_precedence_isolated_not_ready_no_key,
    deleting_node_is_absent,
    node_without_internal_ip_or_pod_cidr_is_not_ready,
    duplicate_public_key_stays_with_older_node,
    overlapping_pod_cidrs_longest_prefix_wins,
    identical_pod_cidrs_oldest_node_then_name_wins,
    tunnel_policy_sets_port_and_keepalive,
    oldest_tunnel_policy_wins_then_name,
    tunnel_beats_derived_explicit_pairs,
    explicit_pair_unknown_node_and_self_pair_are_reported,
    eligibility_still_applies_to_explicit_pairs,
    route_adds_cidr_to_target_everywhere_but_on_target,
    route_beats_derived_equal_pod_cidr,
    route_beats_derived_containing_pod_cidrs,
    route_inside_pod_cidr_coexists,
    nested_routes_coexist,
    identical_routes_oldest_policy_then_name_then_target,
    identical_route_to_same_target_is_no_conflict,
    route_via_unknown_node_is_ignored,
    route_via_drained_node_is_unreachable,
    drained_route_target_keeps_its_own_pod_cidr,
    route_via_isolated_not_ready_or_keyless_node_is_unreachable,
    route_beats_tunnel,
    route_to_unpeered_target_is_not_peered,
    default_route_is_refused_unless_the_policy_opts_in,
    route_covering_node_addresses_is_refused_unless_the_policy_opts_in,
    route_into_a_service_cidr_is_refused_unless_the_policy_opts_in,
    block_covering_node_addresses_is_refused,
    block_is_enforced_by_sender_and_receiver_only,
    bidirectional_block_is_two_rules,
    block_on_wide_cidr_reaches_every_node,
    block_with_mixed_families_is_skipped,
    block_beats_route,
    block_beats_tunnel,
    block_beats_derived_isolate,
    drain_keeps_node_a_peer,
    isolate_beats_drain,
    block_policy_naming_unknown_node,
    isolated_node_still_enforces_its_blocks,
);

/// Large enough for `compute` to split the nodes over two threads and
/// build maps by cloning the shared mesh; `compute_node` builds them one by
/// one. Routes give some peers per-viewer entries.
fn large_cluster_over_two_threads_agrees_with_compute_node(f: Fam) {
    let count: u16 = 600;
    let pod = |i: u16| match f {
        Fam::V4 => cidr(&format!("10.{}.{}.0/24", i >> 8, i & 0xff)),
        Fam::V6 => cidr(&format!("fd00:0:{:x}::/64", i)),
    };
    let nodes = (0..count)
        .map(|i| NodeInput {
            name: NodeName::new(format!("node-{i:03}")).unwrap(),
            internal_ip: Some(f.ip((i % 250) as u8)),
            pod_cidrs: vec![pod(i)],
            ready: i % 97 != 5,
            deleting: i % 101 == 7,
            public_key: Some(PublicKey::from_bytes({
                let mut k = [9u8; 32];
                k[..2].copy_from_slice(&i.to_le_bytes());
                k
            })),
            created: i64::from(i),
        })
        .collect();
    let mut case = Case { f, inputs: Inputs { nodes, ..Inputs::default() } };
    let wide = match f {
        Fam::V4 => cidr("10.0.0.0/23"),
        Fam::V6 => cidr("fd00:0:0::/55"),
    };
    case = case.routes("r", 1, &[(wide, "node-300"), (f.ext(), "node-301"), (pod(42), "node-043")]).blocks(
        "b",
        &[(pod(1), pod(2), true)],
        &[("node-301", NodeAction::Drain)],
    );
    let out = compute(&case.inputs);
    assert_eq!(out.nodes.len(), usize::from(count) - 6);
    for (i, (node, state)) in out.nodes.iter().enumerate() {
        state.validate().unwrap();
        if i % 7 == 0 || ["node-000", "node-042", "node-043", "node-300", "node-301"].contains(&node.as_str())
        {
            assert_eq!(compute_node(&case.inputs, node).as_ref(), Some(state), "{f:?}: {node}");
        }
    }
    let on = |viewer: &str, peer: &str| {
        out.nodes[&NodeName::new(viewer).unwrap()].peers[&NodeName::new(peer).unwrap()].allowed_ips.clone()
    };
    let overridden = match f {
        Fam::V4 => 3, // pod 0 and 1 by the /23, pod 42
        Fam::V6 => 2, // pod 0 by the /55, pod 42
    };
    let mut expected = vec![finding(K::RoutePolicy, "r", R::TargetDrained)];
    expected.extend(std::iter::repeat_n(finding(K::RoutePolicy, "r", R::Overridden), overridden));
    expected.sort();
    assert_eq!(found(&out), expected);
    // The wide route takes node-000's pod CIDR, except on its target.
    assert_eq!(on("node-010", "node-000"), Vec::<Cidr>::new());
    assert_eq!(on("node-300", "node-000"), vec![pod(0)]);
    assert_eq!(on("node-043", "node-042"), vec![pod(42)]);
    assert_eq!(on("node-010", "node-042"), Vec::<Cidr>::new());
    assert_eq!(unreachable(&out, "node-010"), {
        let mut v = vec![(f.ext(), Drained), (pod(5), NotReady), (pod(102), NotReady), (pod(199), NotReady)];
        v.extend([(pod(296), NotReady), (pod(393), NotReady), (pod(490), NotReady), (pod(587), NotReady)]);
        v.sort();
        v
    });
}

both_families!(large_cluster_over_two_threads_agrees_with_compute_node);

// ---- key rotation --------------------------------------------------------

/// Node `i`'s lane endpoint (the default listen port plus one).
fn lane_endpoint(f: Fam, i: u8) -> SocketAddr {
    SocketAddr::new(f.ip(i), 51821)
}

/// `node`'s lane: (peer, key, endpoint, allowed IPs), or `None` when the
/// node takes no part in the rotation.
#[allow(clippy::type_complexity)]
fn lane(out: &Output, node: &str) -> Option<Vec<(String, PublicKey, SocketAddr, Vec<Cidr>)>> {
    let rotation = out.nodes[&NodeName::new(node).unwrap()].rotation.as_ref()?;
    Some(
        rotation
            .lane
            .values()
            .map(|p| (p.node.to_string(), p.public_key, p.endpoint, p.allowed_ips.clone()))
            .collect(),
    )
}

fn main_key(out: &Output, viewer: &str, peer: &str) -> PublicKey {
    out.nodes[&NodeName::new(viewer).unwrap()].peers[&NodeName::new(peer).unwrap()].public_key
}

fn rotation_prepare_marks_the_node_and_its_peers_with_empty_lanes(f: Fam) {
    // The new key is known once Prepare reported it, but lanes wait for Distribute.
    for new in [None, Some(9)] {
        let out = Case::nodes(f, 3).rotating(1, 7, RotationPhase::Prepare, new).run();
        for node in ["n1", "n2", "n3"] {
            let rotation = out.nodes[&NodeName::new(node).unwrap()].rotation.as_ref().expect(node);
            assert_eq!(
                (rotation.id, rotation.phase, rotation.node.as_str()),
                (7, RotationPhase::Prepare, "n1")
            );
            assert_eq!(rotation.new_public_key, new.map(key));
            assert!(rotation.lane.is_empty(), "{f:?}: {node}'s lane is empty in Prepare");
        }
        assert_eq!(main_key(&out, "n2", "n1"), key(1));
    }
}

fn rotation_without_a_known_key_leaves_the_lanes_empty(f: Fam) {
    let out = Case::nodes(f, 2).rotating(1, 7, RotationPhase::Distribute, None).run();
    assert_eq!(lane(&out, "n1"), Some(vec![]));
    assert_eq!(lane(&out, "n2"), Some(vec![]));
}

fn rotation_distribute_fills_the_lanes(f: Fam) {
    let out = Case::nodes(f, 3).rotating(1, 7, RotationPhase::Distribute, Some(9)).run();
    // The rotating node's lane: every peer under its current key, at its lane port.
    assert_eq!(
        lane(&out, "n1"),
        Some(vec![
            ("n2".into(), key(2), lane_endpoint(f, 2), vec![f.pod(2)]),
            ("n3".into(), key(3), lane_endpoint(f, 3), vec![f.pod(3)]),
        ])
    );
    // A peer's lane: the rotating node alone, under its new key.
    for peer in ["n2", "n3"] {
        assert_eq!(lane(&out, peer), Some(vec![("n1".into(), key(9), lane_endpoint(f, 1), vec![f.pod(1)])]));
        assert_eq!(main_key(&out, peer, "n1"), key(1), "{f:?}: main keeps the old key before Retire");
    }
    let state = &out.nodes[&name(1)];
    assert_eq!(state.settings.lane_port, 51821);
}

fn rotation_retire_and_settle_put_the_new_key_on_the_main_entry(f: Fam) {
    for phase in [RotationPhase::Retire, RotationPhase::Settle] {
        let out = Case::nodes(f, 3).rotating(1, 7, phase, Some(9)).run();
        for peer in ["n2", "n3"] {
            assert_eq!(main_key(&out, peer, "n1"), key(9), "{f:?}: {peer} in {phase}");
            assert_eq!(lane(&out, peer).map(|l| l.len()), Some(1));
        }
        assert_eq!(main_key(&out, "n2", "n3"), key(3), "{f:?}: other entries keep their keys");
        assert_eq!(main_key(&out, "n1", "n2"), key(2));
    }
}

fn rotation_rollback_keeps_the_old_key_on_main(f: Fam) {
    let out = Case::nodes(f, 2).rotating(1, 7, RotationPhase::Rollback, Some(9)).run();
    assert_eq!(main_key(&out, "n2", "n1"), key(1));
    let rotation = out.nodes[&name(2)].rotation.as_ref().expect("n2 takes part");
    assert_eq!(rotation.phase, RotationPhase::Rollback);
    assert_eq!(lane(&out, "n2").map(|l| l.len()), Some(1), "lanes stay until the daemons moved back");
}

fn rotation_reaches_only_the_nodes_peering_the_rotating_one(f: Fam) {
    let out = Case::nodes(f, 3).explicit(&[(1, 2)]).rotating(1, 7, RotationPhase::Activate, Some(9)).run();
    assert_eq!(lane(&out, "n1").map(|l| l.len()), Some(1), "{f:?}: only n2 is n1's peer");
    assert!(lane(&out, "n2").is_some());
    assert_eq!(lane(&out, "n3"), None, "{f:?}: n3 does not peer n1");
    // An isolated node's peers drop it, and with it the rotation.
    let out = Case::nodes(f, 3).isolate("n1").rotating(1, 7, RotationPhase::Activate, Some(9)).run();
    assert_eq!(lane(&out, "n1"), Some(vec![]));
    assert_eq!((lane(&out, "n2"), lane(&out, "n3")), (None, None));
}

fn rotation_of_a_gone_node_reaches_nobody(f: Fam) {
    let mut case = Case::nodes(f, 2).rotating(1, 7, RotationPhase::Activate, Some(9));
    case.node(1).deleting = true;
    let out = case.run();
    assert_eq!(lane(&out, "n2"), None);
}

fn only_the_first_rotation_by_node_name_applies_and_the_others_are_reported(f: Fam) {
    let out = Case::nodes(f, 3)
        .rotating(3, 5, RotationPhase::Distribute, Some(8))
        .rotating(2, 6, RotationPhase::Prepare, Some(9))
        .run();
    let rotation = out.nodes[&name(1)].rotation.as_ref().expect("n1 peers n2");
    assert_eq!((rotation.node.as_str(), rotation.id), ("n2", 6));
    assert!(out.nodes.values().all(|s| s.rotation.as_ref().is_some_and(|r| r.node == name(2))));
    assert_eq!(found(&out), vec![finding(K::Node, "n3", R::Conflict)]);
    message_names(&out, R::Conflict, &["n3".into(), "n2".into()]);
}

both_families!(
    rotation_prepare_marks_the_node_and_its_peers_with_empty_lanes,
    rotation_without_a_known_key_leaves_the_lanes_empty,
    rotation_distribute_fills_the_lanes,
    rotation_retire_and_settle_put_the_new_key_on_the_main_entry,
    rotation_rollback_keeps_the_old_key_on_main,
    rotation_reaches_only_the_nodes_peering_the_rotating_one,
    rotation_of_a_gone_node_reaches_nobody,
    only_the_first_rotation_by_node_name_applies_and_the_others_are_reported,
);
