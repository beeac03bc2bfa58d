//! One node's desired state, assembled from the index: its peers (shared
//! `Arc<Peer>` entries), the blocks it enforces, the CIDRs it cannot reach.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use vpblu_messages::{
    Cidr, NodeDesiredState, NodeName, Peer, PeerMap, SelfSettings, Unreachable, UnreachableReason,
};

use super::blocks;
use super::index::Index;
use super::nodes::{Standing, severer};

/// Who a set of entries is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Viewers {
    /// A single node (`compute_node`).
    One,
    /// Many nodes on one thread (`compute`).
    Many,
}

/// What the previous computation produced, for the next to reuse: the
/// same `Arc<Peer>` for every entry that did not change, and the previous
/// full-mesh tree to build the new one on, so that states that did not
/// change share their trees with the previous ones (persistent maps) and
/// compare with them in time proportional to what changed, not N².
#[derive(Debug, Default)]
pub struct Previous {
    peers: HashMap<NodeName, Arc<Peer>>,
    mesh: Option<PeerMap>,
}

impl Previous {
    /// What `states` (a previous output's) offer for reuse. In a full mesh
    /// two states tell it all (any node's peers are the mesh but itself,
    /// another's hold that one); otherwise it reads on until every node
    /// with a state is known as a peer, or the states end. Values decide:
    /// an entry or a tree from here is reused only where it equals what is
    /// computed anew.
    pub fn of<'a>(states: impl IntoIterator<Item = &'a NodeDesiredState>) -> Previous {
        let states: Vec<&NodeDesiredState> = states.into_iter().collect();
        let mut with_peers = states.iter().filter(|s| !s.peers.is_empty());
        let Some(base) = with_peers.next() else { return Previous::default() };
        let mut peers: HashMap<NodeName, Arc<Peer>> =
            base.peers.iter().map(|(name, peer)| (name.clone(), Arc::clone(peer))).collect();
        for state in with_peers {
            if peers.len() >= states.len() {
                break;
            }
            for (name, peer) in &state.peers {
                peers.entry(name.clone()).or_insert_with(|| Arc::clone(peer));
            }
        }
        let mut mesh = base.peers.clone();
        if let Some(own) = peers.get(&base.node) {
            mesh.insert(base.node.clone(), Arc::clone(own));
        }
        Previous { peers, mesh: Some(mesh) }
    }

    /// `built`, as the previous entry when that one is equal.
    fn reuse(&self, built: Peer) -> Arc<Peer> {
        match self.peers.get(&built.node) {
            Some(old) if **old == built => Arc::clone(old),
            _ => Arc::new(built),
        }
    }

    /// `fresh` as an edit of the previous mesh: the same entries, sharing
    /// every subtree the edit does not touch.
    fn rebase(&self, fresh: PeerMap) -> PeerMap {
        let Some(previous) = &self.mesh else { return fresh };
        let mut out = previous.clone();
        for (name, entry) in &fresh {
            if !out.get(name).is_some_and(|old| Arc::ptr_eq(old, entry) || old == entry) {
                out.insert(name.clone(), Arc::clone(entry));
            }
        }
        if out.len() != fresh.len() {
            let gone: Vec<NodeName> = out.keys().filter(|name| !fresh.contains_key(*name)).cloned().collect();
            for name in &gone {
                out.remove(name);
            }
        }
        out
    }
}

/// Peer entries built so far, shared by every viewer that sees the same
/// entry. A peer's entry is the same on every viewer except where a route
/// overriding one of its pod CIDRs does not apply (on the route's target,
/// or off its peering), so most peers have a single entry.
#[derive(Debug)]
pub(super) struct Entries<'p> {
    viewers: Viewers,
    previous: &'p Previous,
    /// The entry with every override applied, per node, built on first use.
    common: Vec<Option<Arc<Peer>>>,
    /// Other entries, by node and the set of its pod CIDRs removed.
    variants: HashMap<(usize, u64), Arc<Peer>>,
    /// In a full mesh, every eligible node's common entry: each viewer's
    /// peer map is a clone of it, minus the viewer, plus its variants.
    /// Cloning copies the tree as it is, without comparing any keys.
    mesh: Option<PeerMap>,
}

impl<'p> Entries<'p> {
    pub(super) fn new(index: &Index<'_>, viewers: Viewers, previous: &'p Previous) -> Self {
        Entries {
            viewers,
            previous,
            common: vec![None; index.nodes.nodes.len()],
            variants: HashMap::new(),
            mesh: None,
        }
    }

