//! TCP MSS clamp on the mesh path: TCP SYNs (and SYN-ACKs) leaving through
//! the mesh device get their MSS option lowered to what fits the mesh MTU,
//! so TCP never relies on ICMP "fragmentation needed" making it back.
//!
//! Done with nftables: one table, `inet vpblu`, owned entirely by us and
//! replaced whole in one `nft -f -` transaction (atomic: no moment without a
//! clamp). The forward chain catches pod traffic, output the host's own.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Change, RoutingError};

/// The nftables table (family `inet`) this module owns.
pub const NFT_TABLE: &str = "vpblu";

/// Chains of the table: both hooks see packets after routing, so the
/// output interface is known.
const CHAINS: [&str; 2] = ["forward", "output"];
/// `priority mangle`, the usual place for packet edits.
const MANGLE_PRIORITY: i64 = -150;

/// MSS for IPv4 and IPv6 on a path of `mesh_mtu`: MTU minus the IP and TCP
/// headers (20 + 20, 40 + 20).
pub fn mss_for(mesh_mtu: u32) -> (u32, u32) {
    (mesh_mtu.saturating_sub(40), mesh_mtu.saturating_sub(60))
}

fn comment(family: &str, mss: u32, interface: &str) -> String {
    format!("vpblu: MSS {mss} for {family} SYNs out of {interface}")
}

/// The whole table as one nft transaction: create (so the delete cannot
/// fail on a first run), delete, and define it again.
pub fn nft_script(interface: &str, mesh_mtu: u32) -> String {
    nft_script_for(&[interface], mesh_mtu)
}

/// [`nft_script`] clamping SYNs out of each of `interfaces` (the mesh
/// device and the lane that carries its traffic while a key rotates).
pub fn nft_script_for(interfaces: &[&str], mesh_mtu: u32) -> String {
    let (v4, v6) = mss_for(mesh_mtu);
    let mut script = format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n\
         \tcomment \"vpblu-daemon: TCP MSS clamp on the mesh path; owned by vpblu, replaced whole\"\n"
    );
    for chain in CHAINS {
        script.push_str(&format!(
            "\tchain {chain} {{\n\t\ttype filter hook {chain} priority mangle; policy accept;\n"
        ));
        for interface in interfaces {
            for (family, nfproto, mss) in [("IPv4", "ipv4", v4), ("IPv6", "ipv6", v6)] {
                // The "> mss" guard keeps a smaller MSS the endpoint asked for
                // (the kernel also never raises it, but say so explicitly).
                script.push_str(&format!(
                    "\t\toifname \"{interface}\" meta nfproto {nfproto} tcp flags syn \
                     tcp option maxseg size > {mss} tcp option maxseg size set {mss} comment \"{}\"\n",
                    comment(family, mss, interface)
                ));
            }
        }
        script.push_str("\t}\n");
    }
    script.push_str("}\n");
    script
}

/// What identifies the table's content, in a form both the desired state
/// and `nft -j list` produce: chains with their hooks, rules by chain,
/// comment, output interface and MSS value.
fn expected_summary(interfaces: &[&str], mesh_mtu: u32) -> Vec<String> {
    let (v4, v6) = mss_for(mesh_mtu);
    let mut summary = Vec::new();
    for chain in CHAINS {
        summary.push(format!("chain {chain} filter {chain} {MANGLE_PRIORITY} accept"));
        for interface in interfaces {
            for (family, mss) in [("IPv4", v4), ("IPv6", v6)] {
                summary.push(format!("rule {chain} {interface} {mss} {}", comment(family, mss, interface)));
            }
        }
    }
    summary.sort();
    summary
}

fn actual_summary(listing: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut summary = Vec::new();
    for object in listing["nftables"].as_array().into_iter().flatten() {
        if let Some(chain) = object.get("chain") {
            summary.push(format!(
                "chain {} {} {} {} {}",
                text(&chain["name"]),
                text(&chain["type"]),
                text(&chain["hook"]),
                text(&chain["prio"]),
                text(&chain["policy"])
            ));
        } else if let Some(rule) = object.get("rule") {
            let exprs = rule["expr"].as_array().map(Vec::as_slice).unwrap_or_default();
            let oifname = exprs
                .iter()
                .find(|e| e["match"]["left"]["meta"]["key"] == "oifname")
                .map_or_else(String::new, |e| text(&e["match"]["right"]));
            let mss =
                exprs.iter().find_map(|e| e.get("mangle")).map_or_else(String::new, |m| text(&m["value"]));
            summary.push(format!("rule {} {oifname} {mss} {}", text(&rule["chain"]), text(&rule["comment"])));
        } else if object.get("table").is_none() && object.get("metainfo").is_none() {
            // Sets, maps, flowtables...: not ours, so the table needs rewriting.
            summary.push(format!("other {object}"));
        }
    }
    summary.sort();
    summary
}

pub(crate) async fn ensure(interfaces: &[&str], mesh_mtu: u32) -> Result<Change, RoutingError> {
    let interface = interfaces.first().copied().unwrap_or_default();
    if let Some(listing) = list_table(interface).await?
        && actual_summary(&listing) == expected_summary(interfaces, mesh_mtu)
    {
        return Ok(Change::Unchanged);
    }
    nft(interface, &["-f", "-"], Some(&nft_script_for(interfaces, mesh_mtu))).await?;
    Ok(Change::Changed)
}

