//! The peer matrix as the daemons report it: each Observed message says,
//! for one node, every peer's handshake age and byte counters. VpbluNode
//! status only keeps per-node counts, so the dashboard keeps the cells.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vpblu_messages::{NodeName, PeerObservation, Upstream};
use vpblu_view::{DaemonSeen, LinkState, LinkView, PEER_UP_WITHIN_SECONDS};

use crate::stream::StreamEvent;

/// A node's report is stale once it is this much older than the newest
/// one expected (daemons observe every 10 s by default).
const STALE_AFTER: Duration = Duration::from_secs(35);

/// One cell: the last two reports (for rates).
#[derive(Debug)]
struct Cell {
    last: PeerObservation,
    at: Instant,
    rates: Option<(f64, f64)>,
}

/// Every (node, peer) cell, and what each daemon said about itself.
#[derive(Debug, Default)]
pub(super) struct PeerBook {
    cells: BTreeMap<(NodeName, NodeName), Cell>,
    daemons: BTreeMap<NodeName, DaemonSeen>,
    /// Nodes whose stream closed: their cells are kept but stale.
    closed: BTreeMap<NodeName, Instant>,
}

impl PeerBook {
    /// Takes in one stream event at `now`.
    pub(super) fn record(&mut self, event: StreamEvent, now: Instant) {
        match event {
            StreamEvent::Message(node, Upstream::Hello(hello)) => {
                self.closed.remove(&node);
                self.daemons.insert(node, DaemonSeen { version: hello.version });
            }
            StreamEvent::Message(node, Upstream::Observed(peers)) => self.observed(node, peers, now),
            StreamEvent::Closed(node) => {
                self.closed.insert(node, now);
            }
            // Acks, rotation reports and whatever else the streams pass on
            // say nothing about peers; the matrix ignores them, new kinds
            // included (hence the one wildcard arm).
            _ => {}
        }
    }

    fn observed(&mut self, node: NodeName, peers: Vec<PeerObservation>, now: Instant) {
        self.closed.remove(&node);
        // A peer the node no longer reports is no longer its peer.
        self.cells.retain(|(from, to), _| *from != node || peers.iter().any(|p| p.node == *to));
        for peer in peers {
            let key = (node.clone(), peer.node.clone());
            let rates = self.cells.get(&key).and_then(|old| {
                let seconds = now.duration_since(old.at).as_secs_f64();
                let per_second = |new: u64, old: u64| new.saturating_sub(old) as f64 / seconds;
                (seconds > 0.0).then(|| {
                    (
                        per_second(peer.rx_bytes, old.last.rx_bytes),
                        per_second(peer.tx_bytes, old.last.tx_bytes),
                    )
                })
            });
            self.cells.insert(key, Cell { last: peer, at: now, rates });
        }
    }

    /// Forgets everything: this replica stopped leading, so it hears no
    /// daemon and what it heard last must not pass for current.
    pub(super) fn clear(&mut self) {
        *self = PeerBook::default();
    }

    /// What each daemon said about itself, by node name.
    pub(super) fn daemons(&self) -> BTreeMap<String, DaemonSeen> {
        self.daemons.iter().map(|(node, seen)| (node.to_string(), seen.clone())).collect()
    }

    /// The matrix as of `now`.
    pub(super) fn links(&self, now: Instant) -> Vec<LinkView> {
        self.cells
            .iter()
            .map(|((from, to), cell)| {
                let since_report = now.duration_since(cell.at);
                let handshake = cell.last.last_handshake_age.map(|age| (age + since_report).as_secs());
                let state = match handshake {
                    Some(age) if age <= PEER_UP_WITHIN_SECONDS => LinkState::Up,
                    Some(_) => LinkState::Down,
                    None => LinkState::NoHandshake,
                };
                LinkView {
                    from: from.to_string(),
                    to: to.to_string(),
                    state,
                    last_handshake_seconds: handshake,
                    endpoint: None,
                    short_key: Some(cell.last.public_key.short()),
                    rx_bytes: cell.last.rx_bytes,
                    tx_bytes: cell.last.tx_bytes,
                    rx_bytes_per_second: cell.rates.map(|r| r.0),
                    tx_bytes_per_second: cell.rates.map(|r| r.1),
                    reported_seconds_ago: since_report.as_secs(),
                    stale: since_report > STALE_AFTER || self.closed.contains_key(from),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpblu_messages::PublicKey;

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn seen(peer: &str, age: Option<u64>, rx: u64, tx: u64) -> PeerObservation {
        PeerObservation {
            node: name(peer),
            public_key: PublicKey::from_bytes([7; 32]),
            last_handshake_age: age.map(Duration::from_secs),
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    #[test]
    fn cells_carry_states_rates_and_go_stale_when_the_stream_closes() {
        let mut book = PeerBook::default();
        let t0 = Instant::now();
        let observed = |peers| StreamEvent::Message(name("node-1"), Upstream::Observed(peers));
        book.record(observed(vec![seen("node-2", Some(5), 1000, 2000), seen("node-3", None, 0, 0)]), t0);
        let t1 = t0 + Duration::from_secs(10);
        book.record(observed(vec![seen("node-2", Some(2), 6000, 4000), seen("node-3", Some(300), 0, 0)]), t1);
        let links = book.links(t1 + Duration::from_secs(1));
        assert_eq!(links.len(), 2);
        assert_eq!((links[0].to.as_str(), links[0].state), ("node-2", LinkState::Up));
        assert_eq!(links[0].last_handshake_seconds, Some(3), "the age keeps counting after the report");
        assert_eq!(links[0].rx_bytes_per_second, Some(500.0));
        assert_eq!(links[0].tx_bytes_per_second, Some(200.0));
        assert_eq!(links[1].state, LinkState::Down);
        assert!(links.iter().all(|l| !l.stale));

        book.record(StreamEvent::Closed(name("node-1")), t1);
        assert!(book.links(t1).iter().all(|l| l.stale), "a closed stream's cells are stale");
        book.record(observed(vec![seen("node-2", Some(1), 7000, 5000)]), t1 + Duration::from_secs(2));
        let links = book.links(t1 + Duration::from_secs(2));
        assert_eq!(links.len(), 1, "node-3 is no longer reported, so no longer a cell");
        assert!(!links[0].stale);
        assert!(book.links(t1 + Duration::from_secs(60)).iter().all(|l| l.stale), "an old report is stale");
    }
}
