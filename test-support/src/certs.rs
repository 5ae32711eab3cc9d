//! A throwaway certificate authority and a certificate for 127.0.0.1 it
//! signed, written as PEM files, for tests of TLS between the binaries and
//! clients; and rustls connectors and an acceptor trusting that authority.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::raw::READ_TIMEOUT;

/// `ca.pem`, `cert.pem` and `key.pem` in a temporary directory, removed on
/// drop. The certificate names 127.0.0.1 (as an IP address and as the
/// common name) and serves as a client certificate too. `client.der` and
/// `client.key.der` are a second client certificate, whose common name
/// (`worker 7.example`) nsqd passes on to an auth server.
pub struct Certs {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
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
        let client_key = rcgen::KeyPair::generate().expect("client key");
        let mut client_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("client params");
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "worker 7.example");
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client certificate");
        std::fs::write(dir.path().join("client.der"), client.der()).expect("write client.der");
        std::fs::write(
            dir.path().join("client.key.der"),
            client_key.serialize_der(),
        )
        .expect("write client.key.der");
        Certs {
            ca_der: ca.der().clone(),
            dir,
        }
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

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap_or_else(|e| panic!("read {file}: {e}"))
    }

    fn client_config(
        &self,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("CA into the root store");
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default TLS versions")
        .with_root_certificates(roots)
    }

    /// A TLS client trusting the CA, presenting no certificate.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let config = self.client_config().with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TLS client trusting the CA and presenting `client.der`.
    pub fn connector_with_cert(&self) -> tokio_rustls::TlsConnector {
        let cert = CertificateDer::from(self.read("client.der"));
        let key = PrivateKeyDer::try_from(self.read("client.key.der")).expect("client key");
        let config = self
            .client_config()
            .with_client_auth_cert(vec![cert], key)
            .expect("client certificate config");
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Serve TLS with the 127.0.0.1 certificate (e.g. for an HTTPS auth server).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let certs = rustls_pemfile::certs(&mut &self.read("cert.pem")[..])
            .collect::<Result<Vec<_>, _>>()
            .expect("cert.pem");
        let key = rustls_pemfile::private_key(&mut &self.read("key.pem")[..])
            .expect("key.pem")
            .expect("a key in key.pem");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Upgrade `tcp` to TLS as a client of 127.0.0.1 (see [`Self::connector`]); panics after
    /// [`READ_TIMEOUT`].
    pub async fn tls(&self, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        tokio::time::timeout(READ_TIMEOUT, self.connector().connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake")
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}