pub(crate) async fn remove(interface: &str) -> Result<Change, RoutingError> {
    if !table_exists(interface).await? {
        return Ok(Change::Unchanged);
    }
    // Create-then-delete in one transaction: no error if it vanished meanwhile.
    let script = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
    nft(interface, &["-f", "-"], Some(&script)).await?;
    Ok(Change::Changed)
}

async fn table_exists(interface: &str) -> Result<bool, RoutingError> {
    let out = nft(interface, &["-j", "list", "tables", "inet"], None).await?;
    let listing: Value = parse(&out)?;
    Ok(listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["table"]["name"] == NFT_TABLE && o["table"]["family"] == "inet"))
}

async fn list_table(interface: &str) -> Result<Option<Value>, RoutingError> {
    if !table_exists(interface).await? {
        return Ok(None);
    }
    let out = nft(interface, &["-j", "list", "table", "inet", NFT_TABLE], None).await?;
    parse(&out).map(Some)
}

fn parse(out: &[u8]) -> Result<Value, RoutingError> {
    serde_json::from_slice(out).map_err(|source| RoutingError::NftJson { table: NFT_TABLE, source })
}

/// Runs `nft ARGS`, feeding `stdin` if given; returns stdout.
async fn nft(interface: &str, args: &[&str], stdin: Option<&str>) -> Result<Vec<u8>, RoutingError> {
    let shown = args.join(" ");
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => RoutingError::NftMissing { interface: interface.to_owned() },
            _ => RoutingError::NftSpawn { args: shown.clone(), source },
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| RoutingError::NftSpawn { args: shown.clone(), source })?;
        // Dropping the pipe closes it: nft reads to EOF before it applies.
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| RoutingError::NftSpawn { args: shown.clone(), source })?;
    if !out.status.success() {
        return Err(RoutingError::NftFailed {
            args: shown,
            table: NFT_TABLE,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mss_is_mtu_minus_headers() {
        assert_eq!(mss_for(1420), (1380, 1360));
        assert_eq!(mss_for(8921), (8881, 8861));
    }

    #[test]
    fn script_replaces_only_our_table_and_clamps_both_families_on_both_hooks() {
        let script = nft_script("wg-mesh", 1420);
        assert!(script.starts_with("table inet vpblu\ndelete table inet vpblu\n"), "{script}");
        for chain in CHAINS {
            assert!(script.contains(&format!("type filter hook {chain} priority mangle; policy accept;")));
        }
        assert_eq!(script.matches("maxseg size set 1380").count(), 2, "{script}");
        assert_eq!(script.matches("maxseg size set 1360").count(), 2, "{script}");
        assert_eq!(script.matches("oifname \"wg-mesh\"").count(), 4, "{script}");
        assert!(!script.contains("flush ruleset"));
        assert_eq!(script.matches("delete table").count(), 1);
        assert!(script.lines().all(|l| !l.contains("table ") || l.contains("inet vpblu")), "{script}");
    }

    /// What nft 1.0.6 prints for the table `nft_script` writes (abridged to
    /// the fields the summary reads).
    fn listing(mss4: u32, interface: &str) -> Value {
        let rule = |chain: &str, family: &str, mss: u32| {
            serde_json::json!({"rule": {"family": "inet", "table": "vpblu", "chain": chain, "handle": 3,
            "comment": comment(family, mss, "wg-mesh"),
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": interface}},
                {"match": {"op": "in", "left": {"payload": {"protocol": "tcp", "field": "flags"}}, "right": "syn"}},
                {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": mss}}
            ]}})
        };
        let chain = |name: &str| {
            serde_json::json!({"chain": {"family": "inet", "table": "vpblu", "name": name, "handle": 1,
                "type": "filter", "hook": name, "prio": -150, "policy": "accept"}})
        };
        serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "vpblu", "handle": 2}},
            chain("forward"), rule("forward", "IPv4", mss4), rule("forward", "IPv6", 1360),
            chain("output"), rule("output", "IPv4", mss4), rule("output", "IPv6", 1360),
        ]})
    }

    #[test]
    fn the_lane_is_clamped_like_the_mesh_device() {
        let script = nft_script_for(&["wg-mesh", "wg-lane"], 1420);
        assert_eq!(script.matches("oifname \"wg-lane\"").count(), 4, "{script}");
        assert_eq!(script.matches("oifname \"wg-mesh\"").count(), 4, "{script}");
        assert_eq!(script.matches("maxseg size set 1380").count(), 4, "{script}");
        assert_ne!(expected_summary(&["wg-mesh", "wg-lane"], 1420), expected_summary(&["wg-mesh"], 1420));
    }

    #[test]
    fn listing_of_the_desired_table_matches_the_expected_summary() {
        assert_eq!(actual_summary(&listing(1380, "wg-mesh")), expected_summary(&["wg-mesh"], 1420));
    }

    #[test]
    fn a_changed_value_or_interface_does_not_match() {
        assert_ne!(actual_summary(&listing(1400, "wg-mesh")), expected_summary(&["wg-mesh"], 1420));
        assert_ne!(actual_summary(&listing(1380, "eth0")), expected_summary(&["wg-mesh"], 1420));
        assert_ne!(actual_summary(&listing(1380, "wg-mesh")), expected_summary(&["wg-mesh"], 1400));
    }

    #[test]
    fn an_extra_object_in_our_table_does_not_match() {
        let mut value = listing(1380, "wg-mesh");
        value["nftables"].as_array_mut().unwrap().push(serde_json::json!({"set": {"name": "x"}}));
        assert_ne!(actual_summary(&value), expected_summary(&["wg-mesh"], 1420));
    }
}
