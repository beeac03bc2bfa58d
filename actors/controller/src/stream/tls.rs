//! TLS on the daemon streams, controller side: the serving certificate
//! comes from two PEM files (a mounted Secret) and is re-read when they
//! change, so a renewed certificate serves new connections at once while
//! open streams keep theirs.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

use super::{RejectReason, StreamMetrics};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; further connections wait in the backlog.
const MAX_HANDSHAKES: usize = 256;

/// The certificate and key files of the stream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`tls.crt` of a TLS Secret).
    pub cert_file: PathBuf,
    /// PEM private key (`tls.key`).
    pub key_file: PathBuf,
}

/// How the stream server talks to daemons.
#[derive(Clone, Debug)]
pub enum ServerTransport {
    /// TLS with a certificate that follows its files.
    Tls(ServerTls),
    /// Plaintext HTTP/2: whoever is on the path reads and rewrites every
    /// stream. Only `--insecure-dev` and in-process tests choose this.
    InsecurePlaintext,
}

/// Why the serving certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error(
        "cannot read the {what} {path}: {source} (check --tls-cert-file, --tls-key-file and the mounted Secret)"
    )]
    Read {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file's metadata could not be read.
    #[error("cannot stat {path}: {source} (check --tls-cert-file, --tls-key-file and the mounted Secret)")]
    Stat {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no PEM certificate (expected `-----BEGIN CERTIFICATE-----` blocks, leaf first)")]
    NoCertificate(PathBuf),
    /// The key is unusable or does not belong to the certificate.
    #[error(
        "the private key in {key} does not fit the certificate in {cert}: {source} (are both files from one Secret?)"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[source] rustls::Error),
}

/// The stream server's TLS configuration: one resolver that re-reads the
/// files when they change. Clones share it (a restarted stream server keeps
/// what was loaded).
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate and key (an error names the bad file) and
    /// builds the server configuration: aws-lc-rs, TLS 1.2 and 1.3, ALPN h2,
    /// no client certificates (daemons prove who they are with a token).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (stamp, key) = load(&files, &provider)?;
        let resolver = Arc::new(ReloadingCert {
            files: files.clone(),
            provider: Arc::clone(&provider),
            current: Mutex::new(Current { stamp, key, failed: None }),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls { files, config: Arc::new(config) })
    }

    /// The files this configuration follows.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// What identifies one version of a file: a Secret update swaps a symlink
/// to new files, so the inode changes even when size and mtime do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

type Stamp = (FileStamp, FileStamp);

fn file_stamp(path: &Path) -> Result<FileStamp, TlsError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Stat { path: path.to_owned(), source })?;
    Ok(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

fn stamp(files: &TlsFiles) -> Result<Stamp, TlsError> {
    Ok((file_stamp(&files.cert_file)?, file_stamp(&files.key_file)?))
}

/// Stats, then reads: a change between the two is seen as a change at the
/// next handshake, never missed.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<(Stamp, Arc<CertifiedKey>), TlsError> {
    let stamp = stamp(files)?;
    let read_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Read { what, path, source }
    };
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(read_err("certificate", &files.cert_file))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err("certificate", &files.cert_file))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(files.cert_file.clone()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key_file).map_err(read_err("private key", &files.key_file))?;
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|source| TlsError::KeyMismatch {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        source,
    })?;
    Ok((stamp, Arc::new(key)))
}

struct Current {
    stamp: Stamp,
    key: Arc<CertifiedKey>,
    /// The last reload error, so a bad file is logged once, not per handshake.
    failed: Option<String>,
}

/// Serves the certificate last loaded, after checking (a few `stat`s per
/// handshake) whether its files changed.
struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if stamp(&self.files).is_ok_and(|now| now == current.stamp) {
            return Arc::clone(&current.key);
        }
        match load(&self.files, &self.provider) {
            Ok((stamp, key)) => {
                tracing::info!(cert = %self.files.cert_file.display(), "serving a renewed TLS certificate to new daemon connections");
                *current = Current { stamp, key, failed: None };
            }
            Err(e) => {
                let text = e.to_string();
                if current.failed.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot reload the TLS certificate; still serving the previous one");
                    current.failed = Some(text);
                }
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Accepted TCP connections after their TLS handshake, for tonic's
/// `serve_with_incoming`. Handshakes run concurrently (a slow client holds
/// up nobody); dropping this stops accepting and closes the listener.
pub(crate) struct TlsIncoming {
    connections: ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>,
    accept: JoinHandle<()>,
}

impl TlsIncoming {
    pub(crate) fn new(mut incoming: TcpIncoming, acceptor: TlsAcceptor, metrics: StreamMetrics) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accept = vpblu_runtime::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else { return };
                let tcp = tokio::select! {
                    () = tx.closed() => return,
                    next = incoming.next() => match next {
                        None => return,
                        Some(Ok(tcp)) => tcp,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "accepting a daemon connection failed");
                            continue;
                        }
                    },
                };
                let (acceptor, tx, metrics) = (acceptor.clone(), tx.clone(), metrics.clone());
                vpblu_runtime::spawn(async move {
                    let remote = tcp.peer_addr().ok();
                    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _server_gone = tx.send(Ok(tls)).await;
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                    };
                    drop(permit);
                    metrics.rejected(RejectReason::TlsHandshake);
                    tracing::info!(?remote, error = %why, "TLS handshake with a would-be daemon failed");
                });
            }
        });
        TlsIncoming { connections: ReceiverStream::new(rx), accept }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_next_unpin(cx)
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
