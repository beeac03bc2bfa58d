//! Mesh vs plain kernel WireGuard throughput between two guests.

use super::*;

/// Rounds of interleaved iperf3 runs (the mesh and three plain series)
/// and each run's length.
pub(crate) const IPERF_PAIRS: usize = 5;
pub(crate) const IPERF_SECONDS: u32 = 5;
/// The plain device's UDP port and its /32 addresses' prefix (10.99.0.N).
pub(crate) const PLAIN_PORT: u16 = 51900;

/// Mesh vs plain kernel WireGuard between node-1 and node-2: iperf3 TCP
/// pod to pod through vpblu (classify on the pod veth, fwmark, wg-mesh,
/// deliver) against host to host over a `wg-plain` device configured by
/// hand (own keys and port, /32 addresses, wg-mesh's MTU), runs
/// interleaved mesh, plain, mesh, plain so drift (TCG, a busy host) hits
/// both alike. The ratio of the medians must be at least 0.95. Two more
/// plain series put a pod at the sending or the receiving end (forwarded
/// through its veth as in the mesh), to show where a difference comes from.
pub(crate) async fn mesh_vs_plain_wireguard(lab: &GuestLab, table: &mut Table) {
    let (one, two) = (&lab.guests[0], &lab.guests[1]);
    let mtu = one.exec_ok("cat /sys/class/net/wg-mesh/mtu", Duration::from_secs(10)).trim().to_owned();
    for guest in [one, two] {
        let (code, out) = guest.exec("command -v iperf3", Duration::from_secs(10));
        assert_eq!(
            code, 0,
            "{}: no iperf3 in the guest image ({out}); tools/kvm/image.sh installs it: remove \
             ~/.cache/vpblu/kvm/current to rebuild",
            guest.name
        );
    }
    let plain_ip = |g: &vpblu_e2e::kvm::Guest| format!("10.99.0.{}", g.index);
    let mut public = Vec::new();
    for guest in [one, two] {
        let key = guest.exec_ok(
            &format!(
                "set -e; ip link del wg-plain 2>/dev/null || true; ip link add wg-plain type wireguard; \
                 umask 077; wg genkey >/run/wg-plain.key; \
                 wg set wg-plain private-key /run/wg-plain.key listen-port {PLAIN_PORT}; \
                 ip addr add {}/32 dev wg-plain; ip link set wg-plain mtu {mtu} up; \
                 wg pubkey </run/wg-plain.key",
                plain_ip(guest)
            ),
            Duration::from_secs(20),
        );
        public.push(key.trim().to_owned());
    }
    // Two more series put a pod at one end of wg-plain, to tell what the
    // mesh adds from what a pod's veth does: node-1's pod sends to node-2
    // (node-2 takes 10.244.1.2 on wg-plain), node-1 sends to node-2's pod
    // (node-1 takes 10.244.2.2). These /32 routes are unmarked traffic's
    // only: the mesh's fwmark rule still sends marked pod traffic to wg-mesh.
    for (guest, other, key, pod) in
        [(one, two, &public[1], "10.244.2.2"), (two, one, &public[0], "10.244.1.2")]
    {
        guest.exec_ok(
            &format!(
                "set -e; wg set wg-plain peer {key} endpoint {}:{PLAIN_PORT} allowed-ips {ip}/32,{pod}/32; \
                 ip route add {ip}/32 dev wg-plain; ip route add {pod}/32 dev wg-plain",
                other.v4,
                ip = plain_ip(other)
            ),
            Duration::from_secs(20),
        );
    }
    for (what, ping) in [
        ("node-1 -> node-2", format!("ping -n -c 3 -W 2 {}", plain_ip(two))),
        ("node-1's pod -> node-2", format!("ip netns exec pod-1-2 ping -n -c 3 -W 2 {}", plain_ip(two))),
        ("node-1 -> node-2's pod", format!("ping -n -c 3 -W 2 -I {} 10.244.2.2", plain_ip(one))),
    ] {
        let out = one.exec_ok(&ping, Duration::from_secs(20));
        assert!(out.contains(" 0% packet loss"), "{what} over wg-plain:\n{out}");
    }
    two.exec_ok(
        &format!(
            "ip netns exec pod-2-2 iperf3 -s -D -p 5201 -I /run/iperf3-mesh.pid && \
             iperf3 -s -D -p 5202 -B {} -I /run/iperf3-plain.pid && sleep 1",
            plain_ip(two)
        ),
        Duration::from_secs(20),
    );
    let run = |client: &str| -> f64 {
        let out = one.exec_ok(client, Duration::from_secs(u64::from(IPERF_SECONDS) + 60));
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 -J output ({e}): {out}"));
        let bps = report["end"]["sum_received"]["bits_per_second"].as_f64();
        bps.unwrap_or_else(|| panic!("no end.sum_received.bits_per_second from `{client}`:\n{out}")) / 1e6
    };
    let args = format!("-t {IPERF_SECONDS} -O 1 -J");
    let clients = [
        format!("ip netns exec pod-1-2 iperf3 -c 10.244.2.2 -p 5201 {args}"),
        format!("iperf3 -c {} -p 5202 -B {} {args}", plain_ip(two), plain_ip(one)),
        format!("ip netns exec pod-1-2 iperf3 -c {} -p 5202 {args}", plain_ip(two)),
        format!("iperf3 -c 10.244.2.2 -p 5201 -B {} {args}", plain_ip(one)),
    ];
    let mut series: [Vec<f64>; 4] = Default::default();
    for i in 0..IPERF_PAIRS {
        for (client, runs) in clients.iter().zip(series.iter_mut()) {
            runs.push(run(client));
        }
        println!(
            "iperf3 round {}: mesh pod->pod {:.1}; plain wg host->host {:.1}, pod->host {:.1}, host->pod {:.1} Mbit/s",
            i + 1,
            series[0][i],
            series[1][i],
            series[2][i],
            series[3][i]
        );
    }
    two.exec_ok("kill $(cat /run/iperf3-mesh.pid) $(cat /run/iperf3-plain.pid)", Duration::from_secs(10));
    for guest in [one, two] {
        guest.exec_ok("ip link del wg-plain; rm -f /run/wg-plain.key", Duration::from_secs(10));
    }
    let [mesh, plain, from_pod, to_pod] = series.map(|runs| (median(&runs), runs));
    let ratio = mesh.0 / plain.0;
    let runs = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join("/");
    let measured = format!(
        "iperf3 TCP node-1 -> node-2, {IPERF_PAIRS} interleaved rounds of {IPERF_SECONDS} s runs, MTU {mtu}, \
         medians in Mbit/s: mesh pod->pod {:.1} ({}); plain kernel wg host->host {:.1} ({}); \
         ratio mesh/plain {ratio:.3} (>= 0.95). Plain wg with a pod at one end: pod->host {:.1} ({}), \
         host->pod {:.1} ({}); mesh/plain host->pod {:.3}",
        mesh.0,
        runs(&mesh.1),
        plain.0,
        runs(&plain.1),
        from_pod.0,
        runs(&from_pod.1),
        to_pod.0,
        runs(&to_pod.1),
        mesh.0 / to_pod.0,
    );
    println!("{measured}");
    assert!(ratio >= 0.95, "mesh/plain throughput ratio {ratio:.3} is below 0.95: {measured}");
    table.pass("mesh vs plain kernel WireGuard", measured);
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}
