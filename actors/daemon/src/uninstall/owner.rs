//! Whether a stopping daemon is being removed or only restarted.
//!
//! From inside, the two look the same: SIGTERM. What differs is the
//! daemon's DaemonSet: an upgrade or a restart leaves it, an uninstall
//! deletes it. So at stop, and only then, the daemon asks the API server
//! for that one object (RBAC: `get` on the one DaemonSet by name, nothing
//! else; chart/vpblu/templates/daemon-rbac.yaml). When the answer does not
//! come, the data plane stays: keeping a node's tunnels is always safe, and
//! a node left with state is cleaned by the next removal. (`helm uninstall`
//! deletes the DaemonSet from a pre-delete hook, before the RBAC that lets
//! the daemons ask: `vpblu-controller uninstall`.)

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{Api, Client};

/// What `--remove-on-stop` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RemoveOnStop {
    /// Remove when the daemon's DaemonSet (`--daemonset`) is gone or being
    /// deleted; keep otherwise, and without `--daemonset`.
    #[default]
    Auto,
    /// Always remove vpblu from the node at stop.
    Always,
    /// Never: the data plane stays for the next daemon.
    Never,
}

/// The daemon's DaemonSet, as the API server says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// It exists and is not being deleted.
    Present,
    /// It does not exist (any more).
    Gone,
    /// It has a deletion timestamp.
    Deleting,
    /// No answer: why.
    Unknown(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Present => f.write_str("present"),
            Owner::Gone => f.write_str("gone"),
            Owner::Deleting => f.write_str("being deleted"),
            Owner::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// What a stopping daemon does with its data plane, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Remove vpblu from the node.
    Remove(String),
    /// Leave the data plane for the next daemon.
    Keep(String),
}

impl Decision {
    /// The decision for `mode`, given what the DaemonSet's state is (asked
    /// only in `auto` mode with a DaemonSet name).
    pub fn of(mode: RemoveOnStop, daemonset: Option<&str>, owner: Option<&Owner>) -> Decision {
        match (mode, daemonset, owner) {
            (RemoveOnStop::Never, ..) => Decision::Keep("--remove-on-stop=never".into()),
            (RemoveOnStop::Always, ..) => Decision::Remove("--remove-on-stop=always".into()),
            (RemoveOnStop::Auto, None, _) => {
                Decision::Keep("no --daemonset to look at (not run by a DaemonSet)".into())
            }
            (RemoveOnStop::Auto, Some(name), None) => {
                Decision::Keep(format!("the DaemonSet {name} was not asked about"))
            }
            (RemoveOnStop::Auto, Some(name), Some(owner)) => match owner {
                Owner::Gone | Owner::Deleting => Decision::Remove(format!("the DaemonSet {name} is {owner}")),
                Owner::Present => {
                    Decision::Keep(format!("the DaemonSet {name} is present (a restart or an upgrade)"))
                }
                Owner::Unknown(_) => Decision::Keep(format!(
                    "the DaemonSet {name} is {owner}; keeping the tunnels is the safe side"
                )),
            },
        }
    }
}

/// Asks the API server (in-cluster configuration: the pod's service
/// account token) about DaemonSet `namespace/name`, waiting at most
/// `within`.
pub async fn daemonset(namespace: &str, name: &str, within: Duration) -> Owner {
    match tokio::time::timeout(within, Client::try_default()).await {
        Err(_) => Owner::Unknown(format!("no API client within {within:?}")),
        Ok(Err(e)) => Owner::Unknown(format!("no API client: {e}")),
        Ok(Ok(client)) => daemonset_via(client, namespace, name, within).await,
    }
}

/// [`daemonset`] through `client`.
pub async fn daemonset_via(client: Client, namespace: &str, name: &str, within: Duration) -> Owner {
    let ask = async {
        let api: Api<DaemonSet> = Api::namespaced(client, namespace);
        api.get_opt(name).await.map_err(|e| format!("GET daemonset {namespace}/{name}: {e}"))
    };
    match tokio::time::timeout(within, ask).await {
        Err(_) => Owner::Unknown(format!("the API server did not answer within {within:?}")),
        Ok(Err(why)) => Owner::Unknown(why),
        Ok(Ok(None)) => Owner::Gone,
        Ok(Ok(Some(ds))) if ds.metadata.deletion_timestamp.is_some() => Owner::Deleting,
        Ok(Ok(Some(_))) => Owner::Present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gone_or_deleting_daemonset_removes_in_auto_mode() {
        let auto = |owner: Owner| Decision::of(RemoveOnStop::Auto, Some("vpblu-daemon"), Some(&owner));
        assert!(matches!(auto(Owner::Gone), Decision::Remove(_)));
        assert!(matches!(auto(Owner::Deleting), Decision::Remove(_)));
        assert!(matches!(auto(Owner::Present), Decision::Keep(_)));
        let unknown = auto(Owner::Unknown("connection refused".into()));
        assert!(matches!(&unknown, Decision::Keep(why) if why.contains("connection refused")), "{unknown:?}");
        assert!(matches!(Decision::of(RemoveOnStop::Auto, None, None), Decision::Keep(_)));
    }

    #[test]
    fn always_and_never_do_not_look_at_the_daemonset() {
        for owner in [None, Some(Owner::Present), Some(Owner::Gone)] {
            let ds = Some("vpblu-daemon");
            assert!(matches!(Decision::of(RemoveOnStop::Always, ds, owner.as_ref()), Decision::Remove(_)));
            assert!(matches!(Decision::of(RemoveOnStop::Never, ds, owner.as_ref()), Decision::Keep(_)));
        }
    }
}
