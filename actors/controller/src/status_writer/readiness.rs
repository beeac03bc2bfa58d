//! The VpbluNode `Ready` condition, judged from what the leader knows of a
//! node: whether its daemon has a stream to this leader, whether it has
//! applied the latest desired generation, and whether every peer on its
//! device has a recent handshake. Pure: the writer gathers the facts.

use std::fmt::Write as _;
use std::time::Duration;

use vpblu_k8s::conditions::reasons;
use vpblu_messages::NodeName;

use super::report::Connection;

/// Peers named in a `PeersDown` message before "and N more".
const NAMED_PEERS: usize = 5;

/// A peer counted as down, and its last handshake's age if it ever had one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PeerDown {
    pub(super) node: NodeName,
    pub(super) last_handshake: Option<Duration>,
}

/// What `Ready` is judged from.
#[derive(Debug)]
pub(super) struct Facts<'a> {
    /// The node's stream to this leader, as the `Connected` condition says.
    pub(super) connection: Option<&'a Connection>,
    pub(super) applied: Option<u64>,
    pub(super) desired: Option<u64>,
    /// `applied` has been behind `desired` for longer than the writer
    /// lets a daemon take (a fresh change is not lag).
    pub(super) lagging: bool,
    /// The node's peers it has observed up, and the ones down.
    pub(super) peers_up: usize,
    pub(super) down: &'a [PeerDown],
}

/// The judgement: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) ready: bool,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// Judges `Ready`: the first of Disconnected, Lagging, PeersDown that
/// holds, else Applied.
pub(super) fn judge(facts: &Facts<'_>) -> Verdict {
    let not_ready = |reason, message| Verdict { ready: false, reason, message };
    match facts.connection {
        None => {
            return not_ready(
                reasons::DISCONNECTED,
                "no stream from the node's daemon to the leading controller yet".to_owned(),
            );
        }
        Some(connection) if !connection.open => {
            return not_ready(
                reasons::DISCONNECTED,
                format!(
                    "no stream from the node's daemon to the leading controller since {}; the node keeps \
                     its last applied state",
                    connection.since.0
                ),
            );
        }
        Some(_) => {}
    }
    if facts.lagging {
        let show = |g: Option<u64>| g.map_or_else(|| "none".to_owned(), |g| g.to_string());
        return not_ready(
            reasons::LAGGING,
            format!(
                "applied {}, desired {}: the daemon has not applied the latest desired state (see its \
                 log and `kubectl describe vpblunode`)",
                show(facts.applied),
                show(facts.desired)
            ),
        );
    }
    if !facts.down.is_empty() {
        return not_ready(reasons::PEERS_DOWN, peers_down(facts.down));
    }
    let applied = facts.applied.map_or_else(|| "no generation yet".to_owned(), |g| format!("generation {g}"));
    Verdict {
        ready: true,
        reason: reasons::APPLIED,
        message: format!("{applied} applied; {} peers up", facts.peers_up),
    }
}

/// `node-3 (last handshake 4m ago), node-4 (no handshake yet)`, at most
/// [`NAMED_PEERS`] named.
fn peers_down(down: &[PeerDown]) -> String {
    let mut message = String::new();
    for (i, peer) in down.iter().take(NAMED_PEERS).enumerate() {
        if i > 0 {
            message.push_str(", ");
        }
        let _infallible = match peer.last_handshake {
            Some(age) => write!(message, "{} (last handshake {} ago)", peer.node, minutes(age)),
            None => write!(message, "{} (no handshake yet)", peer.node),
        };
    }
    if down.len() > NAMED_PEERS {
        let _infallible = write!(message, " and {} more", down.len() - NAMED_PEERS);
    }
    message
}

/// An age in whole minutes (`4m`) or hours and minutes (`2h5m`): coarse on
/// purpose, so the message changes (and is written) at most once a minute.
fn minutes(age: Duration) -> String {
    let minutes = age.as_secs() / 60;
    if minutes < 60 { format!("{minutes}m") } else { format!("{}h{}m", minutes / 60, minutes % 60) }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn open() -> Connection {
        Connection { open: true, reason: reasons::STREAM_OPEN, since: Time(Timestamp::UNIX_EPOCH) }
    }

    fn facts<'a>(connection: Option<&'a Connection>, down: &'a [PeerDown]) -> Facts<'a> {
        Facts { connection, applied: Some(31), desired: Some(31), lagging: false, peers_up: 2, down }
    }

    fn down(node: &str, age: Option<u64>) -> PeerDown {
        PeerDown { node: NodeName::new(node).unwrap(), last_handshake: age.map(Duration::from_secs) }
    }

    #[test]
    fn connected_applied_and_every_peer_up_is_ready() {
        let connection = open();
        let verdict = judge(&facts(Some(&connection), &[]));
        assert!(verdict.ready);
        assert_eq!(verdict.reason, reasons::APPLIED);
        assert_eq!(verdict.message, "generation 31 applied; 2 peers up");
    }

    #[test]
    fn disconnected_comes_first_and_says_since_when() {
        let closed = Connection { open: false, ..open() };
        let peers = [down("node-3", None)];
        let mut f = facts(Some(&closed), &peers);
        f.lagging = true;
        let verdict = judge(&f);
        assert!(!verdict.ready);
        assert_eq!(verdict.reason, reasons::DISCONNECTED);
        assert!(verdict.message.contains("since 1970-01-01T00:00:00Z"), "{}", verdict.message);
        assert_eq!(judge(&facts(None, &[])).reason, reasons::DISCONNECTED);
    }

    #[test]
    fn lagging_names_both_generations() {
        let connection = open();
        let mut f = facts(Some(&connection), &[]);
        (f.applied, f.desired, f.lagging) = (Some(26), Some(31), true);
        let verdict = judge(&f);
        assert_eq!(verdict.reason, reasons::LAGGING);
        assert!(verdict.message.starts_with("applied 26, desired 31"), "{}", verdict.message);
    }

    #[test]
    fn peers_down_names_them_with_coarse_ages() {
        let connection = open();
        let peers = [down("node-3", Some(4 * 60 + 59)), down("node-4", None), down("node-5", Some(7500))];
        let verdict = judge(&facts(Some(&connection), &peers));
        assert_eq!(verdict.reason, reasons::PEERS_DOWN);
        assert_eq!(
            verdict.message,
            "node-3 (last handshake 4m ago), node-4 (no handshake yet), node-5 (last handshake 2h5m ago)"
        );
        let many: Vec<PeerDown> = (0..8).map(|i| down(&format!("n{i}"), None)).collect();
        let verdict = judge(&facts(Some(&connection), &many));
        assert!(verdict.message.ends_with("n4 (no handshake yet) and 3 more"), "{}", verdict.message);
    }
}
