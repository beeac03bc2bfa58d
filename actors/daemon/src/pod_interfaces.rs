//! Pod-facing interfaces: classify runs at tc ingress of every interface
//! whose name matches the configured patterns (`cni0`, `veth*`, `lxc*` by
//! default), the ones there at start and the ones a CNI creates later.
//!
//! The watcher subscribes to rtnetlink link events (`RTNLGRP_LINK`) *before*
//! listing the links, so an interface created in between is seen by one or
//! the other. Every event and a periodic relist go through the same pure
//! reconcile ([`plan`]): attach what matches and is not attached under that
//! index and name, forget what went away, was renamed, or stopped matching.
//! A relist also retries attaches that failed and repairs a missed event
//! (a multicast socket can overflow under link churn).
//!
//! Forgetting an interface that is gone unpins its tcx link (the kernel
//! already detached it); forgetting a live one (renamed out of the
//! patterns) detaches classify from it.
//!
//! There is a window between a pod's veth appearing and classify being on
//! it; a CNI chained before the pod starts would close it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;

use crate::bpf::{BpfError, Dataplane, ProgramKind};

/// Interface name patterns matched by default: Flannel's bridge, the host
/// side of veth pairs most CNIs create, and Cilium's `lxc*`.
pub const DEFAULT_PATTERNS: [&str; 3] = ["cni0", "veth*", "lxc*"];

/// How often the watcher relists the links even when no event came.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);

