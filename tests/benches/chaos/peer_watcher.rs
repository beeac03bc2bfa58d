//! Watches every main device's peers for flaps the desired state did not ask for.

use super::*;

/// Reads every main device through its UAPI socket every
/// [`WATCH_EVERY`]; a peer that disappears, appears, or whose counters go
/// back is a flap the desired state did not ask for.
pub(crate) struct PeerWatcher {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: JoinHandle<Vec<String>>,
}

impl PeerWatcher {
    pub(crate) fn start(lab: &Lab) -> PeerWatcher {
        let devices: Vec<(String, String)> =
            lab.daemons.iter().map(|d| (d.node_name.clone(), d.interface.clone())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || watch(&devices, &stopping));
        PeerWatcher { stop, thread }
    }

    /// What it found (nothing when no peer flapped).
    pub(crate) fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let found = self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if found.is_empty() {
            println!("peers: none flapped (every device kept its peers; counters only grew)");
        }
        found
    }
}

pub(crate) fn watch(devices: &[(String, String)], stop: &AtomicBool) -> Vec<String> {
    let mut found = Vec::new();
    let mut reads = 0u64;
    let mut first: BTreeMap<&str, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for (node, interface) in devices {
            let device = match wg::try_show(interface) {
                Ok(device) => device,
                Err(e) => {
                    found.push(format!("{node}: its device could not be read at {}: {e}", now()));
                    continue;
                }
            };
            reads += 1;
            let now_peers: BTreeMap<String, (u64, u64)> =
                device.peers.iter().map(|p| (p.public_key.clone(), (p.rx_bytes, p.tx_bytes))).collect();
            let Some(before) = first.get_mut(node.as_str()) else {
                first.insert(node, now_peers);
                continue;
            };
            if before.keys().ne(now_peers.keys()) {
                found.push(format!(
                    "{node}: peers changed at {}: {:?} -> {:?}",
                    now(),
                    before.keys().collect::<Vec<_>>(),
                    now_peers.keys().collect::<Vec<_>>()
                ));
            }
            for (key, (rx, tx)) in &now_peers {
                if let Some((rx0, tx0)) = before.get(key)
                    && (rx < rx0 || tx < tx0)
                {
                    found.push(format!(
                        "{node}: peer {key}'s counters went back at {} (removed and re-added?): rx {rx0} -> \
                         {rx}, tx {tx0} -> {tx}",
                        now()
                    ));
                }
            }
            *before = now_peers;
        }
        std::thread::sleep(WATCH_EVERY);
    }
    println!("peer watcher: {reads} device reads");
    found.truncate(20);
    found
}
