//! Commands that move a node from one desired state to the next, and the
//! pure functions that compute (`diff`) and replay (`apply`) them.

use std::sync::Arc;

use imbl::ordmap::DiffItem;
use serde::{Deserialize, Serialize};

use crate::{
    BlockRule, NodeDesiredState, NodeName, NodeRotation, Peer, PeerMap, SelfSettings, StateDigest,
    Unreachable,
};

/// One change to a node's desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Replace everything: sent on (re)connect and on the periodic resync.
    SyncState(NodeDesiredState),
    /// Replace the node's own settings.
    SetSettings(SelfSettings),
    /// Add a peer or replace it as a whole.
    PeerUpsert(Arc<Peer>),
    /// Remove a peer.
    PeerRemove(NodeName),
    /// Replace the whole block list.
    SetBlocks(Vec<BlockRule>),
    /// Replace the whole list of CIDRs without a tunnel.
    SetUnreachable(Vec<Unreachable>),
    /// Replace the rotation this node takes part in (`None`: none).
    SetRotation(Option<NodeRotation>),
    /// Keep the whole state held now, whose digest under the daemon's key
    /// is this one, and apply it again (sent instead of a `SyncState` that
    /// would repeat it; see `digest`). Changes nothing in the state.
    KeepState(StateDigest),
}

impl Command {
    /// The command's name, for logs, errors and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::SyncState(_) => "SyncState",
            Command::SetSettings(_) => "SetSettings",
            Command::PeerUpsert(_) => "PeerUpsert",
            Command::PeerRemove(_) => "PeerRemove",
            Command::SetBlocks(_) => "SetBlocks",
            Command::SetUnreachable(_) => "SetUnreachable",
            Command::SetRotation(_) => "SetRotation",
            Command::KeepState(_) => "KeepState",
        }
    }
}

/// The fewest commands that turn `old` into `new` (both for the same node).
/// Peers are upserted or removed one by one, so a change to one peer touches
/// only that peer; settings, blocks and unreachable lists are sent whole,
/// and only when they changed; the rotation goes last, after the peers it
/// may name. An unchanged state yields no commands.
pub fn diff(old: &NodeDesiredState, new: &NodeDesiredState) -> Vec<Command> {
    let mut out = Vec::new();
    if old.settings != new.settings {
        out.push(Command::SetSettings(new.settings.clone()));
    }
    let (removed, upserted) = peer_changes(&old.peers, &new.peers);
    out.extend(removed);
    out.extend(upserted);
    if old.blocks != new.blocks {
        out.push(Command::SetBlocks(new.blocks.iter().copied().collect()));
    }
    if old.unreachable != new.unreachable {
        out.push(Command::SetUnreachable(new.unreachable.iter().copied().collect()));
    }
    if old.rotation != new.rotation {
        out.push(Command::SetRotation(new.rotation.clone()));
    }
    out
}

/// The peers only in `old` (removals) and those new or changed in `new`
/// (upserts), each in name order. The controller diffs every node's map
/// on each change, 5000 maps of 4999 peers at 5000 nodes; the maps share
/// their tree with the one before the change but for the changed paths, and
/// the persistent map's diff skips whatever subtree both share, so a join
/// costs each node a few paths instead of a walk over all its peers.
fn peer_changes(old: &PeerMap, new: &PeerMap) -> (Vec<Command>, Vec<Command>) {
    let (mut removed, mut upserted) = (Vec::new(), Vec::new());
    for change in old.diff(new) {
        match change {
            DiffItem::Remove(name, _) => removed.push(Command::PeerRemove(name.clone())),
            DiffItem::Add(_, peer) | DiffItem::Update { new: (_, peer), .. } => {
                upserted.push(Command::PeerUpsert(Arc::clone(peer)));
            }
        }
    }
    (removed, upserted)
}

