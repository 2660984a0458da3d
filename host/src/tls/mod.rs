//! TLS with rustls (the `ring` provider): PEM files read into certificates and keys, the client
//! side's configuration (`wss://` and `tcps://` from the Rust client, peer links), and on a node
//! the server side's, reloaded when its files change ([`server`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[cfg(feature = "node")]
pub mod mint;
#[cfg(feature = "node")]
pub mod server;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        why: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate, say).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    #[error("client certificate CA: {0}")]
    Verifier(String),
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |why: String| TlsError::File {
        path: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        why: format!("no usable private key: {e}"),
    })
}

/// A root store of the certificates in a PEM file.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| TlsError::File {
            path: path.to_owned(),
            why: format!("not a CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// What a client trusts and presents.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificates (PEM) the server's certificate must chain to; none: the web PKI's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) and its key, for servers that ask for one (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The rustls client configuration.
    pub fn config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = match &self.ca_file {
            Some(path) => roots(path)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &self.identity {
            Some((cert, key)) => {
                builder.with_client_auth_cert(certificates(cert)?, private_key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}
