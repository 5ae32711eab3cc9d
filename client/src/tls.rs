//! TLS for connections to nsqd: the rustls client configuration built from
//! go-nsq's `tls_*` options (root CA file or the system's roots, a client
//! certificate, verification on or off), and the server name to check.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use nsq_wire::tls::{provider, read_certs, read_key, AnyServerCert, PemError};

use crate::{Config, Error, Result};

fn file_error(e: PemError) -> Error {
    Error::TlsFile {
        path: e.path().to_owned(),
        reason: e.reason(),
    }
}

/// The client configuration `config` asks for. Files are read here, so a
/// tool can call this at startup to report a bad path before connecting.
pub fn client_config(config: &Config) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if config.tls_insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &config.tls_root_ca_file {
            Some(path) => {
                for cert in read_certs(path).map_err(file_error)? {
                    roots.add(cert)?;
                }
            }
            None => {
                // Like Go's crypto/tls: the system's roots. Unreadable
                // ones are skipped; none at all fails the handshake later.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert).map_err(file_error)?;
            builder.with_client_auth_cert(certs, read_key(key).map_err(file_error)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::TlsFile {
                path: config
                    .tls_cert
                    .clone()
                    .or_else(|| config.tls_key.clone())
                    .unwrap_or_default(),
                reason: "tls_cert and tls_key go together".into(),
            })
        }
    };
    Ok(Arc::new(config))
}

/// The name the server certificate must carry: the host part of
/// `host:port` (an IP address is checked as one).
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| Error::TlsFile {
        path: Default::default(),
        reason: format!("{host:?} is not a server name: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn server_names_from_addresses() {
        assert!(matches!(
            server_name("127.0.0.1:4150").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:4150").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("nsqd.example:4150").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn missing_files_are_named() {
        let config = Config {
            tls_root_ca_file: Some("/nonexistent/ca.pem".into()),
            ..Config::default()
        };
        match client_config(&config) {
            Err(Error::TlsFile { path, .. }) => assert_eq!(path, Path::new("/nonexistent/ca.pem")),
            other => panic!("{other:?}"),
        }
    }
}
