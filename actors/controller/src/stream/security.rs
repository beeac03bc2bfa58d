//! The stream server's security from the command line: TLS with the
//! mounted certificate and TokenReview-checked daemons, or, only with
//! `--insecure-dev`, plaintext that believes every Hello.

use k8s_openapi::api::core::v1::ObjectReference;

use super::{NodeAuth, ServerTls, ServerTransport, TlsFiles, TokenReviewAuth};
use crate::Args;

/// How the stream server protects its streams.
#[derive(Clone, Debug)]
pub struct StreamSecurity {
    /// TLS or plaintext.
    pub transport: ServerTransport,
    /// Who may speak for which node.
    pub auth: NodeAuth,
}

impl StreamSecurity {
    /// Builds it from `args`, loading the certificate now so a bad file
    /// stops the controller at start with the file's name. With
    /// `--insecure-dev` it logs a warning (at every start, by design).
    pub fn from_args(args: &Args, client: &kube::Client) -> Result<Self, String> {
        if args.insecure_dev {
            if args.tls_cert_file.is_some() || args.tls_key_file.is_some() {
                return Err(
                    "--insecure-dev serves plaintext, but --tls-cert-file/--tls-key-file were given: \
                            drop --insecure-dev to serve TLS, or drop the certificate flags"
                        .to_owned(),
                );
            }
            tracing::warn!(
                grpc = %args.grpc_addr,
                "--insecure-dev: daemon streams are PLAINTEXT and UNAUTHENTICATED; anyone who reaches the \
                 stream port can publish a WireGuard key for any node. Never run a cluster like this."
            );
            return Ok(StreamSecurity {
                transport: ServerTransport::InsecurePlaintext,
                auth: NodeAuth::TrustAll,
            });
        }
        let (Some(cert_file), Some(key_file)) = (&args.tls_cert_file, &args.tls_key_file) else {
            return Err(
                "daemon streams need TLS: pass --tls-cert-file and --tls-key-file (the controller's \
                        serving certificate and key, mounted from its Secret), or --insecure-dev for a \
                        plaintext development setup"
                    .to_owned(),
            );
        };
        let files = TlsFiles { cert_file: cert_file.clone(), key_file: key_file.clone() };
        let tls = ServerTls::load(files).map_err(|e| e.to_string())?;
        if args.token_audience.trim().is_empty() {
            return Err(
                "--token-audience is empty: pass the audience of the daemons' projected token, such as \
                        vpblu"
                    .to_owned(),
            );
        }
        let daemonset = Some(args.daemon_daemonset.trim()).filter(|d| !d.is_empty()).map(str::to_owned);
        let auth = NodeAuth::TokenReview(TokenReviewAuth {
            client: client.clone(),
            audience: args.token_audience.clone(),
            service_account: args.daemon_service_account.clone(),
            daemonset,
        });
        Ok(StreamSecurity { transport: ServerTransport::Tls(tls), auth })
    }
}

/// The object Events without a node are about: this controller's Pod
/// (`POD_NAMESPACE`/`POD_NAME`, which `--lease-namespace`/`--identity`
/// default to).
pub fn controller_reference(args: &Args) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(args.lease_namespace.clone()),
        name: Some(args.identity.clone()),
        ..ObjectReference::default()
    }
}
