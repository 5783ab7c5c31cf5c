//! TLS for every listener (rustls): a certificate chain and a private key,
//! both PEM, offering HTTP/2 and HTTP/1.1 by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the certificate chain {path}: {reason}")]
    Certs { path: String, reason: String },
    #[error("reading the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor from PEM files.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs_error = |reason: String| TlsError::Certs { path: cert_path.display().to_string(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| certs_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| certs_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(certs_error("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| TlsError::Key { path: key_path.display().to_string(), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
