//! Fetching the read model from a controller's dashboard (`GET
//! /api/v1/mesh`), on a thread of its own so a slow or dead controller
//! never freezes the screen. Plain HTTP/1.1 over loopback or a
//! `kubectl port-forward`: the dashboard serves nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use vpblu_view::{API_PATH, MeshView};

/// How long one fetch may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fetch failed; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http://host:port`.
    #[error("{0} is not a dashboard URL: give http://HOST:PORT (for example http://127.0.0.1:8082)")]
    BadUrl(String),
    /// Nothing answered.
    #[error("cannot reach the dashboard at {url}: {cause}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What went wrong.
        cause: String,
    },
    /// It answered, but not with a view.
    #[error("the dashboard at {url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status line.
        status: String,
        /// The start of the body.
        body: String,
    },
    /// The body is not a view (another program on that port?).
    #[error("{url}{API_PATH} did not return the mesh view: {cause}")]
    NotAView {
        /// The URL.
        url: String,
        /// The parse error.
        cause: String,
    },
}

/// A dashboard to poll.
#[derive(Clone, Debug)]
pub struct Dashboard {
    url: String,
    host: String,
}

impl Dashboard {
    /// Checks `url` (`http://host:port`, a trailing slash allowed).
    pub fn parse(url: &str) -> Result<Dashboard, FetchError> {
        let host = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|host| !host.is_empty() && !host.contains('/'))
            .ok_or_else(|| FetchError::BadUrl(url.to_owned()))?;
        Ok(Dashboard { url: format!("http://{host}"), host: host.to_owned() })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, cause: impl ToString) -> FetchError {
        FetchError::Unreachable { url: self.url.clone(), cause: cause.to_string() }
    }

    fn address(&self) -> Result<SocketAddr, FetchError> {
        let mut addrs = self.host.to_socket_addrs().map_err(|e| self.unreachable(e))?;
        addrs.next().ok_or_else(|| self.unreachable("the host name has no address"))
    }

    /// One `GET /api/v1/mesh`.
    pub fn fetch(&self) -> Result<MeshView, FetchError> {
        let mut stream =
            TcpStream::connect_timeout(&self.address()?, TIMEOUT).map_err(|e| self.unreachable(e))?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| self.unreachable(e))?;
        write!(stream, "GET {API_PATH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.host)
            .map_err(|e| self.unreachable(e))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| self.unreachable(e))?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.lines().next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 200") {
            let body = body.chars().take(200).collect();
            return Err(FetchError::Status { url: self.url.clone(), status: status.to_owned(), body });
        }
        serde_json::from_str(body)
            .map_err(|e| FetchError::NotAView { url: self.url.clone(), cause: e.to_string() })
    }
}

/// What the poller hands the screen.
#[derive(Debug)]
pub struct Fetched {
    /// When the fetch ended.
    pub at: Instant,
    /// The view or why there is none.
    pub result: Result<MeshView, FetchError>,
}

/// Fetches every `interval` until the receiving side is gone.
pub fn poll(dashboard: Dashboard, interval: Duration, to: Sender<Fetched>) {
    std::thread::spawn(move || {
        loop {
            let result = dashboard.fetch();
            if to.send(Fetched { at: Instant::now(), result }).is_err() {
                return;
            }
            std::thread::sleep(interval);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_host_port() {
        assert_eq!(Dashboard::parse("http://127.0.0.1:8082/").unwrap().url(), "http://127.0.0.1:8082");
        for bad in ["127.0.0.1:8082", "https://x:1", "http://", "http://x:1/api"] {
            let err = Dashboard::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("http://HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn a_dead_dashboard_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = Dashboard::parse(&format!("http://{addr}")).unwrap().fetch().unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()) && err.contains("cannot reach"), "{err}");
    }
}