    /// Peer `p`'s entry as eligible node `viewer` sees it.
    fn get(&mut self, index: &Index<'_>, p: usize, viewer: usize) -> Arc<Peer> {
        let overrides = &index.claims.overrides[p];
        if overrides.is_empty() || index.claims.owned[p].len() > 64 {
            if overrides.is_empty() {
                return self.common(index, p);
            }
            // More than 64 pod CIDRs on one node: too odd to cache.
            let removed =
                |position| index.claims.overridden(p, position, |route| index.in_effect(route, viewer));
            return Arc::new(self.build(index, p, &removed));
        }
        let (mut all, mut removed) = (0u64, 0u64);
        for o in overrides {
            all |= 1 << o.position;
            if index.in_effect(&index.claims.routes[o.route], viewer) {
                removed |= 1 << o.position;
            }
        }
        if removed == all {
            return self.common(index, p);
        }
        if let Some(entry) = self.variants.get(&(p, removed)) {
            return entry.clone();
        }
        let entry = Arc::new(self.build(index, p, &|position| removed & (1 << position) != 0));
        self.variants.insert((p, removed), entry.clone());
        entry
    }

    fn common(&mut self, index: &Index<'_>, p: usize) -> Arc<Peer> {
        if let Some(entry) = &self.common[p] {
            return entry.clone();
        }
        let overrides = &index.claims.overrides[p];
        let entry = self
            .previous
            .reuse(self.build(index, p, &|position| overrides.iter().any(|o| o.position == position)));
        self.common[p] = Some(entry.clone());
        entry
    }

    /// Peer `p` (eligible) with the pod CIDRs at `removed` positions left out.
    fn build(&self, index: &Index<'_>, p: usize, removed: &dyn Fn(usize) -> bool) -> Peer {
        let node = &index.nodes.nodes[p];
        let claims = &index.claims;
        let mut allowed_ips: Vec<Cidr> = claims.owned[p]
            .iter()
            .enumerate()
            .filter(|(position, _)| !removed(*position))
            .map(|(_, cidr)| *cidr)
            .collect();
        let routed = claims.via[p].iter().map(|&r| &claims.routes[r]).filter(|r| r.blocked.is_none());
        allowed_ips.extend(routed.map(|r| r.cidr));
        allowed_ips.sort_unstable();
        allowed_ips.dedup();
        // For many viewers on one thread, entries get their own copies of
        // node names: reference counts are then private to the thread, and
        // two threads do not fight over the same cache lines 25 million times.
        let name = if self.viewers == Viewers::Many {
            NodeName::new(node.name().as_str()).unwrap_or_else(|_| node.name().clone())
        } else {
            node.name().clone()
        };
        // Eligible nodes always have both; the fallbacks are never taken.
        let ip = node.input.internal_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        Peer {
            node: name,
            public_key: node.key.unwrap_or(vpblu_messages::PublicKey::from_bytes([0; 32])),
            endpoint: SocketAddr::new(ip, index.tunnel.listen_port),
            allowed_ips,
            persistent_keepalive: index.tunnel.keepalive,
        }
    }
}

impl Index<'_> {
    /// The state of live node `n`.
    pub(super) fn node_state(&self, n: usize, entries: &mut Entries) -> NodeDesiredState {
        let node = &self.nodes.nodes[n];
        let (peers, unreachable) = match node.standing {
            Standing::Eligible => (self.peers_of(n, entries), self.unreachable_from(n)),
            Standing::Ineligible(reason) => (PeerMap::new(), self.all_unreachable(n, reason)),
            // Callers only ask for live nodes.
            Standing::Gone => (PeerMap::new(), BTreeSet::new()),
        };
        NodeDesiredState {
            node: node.name().clone(),
            settings: SelfSettings {
                listen_port: self.tunnel.listen_port,
                lane_port: lane_port(self.tunnel.listen_port),
                isolated: node.isolated,
                drained: node.drained,
                pod_cidrs: node.pod_cidrs.to_vec(),
            },
            peers,
            blocks: self.blocks_of(n),
            unreachable,
            rotation: None,
        }
    }
}

/// The lane device's port: the one after the main listen port (the one
/// before when the main port is the last one).
pub(super) fn lane_port(listen_port: u16) -> u16 {
    listen_port.checked_add(1).unwrap_or(listen_port - 1)
}

