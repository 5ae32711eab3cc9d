//! TLS pieces both ends of a connection share: reading PEM certificates and
//! keys, the ring crypto provider, and the handshake-signature checks that a
//! verifier accepting any certificate (Go's `InsecureSkipVerify`,
//! `RequireAnyClientCert`) still makes.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::SignatureScheme;

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

/// The checks a verifier that accepts any certificate still makes: the
/// peer proves it holds the certificate's key, with the provider's
/// signature algorithms.
#[derive(Debug, Clone)]
pub struct SignatureCheck(pub Arc<CryptoProvider>);

impl SignatureCheck {
    /// The algorithms a handshake signature is checked with (pass them to
    /// `rustls::crypto::verify_tls12_signature` and `..._tls13_...`).
    pub fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }

    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}
