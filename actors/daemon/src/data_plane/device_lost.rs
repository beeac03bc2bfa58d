//! [`DeviceLost`]: a WireGuard device that is gone for good.
//!
//! The device is the one part of the data plane the daemon cannot adopt
//! again in place: when the wireguard-go that serves it exits (killed by
//! the OOM killer, say) or the kernel device is deleted, its peers, its key
//! and every route and program attached to it go with it. A daemon that
//! kept running would stay Ready over a node that forwards nothing. So the
//! WireGuard actor reports the loss here, the daemon stops (exit 1, the
//! data plane left as it is), and the next daemon, started by the kubelet,
//! opens a new device, attaches to it, and gets the full state from the
//! controller on its first stream.

use std::sync::Arc;

use tokio::sync::watch;

/// Set once, by the first loss; clones share it.
#[derive(Clone, Debug)]
pub struct DeviceLost {
    sender: Arc<watch::Sender<Option<String>>>,
}

impl Default for DeviceLost {
    fn default() -> Self {
        DeviceLost { sender: Arc::new(watch::channel(None).0) }
    }
}

impl DeviceLost {
    /// Records why the device is gone (only the first reason is kept).
    pub fn report(&self, reason: String) {
        self.sender.send_if_modified(|held| {
            if held.is_some() {
                return false;
            }
            tracing::error!(reason = %reason, "a WireGuard device is gone: the daemon stops so the next one recreates it");
            *held = Some(reason);
            true
        });
    }

    /// Why the device is gone, once it is.
    pub fn reason(&self) -> Option<String> {
        self.sender.borrow().clone()
    }

    /// Waits until a loss is reported; its reason.
    pub async fn wait(&self) -> String {
        let mut receiver = self.sender.subscribe();
        let reason =
            receiver.wait_for(Option::is_some).await.map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The sender lives in `self`: never closed while we wait.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_loss_is_kept_and_wakes_a_waiter() {
        let lost = DeviceLost::default();
        assert_eq!(lost.reason(), None);
        let waiter = tokio::spawn({
            let lost = lost.clone();
            async move { lost.wait().await }
        });
        lost.report("wireguard-go for wg-mesh (pid 7) exited".into());
        lost.report("a later one".into());
        assert_eq!(waiter.await.unwrap(), "wireguard-go for wg-mesh (pid 7) exited");
        assert_eq!(lost.reason().as_deref(), Some("wireguard-go for wg-mesh (pid 7) exited"));
        assert_eq!(lost.wait().await, "wireguard-go for wg-mesh (pid 7) exited", "already lost: no wait");
    }
}
