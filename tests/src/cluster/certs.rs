//! The control plane's PKI, made in-process with rcgen: a CA, the API
//! server's serving certificate, an admin client certificate and the
//! service-account signing key pair. All keys are ECDSA P-256, which both
//! Go's TLS stack and the service-account token signer accept.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

/// Names the serving certificate answers to: loopback, and what in-cluster
/// clients would dial.
const SERVING_NAMES: [&str; 7] = [
    "127.0.0.1",
    "10.96.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// File name of the service-account signing key in the cluster's dir.
pub(crate) const SA_PRIVATE_KEY: &str = "sa.key";

/// Where the PEM files were written.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_public_key: PathBuf,
    pub sa_private_key: PathBuf,
}

/// Generates the PKI and writes it into `dir` (keys with mode 0600).
pub(crate) fn write_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().expect("generate the CA key");
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "vpblu-e2e-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.serial_number = Some(SerialNumber::from(1u64));
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
    let mut serving = CertificateParams::new(serving_names).expect("serving certificate SANs are valid");
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.serial_number = Some(SerialNumber::from(2u64));
    let serving_key = KeyPair::generate().expect("generate the serving key");
    let serving_cert = serving.signed_by(&serving_key, &issuer).expect("sign the serving certificate");

    // system:masters is bound to cluster-admin by the bootstrap RBAC policy.
    let mut admin = CertificateParams::default();
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.serial_number = Some(SerialNumber::from(3u64));
    let admin_key = KeyPair::generate().expect("generate the admin key");
    let admin_cert = admin.signed_by(&admin_key, &issuer).expect("sign the admin certificate");

    let sa_key = KeyPair::generate().expect("generate the service-account signing key");

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("serving.crt"),
        serving_key: dir.join("serving.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_public_key: dir.join("sa.pub"),
        sa_private_key: dir.join(SA_PRIVATE_KEY),
    };
    write_public(&pki.ca_cert, &ca_cert.pem());
    write_public(&pki.serving_cert, &serving_cert.pem());
    write_private(&pki.serving_key, &serving_key.serialize_pem());
    write_public(&pki.admin_cert, &admin_cert.pem());
    write_private(&pki.admin_key, &admin_key.serialize_pem());
    write_public(&pki.sa_public_key, &sa_key.public_key_pem());
    write_private(&pki.sa_private_key, &sa_key.serialize_pem());
    pki
}

fn write_public(path: &Path, pem: &str) {
    fs::write(path, pem).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn write_private(path: &Path, pem: &str) {
    write_public(path, pem);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod 600 {}: {e}", path.display()));
}
