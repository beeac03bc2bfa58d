//! The WireGuard cross-platform userspace API (UAPI): a line-oriented text
//! protocol over `/var/run/wireguard/NAME.sock`
//! (<https://www.wireguard.com/xplatform/>). Encoding and parsing are pure
//! functions; [`Client`] does one request per connection.
//!
//! Buffers that can hold a private key (a `get` reply, a `set` that changes
//! the key) are zeroized on drop.

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use vpblu_messages::{Cidr, PublicKey};
use zeroize::Zeroizing;

use super::diff::PeerDiff;
use super::{DeviceState, PeerState};
use crate::keys::PrivateKey;

/// A `get` reply larger than this is refused (about 20 000 peers' worth).
const MAX_REPLY: usize = 16 << 20;

/// What one `set` transaction changes. Fields left `None` are not sent.
#[derive(Default)]
pub(crate) struct SetRequest<'a> {
    pub private_key: Option<&'a PrivateKey>,
    pub listen_port: Option<u16>,
    pub peers: Option<&'a PeerDiff>,
}

impl SetRequest<'_> {
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none() && self.listen_port.is_none() && self.peers.is_none_or(PeerDiff::is_empty)
    }
}

/// Encodes a `set=1` request, terminated by the blank line. Removals come
/// first, so allowed IPs they free can be taken by updates and additions in
/// the same transaction.
pub(crate) fn encode_set(request: &SetRequest<'_>) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(256));
    out.push_str("set=1\n");
    if let Some(key) = request.private_key {
        out.push_str("private_key=");
        push_hex(&mut out, key.secret_bytes());
        out.push('\n');
    }
    if let Some(port) = request.listen_port {
        let _ = writeln!(out, "listen_port={port}");
    }
    if let Some(diff) = request.peers {
        for key in &diff.remove {
            push_peer_key(&mut out, key);
            out.push_str("remove=true\n");
        }
        for update in &diff.update {
            push_peer_key(&mut out, &update.public_key);
            // Never create a peer from an update: if it vanished meanwhile,
            // the next resync adds it with its full configuration.
            out.push_str("update_only=true\n");
            if let Some(endpoint) = update.endpoint {
                let _ = writeln!(out, "endpoint={endpoint}");
            }
            if let Some(keepalive) = update.persistent_keepalive {
                let _ = writeln!(out, "persistent_keepalive_interval={keepalive}");
            }
            if let Some(ips) = &update.allowed_ips {
                push_allowed_ips(&mut out, ips);
            }
        }
        for peer in &diff.add {
            push_peer_key(&mut out, &peer.public_key);
            let _ = writeln!(out, "endpoint={}", peer.endpoint);
            if let Some(keepalive) = peer.persistent_keepalive.filter(|&k| k != 0) {
                let _ = writeln!(out, "persistent_keepalive_interval={keepalive}");
            }
            push_allowed_ips(&mut out, &peer.allowed_ips);
        }
    }
    out.push('\n');
    out
}

fn push_peer_key(out: &mut String, key: &PublicKey) {
    out.push_str("public_key=");
    push_hex(out, key.as_bytes());
    out.push('\n');
}

fn push_allowed_ips(out: &mut String, ips: &[Cidr]) {
    out.push_str("replace_allowed_ips=true\n");
    for ip in ips {
        let _ = writeln!(out, "allowed_ip={ip}");
    }
}

fn push_hex(out: &mut String, bytes: &[u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

fn parse_hex_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

/// What is wrong with a UAPI reply. A private key's value is never part
/// of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line that is not `key=value`.
    #[error("line without '=': {0:?}")]
    NoEquals(String),
    /// A value that does not parse as its key requires.
    #[error("bad {key} value {value:?}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value as sent.
        value: String,
    },
    /// A private key that is not 64 hex digits (the value is not shown).
    #[error("bad private_key value (not 64 hex digits)")]
    BadPrivateKey,
    /// A handshake time SystemTime cannot hold.
    #[error("bad last_handshake_time_sec value \"{0}\" (past the end of time for this system)")]
    TimeOverflow(u64),
    /// No `errno=` line.
    #[error("reply has no errno line")]
    NoErrno,
    /// The implementation answered with an error.
    #[error("errno={0}")]
    Errno(i64),
}