impl Index<'_> {
    /// Eligible `n`'s peers: every eligible node the tunnel policy pairs
    /// it with, in name order, so the map is built from a sorted run.
    fn peers_of(&self, n: usize, entries: &mut Entries) -> PeerMap {
        if self.tunnel.is_full_mesh() && entries.viewers == Viewers::Many {
            if entries.mesh.is_none() {
                let fresh: PeerMap = self
                    .eligible
                    .iter()
                    .map(|&p| entries.common(self, p))
                    .map(|e| (e.node.clone(), e))
                    .collect();
                entries.mesh = Some(entries.previous.rebase(fresh));
            }
            let mut peers = entries.mesh.clone().unwrap_or_default();
            peers.remove(self.nodes.nodes[n].name());
            for &p in &self.overridden {
                if p == n {
                    continue;
                }
                let entry = entries.get(self, p, n);
                if let Some(slot) = peers.get_mut(self.nodes.nodes[p].name())
                    && !Arc::ptr_eq(slot, &entry)
                {
                    *slot = entry;
                }
            }
            return peers;
        }
        let mut peers = Vec::with_capacity(self.eligible.len());
        for &p in &self.eligible {
            if p != n && self.tunnel.allows(n, p) {
                let entry = entries.get(self, p, n);
                peers.push((entry.node.clone(), entry));
            }
        }
        peers.into_iter().collect()
    }

    /// What eligible `n` has no tunnel to: the pod CIDRs of nodes that are
    /// not eligible or not peered, and routes whose target cannot carry
    /// them or is not peered. Pod CIDRs under a route in effect belong to
    /// the route; a CIDR that is also routed to a peer is not listed.
    fn unreachable_from(&self, n: usize) -> BTreeSet<Unreachable> {
        let claims = &self.claims;
        let overridden =
            |o: usize, position: usize| claims.overridden(o, position, |route| self.in_effect(route, n));
        let mut out: Vec<(Cidr, UnreachableReason)> = Vec::new();
        let pods_of = |o: usize, reason: UnreachableReason, out: &mut Vec<_>| {
            for (position, cidr) in claims.owned[o].iter().enumerate() {
                if !overridden(o, position) {
                    out.push((*cidr, reason));
                }
            }
        };
        for &o in &self.ineligible {
            if let Standing::Ineligible(reason) = self.nodes.nodes[o].standing {
                pods_of(o, reason, &mut out);
            }
        }
        if !self.tunnel.is_full_mesh() {
            for &o in &self.eligible {
                if o != n && !self.tunnel.allows(n, o) {
                    pods_of(o, UnreachableReason::NotPeered, &mut out);
                }
            }
        }
        for route in &claims.routes {
            if route.via == n {
                continue;
            }
            let reason = match route.blocked {
                Some(reason) => reason,
                None if self.tunnel.allows(n, route.via) => continue,
                None => UnreachableReason::NotPeered,
            };
            let routed_to_owner = claims
                .owner(&route.cidr)
                .is_some_and(|(o, position)| self.peered(n, o) && !overridden(o, position));
            if !routed_to_owner {
                out.push((route.cidr, reason));
            }
        }
        settle_unreachable(out)
    }

    /// What `n`, which cannot be a peer itself, cannot reach: every remote
    /// CIDR, for its own reason or the remote one, whichever is severer.
    fn all_unreachable(&self, n: usize, own: UnreachableReason) -> BTreeSet<Unreachable> {
        let mut out: Vec<(Cidr, UnreachableReason)> = Vec::new();
        for (o, node) in self.nodes.nodes.iter().enumerate() {
            if o == n || !node.is_live() {
                continue;
            }
            let reason = match node.standing {
                Standing::Ineligible(remote) => severer(own, remote),
                Standing::Eligible | Standing::Gone => own,
            };
            out.extend(self.claims.owned[o].iter().map(|cidr| (*cidr, reason)));
        }
        for route in &self.claims.routes {
            if route.via != n {
                out.push((route.cidr, route.blocked.map_or(own, |remote| severer(own, remote))));
            }
        }
        settle_unreachable(out)
    }

    /// The rules `n` enforces: those touching a CIDR local to it (its pod
    /// CIDRs and the routes that go via it).
    fn blocks_of(&self, n: usize) -> BTreeSet<vpblu_messages::BlockRule> {
        if self.blocks.is_empty() {
            return BTreeSet::new();
        }
        let pods = self.nodes.nodes[n].pod_cidrs.iter();
        let local = pods.chain(self.claims.via[n].iter().map(|&r| &self.claims.routes[r].cidr));
        self.blocks.iter().filter(|rule| local.clone().any(|c| blocks::enforces(rule, c))).copied().collect()
    }
}

/// One reason per CIDR, the severest.
fn settle_unreachable(mut out: Vec<(Cidr, UnreachableReason)>) -> BTreeSet<Unreachable> {
    out.sort_unstable_by_key(|(cidr, _)| *cidr);
    let mut settled: Vec<Unreachable> = Vec::with_capacity(out.len());
    for (cidr, reason) in out {
        match settled.last_mut() {
            Some(last) if last.cidr == cidr => last.reason = severer(last.reason, reason),
            _ => settled.push(Unreachable { cidr, reason }),
        }
    }
    settled.into_iter().collect()
}
