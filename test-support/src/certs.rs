//! A throwaway certificate authority and a certificate for 127.0.0.1 it
//! signed, written as PEM files, for tests of TLS between the binaries and
//! clients.

use std::path::PathBuf;

/// `ca.pem`, `cert.pem` and `key.pem` in a temporary directory, removed on
/// drop. The certificate names 127.0.0.1 (as an IP address and as the
/// common name) and serves as a client certificate too.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        // Distinct names: a leaf whose issuer equals its subject looks
        // self-signed to OpenSSL, which then never looks for the CA.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nsq test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write cert.pem");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write key.pem");
        Certs { dir }
    }

    /// The path of `ca.pem`, `cert.pem` or `key.pem`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// nsqd flags serving TLS with this certificate (and HTTPS on port 0).
    pub fn nsqd_args(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.path("cert.pem").display()),
            format!("--tls-key={}", self.path("key.pem").display()),
            "--https-address=127.0.0.1:0".into(),
        ]
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}
