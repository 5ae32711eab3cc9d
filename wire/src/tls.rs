//! TLS pieces both ends of a connection share: reading PEM certificates and
//! keys, the ring crypto provider, and the verifiers that accept any
//! certificate yet still check the handshake's signatures (Go's
//! `InsecureSkipVerify` for the client, `RequireAnyClientCert` for nsqd).

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key found", path.display())]
    NoKey { path: PathBuf },
}

impl PemError {
    /// The file at fault.
    pub fn path(&self) -> &Path {
        match self {
            PemError::Open { path, .. }
            | PemError::Read { path, .. }
            | PemError::NoCertificate { path }
            | PemError::NoKey { path } => path,
        }
    }

    /// What is wrong with it, without its name.
    pub fn reason(&self) -> String {
        match self {
            PemError::Open { source, .. } | PemError::Read { source, .. } => source.to_string(),
            PemError::NoCertificate { .. } => "no PEM certificate found".into(),
            PemError::NoKey { .. } => "no PEM private key found".into(),
        }
    }
}

fn open(path: &Path) -> Result<BufReader<File>, PemError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| PemError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Every certificate in a PEM file; none at all is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| PemError::NoKey {
            path: path.to_owned(),
        })
}

/// The crypto provider every TLS configuration of ours uses (ring: no
/// cmake or C toolchain beyond `cc`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The handshake-signature checks that a verifier accepting any
/// certificate still makes: the peer proves it holds the certificate's key,
/// with the provider's signature algorithms. One body for both verifiers.
macro_rules! signature_checks {
    () => {
        signature_check!(
            verify_tls12_signature,
            rustls::crypto::verify_tls12_signature
        );
        signature_check!(
            verify_tls13_signature,
            rustls::crypto::verify_tls13_signature
        );

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// One of the two signature checks, by the rustls function that does it.
macro_rules! signature_check {
    ($method:ident, $verify:path) => {
        fn $method(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $verify(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
    };
}

/// A client's `tls_insecure_skip_verify`: any server certificate is
/// accepted, though the handshake's signatures are still checked (Go's
/// `InsecureSkipVerify`).
#[derive(Debug)]
pub struct AnyServerCert(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

/// nsqd's `--tls-client-auth-policy=require`: a client must present a
/// certificate and prove it holds its key, but the certificate is not
/// checked against any authority (Go's `tls.RequireAnyClientCert`).
#[derive(Debug)]
pub struct AnyClientCert(pub Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}
