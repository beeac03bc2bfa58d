//! Real traffic between pods: ping (one-shot and continuous), a bulk TCP
//! transfer, UDP datagrams. Each runs inside the sending pod's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::netns::Netns;

/// What one ping run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingResult {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
    /// Everything ping printed.
    pub text: String,
    /// The sequence numbers of the requests lost (continuous pings only;
    /// empty for a one-shot ping, which only has the counts).
    pub lost_seqs: Vec<u32>,
    /// When ping found each request still unanswered as it sent the next
    /// one (`-O`, stamped by `-D`): about one interval after that request
    /// left, on the clock the logs use (continuous pings only).
    pub unanswered_at: BTreeMap<u32, SystemTime>,
}

impl PingResult {
    /// Requests without a reply.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }

    /// From a continuous ping's summary and the sequence numbers answered:
    /// unanswered requests after the last answer, up to
    /// [`IN_FLIGHT_AT_STOP`], were in flight when it stopped and are not
    /// counted as sent.
    fn of_replies(
        text: String,
        replies: &BTreeSet<u32>,
        unanswered_at: BTreeMap<u32, SystemTime>,
    ) -> PingResult {
        let summary = PingResult::parse(text);
        let last = replies.last().copied().unwrap_or(0);
        let in_flight = summary.sent.saturating_sub(last).min(IN_FLIGHT_AT_STOP);
        let sent = summary.sent - in_flight;
        // ping numbers its requests from 1.
        let lost_seqs = (1..=sent).filter(|seq| !replies.contains(seq)).collect();
        PingResult { sent, received: replies.len() as u32, text: summary.text, lost_seqs, unanswered_at }
    }

    /// From ping's output (its summary line).
    pub fn parse(text: String) -> PingResult {
        let (sent, received) = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .map(|line| {
                let nums: Vec<u32> =
                    line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
                (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
            })
            .unwrap_or((0, 0));
        PingResult { sent, received, text, lost_seqs: Vec::new(), unanswered_at: BTreeMap::new() }
    }
}

/// `ping -n -W 1 ARGS TO` from `from`.
pub fn ping(from: &Netns, to: &str, args: &[&str]) -> PingResult {
    let mut all = vec!["-n", "-W", "1"];
    all.extend_from_slice(args);
    all.push(to);
    let out = from.run("ping", &all);
    PingResult::parse(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Three pings that must all be answered.
pub fn assert_flows(from: &Netns, to: &str, why: &str) {
    let result = ping(from, to, &["-q", "-c", "3", "-i", "0.05"]);
    assert!(
        result.sent == 3 && result.received == 3,
        "{why}: {} -> {to} should flow, got {}/{}:\n{}",
        from.name(),
        result.received,
        result.sent,
        result.text
    );
}

/// Two pings that must both go unanswered.
pub fn assert_dropped(from: &Netns, to: &str, why: &str) {
    let result = ping(from, to, &["-q", "-c", "2", "-i", "0.2"]);
    assert!(
        result.sent == 2 && result.received == 0,
        "{why}: {} -> {to} should be dropped, got {}/{}:\n{}",
        from.name(),
        result.received,
        result.sent,
        result.text
    );
}

/// Pings once at a time until one is answered (the first packets may wait
/// for a handshake); how long that took.
pub fn wait_flows(from: &Netns, to: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if ping(from, to, &["-q", "-c", "1"]).received == 1 {
            return start.elapsed();
        }
    }
    panic!("{} -> {to}: no answer within {within:?}", from.name());
}

/// Pings back to back (`-W` 0.2 s) until one goes unanswered; how long
/// after the start that ping was sent. For "the drop starts within X".
pub fn wait_dropped(from: &Netns, to: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        let sent = start.elapsed();
        if ping(from, to, &["-q", "-c", "1", "-W", "0.2"]).received == 0 {
            return sent;
        }
    }
    panic!("{} -> {to}: still answered after {within:?}", from.name());
}

/// Requests still unanswered at the very end of a continuous ping that
/// are taken to be in flight when it was stopped, not lost (ping exits on
/// SIGINT without waiting for them). More than this is a real loss.
const IN_FLIGHT_AT_STOP: u32 = 3;

/// A ping running in the background at `interval` until [`finish`](Self::finish).
/// Every reply is read as it comes (by sequence number), so a loss is a
/// gap, and the requests in flight when it is stopped do not count.
#[derive(Debug)]
pub struct ContinuousPing {
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<PingLines>>,
    what: String,
}

impl ContinuousPing {
    /// Starts `ping -D -O -i INTERVAL -W 1 TO` in `from`.
    pub fn start(from: &Netns, to: &str, interval: Duration) -> ContinuousPing {
        let interval = format!("{:.3}", interval.as_secs_f64());
        let mut child = from.spawn_in(
            Command::new("ping")
                .args(["-n", "-D", "-O", "-W", "1", "-i", &interval, to])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let stdout = child.stdout.take().expect("ping's stdout is piped");
        let reader = std::thread::spawn(move || {
            let mut lines = PingLines::default();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.read(&line);
            }
            lines
        });
        ContinuousPing { child: Some(child), reader: Some(reader), what: format!("{} -> {to}", from.name()) }
    }

