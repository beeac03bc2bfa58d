//! A steady TCP stream: small writes at a fixed pace from one pod to
//! another, with the receiver timing the gaps between arrivals. A lost
//! segment costs TCP a retransmission timeout (200 ms at least on Linux),
//! so the largest gap tells whether the stream ever stalled.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Bytes per write.
const CHUNK: usize = 256;

/// What a steady stream saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SteadyTcpResult {
    /// `from -> to:port`.
    pub what: String,
    /// Bytes written.
    pub sent: u64,
    /// Bytes read by the receiver.
    pub received: u64,
    /// The longest time between two reads.
    pub max_gap: Duration,
    /// When (since the start) that gap ended.
    pub max_gap_at: Duration,
}

/// A running stream; [`SteadyTcp::finish`] stops it.
#[derive(Debug)]
pub struct SteadyTcp {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<u64>>,
    receiver: Option<JoinHandle<(u64, Duration, Duration)>>,
    what: String,
}

impl SteadyTcp {
    /// Connects `from` to a listener on `to_addr:port` in `to` and writes
    /// [`CHUNK`] bytes every `every` until finished.
    pub fn start(from: &Netns, to: &Netns, to_addr: &str, port: u16, every: Duration) -> SteadyTcp {
        let ip: std::net::IpAddr =
            to_addr.parse().unwrap_or_else(|e| panic!("{to_addr:?} is not an IP: {e}"));
        let addr = SocketAddr::new(ip, port);
        let what = format!("{} -> {addr} (tcp)", from.name());
        // Sockets keep the namespace they were made in: make them inside,
        // use them from ordinary threads.
        let listener = to.enter(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
        let mut out = from.enter(|| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        });
        let (mut inbound, _) = listener.accept().unwrap_or_else(|e| panic!("accept on {addr}: {e}"));
        out.set_nodelay(true).expect("TCP_NODELAY");
        out.set_write_timeout(Some(Duration::from_secs(10))).expect("a write timeout");
        inbound.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let sender = {
            let stop = Arc::clone(&stop);
            let what = what.clone();
            std::thread::spawn(move || {
                let chunk = [0x3cu8; CHUNK];
                let mut sent = 0u64;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = out.write_all(&chunk) {
                        panic!("{what}: write failed after {sent} bytes: {e}");
                    }
                    sent += CHUNK as u64;
                    next += every;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                let _ = out.shutdown(std::net::Shutdown::Write);
                sent
            })
        };
        let receiver = {
            let what = what.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                let mut received = 0u64;
                let mut last = Instant::now();
                let (mut max_gap, mut max_gap_at) = (Duration::ZERO, Duration::ZERO);
                loop {
                    match inbound.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            received += n as u64;
                            let now = Instant::now();
                            if now - last > max_gap {
                                max_gap = now - last;
                                max_gap_at = now - start;
                            }
                            last = now;
                        }
                        Err(e) => panic!("{what}: read failed after {received} bytes: {e}"),
                    }
                }
                (received, max_gap, max_gap_at)
            })
        };
        SteadyTcp { stop, sender: Some(sender), receiver: Some(receiver), what }
    }

    /// Stops writing, lets the receiver drain, and returns what it saw.
    pub fn finish(mut self) -> SteadyTcpResult {
        self.stop.store(true, Ordering::Relaxed);
        let sent = join(self.sender.take());
        let (received, max_gap, max_gap_at) = join(self.receiver.take());
        SteadyTcpResult { what: self.what.clone(), sent, received, max_gap, max_gap_at }
    }
}

fn join<T>(handle: Option<JoinHandle<T>>) -> T {
    handle.expect("finish is called once").join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

impl Drop for SteadyTcp {
    fn drop(&mut self) {
        // Unwinding: let the threads end on their own (the sender stops,
        // the receiver sees EOF or its read timeout).
        self.stop.store(true, Ordering::Relaxed);
    }
}
