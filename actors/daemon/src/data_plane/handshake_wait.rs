//! Waiting for WireGuard handshakes a rotation phase needs, kicking them.
//!
//! WireGuard only handshakes when there is traffic, and a rotation phase
//! must not report done before its sessions are warm. So each peer still
//! waited for is kicked ([`WireGuardDevice::kick`]: an immediate keepalive,
//! which starts a handshake when there is no session), and every
//! [`KICK_EVERY`] after renewed and kicked again
//! ([`WireGuardDevice::renew`]: an initiation sent before the other end
//! knew this peer's new key is dropped, and WireGuard itself would retry
//! only after 5 s, which made one rotation in a few take 5 s longer),
//! until every peer shows a handshake newer than the moment it was
//! configured, or [`LIMIT`] has passed. Runs as a task: the stream client keeps
//! applying commands meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use vpblu_messages::{NodeName, PublicKey};

use super::lock;
use super::rotation::Device;
use crate::wireguard::WireGuardDevice;

/// How long a phase waits for its handshakes.
pub const LIMIT: Duration = Duration::from_secs(20);
/// How often a peer without a handshake is kicked again.
pub const KICK_EVERY: Duration = Duration::from_secs(1);
/// How often the device is read back meanwhile.
const POLL: Duration = Duration::from_millis(100);

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

/// Kicks and waits until every peer in `peers` shows a handshake on
/// `device` newer than its `after`; `Err` naming the peers still without
/// one after `limit`, e.g. "lane handshake with node-b not seen within 20s".
pub async fn wait(
    device: Arc<Mutex<WireGuardDevice>>,
    which: Device,
    peers: Vec<Awaiting>,
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let mut kicked: Option<Instant> = None;
    loop {
        let state = {
            let device = Arc::clone(&device);
            tokio::task::spawn_blocking(move || lock(&device).read_back())
                .await
                .map_err(|e| format!("{} device read-back task failed: {e}", which.as_str()))?
                .map_err(|e| format!("{} device: {e}", which.as_str()))?
        };
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
        if kicked.is_none_or(|at| at.elapsed() >= KICK_EVERY) {
            let first = kicked.is_none();
            kicked = Some(Instant::now());
            let kicks: Vec<(NodeName, PublicKey, Option<u16>)> =
                missing.iter().map(|(p, keepalive)| (p.node.clone(), p.key, *keepalive)).collect();
            let device = Arc::clone(&device);
            let outcome = tokio::task::spawn_blocking(move || {
                let mut device = lock(&device);
                for (node, key, keepalive) in &kicks {
                    if first {
                        device.kick(node, key, *keepalive)?;
                    } else {
                        device.renew(node, key)?;
                    }
                }
                Ok::<(), crate::wireguard::WireGuardError>(())
            })
            .await;
            match outcome {
                Ok(Ok(())) => {}
                // A peer removed meanwhile, or a device restarting: the next
                // read-back shows it, and the limit still holds.
                Ok(Err(e)) => {
                    tracing::warn!(device = which.as_str(), error = %e, "could not kick a handshake")
                }
                Err(e) => tracing::warn!(device = which.as_str(), error = %e, "the kick task failed"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