    /// Stops it after letting the last request's reply arrive; what it
    /// counted.
    pub fn finish(self) -> PingResult {
        std::thread::sleep(Duration::from_millis(1100));
        self.finish_now()
    }

    /// Stops it right away (SIGINT, so ping prints its summary).
    pub fn finish_now(mut self) -> PingResult {
        let child = self.child.take().expect("finish is called once");
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits i32"))
            .expect("a child's pid is positive");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for ping {}: {e}", self.what));
        let lines = self
            .reader
            .take()
            .expect("finish is called once")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let text = format!("{}{}", lines.other, String::from_utf8_lossy(&out.stderr));
        PingResult::of_replies(text, &lines.replies, lines.unanswered_at)
    }
}

/// What a continuous ping printed, read line by line.
#[derive(Debug, Default)]
struct PingLines {
    /// Sequence numbers answered.
    replies: BTreeSet<u32>,
    /// `no answer yet for icmp_seq=N` lines, by N, with their `-D` stamp.
    unanswered_at: BTreeMap<u32, SystemTime>,
    /// Every other line.
    other: String,
}

impl PingLines {
    fn read(&mut self, line: &str) {
        let (stamp, rest) = split_stamp(line);
        if let Some(seq) = reply_seq(rest) {
            self.replies.insert(seq);
        } else if let (Some(at), Some(seq)) = (stamp, unanswered_seq(rest)) {
            self.unanswered_at.insert(seq, at);
        } else if unanswered_seq(rest).is_none() {
            self.other.push_str(line);
            self.other.push('\n');
        }
    }
}

/// `[1733330000.123456] rest` (ping -D) as its time and the rest.
fn split_stamp(line: &str) -> (Option<SystemTime>, &str) {
    let Some(inner) = line.strip_prefix('[') else { return (None, line) };
    let Some((stamp, rest)) = inner.split_once("] ") else { return (None, line) };
    let at = stamp.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
    (at.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s)), rest)
}

/// The sequence number of a `no answer yet for icmp_seq=N` line (ping -O).
fn unanswered_seq(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("no answer yet for icmp_seq=")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The sequence number of a reply line (`64 bytes from …: icmp_seq=7 …`).
fn reply_seq(line: &str) -> Option<u32> {
    if !line.contains(" bytes from ") {
        return None;
    }
    let rest = &line[line.find("icmp_seq=")? + "icmp_seq=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `bytes` over TCP from `from` to `to_addr:port`, served by a
/// listener in `to`; how long it took. Panics unless every byte arrived.
pub fn bulk_tcp(from: &Netns, to: &Netns, to_addr: &str, port: u16, bytes: usize) -> Duration {
    let addr = socket_addr(to_addr, port);
    let (bound_tx, bound_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            to.enter(|| {
                let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                bound_tx.send(()).expect("the sender waits");
                let (mut stream, _) = listener.accept().expect("accept");
                stream.set_read_timeout(Some(Duration::from_secs(20))).expect("set a read timeout");
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break total,
                        Ok(n) => total += n,
                        Err(e) => panic!("receiving on {addr} after {total} bytes: {e}"),
                    }
                }
            })
        });
        bound_rx.recv_timeout(Duration::from_secs(5)).expect("the receiver bound its port");
        let start = Instant::now();
        from.enter(|| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            stream.set_write_timeout(Some(Duration::from_secs(20))).expect("set a write timeout");
            let chunk = vec![0x5au8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                stream
                    .write_all(&chunk[..n])
                    .unwrap_or_else(|e| panic!("sending to {addr}, {left} bytes left: {e}"));
                left -= n;
            }
            stream.shutdown(std::net::Shutdown::Write).expect("shut down the write half");
        });
        let received = receiver.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        assert_eq!(received, bytes, "every byte sent to {addr} arrived");
        start.elapsed()
    })
}

