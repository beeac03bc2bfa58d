//! Daemon identities as a real cluster hands them out: the vpblu DaemonSet
//! object, a daemon Pod per node that it controls, and the Pod's projected
//! token (audience `vpblu`, bound to the Pod) in a file, as the kubelet
//! writes it. Plus the one token TokenRequest cannot give: an expired one.
//!
//! **Expired tokens.** TokenRequest refuses lifetimes under 10 minutes, so
//! a test cannot wait for a real token to expire. [`TestCluster::expired_token`]
//! takes a real TokenRequest token and moves its `iat`/`nbf`/`exp` an hour
//! into the past, re-signing it with the test cluster's own
//! service-account signing key (the key kube-apiserver signs with, from
//! `certs.rs`). Everything else (issuer, audience, key id, pod binding) is
//! the API server's own, so the only thing wrong with it is its age.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::TestCluster;
use super::certs::SA_PRIVATE_KEY;

/// Namespace of the daemons (k8s/deploy).
pub const DAEMON_NAMESPACE: &str = "vpblu-system";
/// The daemons' service account and DaemonSet name (k8s/deploy).
pub const DAEMON_NAME: &str = "vpblu-daemon";
/// The audience of the daemons' projected token.
pub const DAEMON_AUDIENCE: &str = "vpblu";

impl TestCluster {
    /// Applies `k8s/deploy/namespace.yaml`, `daemon-rbac.yaml` and
    /// `daemon-daemonset.yaml` (nothing runs it: there is no
    /// controller-manager) and returns the stored DaemonSet, whose UID
    /// daemon Pods name as their controller.
    pub async fn install_daemonset(&self) -> DaemonSet {
        for manifest in ["namespace.yaml", "daemon-rbac.yaml", "daemon-daemonset.yaml"] {
            self.apply_manifest(Path::new("k8s/deploy").join(manifest)).await;
        }
        Api::<DaemonSet>::namespaced(self.client(), DAEMON_NAMESPACE)
            .get(DAEMON_NAME)
            .await
            .unwrap_or_else(|e| panic!("cannot read DaemonSet {DAEMON_NAMESPACE}/{DAEMON_NAME}: {e}"))
    }

    /// Registers Pod `vpblu-system/NAME` on `node` running as
    /// `service_account`, controlled by `owner` (a DaemonSet) if given. It
    /// is on the host network, so its IP is `node_ip`.
    pub async fn daemon_pod(
        &self,
        name: &str,
        node: &str,
        node_ip: &str,
        service_account: &str,
        owner: Option<&DaemonSet>,
    ) -> Pod {
        let labels = [("app.kubernetes.io/name", DAEMON_NAME)];
        let pod =
            self.register_pod(DAEMON_NAMESPACE, name, node, node_ip, Some(service_account), &labels).await;
        let Some(owner) = owner else { return pod };
        let reference = json!({"metadata": {"ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "name": owner.metadata.name,
            "uid": owner.metadata.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]}});
        Api::<Pod>::namespaced(self.client(), DAEMON_NAMESPACE)
            .patch(name, &PatchParams::default(), &Patch::Merge(&reference))
            .await
            .unwrap_or_else(|e| {
                panic!("cannot make DaemonSet {DAEMON_NAME} the controller of Pod {name}: {e}")
            })
    }

    /// The projected-style token of Pod `vpblu-system/NAME` (account
    /// `service_account`, audience `audiences`, bound to the Pod) written to
    /// `path` as the kubelet writes it.
    pub async fn write_pod_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audiences: &[&str],
        path: &Path,
    ) -> PathBuf {
        let name = pod.metadata.name.as_deref().expect("a stored Pod has a name");
        let uid = pod.metadata.uid.as_deref().expect("a stored Pod has a UID");
        let token = self.token_for(DAEMON_NAMESPACE, service_account, audiences, Some((name, uid))).await;
        std::fs::write(path, token).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path.to_owned()
    }

    /// A token like [`TestCluster::token_for`]'s, but issued two hours ago
    /// and expired one hour ago (see the module docs for how).
    pub async fn expired_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        bound_pod: Option<(&str, &str)>,
    ) -> String {
        let token = self.token_for(namespace, service_account, audiences, bound_pod).await;
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, _signature] = parts.as_slice() else {
            panic!("TokenRequest gave a token that is not a JWS compact serialization");
        };
        let claims = URL_SAFE_NO_PAD.decode(claims).expect("JWT claims are base64url");
        let mut claims: Value = serde_json::from_slice(&claims).expect("JWT claims are JSON");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        claims["exp"] = json!(now - 3600);
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("JSON"));
        let signed = format!("{header}.{claims}");
        let signature =
            self.service_account_signer().sign(&SystemRandom::new(), signed.as_bytes()).expect("sign");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The key kube-apiserver signs service-account tokens with (ES256).
    fn service_account_signer(&self) -> EcdsaKeyPair {
        let path = self.dir().join(SA_PRIVATE_KEY);
        let pem =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
        let der = STANDARD.decode(body).expect("the signing key PEM is base64");
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .unwrap_or_else(|e| panic!("{} is not a PKCS#8 P-256 key: {e}", path.display()))
    }
}