/// Replays `command` onto `state`: what a daemon's view of its desired
/// state becomes after applying it. `apply(diff(a, b))` on `a` gives `b`.
pub fn apply(state: &mut NodeDesiredState, command: &Command) {
    match command {
        Command::SyncState(full) => *state = full.clone(),
        Command::SetSettings(settings) => state.settings = settings.clone(),
        Command::PeerUpsert(peer) => {
            state.peers.insert(peer.node.clone(), peer.clone());
        }
        Command::PeerRemove(name) => {
            state.peers.remove(name);
        }
        Command::SetBlocks(blocks) => state.blocks = blocks.iter().copied().collect(),
        Command::SetUnreachable(list) => state.unreachable = list.iter().copied().collect(),
        Command::SetRotation(rotation) => state.rotation = rotation.clone(),
        Command::KeepState(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cidr, PublicKey, SelfSettings, UnreachableReason};

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn peer(n: &str, key: u8, cidr: &str) -> Peer {
        Peer {
            node: name(n),
            public_key: PublicKey::from_bytes([key; 32]),
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            allowed_ips: vec![cidr.parse().unwrap()],
            persistent_keepalive: None,
        }
    }

    fn state(peers: &[Peer]) -> NodeDesiredState {
        let mut s = NodeDesiredState::empty(name("n1"));
        for p in peers {
            s.peers.insert(p.node.clone(), Arc::new(p.clone()));
        }
        s
    }

    #[test]
    fn unchanged_state_needs_no_commands() {
        let a = state(&[peer("n2", 2, "10.0.2.0/24")]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn one_changed_peer_is_one_upsert() {
        let a = state(&[peer("n2", 2, "10.0.2.0/24"), peer("n3", 3, "10.0.3.0/24")]);
        let b = state(&[peer("n2", 2, "10.0.2.0/24"), peer("n3", 9, "10.0.3.0/24")]);
        assert_eq!(diff(&a, &b), vec![Command::PeerUpsert(Arc::new(peer("n3", 9, "10.0.3.0/24")))]);
    }

    #[test]
    fn removed_peer_then_blocks() {
        let a = state(&[peer("n2", 2, "10.0.2.0/24")]);
        let mut b = state(&[]);
        let rule = BlockRule { from: "10.0.1.0/24".parse().unwrap(), to: "10.0.2.0/24".parse().unwrap() };
        b.blocks.insert(rule);
        let unreachable =
            Unreachable { cidr: "10.0.2.0/24".parse::<Cidr>().unwrap(), reason: UnreachableReason::Isolated };
        b.unreachable.insert(unreachable);
        let cmds = diff(&a, &b);
        assert_eq!(
            cmds,
            vec![
                Command::PeerRemove(name("n2")),
                Command::SetBlocks(vec![rule]),
                Command::SetUnreachable(vec![unreachable])
            ]
        );
        let mut replay = a.clone();
        for c in &cmds {
            apply(&mut replay, c);
        }
        assert_eq!(replay, b);
    }

    #[test]
    fn the_quick_check_passes_only_what_full_validation_passes() {
        let mut base = state(&[peer("n2", 2, "10.0.2.0/24"), peer("n3", 3, "10.0.3.0/24")]);
        base.settings = SelfSettings { listen_port: 51820, lane_port: 51821, ..SelfSettings::default() };
        base.validate().expect("the base state is valid");
        let upsert = |p: Peer| Command::PeerUpsert(Arc::new(p));
        let mut two_cidrs = peer("n4", 4, "10.0.4.0/24");
        two_cidrs.allowed_ips.push("10.0.5.0/24".parse().unwrap());
        let mut unsorted = two_cidrs.clone();
        unsorted.allowed_ips.reverse();
        let clash = SelfSettings { listen_port: 51820, lane_port: 51820, ..SelfSettings::default() };
        let cases = [
            (upsert(peer("n4", 4, "10.0.4.0/24")), true),
            (upsert(two_cidrs), true),
            (upsert(peer("n2", 2, "10.0.9.0/24")), true), // replaces n2's own entry
            (upsert(peer("n3", 2, "10.0.3.0/24")), false), // n2's key
            (upsert(peer("n4", 4, "10.0.2.0/24")), false), // n2's CIDR
            (upsert(peer("n1", 1, "10.0.1.0/24")), false), // itself
            (upsert(unsorted), false),
            (Command::PeerRemove(name("n2")), true),
            (Command::SetBlocks(Vec::new()), true),
            (Command::SetSettings(base.settings.clone()), true),
            (Command::SetSettings(clash), false),
        ];
        for (command, valid) in cases {
            let mut next = base.clone();
            apply(&mut next, &command);
            assert_eq!(next.validate().is_ok(), valid, "full validation of {command:?}");
            assert_eq!(base.stays_valid_after(&command), valid, "quick check of {command:?}");
        }
    }
}
