//! How the daemon proves the controller is the controller (TLS against a CA
//! bundle) and itself is the daemon of its node (its projected
//! service-account token, read fresh from its file on every connect, since
//! the kubelet rotates it).

use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// The controller's certificate, checked at every connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM bundle of the CA(s) that may sign the controller's certificate
    /// (read at every connect, so a rotated ConfigMap is picked up).
    pub ca_file: PathBuf,
    /// The name the controller's certificate must carry, whatever address
    /// is dialed (so a lab can dial an IP).
    pub server_name: String,
}

/// The daemon's side of the stream's security.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSecurity {
    /// `None`: plaintext `http://` (only `--insecure-dev`).
    pub tls: Option<ClientTls>,
    /// The token sent as `authorization: Bearer …`; `None`: none is sent.
    pub token_file: Option<PathBuf>,
}

impl StreamSecurity {
    /// Plaintext and no token: what `--insecure-dev` means.
    pub fn insecure_dev() -> Self {
        StreamSecurity { tls: None, token_file: None }
    }

    /// TLS against `ca_file` for `server_name`, sending the token in
    /// `token_file`.
    pub fn tls(
        ca_file: impl Into<PathBuf>,
        server_name: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> Self {
        StreamSecurity {
            tls: Some(ClientTls { ca_file: ca_file.into(), server_name: server_name.into() }),
            token_file: Some(token_file.into()),
        }
    }

    /// From the daemon's flags: checks that `endpoint`'s scheme fits
    /// (`https://` with TLS, `http://` with `--insecure-dev`) and that the
    /// server name is a DNS name or IP address. With `insecure_dev` it logs
    /// a warning (at every start, by design).
    pub fn from_flags(
        endpoint: &str,
        insecure_dev: bool,
        ca_file: &Path,
        server_name: &str,
        token_file: &Path,
    ) -> Result<Self, String> {
        let security = if insecure_dev {
            tracing::warn!(
                %endpoint,
                "--insecure-dev: the controller stream is PLAINTEXT and sends no token; whoever is on the path \
                 can read and rewrite this node's peers. Never run a cluster like this."
            );
            StreamSecurity::insecure_dev()
        } else {
            check_server_name(server_name)?;
            StreamSecurity::tls(ca_file, server_name, token_file)
        };
        security.check_endpoint(endpoint)?;
        Ok(security)
    }

    /// tonic would speak plaintext to an `http://` endpoint even with TLS
    /// configured: refuse that combination instead.
    pub fn check_endpoint(&self, endpoint: &str) -> Result<(), String> {
        match (&self.tls, endpoint.split_once("://").map(|(scheme, _)| scheme)) {
            (Some(_), Some("https")) | (None, Some("http")) => Ok(()),
            (Some(_), _) => Err(format!(
                "controller endpoint {endpoint:?} must start with https:// (the stream is TLS); plaintext \
                 http:// needs --insecure-dev"
            )),
            (None, _) => Err(format!(
                "controller endpoint {endpoint:?} must start with http:// under --insecure-dev (no TLS); drop \
                 --insecure-dev to use https://"
            )),
        }
    }
}

/// A server name TLS can check: a DNS name or an IP address.
fn check_server_name(name: &str) -> Result<(), String> {
    let valid_ip = name.parse::<std::net::IpAddr>().is_ok();
    let valid_dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid_ip || valid_dns {
        Ok(())
    } else {
        Err(format!(
            "--controller-server-name {name:?} is not a DNS name or IP address; use the name in the controller's \
             certificate, such as vpblu-controller.vpblu-system.svc"
        ))
    }
}

/// Why the token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file is missing or unreadable.
    #[error(
        "cannot read the service-account token {path}: {source} (the DaemonSet projects it; check --token-file)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or holds more than one token.
    #[error(
        "{0} does not hold one token (it is empty, has whitespace inside or is not ASCII); check --token-file"
    )]
    Invalid(PathBuf),
}

/// Reads the token in `path`, fresh: the kubelet rewrites it before it
/// expires.
pub(crate) async fn read_token(path: &Path) -> Result<SecretString, TokenError> {
    let text = zeroize::Zeroizing::new(
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| TokenError::Read { path: path.to_owned(), source })?,
    );
    let token = text.trim();
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(TokenError::Invalid(path.to_owned()));
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn scheme_and_security_must_agree() {
        let tls = StreamSecurity::tls("/ca", "vpblu-controller.vpblu-system.svc", "/token");
        tls.check_endpoint("https://10.0.0.1:9443").unwrap();
        let err = tls.check_endpoint("http://10.0.0.1:9443").unwrap_err();
        assert!(err.contains("http://10.0.0.1:9443") && err.contains("--insecure-dev"), "{err}");
        let plain = StreamSecurity::insecure_dev();
        plain.check_endpoint("http://10.0.0.1:9443").unwrap();
        let err = plain.check_endpoint("https://10.0.0.1:9443").unwrap_err();
        assert!(err.contains("https://10.0.0.1:9443"), "{err}");
    }

    #[test]
    fn flags_build_tls_unless_insecure_dev() {
        let (ca, token) = (Path::new("/etc/vpblu/ca/ca.crt"), Path::new("/var/run/secrets/vpblu/token"));
        let name = "vpblu-controller.vpblu-system.svc";
        let tls = StreamSecurity::from_flags("https://c:9443", false, ca, name, token).unwrap();
        assert_eq!(tls, StreamSecurity::tls(ca, name, token));
        let plain = StreamSecurity::from_flags("http://c:9443", true, ca, name, token).unwrap();
        assert_eq!(plain, StreamSecurity::insecure_dev());
        StreamSecurity::from_flags("https://c:9443", false, ca, "10.0.0.1", token).unwrap();
        for bad in ["", "bad name", "-x.svc", "a..b"] {
            let err = StreamSecurity::from_flags("https://c:9443", false, ca, bad, token).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[tokio::test]
    async fn tokens_are_read_fresh_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let err = read_token(&path).await.unwrap_err();
        assert!(err.to_string().contains("--token-file"), "{err}");
        std::fs::write(&path, "first.jwt\n").unwrap();
        assert_eq!(read_token(&path).await.unwrap().expose_secret(), "first.jwt");
        std::fs::write(&path, "second.jwt").unwrap();
        let token = read_token(&path).await.unwrap();
        assert_eq!(token.expose_secret(), "second.jwt");
        assert!(!format!("{token:?}").contains("second"));
        for bad in ["", "  \n", "two tokens", "tökén"] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(read_token(&path).await, Err(TokenError::Invalid(_))), "{bad:?}");
        }
    }
}
