//! TLS material for the controller↔daemon stream in tests, made with
//! rcgen: a CA and the controller's serving certificate for
//! [`SERVER_NAME`], written as PEM files the way the controller's Secret
//! (`tls.crt`, `tls.key`) and the daemons' CA ConfigMap (`ca.crt`) are
//! mounted. The files live in a temp dir removed on drop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The name the controller's certificate carries (the daemons' default
/// `--controller-server-name`); the tests dial 127.0.0.1 and check this name.
pub const SERVER_NAME: &str = "vpblu-controller.vpblu-system.svc";

/// A stream CA, the controller's serving certificate and key, in files.
#[derive(Debug)]
pub struct StreamPki {
    dir: tempfile::TempDir,
    issuer: Mutex<Issuer<'static, KeyPair>>,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Default for StreamPki {
    fn default() -> Self {
        StreamPki::new()
    }
}

impl StreamPki {
    /// A fresh CA and a serving certificate for [`SERVER_NAME`].
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vpblu-stream-pki-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the stream PKI: {e}"));
        let (ca_pem, issuer) = new_ca("vpblu-stream-ca");
        let pki = StreamPki {
            ca_file: dir.path().join("ca.crt"),
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
            issuer: Mutex::new(issuer),
            dir,
        };
        write(&pki.ca_file, &ca_pem, 0o644);
        pki.issue_serving_cert();
        pki
    }

    /// The CA bundle daemons verify against (`--ca-file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The controller's certificate (`--tls-cert-file`).
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The controller's key (`--tls-key-file`).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The temp dir holding the files (token files may go here too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Moves the serving certificate to a new, unrelated CA (new key too),
    /// replacing the two files by rename as a Secret update does; returns
    /// the new CA's bundle. Daemons that trust only the old CA cannot make
    /// new connections any more: that is how a test sees the controller
    /// serve the renewed certificate.
    pub fn rotate_to_new_ca(&self) -> PathBuf {
        let (ca_pem, issuer) = new_ca("vpblu-stream-ca-2");
        let ca_file = self.dir.path().join("ca-2.crt");
        write(&ca_file, &ca_pem, 0o644);
        *self.issuer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = issuer;
        self.issue_serving_cert();
        ca_file
    }

    /// A self-signed certificate and key for [`SERVER_NAME`] in new files:
    /// what an impostor controller would present.
    pub fn self_signed(&self) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("generate a key");
        let cert = serving_params().self_signed(&key).expect("self-sign a serving certificate");
        let (cert_file, key_file) =
            (self.dir.path().join("impostor.crt"), self.dir.path().join("impostor.key"));
        write(&cert_file, &cert.pem(), 0o644);
        write(&key_file, &key.serialize_pem(), 0o600);
        (cert_file, key_file)
    }

    fn issue_serving_cert(&self) {
        let key = KeyPair::generate().expect("generate the serving key");
        let issuer = self.issuer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cert = serving_params().signed_by(&key, &issuer).expect("sign the serving certificate");
        // Key first: until the certificate follows, the pair does not match
        // and the controller keeps serving the previous one.
        replace(&self.key_file, &key.serialize_pem(), 0o600);
        replace(&self.cert_file, &cert.pem(), 0o644);
    }
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("generate the CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign the CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

fn serving_params() -> CertificateParams {
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("a valid DNS name");
    params.distinguished_name.push(DnType::CommonName, "vpblu-controller");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn write(path: &Path, pem: &str, mode: u32) {
    fs::write(path, pem).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// Writes a sibling and renames it over `path`: readers see the old or the
/// new file, never half of one.
fn replace(path: &Path, pem: &str, mode: u32) {
    let next = path.with_extension("next");
    write(&next, pem, mode);
    fs::rename(&next, path).unwrap_or_else(|e| panic!("cannot rename onto {}: {e}", path.display()));
}
