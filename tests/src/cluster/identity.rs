//! Acting as someone other than the admin: namespaces and service accounts
//! on demand, tokens from the TokenRequest API (optionally bound to a Pod,
//! as a kubelet's projected tokens are), and clients that present them.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::config::AuthInfo;
use secrecy::SecretString;

use super::TestCluster;

/// Lifetime of tokens from [`TestCluster::token_for`]: one hour, the
/// kubelet's default for projected tokens.
const TOKEN_SECONDS: i64 = 3600;

impl TestCluster {
    /// Creates namespace `name` unless it exists (there is no controller
    /// manager, so it also gets no `default` ServiceAccount by itself).
    pub async fn ensure_namespace(&self, name: &str) -> Namespace {
        let api: Api<Namespace> = Api::all(self.client());
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        create_or_get(&api, name, &namespace, "Namespace").await
    }

    /// Creates ServiceAccount `namespace/name` (and the namespace) unless it
    /// exists.
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) -> ServiceAccount {
        self.ensure_namespace(namespace).await;
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        create_or_get(&api, name, &account, "ServiceAccount").await
    }

    /// A token for ServiceAccount `namespace/service_account` (created if
    /// missing) from the TokenRequest API, valid for one hour, for
    /// `audiences` (empty: the API server's own, see
    /// [`super::API_AUDIENCES`]). With `bound_pod = Some((name, uid))` the
    /// token is bound to that Pod, which must run as the same account: it
    /// stops validating once the Pod is gone.
    pub async fn token_for(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        bound_pod: Option<(&str, &str)>,
    ) -> String {
        self.ensure_service_account(namespace, service_account).await;
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Empty: the API server fills in its own audiences.
                audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
                bound_object_ref: bound_pod.map(|(name, uid)| BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(name.to_owned()),
                    uid: Some(uid.to_owned()),
                }),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let response = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| {
                panic!("TokenRequest for {namespace}/{service_account} (bound to {bound_pod:?}) failed: {e}")
            });
        response
            .status
            .and_then(|s| s.token)
            .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{service_account} returned no token"))
    }

    /// A client that authenticates as ServiceAccount
    /// `namespace/service_account` with a token from [`Self::token_for`].
    /// (Its requests are rejected as unauthenticated unless `audiences` is
    /// empty or contains an API audience.)
    pub async fn client_as(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        bound_pod: Option<(&str, &str)>,
    ) -> kube::Client {
        let token = self.token_for(namespace, service_account, audiences, bound_pod).await;
        self.client_with_token(&token)
    }

    /// A client that presents `token` as its bearer token (and no client
    /// certificate).
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        let mut config = self.config().clone();
        config.auth_info =
            AuthInfo { token: Some(SecretString::from(token.to_owned())), ..AuthInfo::default() };
        kube::Client::try_from(config).expect("build a client from a bearer-token config")
    }

    /// Writes a kubeconfig at `path` (mode 0600) that presents `token`, for
    /// a process that should run as that token's service account.
    pub fn write_token_kubeconfig(&self, path: &std::path::Path, token: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: vpblu-e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: token\n  user:\n    token: {token}\ncontexts:\n- name: vpblu-e2e\n  context:\n    cluster: vpblu-e2e\n    user: token\ncurrent-context: vpblu-e2e\n",
            server = self.api_url(),
            ca = self.dir().join("ca.crt").display(),
        );
        std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("cannot chmod 600 {}: {e}", path.display()));
    }
}

/// Creates `object` unless one named `name` exists; returns what is stored.
async fn create_or_get<K>(api: &Api<K>, name: &str, object: &K, kind: &str) -> K
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get(name).await.unwrap_or_else(|e| panic!("cannot get {kind} {name}: {e}"))
        }
        Err(e) => panic!("cannot create {kind} {name}: {e}"),
    }
}
