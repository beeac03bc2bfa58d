//! Traffic between every pair of pods on different nodes at once: a ping
//! at a fixed rate and a steady TCP stream per pair, for checks that a
//! change to the mesh (a key rotation, a controller failover) loses
//! nothing.

use std::time::{Duration, SystemTime};

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
    started: SystemTime,
    ping_every: Duration,
}

/// What [`PairTraffic`] counted.
#[derive(Debug)]
pub struct PairTrafficResult {
    /// Per pair: `from -> to` and its ping summary.
    pub pings: Vec<(String, PingResult)>,
    /// Per pair: its TCP stream.
    pub streams: Vec<SteadyTcpResult>,
    /// When the pings started (request `n` left about `n - 1` intervals
    /// later), to line losses up with logs.
    pub started: SystemTime,
    /// The ping interval.
    pub ping_every: Duration,
}

impl PairTraffic {
    /// Starts a ping every `ping_every` and a TCP write every `tcp_every`
    /// for each pair.
    pub fn start(topology: &Topology, ping_every: Duration, tcp_every: Duration) -> PairTraffic {
        PairTraffic::start_where(topology, ping_every, tcp_every, |_, _| true)
    }

    /// [`PairTraffic::start`] for the pairs `keep` accepts (by pod name,
    /// lower name first), e.g. to leave out a pair a BlockPolicy cuts.
    pub fn start_where(
        topology: &Topology,
        ping_every: Duration,
        tcp_every: Duration,
        keep: impl Fn(&str, &str) -> bool,
    ) -> PairTraffic {
        let mut pings = Vec::new();
        let mut streams = Vec::new();
        let mut port = FIRST_PORT;
        let started = SystemTime::now();
        for (from, to) in topology.cross_node_pairs() {
            if from.name > to.name || !keep(&from.name, &to.name) {
                continue; // one per unordered pair
            }
            let what = format!("{} -> {}", from.name, to.name);
            pings.push((what, ContinuousPing::start(&from.ns, &to.v4, ping_every)));
            streams.push(SteadyTcp::start(&from.ns, &to.ns, &to.v4, port, tcp_every));
            port += 1;
        }
        PairTraffic { pings, streams, started, ping_every }
    }

    /// Stops everything (after a second for the last replies) and collects
    /// the counts.
    pub fn finish(self) -> PairTrafficResult {
        std::thread::sleep(Duration::from_millis(1100));
        PairTrafficResult {
            pings: self.pings.into_iter().map(|(what, ping)| (what, ping.finish_now())).collect(),
            streams: self.streams.into_iter().map(SteadyTcp::finish).collect(),
            started: self.started,
            ping_every: self.ping_every,
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

    /// Per pair with losses: each run of consecutive lost requests as
    /// (first, last) send time: when ping found it unanswered, one interval
    /// earlier; estimated from the start and the interval only when ping
    /// printed no such line (under load requests leave later than
    /// `start + seq × interval`, and the estimate drifts by seconds).
    pub fn loss_windows(&self) -> Vec<(&str, Vec<(SystemTime, SystemTime)>)> {
        self.pings
            .iter()
            .filter(|(_, p)| !p.lost_seqs.is_empty())
            .map(|(what, p)| {
                let mut runs: Vec<(u32, u32)> = Vec::new();
                for &seq in &p.lost_seqs {
                    match runs.last_mut() {
                        Some((_, last)) if *last + 1 == seq => *last = seq,
                        _ => runs.push((seq, seq)),
                    }
                }
                let at = |seq: u32| match p.unanswered_at.get(&seq) {
                    Some(seen) => seen.checked_sub(self.ping_every).unwrap_or(*seen),
                    None => self.started + self.ping_every * seq.saturating_sub(1),
                };
                (what.as_str(), runs.into_iter().map(|(a, b)| (at(a), at(b))).collect())
            })
            .collect()
    }

    /// One line per pair, for a failing assertion or a bench; lost
    /// requests with their send times (UTC, to match the processes' logs).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let windows = self.loss_windows();
        for (what, ping) in &self.pings {
            out.push_str(&format!("ping {what}: {} sent, {} lost", ping.sent, ping.lost()));
            if let Some((_, runs)) = windows.iter().find(|(w, _)| w == what) {
                let shown: Vec<String> = runs
                    .iter()
                    .map(|(a, b)| {
                        let ms = b.duration_since(*a).unwrap_or_default().as_millis()
                            + self.ping_every.as_millis();
                        format!("{} for ~{ms} ms", utc_millis(*a))
                    })
                    .collect();
                out.push_str(&format!(" (lost from {})", shown.join(", ")));
            }
            out.push('\n');
        }
        for s in &self.streams {
            out.push_str(&format!(
                "{}: {} of {} bytes, longest gap {:?} ending ~{}\n",
                s.what,
                s.received,
                s.sent,
                s.max_gap,
                utc_millis(self.started + s.max_gap_at)
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

/// `t` as RFC 3339 UTC with milliseconds.
pub fn utc_millis(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