/// True when `name` matches one of `patterns`: a pattern ending in `*`
/// matches every name starting with what comes before it; any other pattern
/// matches only itself.
pub fn matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    })
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum PodInterfaceError {
    /// The rtnetlink socket subscribed to link events could not be opened.
    #[error(
        "cannot open a netlink socket subscribed to link events: {source}; the daemon needs \
         CAP_NET_ADMIN in the node's network namespace"
    )]
    Socket {
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The links could not be listed.
    #[error("listing the network interfaces failed: {source}")]
    List {
        /// The rtnetlink error; boxed, it is large.
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

/// What to change so classify sits exactly on the matching interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfacePlan {
    /// (index, name) to attach classify to.
    pub attach: Vec<(u32, String)>,
    /// (index, name) to forget (and detach from, if still there).
    pub forget: Vec<(u32, String)>,
}

/// The reconcile for a full listing: `links` is every (index, name) in the
/// namespace, `attached` what classify is on now. `exclude` (the mesh
/// device) never matches, whatever the patterns say.
pub fn plan(
    patterns: &[String],
    exclude: &str,
    attached: &BTreeMap<u32, String>,
    links: &[(u32, String)],
) -> InterfacePlan {
    let wanted: BTreeMap<u32, &String> = links
        .iter()
        .filter(|(_, name)| name != exclude && matches(patterns, name))
        .map(|(index, name)| (*index, name))
        .collect();
    let mut out = InterfacePlan::default();
    for (index, name) in attached {
        if wanted.get(index) != Some(&name) {
            out.forget.push((*index, name.clone()));
        }
    }
    for (index, name) in wanted {
        if attached.get(&index) != Some(name) {
            out.attach.push((index, name.clone()));
        }
    }
    out
}

/// The reconcile for one link event: `Some(name)` for a new or changed
/// link, `None` for a deleted one.
pub fn plan_event(
    patterns: &[String],
    exclude: &str,
    attached: &BTreeMap<u32, String>,
    index: u32,
    name: Option<&str>,
) -> InterfacePlan {
    let mut out = InterfacePlan::default();
    let wanted = name.filter(|n| *n != exclude && matches(patterns, n));
    let have = attached.get(&index);
    if let Some(have) = have
        && Some(have.as_str()) != wanted
    {
        out.forget.push((index, have.clone()));
    }
    if let Some(name) = wanted
        && have.map(String::as_str) != Some(name)
    {
        out.attach.push((index, name.to_owned()));
    }
    out
}

/// The running watcher. Dropping it stops watching and leaves classify
/// where it is (attachments are pinned and outlive the daemon).
#[derive(Debug)]
pub struct PodInterfaces {
    attached: Arc<Mutex<BTreeMap<u32, String>>>,
    task: JoinHandle<()>,
}

impl Drop for PodInterfaces {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodInterfaces {
    /// Subscribes to link events, attaches classify to every matching
    /// interface there now, and keeps doing so in a task on the current
    /// runtime (which must run in the node's network namespace: attaches
    /// happen on `spawn_blocking` threads it starts). `exclude` is the mesh
    /// device's name. Attach failures are logged and retried on the next
    /// relist, not returned.
    pub async fn start(
        patterns: Vec<String>,
        exclude: String,
        dataplane: Arc<Mutex<Dataplane>>,
        resync: Duration,
    ) -> Result<Self, PodInterfaceError> {
        let (connection, handle, events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(|source| PodInterfaceError::Socket { source })?;
        let connection = vpblu_runtime::spawn(connection);
        let watcher = Watcher { patterns, exclude, dataplane, handle, attached: Arc::default() };
        let links = match watcher.list().await {
            Ok(links) => links,
            Err(e) => {
                connection.abort();
                return Err(e);
            }
        };
        watcher.reconcile_listing(&links).await;
        let attached = Arc::clone(&watcher.attached);
        let task = vpblu_runtime::spawn(watcher.run(events, connection, resync));
        Ok(PodInterfaces { attached, task })
    }

    /// The interfaces classify is attached to now, by name, sorted.
    pub fn attached(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.attached.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        names.sort();
        names
    }
}

type LinkEvents = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

struct Watcher {
    patterns: Vec<String>,
    exclude: String,
    dataplane: Arc<Mutex<Dataplane>>,
    handle: Handle,
    attached: Arc<Mutex<BTreeMap<u32, String>>>,
}

impl Watcher {
    async fn run(self, mut events: LinkEvents, connection: JoinHandle<()>, resync: Duration) {
        // Aborting the watcher drops this guard, which stops the socket too.
        let _connection = AbortOnDrop(connection);
        let mut tick = tokio::time::interval(resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut subscribed = true;
        loop {
            tokio::select! {
                event = events.next(), if subscribed => match event {
                    Some((message, _)) => self.on_message(message.payload).await,
                    None => {
                        tracing::warn!("the link event subscription ended; relisting every {resync:?} only");
                        subscribed = false;
                    }
                },
                _ = tick.tick() => match self.list().await {
                    Ok(links) => self.reconcile_listing(&links).await,
                    Err(e) => tracing::warn!(error = %e, "relisting the pod interfaces failed"),
                },
            }
        }
    }

    async fn on_message(&self, payload: NetlinkPayload<RouteNetlinkMessage>) {
        let (index, name) = match payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                let (index, name) = index_and_name(&link);
                (index, Some(name))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => (link.header.index, None),
            // An overrun (ENOBUFS) shows up as an error: relist now.
            NetlinkPayload::Error(e) => {
                tracing::warn!(error = %e, "link event error; relisting");
                match self.list().await {
                    Ok(links) => self.reconcile_listing(&links).await,
                    Err(e) => tracing::warn!(error = %e, "relisting the pod interfaces failed"),
                }
                return;
            }
            _ => return,
        };
        let plan = plan_event(&self.patterns, &self.exclude, &self.snapshot(), index, name.as_deref());
        self.execute(plan).await;
    }

    async fn list(&self) -> Result<Vec<(u32, String)>, PodInterfaceError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| PodInterfaceError::List { source: Box::new(e) })?;
        Ok(messages.iter().map(index_and_name).collect())
    }

    async fn reconcile_listing(&self, links: &[(u32, String)]) {
        let plan = plan(&self.patterns, &self.exclude, &self.snapshot(), links);
        self.execute(plan).await;
    }

    fn snapshot(&self) -> BTreeMap<u32, String> {
        self.attached.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn execute(&self, plan: InterfacePlan) {
        for (index, name) in plan.forget {
            let dataplane = Arc::clone(&self.dataplane);
            let interface = name.clone();
            let detached = blocking(move || {
                dataplane
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .detach(ProgramKind::Classify, &interface)
            })
            .await;
            match detached {
                Ok(_) => tracing::info!(interface = %name, index, "pod interface gone; classify forgotten"),
                // Typically the interface is gone and its filter with it.
                Err(e) => tracing::debug!(interface = %name, index, error = %e, "detaching classify"),
            }
            self.attached.lock().unwrap_or_else(PoisonError::into_inner).remove(&index);
        }
        for (index, name) in plan.attach {
            let dataplane = Arc::clone(&self.dataplane);
            let interface = name.clone();
            let attached = blocking(move || {
                dataplane.lock().unwrap_or_else(PoisonError::into_inner).attach_classify(&interface)
            })
            .await;
            match attached {
                Ok(how) => {
                    tracing::info!(interface = %name, index, outcome = ?how, "classify attached");
                    self.attached.lock().unwrap_or_else(PoisonError::into_inner).insert(index, name);
                }
                // Often a veth that moved into a pod's namespace a moment
                // after it appeared; a real failure is retried on relist.
                Err(e) => tracing::warn!(interface = %name, index, error = %e, "attaching classify failed"),
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BpfError> + Send + 'static,
) -> Result<T, String> {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the blocking task failed: {e}")),
    }
}

pub(crate) fn index_and_name(link: &LinkMessage) -> (u32, String) {
    let name = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default();
    (link.header.index, name)
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn links(list: &[(u32, &str)]) -> Vec<(u32, String)> {
        list.iter().map(|(i, n)| (*i, (*n).to_owned())).collect()
    }

    fn attached(list: &[(u32, &str)]) -> BTreeMap<u32, String> {
        links(list).into_iter().collect()
    }

    #[test]
    fn a_star_matches_a_prefix_and_anything_else_only_itself() {
        let p = patterns(&DEFAULT_PATTERNS);
        for yes in ["cni0", "veth", "veth1a2b3c", "lxc12345", "lxc_health"] {
            assert!(matches(&p, yes), "{yes}");
        }
        for no in ["cni01", "cni", "eth0", "wg-mesh", "lo", "xveth0", "vet", ""] {
            assert!(!matches(&p, no), "{no}");
        }
        assert!(matches(&patterns(&["*"]), "anything"));
        assert!(!matches(&[], "veth0"));
        assert!(matches(&patterns(&["eth0"]), "eth0"));
        assert!(!matches(&patterns(&["eth0"]), "eth01"));
    }

    #[test]
    fn a_listing_attaches_what_matches_and_forgets_what_went() {
        let p = patterns(&DEFAULT_PATTERNS);
        let now = links(&[(1, "lo"), (2, "eth0"), (3, "cni0"), (4, "veth1"), (7, "veth9"), (8, "wg-mesh")]);
        let have = attached(&[(3, "cni0"), (5, "veth-gone"), (7, "veth-old")]);
        let out = plan(&p, "wg-mesh", &have, &now);
        assert_eq!(out.attach, links(&[(4, "veth1"), (7, "veth9")]));
        assert_eq!(out.forget, links(&[(5, "veth-gone"), (7, "veth-old")]));
        // Once done, the same listing changes nothing.
        let done = attached(&[(3, "cni0"), (4, "veth1"), (7, "veth9")]);
        assert_eq!(plan(&p, "wg-mesh", &done, &now), InterfacePlan::default());
    }

    #[test]
    fn the_mesh_device_is_never_classified_whatever_the_patterns() {
        let p = patterns(&["wg*", "veth*"]);
        let out = plan(&p, "wg-mesh", &BTreeMap::new(), &links(&[(1, "wg-mesh"), (2, "wg0")]));
        assert_eq!(out.attach, links(&[(2, "wg0")]));
        let out = plan_event(&p, "wg-mesh", &BTreeMap::new(), 1, Some("wg-mesh"));
        assert_eq!(out, InterfacePlan::default());
    }

    #[test]
    fn events_attach_new_links_once_and_follow_renames_and_deletes() {
        let p = patterns(&DEFAULT_PATTERNS);
        let none = BTreeMap::new();
        let out = plan_event(&p, "wg-mesh", &none, 9, Some("veth9"));
        assert_eq!(out.attach, links(&[(9, "veth9")]));
        assert!(out.forget.is_empty());
        // The same link again (it went up, its MTU changed): nothing.
        let have = attached(&[(9, "veth9")]);
        assert_eq!(plan_event(&p, "wg-mesh", &have, 9, Some("veth9")), InterfacePlan::default());
        // Renamed within the patterns: re-attach under the new name.
        let out = plan_event(&p, "wg-mesh", &have, 9, Some("veth-new"));
        assert_eq!((out.forget, out.attach), (links(&[(9, "veth9")]), links(&[(9, "veth-new")])));
        // Renamed out of them, or deleted: forget.
        let out = plan_event(&p, "wg-mesh", &have, 9, Some("eth1"));
        assert_eq!((out.forget, out.attach), (links(&[(9, "veth9")]), vec![]));
        let out = plan_event(&p, "wg-mesh", &have, 9, None);
        assert_eq!((out.forget, out.attach), (links(&[(9, "veth9")]), vec![]));
        // An unrelated link: nothing.
        assert_eq!(plan_event(&p, "wg-mesh", &have, 2, Some("eth0")), InterfacePlan::default());
        assert_eq!(plan_event(&p, "wg-mesh", &none, 2, None), InterfacePlan::default());
    }
}
