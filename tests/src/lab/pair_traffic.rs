//! Traffic between every pair of pods on different nodes at once: a ping
//! at a fixed rate and a steady TCP stream per pair, for checks that a
//! change to the mesh (a key rotation, a controller failover) loses
//! nothing.

use std::time::Duration;

use super::Topology;
use super::steady_tcp::{SteadyTcp, SteadyTcpResult};
use super::traffic::{ContinuousPing, PingResult};

/// First TCP port the streams listen on (one port per pair).
const FIRST_PORT: u16 = 46000;

/// Pings and TCP streams between every unordered pair of pods on
/// different nodes (a ping's echo covers both directions).
#[derive(Debug)]
pub struct PairTraffic {
    pings: Vec<(String, ContinuousPing)>,
    streams: Vec<SteadyTcp>,
}

/// What [`PairTraffic`] counted.
#[derive(Debug)]
pub struct PairTrafficResult {
    /// Per pair: `from -> to` and its ping summary.
    pub pings: Vec<(String, PingResult)>,
    /// Per pair: its TCP stream.
    pub streams: Vec<SteadyTcpResult>,
}

impl PairTraffic {
    /// Starts a ping every `ping_every` and a TCP write every `tcp_every`
    /// for each pair.
    pub fn start(topology: &Topology, ping_every: Duration, tcp_every: Duration) -> PairTraffic {
        let mut pings = Vec::new();
        let mut streams = Vec::new();
        let mut port = FIRST_PORT;
        for (from, to) in topology.cross_node_pairs() {
            if from.name > to.name {
                continue; // one per unordered pair
            }
            let what = format!("{} -> {}", from.name, to.name);
            pings.push((what, ContinuousPing::start(&from.ns, &to.v4, ping_every)));
            streams.push(SteadyTcp::start(&from.ns, &to.ns, &to.v4, port, tcp_every));
            port += 1;
        }
        PairTraffic { pings, streams }
    }

    /// Stops everything (after a second for the last replies) and collects
    /// the counts.
    pub fn finish(self) -> PairTrafficResult {
        std::thread::sleep(Duration::from_millis(1100));
        PairTrafficResult {
            pings: self.pings.into_iter().map(|(what, ping)| (what, ping.finish_now())).collect(),
            streams: self.streams.into_iter().map(SteadyTcp::finish).collect(),
        }
    }
}

impl PairTrafficResult {
    /// Echo requests lost over all pairs.
    pub fn lost(&self) -> u32 {
        self.pings.iter().map(|(_, p)| p.lost()).sum()
    }

    /// Echo requests sent over all pairs.
    pub fn sent(&self) -> u32 {
        self.pings.iter().map(|(_, p)| p.sent).sum()
    }

    /// The longest gap any TCP stream saw.
    pub fn max_tcp_gap(&self) -> Duration {
        self.streams.iter().map(|s| s.max_gap).max().unwrap_or_default()
    }

    /// One line per pair, for a failing assertion or a bench.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (what, ping) in &self.pings {
            out.push_str(&format!("ping {what}: {} sent, {} lost\n", ping.sent, ping.lost()));
        }
        for s in &self.streams {
            out.push_str(&format!(
                "{}: {} of {} bytes, longest gap {:?} at {:?}\n",
                s.what, s.received, s.sent, s.max_gap, s.max_gap_at
            ));
        }
        out
    }

    /// Zero lost pings (and at least `min_sent` sent), every TCP byte
    /// delivered, and no TCP gap over `max_gap`.
    pub fn assert_lossless(&self, min_sent: u32, max_gap: Duration, during: &str) {
        let summary = self.summary();
        assert!(
            self.sent() >= min_sent,
            "{during}: only {} pings sent (want {min_sent})\n{summary}",
            self.sent()
        );
        assert_eq!(self.lost(), 0, "{during}: pings lost\n{summary}");
        for s in &self.streams {
            assert_eq!(s.received, s.sent, "{during}: {} lost bytes\n{summary}", s.what);
        }
        assert!(self.max_tcp_gap() <= max_gap, "{during}: a TCP stream stalled over {max_gap:?}\n{summary}");
    }
}
