//! The links a removal looks at, over rtnetlink in the calling thread's
//! network namespace.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

/// An rtnetlink handle whose connection lives as long as the handle's task.
fn connect() -> Result<(Handle, tokio::task::JoinHandle<()>), String> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("rtnetlink socket: {e}"))?;
    Ok((handle, vpblu_runtime::spawn(connection)))
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// Every interface's name.
pub(super) async fn names() -> Result<Vec<String>, String> {
    let (handle, connection) = connect()?;
    let links: Result<Vec<LinkMessage>, _> = handle.link().get().execute().try_collect().await;
    connection.abort();
    Ok(links.map_err(|e| format!("listing links: {e}"))?.iter().filter_map(name_of).collect())
}

/// The index of interface `name`, if there is one.
async fn index(handle: &Handle, name: &str) -> Result<Option<u32>, String> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(None),
        Err(e) => Err(format!("looking up {name}: {e}")),
    }
}

/// `ENODEV`: no such device.
const ENODEV: i32 = 19;

/// Waits up to `wait` for `name` to go (a wireguard-go exiting deletes its
/// TUN device), then deletes it if it is still there. Whether it existed.
pub(super) async fn remove(name: &str, wait: Duration) -> Result<bool, String> {
    let (handle, connection) = connect()?;
    let result = async {
        let Some(mut index_now) = index(&handle, name).await? else {
            return Ok(false);
        };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match index(&handle, name).await? {
                None => return Ok(true),
                Some(index) => index_now = index,
            }
        }
        match handle.link().del(index_now).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(true),
            Err(e) => Err(format!("deleting {name}: {e}")),
        }
    }
    .await;
    connection.abort();
    result
}
