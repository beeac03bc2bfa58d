//! A key rotation in progress, laid over the computed states.
//!
//! The rotating node R and every node whose peers include R take part:
//! each gets `rotation = Some(..)` with the rotation's id, phase and new
//! key, and the peers of its *lane* device. The lane stays empty while the
//! phase is Prepare or the new key is not known yet; otherwise
//!
//! - on R it holds every main peer P of R, under P's current key, at P's
//!   lane endpoint (P's IP, its lane port);
//! - on a peer N it holds R alone: N's main entry for R with R's new key,
//!   at R's lane endpoint.
//!
//! From Retire on (`main_uses_new_key`), N's main entry for R carries the
//! new key too. Entries are built once per distinct main entry and shared,
//! as the main peers are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use vpblu_messages::{NodeDesiredState, NodeRotation, Peer, PeerMap, PublicKey, RotationPhase};

use super::findings::{FindingReason, Findings, SubjectKind};
use super::inputs::RotationInput;
use super::view::lane_port;

/// The rotation in effect: the first by node name (then id). Every other
/// one is reported on its node and ignored.
pub(super) fn in_effect<'a>(
    rotations: &'a [RotationInput],
    findings: &mut Findings,
) -> Option<&'a RotationInput> {
    let first = rotations.iter().min()?;
    for other in rotations.iter().filter(|r| *r != first) {
        findings.push(
            SubjectKind::Node,
            other.node.as_str(),
            FindingReason::Conflict,
            format!(
                "VpbluNode {} records rotation {} in phase {} while the rotation of node {} runs; only one \
                 node rotates at a time, so this one is ignored until the rotation scheduler ends it",
                other.node, other.id, other.phase, first.node
            ),
        );
    }
    Some(first)
}

/// Lays one rotation over states, reusing the entries it builds.
#[derive(Debug)]
pub(super) struct Overlay<'a> {
    rotation: &'a RotationInput,
    /// The new key when the lanes are in use (not Prepare, key known).
    lane_key: Option<PublicKey>,
    /// Lane entries, by the address of the main entry they are made from
    /// (the states being overlaid keep every main entry alive, so no
    /// address is reused meanwhile).
    lanes: HashMap<usize, Arc<Peer>>,
    /// Main entries of R under its new key, by the entry they replace.
    renewed: HashMap<usize, Arc<Peer>>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(rotation: &'a RotationInput) -> Self {
        let lane_key = rotation.new_public_key.filter(|_| rotation.phase != RotationPhase::Prepare);
        Overlay { rotation, lane_key, lanes: HashMap::new(), renewed: HashMap::new() }
    }

    /// Adds the rotation to `state` if its node takes part.
    pub(super) fn apply(&mut self, state: &mut NodeDesiredState) {
        let rotating = &self.rotation.node;
        let lane = if state.node == *rotating {
            match self.lane_key {
                Some(_) => {
                    state.peers.iter().map(|(name, main)| (name.clone(), self.lane_of(main, None))).collect()
                }
                None => PeerMap::new(),
            }
        } else {
            let Some(main) = state.peers.get(rotating).cloned() else { return };
            if let Some(key) = self.rotation.new_public_key
                && self.rotation.phase.main_uses_new_key()
            {
                let renewed = self.renewed(&main, key);
                state.peers.insert(rotating.clone(), renewed);
            }
            match self.lane_key {
                Some(key) => PeerMap::unit(rotating.clone(), self.lane_of(&main, Some(key))),
                None => PeerMap::new(),
            }
        };
        state.rotation = Some(NodeRotation {
            id: self.rotation.id,
            node: rotating.clone(),
            phase: self.rotation.phase,
            new_public_key: self.rotation.new_public_key,
            lane,
        });
    }

    /// `main` at its lane endpoint, under `key` if given.
    fn lane_of(&mut self, main: &Arc<Peer>, key: Option<PublicKey>) -> Arc<Peer> {
        let entry = self.lanes.entry(Arc::as_ptr(main) as usize).or_insert_with(|| {
            let endpoint = SocketAddr::new(main.endpoint.ip(), lane_port(main.endpoint.port()));
            let public_key = key.unwrap_or(main.public_key);
            Arc::new(Peer { endpoint, public_key, ..Peer::clone(main) })
        });
        Arc::clone(entry)
    }

    fn renewed(&mut self, main: &Arc<Peer>, key: PublicKey) -> Arc<Peer> {
        let entry = self
            .renewed
            .entry(Arc::as_ptr(main) as usize)
            .or_insert_with(|| Arc::new(Peer { public_key: key, ..Peer::clone(main) }));
        Arc::clone(entry)
    }
}

#[cfg(test)]
mod tests {
    use vpblu_messages::NodeName;

    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).expect("a valid name")
    }

    fn peer(n: &str, key: u8, port: u16) -> Arc<Peer> {
        Arc::new(Peer {
            node: name(n),
            public_key: PublicKey::from_bytes([key; 32]),
            endpoint: SocketAddr::new([192, 0, 2, key].into(), port),
            allowed_ips: vec![format!("10.0.{key}.0/24").parse().expect("a CIDR")],
            persistent_keepalive: None,
        })
    }

    #[test]
    fn a_lane_entry_is_built_once_per_main_entry() {
        let rotation = RotationInput {
            node: name("r"),
            id: 7,
            phase: RotationPhase::Retire,
            new_public_key: Some(PublicKey::from_bytes([9; 32])),
        };
        let r = peer("r", 1, 51820);
        let mut overlay = Overlay::new(&rotation);
        let mut states: Vec<NodeDesiredState> = ["a", "b"]
            .iter()
            .map(|n| {
                let mut state = NodeDesiredState::empty(name(n));
                state.peers.insert(name("r"), Arc::clone(&r));
                state
            })
            .collect();
        for state in &mut states {
            overlay.apply(state);
        }
        let lanes: Vec<&Arc<Peer>> =
            states.iter().map(|s| &s.rotation.as_ref().expect("takes part").lane[&name("r")]).collect();
        assert!(Arc::ptr_eq(lanes[0], lanes[1]), "one shared lane entry");
        assert_eq!(lanes[0].endpoint, "192.0.2.1:51821".parse().expect("an address"));
        assert!(Arc::ptr_eq(&states[0].peers[&name("r")], &states[1].peers[&name("r")]), "one renewed entry");
        assert_eq!(states[0].peers[&name("r")].public_key, PublicKey::from_bytes([9; 32]));
    }
}
