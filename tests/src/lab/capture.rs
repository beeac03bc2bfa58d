//! What crosses the underlay: tcpdump on the underlay bridge, every line
//! sorted into WireGuard between nodes, the host network's own TCP (the
//! controller stream), link-level control (ARP, neighbour discovery), and
//! the rest — which must be empty for the mesh to be proven encrypted.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::Bridge;

/// What is allowed on the underlay: addresses and ports.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The underlay prefix every node address starts with, e.g. `10.240.7.`.
    pub underlay_prefix: String,
    /// WireGuard listen ports (one, or two with A/B devices).
    pub mesh_ports: Vec<u16>,
    /// TCP ports of the host network's own traffic between underlay
    /// addresses: the controllers' stream (and, on a real cluster, the API
    /// server and kubelets).
    pub control_ports: Vec<u16>,
    /// Text that betrays a pod address in a line, e.g. `10.244.`, `fd00:244:`.
    pub pod_markers: Vec<String>,
}

/// A running tcpdump on the underlay bridge.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    lines: Option<JoinHandle<Vec<String>>>,
}

impl Capture {
    /// Starts tcpdump on `bridge` and waits until it listens.
    pub fn start(bridge: &Bridge) -> Capture {
        let mut child = bridge.netns().spawn_in(
            Command::new("tcpdump")
                .args(["-i", Bridge::NAME, "-n", "-l", "-t", "-U"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let stdout = child.stdout.take().expect("tcpdump's stdout is piped");
        let lines =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect());
        let stderr = child.stderr.take().expect("tcpdump's stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("tcpdump started listening on the underlay bridge");
        Capture { child, lines: Some(lines) }
    }

    /// Stops tcpdump and sorts what it saw.
    pub fn finish(mut self, expect: &Expect) -> Seen {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
            .expect("a child's pid is positive");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let _ = self.child.wait();
        let lines = self.lines.take().expect("finish runs once").join().expect("tcpdump reader");
        Seen::of(lines, expect)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// tcpdump's lines, sorted.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// UDP between node addresses with a mesh port on one side.
    pub wireguard: usize,
    /// TCP between underlay addresses on a control port.
    pub control_stream: usize,
    /// ARP and IPv6 neighbour discovery / MLD without pod addresses.
    pub link_control: usize,
    /// Anything else: pod traffic in clear, or something unexplained.
    pub other: Vec<String>,
}

impl Seen {
    /// Sorts `lines`.
    pub fn of(lines: Vec<String>, expect: &Expect) -> Seen {
        let mut seen = Seen::default();
        for line in lines {
            let pod_address = expect.pod_markers.iter().any(|m| line.contains(m.as_str()));
            if line.trim().is_empty() {
                continue;
            } else if pod_address {
                seen.other.push(line);
            } else if line.starts_with("ARP")
                || (line.starts_with("IP6 ")
                    && ["neighbor", "router", "multicast listener"].iter().any(|w| line.contains(w)))
            {
                seen.link_control += 1;
            } else if let Some(flow) = Flow::parse(&line) {
                let nodes = flow.src.0.starts_with(&expect.underlay_prefix)
                    && flow.dst.0.starts_with(&expect.underlay_prefix);
                if nodes && flow.udp && flow.has_port(&expect.mesh_ports) {
                    seen.wireguard += 1;
                } else if nodes && !flow.udp && flow.has_port(&expect.control_ports) {
                    seen.control_stream += 1;
                } else {
                    seen.other.push(line);
                }
            } else {
                seen.other.push(line);
            }
        }
        seen
    }

    /// Panics unless pod traffic crossed only as WireGuard (and something
    /// crossed at all).
    pub fn assert_only_wireguard(&self, what: &str) {
        assert!(
            self.other.is_empty(),
            "{what}: the underlay carried more than WireGuard ({} WireGuard packets); the rest:\n{}",
            self.wireguard,
            self.other.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
        assert!(self.wireguard > 0, "{what}: not one WireGuard packet was seen on the underlay");
    }

    /// One line for a summary.
    pub fn summary(&self) -> String {
        format!(
            "{} WireGuard, {} controller stream, {} ARP/ND, {} other",
            self.wireguard,
            self.control_stream,
            self.link_control,
            self.other.len()
        )
    }
}

/// `IP 10.240.0.1.51820 > 10.240.0.2.51820: UDP, length 148`.
#[derive(Debug)]
struct Flow {
    src: (String, u16),
    dst: (String, u16),
    udp: bool,
}

impl Flow {
    fn parse(line: &str) -> Option<Flow> {
        let rest = line.strip_prefix("IP ")?;
        let (flow, tail) = rest.split_once(": ")?;
        let (src, dst) = flow.split_once(" > ")?;
        let split = |end: &str| {
            end.rsplit_once('.').and_then(|(a, p)| p.parse::<u16>().ok().map(|p| (a.to_owned(), p)))
        };
        // tcpdump dissects WireGuard on 51820 ("UDP" is then absent), so
        // TCP is recognised by its flags instead.
        let udp = !tail.starts_with("Flags [");
        Some(Flow { src: split(src)?, dst: split(dst)?, udp })
    }

    fn has_port(&self, ports: &[u16]) -> bool {
        ports.contains(&self.src.1) || ports.contains(&self.dst.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect() -> Expect {
        Expect {
            underlay_prefix: "10.240.3.".into(),
            mesh_ports: vec![51820, 51821],
            control_ports: vec![9443],
            pod_markers: vec!["10.244.".into(), "fd00:244:".into()],
        }
    }

    #[test]
    fn lines_are_sorted_by_what_they_are() {
        let lines = [
            "IP 10.240.3.1.51820 > 10.240.3.2.51820: UDP, length 148",
            "IP 10.240.3.2.51821 > 10.240.3.1.40000: [|wg]",
            "IP 10.240.3.1.52000 > 10.240.3.254.9443: Flags [P.], seq 1:20, ack 1, length 19",
            "ARP, Request who-has 10.240.3.2 tell 10.240.3.1, length 28",
            "IP 10.244.1.2 > 10.244.2.2: ICMP echo request, id 1, seq 1, length 64",
            "IP 10.240.3.1.52000 > 10.240.3.2.8080: Flags [S], seq 1, length 0",
            "IP 10.240.3.1.5000 > 10.240.3.2.6000: UDP, length 10",
        ]
        .map(String::from)
        .to_vec();
        let seen = Seen::of(lines, &expect());
        assert_eq!((seen.wireguard, seen.control_stream, seen.link_control), (2, 1, 1));
        assert_eq!(seen.other.len(), 3, "{:?}", seen.other);
    }
}
