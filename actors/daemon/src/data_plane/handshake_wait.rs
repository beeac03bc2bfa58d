//! Waiting for WireGuard handshakes a rotation phase needs, starting them.
//!
//! WireGuard only handshakes when there is traffic, and a rotation phase
//! must not report done before its sessions are warm. Both ends of each
//! pair wait for it, but only one of them, the [`Role::Initiator`] (the
//! rotating node), starts it: when both ends sent an initiation at once,
//! each consumed the other's and dropped the response to its own (the
//! handshake state an initiation creates is overwritten by the one a
//! received initiation creates), and neither ever completed; WireGuard
//! retries only after its 5 s `REKEY_TIMEOUT`, which is where the rotations
//! that took 5 s longer came from. The initiator kicks each peer it still
//! waits for ([`WireGuardDevice::kick`]: an immediate keepalive, which
//! starts a handshake when there is no session), and if no handshake shows
//! within [`FIRST_RETRY`] renews it ([`WireGuardDevice::renew`]: its
//! initiation may have reached the peer before the peer knew the new key,
//! and a fresh peer is not held back by the 5 s timer), backing off to
//! [`KICK_EVERY`]. A [`Role::Responder`] only answers, and starts
//! handshakes itself only after [`RESPONDER_PATIENCE`] (the initiator may
//! have given up: restarted, or satisfied by a handshake whose last packet
//! this end never got). Until every peer shows a handshake newer than the
//! moment it was configured, or [`LIMIT`] has passed. Runs as a task: the
//! stream client keeps applying commands meanwhile.

use std::time::{Duration, Instant, SystemTime};

use vpblu_messages::{NodeName, PublicKey};
use vpblu_runtime::{Backoff, Slot};

use super::actors::{HandshakeAttempt, WireGuardMsg, ask};
use super::rotation::Device;

/// How long a phase waits for its handshakes.
pub const LIMIT: Duration = Duration::from_secs(20);
/// The initiator's first retry; each next one waits twice as long, up to
/// [`KICK_EVERY`] (a loaded machine may need longer than this for one
/// handshake, which a retry would cut short).
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest time between two attempts at one peer.
pub const KICK_EVERY: Duration = Duration::from_secs(1);
/// How long a responder waits for the initiator before it starts
/// handshakes too.
pub const RESPONDER_PATIENCE: Duration = Duration::from_secs(2);
/// How often the device is read back meanwhile.
const POLL: Duration = Duration::from_millis(50);

/// Which end of the pairs this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It starts the handshakes (the rotating node).
    Initiator,
    /// It answers them (every other node), and starts them only after
    /// [`RESPONDER_PATIENCE`].
    Responder,
}

/// When the next attempt at the missing peers is due, `attempts` having
/// been made, the last one at `last`.
fn next_attempt(role: Role, started: Instant, attempts: u32, last: Option<Instant>) -> Instant {
    match (role, last) {
        (Role::Initiator, None) => started,
        (Role::Responder, None) => started + RESPONDER_PATIENCE,
        (Role::Initiator, Some(at)) => {
            let retries = Backoff { initial: FIRST_RETRY, max: KICK_EVERY };
            at + retries.ceiling(attempts.saturating_sub(1))
        }
        (Role::Responder, Some(at)) => at + KICK_EVERY,
    }
}

/// One peer to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Awaiting {
    /// Its node, for the report.
    pub node: NodeName,
    /// The key the device holds for it.
    pub key: PublicKey,
    /// A handshake counts when it completed after this.
    pub after: SystemTime,
}

/// Waits, starting handshakes as `role` says (through the WireGuard actor
/// in `wireguard`), until every peer in `peers` shows a handshake on
/// `which` newer than its `after`; `Err` naming the
/// peers still without one after `limit`, e.g. "lane handshake with node-b
/// not seen within 20s".
pub async fn wait(
    wireguard: Slot<WireGuardMsg>,
    which: Device,
    peers: Vec<Awaiting>,
    role: Role,
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let (mut attempts, mut last): (u32, Option<Instant>) = (0, None);
    loop {
        let state = ask(&wireguard, |reply| WireGuardMsg::ReadBack(which, reply))
            .await
            .map_err(|e| format!("{} device: {e}", which.as_str()))?;
        let missing: Vec<(&Awaiting, Option<u16>)> = peers
            .iter()
            .filter_map(|p| {
                let found = state.peers.iter().find(|s| s.public_key == p.key);
                match found {
                    Some(s) if s.last_handshake.is_some_and(|at| at > p.after) => None,
                    Some(s) => Some((p, s.persistent_keepalive)),
                    None => Some((p, None)),
                }
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            let nodes: Vec<String> = missing.iter().map(|(p, _)| p.node.to_string()).collect();
            return Err(format!(
                "{} handshake with {} not seen within {}s",
                which.as_str(),
                nodes.join(", "),
                limit.as_secs()
            ));
        }
        if Instant::now() >= next_attempt(role, started, attempts, last) {
            // A first attempt only kicks: nothing has failed yet. Later
            // ones renew, unless the handshake came meanwhile.
            let first = last.is_none();
            attempts += 1;
            last = Some(Instant::now());
            let tries: Vec<(NodeName, PublicKey, Option<u16>, SystemTime)> =
                missing.iter().map(|(p, keepalive)| (p.node.clone(), p.key, *keepalive, p.after)).collect();
            let attempt = HandshakeAttempt { which, tries, first };
            let outcome = ask(&wireguard, |reply| WireGuardMsg::Attempt(attempt, reply)).await;
            // A peer removed meanwhile, or a device restarting: the next
            // read-back shows it, and the limit still holds.
            if let Err(e) = outcome {
                tracing::warn!(device = which.as_str(), error = %e, "could not start a handshake");
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initiator_starts_at_once_and_backs_off_the_responder_only_answers_at_first() {
        let t = Instant::now();
        assert_eq!(next_attempt(Role::Initiator, t, 0, None), t);
        assert_eq!(next_attempt(Role::Responder, t, 0, None), t + RESPONDER_PATIENCE);
        let at = t + Duration::from_millis(10);
        assert_eq!(next_attempt(Role::Initiator, t, 1, Some(at)), at + FIRST_RETRY);
        assert_eq!(next_attempt(Role::Initiator, t, 2, Some(at)), at + FIRST_RETRY * 2);
        assert_eq!(next_attempt(Role::Initiator, t, 3, Some(at)), at + KICK_EVERY);
        assert_eq!(next_attempt(Role::Initiator, t, 40, Some(at)), at + KICK_EVERY);
        assert_eq!(next_attempt(Role::Responder, t, 1, Some(at)), at + KICK_EVERY);
    }
}
