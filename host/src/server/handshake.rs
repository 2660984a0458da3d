//! Opening an admitted connection: the TLS handshake when the port speaks TLS (or plaintext, when
//! the port also allows it and the client's first byte is not a TLS record), all within the
//! handshake deadline, so a client that opens a connection and sends nothing (slowloris) holds
//! its place only that long.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::tls::server::ServerTls;

/// A connection after its handshake: plaintext or TLS.
pub type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// The first byte of a TLS record carrying a handshake (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a port speaks.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS, when `[tls]` is configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Plaintext too, told apart by the first byte (`tls.allow_plaintext`).
    pub allow_plaintext: bool,
}

/// Connections that never completed their handshake, by reason (`/health`, metrics).
#[derive(Debug, Default)]
pub struct HandshakeCounts {
    /// No handshake within the deadline (slowloris, or a client that went quiet).
    pub timeouts: AtomicU64,
    /// TLS refused: no shared protocol, a bad or missing client certificate, not TLS at all.
    pub failures: AtomicU64,
}

/// What the client proved in the TLS handshake.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The connection is TLS.
    pub tls: bool,
    /// The client's certificate chain was verified against `tls.client_ca`: its leaf's
    /// subject common name, when it has one.
    pub client_cert: Option<ClientCert>,
}

/// A verified client certificate.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The leaf certificate (DER), for identities configured by certificate.
    pub der: Vec<u8>,
}

/// Why a connection closed before its first request.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Nothing complete within the deadline.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// A plaintext client on a port that speaks only TLS: handed back so the port can say so.
    #[error("plaintext connection on a TLS port")]
    Plaintext(TcpStream),
}

/// Opens `tcp` as `security` says, within `deadline`.
pub async fn open(
    tcp: TcpStream,
    security: &Security,
    deadline: Duration,
    counts: &HandshakeCounts,
) -> Result<(Conn, Peer), HandshakeError> {
    let Some(tls) = &security.tls else {
        return Ok((Either::Left(tcp), Peer::default()));
    };
    let acceptor = tls.acceptor();
    let opened = tokio::time::timeout(deadline, async {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1) if first[0] == TLS_HANDSHAKE => {}
            Ok(1) if security.allow_plaintext => {
                return Ok((Either::Left(tcp), Peer::default()));
            }
            Ok(1) => return Err(HandshakeError::Plaintext(tcp)),
            Ok(_) => {
                let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(HandshakeError::Tls(closed));
            }
            Err(e) => return Err(HandshakeError::Tls(e)),
        }
        let stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
        let client_cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| ClientCert {
                der: leaf.as_ref().to_vec(),
            });
        Ok((
            Either::Right(stream),
            Peer {
                tls: true,
                client_cert,
            },
        ))
    })
    .await;
    let outcome = opened.unwrap_or(Err(HandshakeError::Timeout(deadline)));
    match &outcome {
        Err(HandshakeError::Timeout(_)) => counts.timeouts.fetch_add(1, Ordering::Relaxed),
        Err(_) => counts.failures.fetch_add(1, Ordering::Relaxed),
        Ok(_) => 0,
    };
    outcome
}

/// Failed handshakes logged at most once a second (a scan of the port is hostile input).
static HANDSHAKES: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(1));

/// Logs (throttled, at DEBUG) a connection that closed before its first request.
pub fn failed(remote: Option<std::net::SocketAddr>, e: &HandshakeError) {
    if let Some(suppressed) = HANDSHAKES.admit() {
        let remote = remote.map(|r| r.to_string()).unwrap_or_default();
        tracing::debug!(%remote, error = %e, suppressed, "connection closed before its first request");
    }
}
