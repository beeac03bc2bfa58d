//! The links a removal looks at, over rtnetlink in the calling thread's
//! network namespace.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use netlink_packet_route::link::LinkMessage;
use rtnetlink::Handle;
use rustix::io::Errno;

use crate::pod_interfaces::index_and_name;
use crate::routing::{is_errno, link_by_name};

/// An rtnetlink handle whose connection lives as long as the handle's task.
fn connect() -> Result<(Handle, tokio::task::JoinHandle<()>), String> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("rtnetlink socket: {e}"))?;
    Ok((handle, vpblu_runtime::spawn(connection)))
}

/// Every interface's name.
pub(super) async fn names() -> Result<Vec<String>, String> {
    let (handle, connection) = connect()?;
    let links: Result<Vec<LinkMessage>, _> = handle.link().get().execute().try_collect().await;
    connection.abort();
    Ok(links.map_err(|e| format!("listing links: {e}"))?.iter().map(|link| index_and_name(link).1).collect())
}

/// The index of interface `name`, if there is one.
async fn index(handle: &Handle, name: &str) -> Result<Option<u32>, String> {
    let link = link_by_name(handle, name).await.map_err(|e| e.to_string())?;
    Ok(link.map(|link| link.index))
}

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
            Err(e) if is_errno(&e, Errno::NODEV) => Ok(true),
            Err(e) => Err(format!("deleting {name}: {e}")),
        }
    }
    .await;
    connection.abort();
    result
}
