//! TLS for clients: the server configuration built from `--tls-*` flags
//! (rustls with the ring provider), the "require any client certificate"
//! policy upstream offers, and the connection facts `/stats` reports.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{CommonState, ProtocolVersion, RootCertStore, ServerConfig};

use nsq_wire::tls::{provider, read_certs, read_key, AnyClientCert, PemError};

use crate::options::Options;

/// Why the TLS configuration could not be built from the flags.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(transparent)]
    File(#[from] PemError),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS configuration for the TCP upgrade and HTTPS, or `None` when
/// `--tls-cert`/`--tls-key` are not set (TLS is then never granted).
pub fn server_config(opts: &Options) -> Result<Option<Arc<ServerConfig>>, TlsConfigError> {
    if opts.tls_cert.is_empty() && opts.tls_key.is_empty() {
        return Ok(None);
    }
    let provider = provider();
    // rustls speaks TLS 1.2 and 1.3 only, so any older minimum means 1.2.
    let versions: &[&rustls::SupportedProtocolVersion] = match opts.tls_min_version.as_str() {
        "tls1.3" => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = match opts.tls_client_auth_policy.as_str() {
        "require" => builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider))),
        "require-verify" => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(Path::new(&opts.tls_root_ca_file))? {
                roots.add(cert)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(
        read_certs(Path::new(&opts.tls_cert))?,
        read_key(Path::new(&opts.tls_key))?,
    )?;
    Ok(Some(Arc::new(config)))
}

/// What `/stats` shows about a client's TLS session, named as Go names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.2` or `TLS1.3`.
    pub version: String,
    /// Go's cipher suite name, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
    /// The ALPN protocol, if any was negotiated.
    pub negotiated_protocol: String,
}

impl TlsInfo {
    pub fn of(conn: &CommonState) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_2) => "TLS1.2".to_string(),
            Some(ProtocolVersion::TLSv1_3) => "TLS1.3".to_string(),
            Some(v) => format!("Unknown {}", u16::from(v)),
            None => String::new(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|s| {
                // rustls calls the TLS 1.3 suites `TLS13_*`; Go, like the RFC, `TLS_*`.
                let name = format!("{:?}", s.suite());
                match name.strip_prefix("TLS13_") {
                    Some(rest) => format!("TLS_{rest}"),
                    None => name,
                }
            })
            .unwrap_or_default();
        let negotiated_protocol = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        TlsInfo {
            version,
            cipher_suite,
            negotiated_protocol,
        }
    }
}

/// The common name of the peer's certificate (Go's
/// `PeerCertificates[0].Subject.CommonName`), or "" without one.
pub fn peer_common_name(conn: &CommonState) -> String {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| common_name(cert))
        .unwrap_or_default()
}

/// One DER element: (tag, contents, what follows). `None` when malformed.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, &b| (l << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject's common name in a DER certificate; the last one wins, as
/// in Go. A hand-rolled walk of six fields: certificates were already
/// verified by rustls, and one string does not justify an X.509 crate.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (_, cert, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(cert)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2; // explicit version
    }
    for _ in 0..4 {
        tbs = der_element(tbs)?.2; // serial, signature, issuer, validity
    }
    let (_, mut subject, _) = der_element(tbs)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (_, mut set, rest) = der_element(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, pair, rest) = der_element(set)?;
            set = rest;
            let (tag, oid, value) = der_element(pair)?;
            if tag == 0x06 && oid == CN_OID {
                let (_, value, _) = der_element(value)?;
                cn = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_subject_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "org");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client één");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("client één"));
        let params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let mut no_cn = params;
        no_cn.distinguished_name = rcgen::DistinguishedName::new();
        let cert = no_cn.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
    }

    proptest! {
        #[test]
        fn garbage_certificates_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = common_name(&data);
        }
    }
}