/// Parses a `get=1` reply (everything before the blank line). The device's
/// private key is only used to derive its public key; it is not kept.
pub fn parse_get(reply: &str) -> Result<DeviceState, ReplyError> {
    let mut state = DeviceState { public_key: None, listen_port: 0, peers: Vec::new() };
    let mut errno = None;
    let mut handshake = Handshake::default();
    for line in reply.lines() {
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| ReplyError::NoEquals(line.to_owned()))?;
        let bad = |key: &'static str| ReplyError::BadValue { key, value: value.to_owned() };
        match (key, state.peers.last_mut()) {
            ("errno", _) => errno = Some(value.parse::<i64>().map_err(|_| bad("errno"))?),
            ("private_key", None) => {
                let bytes = parse_hex_key(value).ok_or(ReplyError::BadPrivateKey)?;
                if bytes.iter().any(|&b| b != 0) {
                    state.public_key = Some(PrivateKey::from_bytes(&bytes).public_key());
                }
            }
            ("listen_port", None) => state.listen_port = value.parse().map_err(|_| bad("listen_port"))?,
            ("public_key", last) => {
                handshake.settle(last)?;
                let bytes = parse_hex_key(value).ok_or_else(|| bad("public_key"))?;
                state.peers.push(PeerState {
                    public_key: PublicKey::from_bytes(*bytes),
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: None,
                });
            }
            (key, Some(peer)) => peer_line(peer, &mut handshake, key, value)?,
            // fwmark and whatever a newer implementation adds: not ours.
            _ => {}
        }
    }
    handshake.settle(state.peers.last_mut())?;
    match errno {
        Some(0) => {}
        Some(n) => return Err(ReplyError::Errno(n)),
        None => return Err(ReplyError::NoErrno),
    }
    for peer in &mut state.peers {
        peer.allowed_ips.sort();
    }
    Ok(state)
}

/// A peer's last handshake: seconds and nanoseconds arrive as two lines,
/// and the time is settled when the next peer starts, or at the end.
#[derive(Default)]
struct Handshake {
    sec: Option<u64>,
    nsec: u32,
}

impl Handshake {
    /// Gives `peer` the time gathered so far and starts over. A time past
    /// what SystemTime holds is a broken reply, not a panic.
    fn settle(&mut self, peer: Option<&mut PeerState>) -> Result<(), ReplyError> {
        let n = std::mem::take(&mut self.nsec);
        if let (Some(peer), Some(s)) = (peer, self.sec.take())
            && (s != 0 || n != 0)
        {
            let at = UNIX_EPOCH.checked_add(Duration::new(s, n)).ok_or(ReplyError::TimeOverflow(s))?;
            peer.last_handshake = Some(at);
        }
        Ok(())
    }
}

/// One `key=value` line of `peer`'s section.
fn peer_line(
    peer: &mut PeerState,
    handshake: &mut Handshake,
    key: &str,
    value: &str,
) -> Result<(), ReplyError> {
    let bad = |key: &'static str| ReplyError::BadValue { key, value: value.to_owned() };
    match key {
        "endpoint" => peer.endpoint = Some(value.parse::<SocketAddr>().map_err(|_| bad("endpoint"))?),
        "allowed_ip" => {
            let (addr, prefix) = value.split_once('/').ok_or_else(|| bad("allowed_ip"))?;
            let addr = addr.parse().map_err(|_| bad("allowed_ip"))?;
            let prefix = prefix.parse().map_err(|_| bad("allowed_ip"))?;
            peer.allowed_ips.push(Cidr::containing(addr, prefix).map_err(|_| bad("allowed_ip"))?);
        }
        "last_handshake_time_sec" => {
            handshake.sec = Some(value.parse().map_err(|_| bad("last_handshake_time_sec"))?);
        }
        "last_handshake_time_nsec" => {
            handshake.nsec = value
                .parse()
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| bad("last_handshake_time_nsec"))?;
        }
        "rx_bytes" => peer.rx_bytes = value.parse().map_err(|_| bad("rx_bytes"))?,
        "tx_bytes" => peer.tx_bytes = value.parse().map_err(|_| bad("tx_bytes"))?,
        "persistent_keepalive_interval" => {
            let interval: u16 = value.parse().map_err(|_| bad("persistent_keepalive_interval"))?;
            peer.persistent_keepalive = (interval != 0).then_some(interval);
        }
        // preshared_key, protocol_version, and whatever a newer
        // implementation adds: not ours to interpret.
        _ => {}
    }
    Ok(())
}

