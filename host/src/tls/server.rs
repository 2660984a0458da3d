//! The node's server-side TLS (`wss://`, `tcps://`): certificate and key from PEM files, client
//! certificates (mTLS) checked against a CA when configured, and the files watched so a renewed
//! certificate is served without a restart. A handshake takes the configuration current when it
//! starts, so connections made before a reload keep their session and new ones get the new
//! certificate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use super::{TlsError, certificates, private_key, provider, roots};
use crate::config::TlsConfig;

/// The files a server configuration is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA (PEM) client certificates are checked against; none: clients are not asked for one.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (otherwise one is optional).
    pub require_client_cert: bool,
    /// The cluster's CA: peers present certificates of it, so it is asked for too.
    pub cluster_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// From `[tls]`; `None` when no certificate is configured.
    pub fn from_config(c: &TlsConfig) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: c.cert.clone()?,
            key: c.key.clone()?,
            client_ca: c.client_ca.clone(),
            require_client_cert: c.require_client_cert,
            cluster_ca: c.cluster_ca.clone(),
        })
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(&self.client_ca)
            .chain(&self.cluster_ca)
    }

    /// When each file last changed, and its size: a change of either means reload.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }

    /// Builds the rustls configuration from the files as they are now.
    pub fn build(&self) -> Result<rustls::ServerConfig, TlsError> {
        let chain = certificates(&self.cert)?;
        let key = private_key(&self.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mut cas = self.client_ca.iter().chain(&self.cluster_ca).peekable();
        let builder = match cas.peek() {
            Some(_) => {
                let mut all = rustls::RootCertStore::empty();
                for ca in cas {
                    all.roots.extend(roots(ca)?.roots);
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(all), provider());
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The current server configuration and what it was built from.
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<rustls::ServerConfig>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
    /// Reloads that took effect.
    pub reloads: AtomicU64,
    /// Changed files that could not be loaded (the previous certificate stays in use).
    pub reload_errors: AtomicU64,
}

impl ServerTls {
    /// Loads the files; an error here stops the node from starting.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let stamp = files.stamp();
        let config = files.build()?;
        Ok(Arc::new(ServerTls {
            files,
            current: ArcSwap::from_pointee(config),
            stamp: Mutex::new(stamp),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        }))
    }

    /// What a handshake starting now uses.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Whether clients are asked for a certificate.
    pub fn asks_client_cert(&self) -> bool {
        self.files.client_ca.is_some() || self.files.cluster_ca.is_some()
    }

    /// Rebuilds the configuration when a file changed. `Ok(true)`: the new one is in use.
    /// A file that changed but cannot be loaded (half written, a key that does not match)
    /// leaves the old configuration in place; it is tried again when the files change again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = self.files.stamp();
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        match self.files.build() {
            Ok(config) => {
                self.current.store(Arc::new(config));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Checks the files every `every` until `shutdown`, reloading when they change.
pub async fn watch(tls: Arc<ServerTls>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let files = tls.clone();
        // File reads and key parsing: off the runtime's threads.
        let reloaded = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
        match reloaded {
            Ok(Ok(true)) => {
                tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TLS files changed but could not be loaded; keeping the previous certificate")
            }
            Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
        }
    }
}

/// Checks that a client certificate (`der`, the leaf the handshake verified against the union
/// of the configured CAs) chains to `cluster_ca` itself: a peer link needs a certificate of the
/// cluster, not just one a client CA issued.
pub fn verify_peer(cluster_ca: &std::path::Path, der: &[u8]) -> Result<(), TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(cluster_ca)?), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let leaf = rustls::pki_types::CertificateDer::from(der.to_vec());
    verifier
        .verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| TlsError::Verifier(e.to_string()))
}
