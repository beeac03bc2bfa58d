//! What the `Ready` condition is judged from beyond a node's report: how
//! long its daemon has been behind the desired generation, and which of
//! its peers are down. Both have a grace, so a change in flight or a peer
//! still handshaking is not reported as a fault.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vpblu_messages::{NodeName, PeerObservation};

use super::readiness::{Facts, PeerDown, Verdict, judge};
use super::report::NodeReport;

/// A peer counts as up when its last handshake is at most this old
/// (WireGuard re-handshakes every 2 minutes on an active session).
pub(super) const PEER_UP_WITHIN: Duration = Duration::from_secs(180);

/// How long a daemon may take to apply a change before its node is
/// `Lagging`.
pub(super) const LAG_GRACE: Duration = Duration::from_secs(10);

/// How long a peer may go without its first handshake before it counts as
/// down (WireGuard retries a handshake every 5 s).
pub(super) const HANDSHAKE_GRACE: Duration = Duration::from_secs(30);

/// A peer that is down, or has not handshaken yet, as a node last
/// observed it.
#[derive(Debug)]
struct PeerSeen {
    node: NodeName,
    last_handshake: Option<Duration>,
    /// When it was first seen with no handshake at all.
    unshaken_since: Option<Instant>,
}

impl PeerSeen {
    fn is_down(&self, now: Instant) -> bool {
        match self.last_handshake {
            Some(age) => age > PEER_UP_WITHIN,
            None => self.unshaken_since.is_some_and(|since| now.duration_since(since) >= HANDSHAKE_GRACE),
        }
    }
}

/// Per node: lag and troubled peers.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Since when each node's applied generation is behind its desired one.
    behind_since: BTreeMap<NodeName, Instant>,
    /// Each node's last observed peers that are down or have not
    /// handshaken yet (only those: a healthy 1000-node mesh keeps nothing
    /// here).
    troubled: BTreeMap<NodeName, Vec<PeerSeen>>,
}

impl Watch {
    /// Takes `peers` as `node`'s newest observation.
    pub(super) fn observe(&mut self, node: &NodeName, peers: &[PeerObservation], now: Instant) {
        let unshaken_before: BTreeMap<NodeName, Instant> = self
            .troubled
            .remove(node)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.node, p.unshaken_since?)))
            .collect();
        let troubled: Vec<PeerSeen> = peers
            .iter()
            .filter(|p| p.last_handshake_age.is_none_or(|age| age > PEER_UP_WITHIN))
            .map(|p| PeerSeen {
                node: p.node.clone(),
                last_handshake: p.last_handshake_age,
                unshaken_since: match p.last_handshake_age {
                    Some(_) => None,
                    None => Some(unshaken_before.get(&p.node).copied().unwrap_or(now)),
                },
            })
            .collect();
        if !troubled.is_empty() {
            self.troubled.insert(node.clone(), troubled);
        }
    }

    /// Judges `node`'s `Ready` from `report` and what was watched.
    pub(super) fn verdict(&mut self, node: &NodeName, report: &NodeReport, now: Instant) -> Verdict {
        let behind =
            report.desired_generation.is_some_and(|d| report.applied_generation.is_none_or(|a| a < d));
        let lagging = if behind {
            let since = *self.behind_since.entry(node.clone()).or_insert(now);
            now.duration_since(since) >= LAG_GRACE
        } else {
            self.behind_since.remove(node);
            false
        };
        let down: Vec<PeerDown> = self
            .troubled
            .get(node)
            .into_iter()
            .flatten()
            .filter(|p| p.is_down(now))
            .map(|p| PeerDown { node: p.node.clone(), last_handshake: p.last_handshake })
            .collect();
        judge(&Facts {
            connection: report.connection.as_ref(),
            applied: report.applied_generation,
            desired: report.desired_generation,
            lagging,
            peers_up: report.peers_up.unwrap_or(0),
            down: &down,
        })
    }

    /// Nodes whose graces may have run out since their last judgement.
    pub(super) fn due(&self, now: Instant) -> Vec<NodeName> {
        let lag = self.behind_since.iter().filter(|(_, since)| now.duration_since(**since) >= LAG_GRACE);
        let unshaken = self
            .troubled
            .iter()
            .filter(|(_, peers)| peers.iter().any(|p| p.last_handshake.is_none() && p.is_down(now)));
        let mut due: Vec<NodeName> =
            lag.map(|(node, _)| node.clone()).chain(unshaken.map(|(node, _)| node.clone())).collect();
        due.sort();
        due.dedup();
        due
    }
}

#[cfg(test)]
mod tests {
    use vpblu_k8s::conditions::reasons;
    use vpblu_messages::PublicKey;

    use super::*;
    use crate::status_writer::report::Connection;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn peer(node: &str, age: Option<u64>) -> PeerObservation {
        PeerObservation {
            node: name(node),
            public_key: PublicKey::from_bytes([1; 32]),
            last_handshake_age: age.map(Duration::from_secs),
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    fn connected_report(applied: u64, desired: u64) -> NodeReport {
        let mut connection = None;
        Connection::set(&mut connection, true);
        NodeReport {
            applied_generation: Some(applied),
            desired_generation: Some(desired),
            connection,
            ..NodeReport::default()
        }
    }

    #[test]
    fn lag_counts_only_after_the_grace() {
        let (mut watch, node, start) = (Watch::default(), name("n1"), Instant::now());
        let report = connected_report(3, 5);
        assert!(watch.verdict(&node, &report, start).ready, "a change in flight is not lag");
        assert!(watch.due(start).is_empty());
        let later = start + LAG_GRACE;
        assert_eq!(watch.due(later), vec![node.clone()]);
        let verdict = watch.verdict(&node, &report, later);
        assert_eq!((verdict.ready, verdict.reason), (false, reasons::LAGGING));
        assert!(watch.verdict(&node, &connected_report(5, 5), later).ready);
        assert!(watch.due(later + LAG_GRACE).is_empty(), "caught up: nothing to look at");
    }

    #[test]
    fn a_peer_without_a_handshake_is_down_only_after_the_grace() {
        let (mut watch, node, start) = (Watch::default(), name("n1"), Instant::now());
        let report = connected_report(5, 5);
        watch.observe(&node, &[peer("n2", Some(3)), peer("n3", None)], start);
        assert!(watch.verdict(&node, &report, start).ready);
        // Seen again without a handshake: the grace counts from the first sighting.
        let later = start + HANDSHAKE_GRACE;
        watch.observe(&node, &[peer("n2", Some(3)), peer("n3", None)], later);
        assert_eq!(watch.due(later), vec![node.clone()]);
        let verdict = watch.verdict(&node, &report, later);
        assert_eq!((verdict.ready, verdict.reason), (false, reasons::PEERS_DOWN));
        assert_eq!(verdict.message, "n3 (no handshake yet)");
        // It handshakes: up again, nothing kept.
        watch.observe(&node, &[peer("n2", Some(3)), peer("n3", Some(1))], later);
        assert!(watch.verdict(&node, &report, later).ready);
        assert!(watch.troubled.is_empty());
    }

    #[test]
    fn a_stale_handshake_is_down_at_once() {
        let (mut watch, node, now) = (Watch::default(), name("n1"), Instant::now());
        watch.observe(&node, &[peer("n2", Some(181))], now);
        let verdict = watch.verdict(&node, &connected_report(5, 5), now);
        assert_eq!((verdict.ready, verdict.reason), (false, reasons::PEERS_DOWN));
        assert_eq!(verdict.message, "n2 (last handshake 3m ago)");
    }
}
