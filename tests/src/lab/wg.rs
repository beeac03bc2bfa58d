//! Reads a userspace WireGuard device the way `wg show` would, through its
//! UAPI socket (`get=1`), so tests can see what the device really holds
//! without trusting the daemon's own report. Private keys in the answer
//! are never kept.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One peer as the device holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WgPeer {
    /// Hex public key, as UAPI prints it.
    pub public_key: String,
    /// `ip:port`, if known.
    pub endpoint: Option<String>,
    /// Allowed IPs in CIDR notation.
    pub allowed_ips: Vec<String>,
    /// Seconds since the epoch of the last handshake, 0 for none.
    pub last_handshake: u64,
    /// Bytes received from this peer.
    pub rx_bytes: u64,
    /// Bytes sent to this peer.
    pub tx_bytes: u64,
}

/// A device's public face.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WgDevice {
    /// Its listen port.
    pub listen_port: u16,
    /// Its peers, in UAPI order.
    pub peers: Vec<WgPeer>,
}

/// `get=1` on `/var/run/wireguard/INTERFACE.sock`.
pub fn show(interface: &str) -> WgDevice {
    try_show(interface).unwrap_or_else(|e| panic!("{e}"))
}

/// [`show`], for watchers that must outlive a device that is away for a
/// moment: the error names the socket and what failed.
pub fn try_show(interface: &str) -> Result<WgDevice, String> {
    try_get(interface).map(parse)
}

/// Whether the device's private key is `private_base64` (as a key file
/// holds it). Only the comparison leaves this function.
pub fn holds_private_key(interface: &str, private_base64: &str) -> bool {
    let want = hex_of_base64(private_base64);
    get(interface).any(|line| line.strip_prefix("private_key=") == Some(want.as_str()))
}

fn get(interface: &str) -> impl Iterator<Item = String> {
    try_get(interface).unwrap_or_else(|e| panic!("{e}"))
}

fn try_get(interface: &str) -> Result<impl Iterator<Item = String>, String> {
    let path = Path::new("/var/run/wireguard").join(format!("{interface}.sock"));
    let mut stream = UnixStream::connect(&path).map_err(|e| format!("connect to {}: {e}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| format!("set a read timeout: {e}"))?;
    stream.write_all(b"get=1\n\n").map_err(|e| format!("write to {}: {e}", path.display()))?;
    Ok(BufReader::new(stream).lines().map_while(Result::ok).take_while(|l| !l.is_empty()))
}

fn parse(lines: impl Iterator<Item = String>) -> WgDevice {
    let mut device = WgDevice::default();
    for line in lines {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "listen_port" => device.listen_port = value.parse().unwrap_or(0),
            "public_key" => device.peers.push(WgPeer { public_key: value.to_owned(), ..WgPeer::default() }),
            _ => {
                let Some(peer) = device.peers.last_mut() else { continue };
                match key {
                    "endpoint" => peer.endpoint = Some(value.to_owned()),
                    "allowed_ip" => peer.allowed_ips.push(value.to_owned()),
                    "last_handshake_time_sec" => peer.last_handshake = value.parse().unwrap_or(0),
                    "rx_bytes" => peer.rx_bytes = value.parse().unwrap_or(0),
                    "tx_bytes" => peer.tx_bytes = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    device
}

/// The hex form UAPI uses for a base64 WireGuard key.
pub fn hex_of_base64(key: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap_or_else(|e| panic!("{key:?} is not base64: {e}"));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_answers_are_parsed_without_the_private_key() {
        let text = "private_key=aaaa\nlisten_port=51820\npublic_key=0102\nendpoint=10.0.0.2:51820\n\
                    allowed_ip=10.244.2.0/24\nallowed_ip=fd00::/64\nlast_handshake_time_sec=17\nrx_bytes=5\n\
                    tx_bytes=6\npublic_key=0304\nerrno=0";
        let device = parse(text.lines().map(String::from));
        assert_eq!(device.listen_port, 51820);
        assert_eq!(device.peers.len(), 2);
        assert_eq!(device.peers[0].allowed_ips, ["10.244.2.0/24", "fd00::/64"]);
        assert_eq!(
            (device.peers[0].last_handshake, device.peers[0].rx_bytes, device.peers[0].tx_bytes),
            (17, 5, 6)
        );
        assert!(!format!("{device:?}").contains("aaaa"));
        assert_eq!(hex_of_base64("AQI="), "0102");
    }
}
