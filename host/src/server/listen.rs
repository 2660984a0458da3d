//! Accepting connections: a node-wide and a per-address cap, a deadline for the HTTP request
//! that opens each connection, accept errors backed off and counted, and connections over a cap
//! refused with a 503 instead of left hanging.
//!
//! This replaces `axum::serve`, which has no connection cap and no header deadline: a client
//! that opened connections and never finished their headers held each one forever.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::handshake::{Conn, Peer};
use crate::throttle::Throttle;

/// Connection limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections of every kind (clients, peers, admin) at most.
    pub max_connections: usize,
    /// Open connections from one IP address at most.
    pub max_per_address: usize,
    /// How long a connection may take to send a complete request head (also the idle time
    /// allowed between HTTP requests on one connection).
    pub header_timeout: Duration,
}

/// Counts open connections against the caps; shared with `/health`.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Connections refused for a cap.
    pub refused: AtomicU64,
    /// `accept` calls that failed (out of file descriptors, say).
    pub accept_errors: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `server.max_connections` are open.
    #[error("the node is at its connection limit ({0})")]
    Full(usize),
    /// `server.max_connections_per_address` are open from this address.
    #[error("this address is at its connection limit ({0})")]
    AddressFull(usize),
}

/// An admitted connection's place under the caps, given back when dropped. The upgrade hands
/// it to the WebSocket session, so an upgraded connection counts for as long as it lives.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    address: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        let mut per = self.gate.lock();
        if let Some(n) = per.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.address);
            }
        }
    }
}

impl Gate {
    /// A gate with nothing open.
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Nothing panics while it is held.
        self.per_address.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a connection from `address`, or says which cap it is over.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refusal> {
        let mut per = self.lock();
        let refused = if self.open() >= self.limits.max_connections {
            Some(Refusal::Full(self.limits.max_connections))
        } else if per.get(&address).copied().unwrap_or(0) >= self.limits.max_per_address {
            Some(Refusal::AddressFull(self.limits.max_per_address))
        } else {
            None
        };
        if let Some(r) = refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        *per.entry(address).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            gate: self.clone(),
            address,
        })
    }
}

/// The request extension through which a WebSocket upgrade takes over its connection's ticket,
/// and learns who is at the other end.
#[derive(Debug, Clone)]
pub struct ConnectionTicket {
    /// The connection's place under the caps.
    pub ticket: Arc<Ticket>,
    /// The client's address.
    pub remote: Option<std::net::SocketAddr>,
    /// What its TLS handshake proved.
    pub peer: Peer,
}

/// Accept errors logged at most once a second.
static ACCEPT_ERRORS: Throttle = Throttle::new(Duration::from_secs(1));
/// Refused connections logged at most once a second.
static REFUSED: Throttle = Throttle::new(Duration::from_secs(1));

/// The waits after failed accepts: from 5 ms, doubling, up to 1 s.
#[derive(Debug, Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_millis(5u64 << self.0.min(8)).min(Duration::from_secs(1));
        self.0 = self.0.saturating_add(1);
        d
    }
}

/// Errors that concern one connection only (it went away before being accepted): no backoff.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Accepts until `shutdown`, handing each admitted connection to `serve` on `connections`;
/// returns once accepting has stopped (connections may still be finishing). A connection over a
/// cap is answered with a 503 on an HTTP port (`http`), and closed on the TCP port.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    http: bool,
    serve: F,
) where
    F: Fn(TcpStream, Ticket) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                gate.accept_errors.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next();
                if let Some(suppressed) = ACCEPT_ERRORS.admit() {
                    tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, suppressed, "accept failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        backoff = Backoff::default();
        // Replies are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        match gate.admit(peer.ip()) {
            Ok(ticket) => {
                connections.spawn(serve(tcp, ticket));
            }
            Err(refusal) => {
                if let Some(suppressed) = REFUSED.admit() {
                    tracing::warn!(%peer, reason = %refusal, suppressed, "connection refused");
                }
                if http {
                    connections.spawn(refuse(tcp, refusal));
                }
            }
        }
    }
}

/// Serves one HTTP/1.1 connection (which may become a WebSocket) until it closes, the node
/// shuts down (it finishes its current request), or the grace period is over.
pub async fn serve_http(
    conn: Conn,
    ticket: ConnectionTicket,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ticket.clone());
        app.clone().oneshot(req.map(Body::new))
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = http
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = hard_stop.cancelled() => {}
    }
}

/// Answers a plaintext HTTP request on a port that speaks only TLS with a `400` that says so.
pub async fn refuse_plaintext(tcp: TcpStream) {
    let body = "this port speaks TLS: connect with wss:// (or https://)\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    answer_and_close(tcp, response).await;
}

/// Answers a connection over a cap with `503 Service Unavailable` and closes it.
async fn refuse(tcp: TcpStream, why: Refusal) {
    let body = format!("{why}; retry later\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    answer_and_close(tcp, response).await;
}

/// Writes `response` and closes, reading what the client sent first so closing does not reset
/// the connection and lose the answer.
async fn answer_and_close(mut tcp: TcpStream, response: String) {
    let answer = async {
        // Read what the client sent first, so closing does not reset the connection and lose
        // the answer.
        let mut scratch = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut scratch)).await;
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut scratch)).await;
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Raises this process's open-file limit to its hard limit, and returns the connections that
/// fit under it with `reserve` descriptors kept for everything else (plugins, the data
/// directory, peer links).
pub fn connections_that_fit(wanted: usize, reserve: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
        && cur < max
    {
        limit.current = Some(max);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(cur);
        }
    }
    match limit.current {
        Some(cur) => {
            let fit = usize::try_from(cur)
                .unwrap_or(usize::MAX)
                .saturating_sub(reserve)
                .max(1);
            wanted.min(fit)
        }
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per: usize) -> Arc<Gate> {
        Gate::new(Limits {
            max_connections: total,
            max_per_address: per,
            header_timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn caps_count_per_address_and_in_total_and_tickets_give_back() {
        let g = gate(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let t1 = g.admit(a).expect("first");
        let _t2 = g.admit(a).expect("second");
        assert_eq!(g.admit(a).err(), Some(Refusal::AddressFull(2)));
        let _t3 = g.admit(b).expect("other address");
        assert_eq!(g.admit(b).err(), Some(Refusal::Full(3)));
        assert_eq!(g.refused.load(Ordering::Relaxed), 2);
        drop(t1);
        assert_eq!(g.open(), 2);
        let _t4 = g.admit(a).expect("a place came back");
    }

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits[..4], [5, 10, 20, 40]);
        assert_eq!(*waits.last().expect("last"), 1000);
    }

    #[test]
    fn the_fd_limit_bounds_the_connections() {
        assert!(connections_that_fit(usize::MAX, 256) < usize::MAX);
        assert_eq!(connections_that_fit(10, 256), 10);
    }
}