/// Sends `count` UDP datagrams of `size` bytes from `from` to
/// `to_addr:port` (a socket in `to`) and returns how many arrived.
pub fn udp_datagrams(from: &Netns, to: &Netns, to_addr: &str, port: u16, count: usize, size: usize) -> usize {
    let addr = socket_addr(to_addr, port);
    let (bound_tx, bound_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            to.enter(|| {
                let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
                socket.set_read_timeout(Some(Duration::from_secs(2))).expect("set a read timeout");
                bound_tx.send(()).expect("the sender waits");
                let mut buf = vec![0u8; 65536];
                let mut got = 0;
                while got < count && socket.recv(&mut buf).is_ok() {
                    got += 1;
                }
                got
            })
        });
        bound_rx.recv_timeout(Duration::from_secs(5)).expect("the receiver bound its port");
        from.enter(|| {
            let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(bind).expect("bind a udp socket");
            let payload = vec![0xa5u8; size];
            for _ in 0..count {
                socket.send_to(&payload, addr).unwrap_or_else(|e| panic!("send to {addr}: {e}"));
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        receiver.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn socket_addr(ip: &str, port: u16) -> SocketAddr {
    let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip:?} is not an IP address: {e}"));
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summaries_are_parsed() {
        let text = "--- 10.0.0.2 ping statistics ---\n300 packets transmitted, 297 received, 1% packet loss, time 3000ms\n";
        let result = PingResult::parse(text.to_owned());
        assert_eq!((result.sent, result.received, result.lost()), (300, 297, 3));
        let none = PingResult::parse("ping: connect: Network is unreachable\n".to_owned());
        assert_eq!((none.sent, none.received), (0, 0));
    }

    #[test]
    fn only_the_last_few_unanswered_requests_were_in_flight() {
        let line = "64 bytes from 10.244.2.2: icmp_seq=17 ttl=63 time=0.412 ms";
        assert_eq!(reply_seq(line), Some(17));
        assert_eq!(reply_seq("From 10.244.1.1 icmp_seq=3 Destination Host Unreachable"), None);
        let summary = |sent: u32| format!("{sent} packets transmitted, 9 received, 10% packet loss\n");
        // 1..=10 sent, 1..=9 answered: the 10th was in flight.
        let all: BTreeSet<u32> = (1..=9).collect();
        let r = PingResult::of_replies(summary(10), &all, BTreeMap::new());
        assert_eq!((r.sent, r.received, r.lost()), (9, 9, 0));
        // A gap is a loss even with the tail in flight.
        let gap: BTreeSet<u32> = (1..=9).filter(|s| *s != 5).collect();
        assert_eq!(PingResult::of_replies(summary(10), &gap, BTreeMap::new()).lost(), 1);
        // Nothing answered for the last 20: only 3 are excused.
        let early: BTreeSet<u32> = (1..=9).collect();
        assert_eq!(PingResult::of_replies(summary(29), &early, BTreeMap::new()).lost(), 17);
        // Nothing answered at all: everything but 3 is lost.
        assert_eq!(PingResult::of_replies(summary(10), &BTreeSet::new(), BTreeMap::new()).lost(), 7);
    }

    #[test]
    fn stamped_lines_give_replies_and_when_a_request_was_found_unanswered() {
        let mut lines = PingLines::default();
        lines.read("[1764866662.571234] 64 bytes from 10.244.3.2: icmp_seq=41 ttl=62 time=0.5 ms");
        lines.read("[1764866662.581500] no answer yet for icmp_seq=42");
        lines.read("PING 10.244.3.2 (10.244.3.2) 56(84) bytes of data.");
        assert_eq!(lines.replies, BTreeSet::from([41]));
        let at = lines.unanswered_at[&42].duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(at.as_millis(), 1_764_866_662_581);
        assert_eq!(lines.other, "PING 10.244.3.2 (10.244.3.2) 56(84) bytes of data.\n");
        // Unstamped lines still count replies.
        lines.read("64 bytes from 10.244.3.2: icmp_seq=43 ttl=62 time=0.5 ms");
        assert!(lines.replies.contains(&43));
    }
}