/// The reply's `errno` (0 is success).
pub(crate) fn parse_errno(reply: &str) -> Result<i64, ReplyError> {
    let value = reply.lines().find_map(|l| l.strip_prefix("errno=")).ok_or(ReplyError::NoErrno)?;
    value.parse().map_err(|_| ReplyError::BadValue { key: "errno", value: value.to_owned() })
}

/// One UAPI socket.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Client {
    /// Connects, bounded by the client's timeout for every read and write.
    pub fn connect(&self) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        Ok(stream)
    }

    /// Sends `request` and reads the reply up to its blank line.
    pub fn request(&self, request: &str) -> io::Result<Zeroizing<String>> {
        let mut stream = self.connect()?;
        exchange(&mut stream, request)
    }

    /// `get=1`: the raw reply (may contain the private key: zeroized).
    pub fn get(&self) -> io::Result<Zeroizing<String>> {
        self.request("get=1\n\n")
    }

    /// Where this client talks to.
    pub fn path(&self) -> &Path {
        &self.socket
    }
}

/// Writes `request` on `stream` and reads the reply up to its blank line.
pub(crate) fn exchange(stream: &mut UnixStream, request: &str) -> io::Result<Zeroizing<String>> {
    stream.write_all(request.as_bytes())?;
    let mut reply = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = stream.read(&mut chunk[..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the reply ended",
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.ends_with(b"\n\n") {
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply larger than 16 MiB"));
        }
    }
    let text = std::str::from_utf8(&reply)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "reply is not UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vpblu_messages::{NodeName, Peer};

    use super::super::diff::PeerUpdate;
    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey::from_bytes([byte; 32])
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    const HEX_11: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const HEX_22: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn parses_a_wireguard_go_reply() {
        // RFC 7748 Alice as the device key.
        let reply = format!(
            "private_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n\
             listen_port=51820\nfwmark=0\n\
             public_key={HEX_11}\n\
             preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n\
             protocol_version=1\nendpoint=10.0.0.2:51820\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=250\ntx_bytes=1234\nrx_bytes=5678\npersistent_keepalive_interval=25\n\
             allowed_ip=10.244.2.0/24\nallowed_ip=10.244.1.0/24\n\
             public_key={HEX_22}\nprotocol_version=1\nendpoint=[fd00::2]:51820\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             errno=0\n\n"
        );
        let state = parse_get(&reply).unwrap();
        assert_eq!(state.public_key.unwrap().to_base64(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
        assert_eq!(state.listen_port, 51820);
        assert_eq!(state.peers.len(), 2);
        let a = &state.peers[0];
        assert_eq!(a.public_key, key(0x11));
        assert_eq!(a.endpoint, Some("10.0.0.2:51820".parse().unwrap()));
        assert_eq!(a.allowed_ips, [cidr("10.244.1.0/24"), cidr("10.244.2.0/24")], "sorted");
        assert_eq!(a.last_handshake, Some(UNIX_EPOCH + Duration::new(1_700_000_000, 250)));
        assert_eq!((a.tx_bytes, a.rx_bytes), (1234, 5678));
        assert_eq!(a.persistent_keepalive, Some(25));
        let b = &state.peers[1];
        assert_eq!(b.endpoint, Some("[fd00::2]:51820".parse().unwrap()));
        assert_eq!(b.last_handshake, None, "0/0 means never");
        assert_eq!(b.persistent_keepalive, None);
        assert!(b.allowed_ips.is_empty());
    }

    /// Found by the uapi_get fuzz target: adding the time to the epoch
    /// panicked. fuzz/regressions/uapi_get replays the original input.
    #[test]
    fn a_handshake_time_past_the_end_of_time_is_an_error_not_a_panic() {
        let reply = |sec: &str, nsec: &str| {
            format!(
                "listen_port=51820\npublic_key={HEX_11}\nlast_handshake_time_sec={sec}\n\
                 last_handshake_time_nsec={nsec}\nerrno=0\n\n"
            )
        };
        let err = parse_get(&reply("17070707030764840000", "0")).unwrap_err().to_string();
        assert!(err.contains("last_handshake_time_sec"), "{err}");
        let err = parse_get(&reply(&u64::MAX.to_string(), "999999999")).unwrap_err().to_string();
        assert!(err.contains("last_handshake_time_sec"), "{err}");
        let err = parse_get(&reply("1700000000", "1000000000")).unwrap_err().to_string();
        assert!(err.contains("last_handshake_time_nsec"), "{err}");
        assert!(parse_get(&reply("1700000000", "999999999")).is_ok());
    }

    #[test]
    fn the_read_back_state_keeps_no_trace_of_the_private_key() {
        let key = PrivateKey::generate();
        let mut hex = String::new();
        push_hex(&mut hex, key.secret_bytes());
        let reply = format!("private_key={hex}\nlisten_port=1\npublic_key={HEX_11}\nerrno=0\n\n");
        let state = parse_get(&reply).unwrap();
        assert_eq!(state.public_key, Some(key.public_key()));
        let shown = format!("{state:?} {state:#?}");
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.secret_bytes());
        assert!(!shown.contains(&hex) && !shown.contains(&b64), "{shown}");
        // The request that sets it is only ever a zeroizing string, never
        // a Debug-able value.
        let set = encode_set(&SetRequest { private_key: Some(&key), ..SetRequest::default() });
        assert!(set.contains(&hex));
    }

    #[test]
    fn a_fresh_device_has_no_key_and_no_peers() {
        let state = parse_get("listen_port=0\nerrno=0\n\n").unwrap();
        assert_eq!(state, DeviceState { public_key: None, listen_port: 0, peers: vec![] });
        let zero = format!("private_key={}\nerrno=0\n\n", "0".repeat(64));
        assert_eq!(parse_get(&zero).unwrap().public_key, None);
    }

    #[test]
    fn bad_replies_are_errors_that_do_not_echo_the_private_key() {
        assert_eq!(parse_get("listen_port=1\n\n").unwrap_err(), ReplyError::NoErrno);
        assert_eq!(parse_get("errno=-22\n\n").unwrap_err().to_string(), "errno=-22");
        assert!(parse_get("public_key=zz\nerrno=0\n\n").unwrap_err().to_string().contains("public_key"));
        let secret = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2";
        let err = parse_get(&format!("private_key={secret}\nerrno=0\n\n")).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(secret), "{err}");
        assert!(parse_get("garbage\n\n").is_err());
        assert_eq!(parse_errno("errno=0\n\n"), Ok(0));
        assert_eq!(parse_errno("errno=-5\n\n"), Ok(-5));
        assert!(parse_errno("\n").is_err());
    }

    #[test]
    fn encodes_removals_then_updates_then_additions() {
        let node = NodeName::new("node-b").unwrap();
        let add = Arc::new(Peer {
            node: node.clone(),
            public_key: key(0x22),
            endpoint: "192.0.2.2:51820".parse().unwrap(),
            allowed_ips: vec![cidr("10.244.2.0/24"), cidr("fd00:2::/64")],
            persistent_keepalive: Some(25),
        });
        let diff = PeerDiff {
            add: vec![add],
            update: vec![PeerUpdate {
                node,
                public_key: key(0x11),
                endpoint: None,
                allowed_ips: Some(vec![cidr("10.244.1.0/24")]),
                persistent_keepalive: Some(0),
            }],
            remove: vec![key(0x33)],
        };
        let request = SetRequest { private_key: None, listen_port: Some(51820), peers: Some(&diff) };
        assert!(!request.is_empty());
        let text = encode_set(&request);
        let hex_33 = "33".repeat(32);
        assert_eq!(
            text.as_str(),
            format!(
                "set=1\nlisten_port=51820\n\
                 public_key={hex_33}\nremove=true\n\
                 public_key={HEX_11}\nupdate_only=true\npersistent_keepalive_interval=0\n\
                 replace_allowed_ips=true\nallowed_ip=10.244.1.0/24\n\
                 public_key={HEX_22}\nendpoint=192.0.2.2:51820\npersistent_keepalive_interval=25\n\
                 replace_allowed_ips=true\nallowed_ip=10.244.2.0/24\nallowed_ip=fd00:2::/64\n\n"
            )
        );
    }

    #[test]
    fn encodes_the_private_key_as_hex() {
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes[0] = 0xab;
        bytes[31] = 0x40;
        let key = PrivateKey::from_bytes(&bytes);
        let request = SetRequest { private_key: Some(&key), ..SetRequest::default() };
        let text = encode_set(&request);
        assert_eq!(text.as_str(), format!("set=1\nprivate_key=ab{}40\n\n", "00".repeat(30)));
        assert!(SetRequest::default().is_empty());
        let empty = PeerDiff::default();
        assert!(SetRequest { peers: Some(&empty), ..SetRequest::default() }.is_empty());
    }
}
