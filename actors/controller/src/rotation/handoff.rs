//! How the rotation scheduler hands a node's new public key to the status
//! writer at the end of a successful rotation.
//!
//! The status writer owns `status.publicKey` (what the daemon's Hello
//! said) and rewrites its whole report on every write. Were the scheduler
//! to write the new key behind its back, the writer's next report would
//! put the old key back. So the scheduler hands the key over here, waits
//! until the status shows it (written by the writer, whose report now
//! holds it), and only then ends the rotation.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use vpblu_messages::NodeName;
use vpblu_runtime::watch_changes;

/// New keys on their way into VpbluNode status, by node (base64). Clones
/// share one map; it outlives restarts of either side.
#[derive(Clone, Debug)]
pub struct KeyHandoff {
    keys: Arc<watch::Sender<BTreeMap<NodeName, String>>>,
}

impl Default for KeyHandoff {
    fn default() -> Self {
        KeyHandoff { keys: Arc::new(watch::Sender::new(BTreeMap::new())) }
    }
}

impl KeyHandoff {
    /// An empty handoff.
    pub fn new() -> Self {
        KeyHandoff::default()
    }

    /// `node`'s key is now `key`: the status writer takes it into its report.
    pub fn hand(&self, node: &NodeName, key: String) {
        self.keys.send_if_modified(|keys| keys.insert(node.clone(), key.clone()).as_ref() != Some(&key));
    }

    /// The status shows `node`'s key: nothing more to hand over.
    pub fn withdraw(&self, node: &NodeName) {
        self.keys.send_if_modified(|keys| keys.remove(node).is_some());
    }

    /// Every key handed over and not withdrawn.
    pub fn current(&self) -> BTreeMap<NodeName, String> {
        self.keys.borrow().clone()
    }

    /// Yields once per change.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        watch_changes(self.keys.subscribe()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_until_withdrawn() {
        let handoff = KeyHandoff::new();
        let node = NodeName::new("n1").expect("a valid name");
        handoff.hand(&node, "k1".into());
        handoff.hand(&node, "k2".into());
        assert_eq!(handoff.current().get(&node).map(String::as_str), Some("k2"));
        handoff.withdraw(&node);
        assert!(handoff.current().is_empty());
    }
}
