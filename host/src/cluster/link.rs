//! Peer links: one persistent, multiplexed WebSocket per live peer, dialed by this node.
//!
//! One task owns each link's socket: it writes queued frames (batched, one flush per burst),
//! matches replies to waiters by id, and redials with backoff when the connection drops. A call
//! knows whether it ever left this node: [`LinkError::NotSent`] is safe to route elsewhere,
//! [`LinkError::Lost`] may have run and is reported, never retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::catalog::ClusterView;
use super::membership::OwnState;
use super::wire::{ForwardedCall, PEER_PATH, PeerFrame, RemoteFailure};
use crate::burst::write_burst;
use crate::shutdown::Tasks;

/// Why a call over a link did not return a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// The call never left this node (no link, link down): route it elsewhere.
    #[error("{0}")]
    NotSent(String),
    /// The link broke after the call was sent: it may or may not have run.
    #[error("{0}")]
    Lost(String),
    /// The peer ran it and it failed.
    #[error("{}", .0.cause)]
    Remote(RemoteFailure),
    /// The peer answered with something unexpected.
    #[error("peer protocol error: {0}")]
    Protocol(String),
}

/// Backoff between redials: doubles from the first value up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(25), Duration::from_secs(2));
/// How long a dial (TCP + WebSocket + hello) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames queued per link before callers wait.
const QUEUE: usize = 4096;

type Waiter = oneshot::Sender<Result<PeerFrame, LinkError>>;

struct Outgoing {
    id: u64,
    frame: bytes::Bytes,
    /// `None` for a one-way frame.
    waiter: Option<Waiter>,
}

/// A link's byte stream: TCP, or TLS over it (`tls.cluster_ca`).
trait LinkIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> LinkIo for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn LinkIo>>;
type Sink = futures_util::stream::SplitSink<Socket, Message>;

/// A link to one peer.
pub struct PeerLink {
    /// The peer's node id.
    pub node_id: String,
    /// The URL dialed.
    pub url: String,
    tx: mpsc::Sender<Outgoing>,
    /// The socket's write half while connected. A caller that finds it free writes its frame
    /// itself (no hand-off to the link task: the low-latency path); under contention frames go
    /// through `tx` and the link task writes them in batches.
    writer: tokio::sync::Mutex<Option<Sink>>,
    /// Calls written and not answered yet.
    waiting: Mutex<HashMap<u64, Waiter>>,
    connected: AtomicBool,
    /// Connections made so far.
    connects: AtomicU64,
    /// The highest state sequence the peer has acknowledged on the current connection.
    acked: watch::Sender<u64>,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    stop: CancellationToken,
    /// The links' task group (a backlogged `post` waits for room on one of its tasks).
    tasks: Tasks,
}

impl PeerLink {
    /// Whether the link is up now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the link has never been up yet (a peer just seen, being dialled).
    pub fn is_new(&self) -> bool {
        self.connects.load(Ordering::Relaxed) == 0
    }

    /// Waits until the peer has applied this node's state up to `seq` (true), or `until`
    /// passes (false). A link that is still being dialled is waited for: its first frame
    /// is this node's whole state.
    pub async fn wait_acked(&self, seq: u64, until: tokio::time::Instant) -> bool {
        let mut acked = self.acked.subscribe();
        tokio::time::timeout_at(until, acked.wait_for(|a| *a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Connections made so far (more than one: it reconnected).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Calls this node has running on the peer over this link.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    async fn request(&self, make: impl FnOnce(u64) -> PeerFrame) -> Result<PeerFrame, LinkError> {
        if !self.is_connected() {
            return Err(LinkError::NotSent(format!(
                "node {} is unreachable (link down)",
                self.node_id
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = make(id)
            .encode()
            .map_err(|e| LinkError::NotSent(e.to_string()))?;
        let (waiter, wait) = oneshot::channel();
        let _outstanding = crate::identity::Counted::enter(&self.in_flight);
        match self.writer.try_lock() {
            Ok(mut guard) => {
                let Some(sink) = guard.as_mut() else {
                    return Err(LinkError::NotSent(format!(
                        "node {} is unreachable (link down)",
                        self.node_id
                    )));
                };
                // Registered before writing: the reply may come back before `flush` returns.
                // If the link dies now, its task fails every registered waiter as lost.
                self.waiters().insert(id, waiter);
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    // The link task sees the broken socket too and fails the waiter.
                    tracing::debug!(peer = %self.node_id, "write on peer link failed");
                }
            }
            Err(_) => self
                .tx
                .send(Outgoing {
                    id,
                    frame: frame.into(),
                    waiter: Some(waiter),
                })
                .await
                .map_err(|_| LinkError::NotSent(format!("link to {} is closed", self.node_id)))?,
        }
        match wait.await {
            Ok(r) => r,
            // The link task dropped the waiter without an answer: it stopped.
            Err(_) => Err(LinkError::Lost(format!(
                "link to node {} closed while the call was running",
                self.node_id
            ))),
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        // Single inserts and removes: a panic elsewhere cannot leave the map half-changed.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a one-way frame (already encoded). Frames posted on one link arrive in the order
    /// posted. Dropped, with a log line, when the link is down: what is posted is best effort.
    pub fn post(&self, frame: bytes::Bytes) {
        if !self.is_connected() {
            tracing::debug!(peer = %self.node_id, "link down; one-way frame dropped");
            return;
        }
        let out = Outgoing {
            id: 0,
            frame,
            waiter: None,
        };
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(out)) => {
                // A backlogged link: wait for room off this task.
                let tx = self.tx.clone();
                // Ends when there is room or the link task is gone (the link stopped).
                self.tasks.spawn(async move {
                    let _ = tx.send(out).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Runs a call on the peer; returns the result as JSON text.
    pub async fn call(&self, call: ForwardedCall) -> Result<String, LinkError> {
        match self.request(|id| PeerFrame::Call { id, call }).await? {
            PeerFrame::Reply { result, .. } => result.map_err(LinkError::Remote),
            other => Err(LinkError::Protocol(format!(
                "expected a reply, got {other:?}"
            ))),
        }
    }

    /// The peer's retained messages matching `patterns` from the last `within_ms`, oldest
    /// first, as `(age ms, message id, message JSON)`.
    pub async fn backlog(
        &self,
        patterns: Vec<(String, bool)>,
        within_ms: u64,
    ) -> Result<Vec<(u64, String, String)>, LinkError> {
        match self
            .request(|id| PeerFrame::Backlog {
                id,
                patterns,
                within_ms,
            })
            .await?
        {
            PeerFrame::Retained { messages, .. } => Ok(messages),
            _ => Err(LinkError::Protocol("expected retained messages".into())),
        }
    }

    /// Fetches a component by sha256 (`None`: the peer does not have it).
    pub async fn fetch(&self, sha256: &str) -> Result<Option<Vec<u8>>, LinkError> {
        let sha256 = sha256.to_owned();
        match self.request(|id| PeerFrame::Fetch { id, sha256 }).await? {
            PeerFrame::Blob { bytes, .. } => Ok(bytes),
            _ => Err(LinkError::Protocol("expected a blob".into())),
        }
    }
}

/// Who this node is, for the hello frame.
#[derive(Debug, Clone)]
pub struct LinkIdentity {
    /// Our node id.
    pub node_id: String,
    /// Our cluster id.
    pub cluster_id: String,
    /// Largest frame accepted (a component being fetched).
    pub max_frame_bytes: usize,
    /// TLS of the links (`tls.cluster_ca`): the CA peers' certificates must chain to and this
    /// node's certificate; `None`: plain WebSocket.
    pub tls: Option<crate::tls::ClientTls>,
    /// This node's pushed state: sent first on every connection.
    pub own: Arc<OwnState>,
}

/// How this node's links are made.
pub struct LinkSettings {
    /// Largest frame accepted (a component being fetched).
    pub max_frame_bytes: usize,
    /// TLS of the links (`tls.cluster_ca`); `None`: plain WebSocket.
    pub tls: Option<crate::tls::ClientTls>,
}

/// Every peer link of this node, kept in step with the live nodes.
pub struct PeerLinks {
    me: LinkIdentity,
    links: Mutex<HashMap<String, Arc<PeerLink>>>,
    tasks: Tasks,
}

impl PeerLinks {
    /// No links yet; their tasks run in `tasks` and stop with it.
    pub fn new(me: LinkIdentity, tasks: Tasks) -> Self {
        PeerLinks {
            me,
            links: Mutex::default(),
            tasks,
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PeerLink>>> {
        // Inserts and removes only: a panic elsewhere cannot leave the map half-changed.
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link to `node_id`, if that node is live.
    pub fn get(&self, node_id: &str) -> Option<Arc<PeerLink>> {
        self.links().get(node_id).cloned()
    }

    /// Dials every live node not linked yet and closes links to nodes that left.
    pub fn sync(&self, view: &ClusterView) {
        let mut links = self.links();
        links.retain(|id, link| {
            let keep = view
                .node(id)
                .is_some_and(|n| format!("{}{PEER_PATH}", n.url()) == link.url);
            if !keep {
                link.stop.cancel();
            }
            keep
        });
        for node in &view.nodes {
            if links.contains_key(&node.node_id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let link = Arc::new(PeerLink {
                node_id: node.node_id.clone(),
                url: format!("{}{PEER_PATH}", node.url()),
                tx,
                writer: tokio::sync::Mutex::new(None),
                waiting: Mutex::default(),
                connected: AtomicBool::new(false),
                connects: AtomicU64::new(0),
                acked: watch::Sender::new(0),
                in_flight: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                stop: self.tasks.stopping().child_token(),
                tasks: self.tasks.clone(),
            });
            self.tasks
                .spawn(maintain(link.clone(), rx, self.me.clone()));
            links.insert(node.node_id.clone(), link);
        }
    }

    /// Waits until the link to `node_id` is up (or `timeout` passes).
    pub async fn wait_connected(&self, node_id: &str, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if self.get(node_id).is_some_and(|l| l.is_connected()) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Dials, serves, redials with backoff until the link is stopped.
async fn maintain(link: Arc<PeerLink>, mut rx: mpsc::Receiver<Outgoing>, me: LinkIdentity) {
    let mut backoff = BACKOFF.0;
    loop {
        let dialed = tokio::select! {
            _ = link.stop.cancelled() => break,
            d = tokio::time::timeout(DIAL_TIMEOUT, dial(&link.url, &me)) => d,
        };
        match dialed {
            Ok(Ok(ws)) => {
                backoff = BACKOFF.0;
                // Set before `serve` reads this node's state to send it: a change made while the
                // link was down (its batch dropped) is then in that snapshot.
                link.acked.send_replace(0);
                link.connected.store(true, Ordering::Relaxed);
                link.connects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %link.node_id, "peer link up");
                let why = serve(ws, &link, &mut rx, &me.own).await;
                link.connected.store(false, Ordering::Relaxed);
                if link.stop.is_cancelled() {
                    break;
                }
                tracing::info!(peer = %link.node_id, reason = %why, "peer link down; redialing");
            }
            Ok(Err(e)) => tracing::debug!(peer = %link.node_id, error = %e, "peer dial failed"),
            Err(_) => tracing::debug!(peer = %link.node_id, "peer dial timed out"),
        }
        // While down, nothing waits on this link: whatever is queued fails as not sent.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = link.stop.cancelled() => return drain(&mut rx, &link),
                _ = &mut pause => break,
                Some(out) = rx.recv() => {
                    if let Some(w) = out.waiter {
                        let _ = w.send(Err(LinkError::NotSent(format!(
                            "node {} is unreachable (link down)", link.node_id))));
                    }
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
    drain(&mut rx, &link);
}

fn drain(rx: &mut mpsc::Receiver<Outgoing>, link: &PeerLink) {
    rx.close();
    while let Ok(out) = rx.try_recv() {
        if let Some(w) = out.waiter {
            let _ = w.send(Err(LinkError::NotSent(format!(
                "link to {} stopped",
                link.node_id
            ))));
        }
    }
}

async fn dial(url: &str, me: &LinkIdentity) -> Result<Socket, String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(me.max_frame_bytes))
        .max_frame_size(Some(me.max_frame_bytes));
    let io = connect(url, me).await?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    let hello = PeerFrame::Hello {
        node_id: me.node_id.clone(),
        cluster_id: me.cluster_id.clone(),
    };
    let bytes = hello.encode().map_err(|e| e.to_string())?;
    ws.send(Message::Binary(bytes.into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                return match PeerFrame::decode(&b).map_err(|e| e.to_string())? {
                    PeerFrame::Welcome { refused: None, .. } => Ok(ws),
                    PeerFrame::Welcome {
                        refused: Some(why), ..
                    } => Err(format!("refused: {why}")),
                    other => Err(format!("expected welcome, got {other:?}")),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("unexpected {other:?}")),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed during hello".into()),
        }
    }
}

/// The byte stream to the peer at `url`: TCP, and TLS with this node's certificate when the
/// cluster has a CA (the files are read at each dial, so a renewed certificate is used).
async fn connect(url: &str, me: &LinkIdentity) -> Result<Box<dyn LinkIo>, String> {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("peer URL {url} is not ws:// or wss://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    // A TLS port without a cluster CA: its certificate is checked against the web PKI.
    let config = match (&me.tls, url.starts_with("wss://")) {
        (Some(tls), _) => tls.config(),
        (None, true) => crate::tls::ClientTls::default().config(),
        (None, false) => return Ok(Box::new(tcp)),
    }
    .map_err(|e| e.to_string())?;
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {authority}: {e}"))?;
    Ok(Box::new(stream))
}

/// Runs one connection until it breaks or the link stops; then fails every call written on it.
async fn serve(
    ws: Socket,
    link: &PeerLink,
    rx: &mut mpsc::Receiver<Outgoing>,
    own: &OwnState,
) -> String {
    let (mut sink, mut stream) = ws.split();
    // First this node's whole state: the peer starts from it, then follows the batches.
    let hello = own.snapshot().encode().map_err(|e| e.to_string());
    if let Err(e) = match hello {
        Ok(bytes) => sink
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    } {
        return e;
    }
    *link.writer.lock().await = Some(sink);
    let why = loop {
        tokio::select! {
            _ = link.stop.cancelled() => break "stopped".to_owned(),
            Some(first) = rx.recv() => {
                // Take the whole burst, then flush once.
                let mut guard = link.writer.lock().await;
                let Some(sink) = guard.as_mut() else { break "writer gone".to_owned() };
                let frame = |o: Outgoing| {
                    if let Some(w) = o.waiter {
                        link.waiters().insert(o.id, w);
                    }
                    Message::Binary(o.frame)
                };
                if let Err(e) = write_burst(sink, first, rx, frame).await {
                    break e.to_string();
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => match PeerFrame::decode(&b) {
                    Ok(f @ (PeerFrame::Reply { id, .. } | PeerFrame::Blob { id, .. } | PeerFrame::Retained { id, .. })) => {
                        if let Some(w) = link.waiters().remove(&id) {
                            let _ = w.send(Ok(f));
                        }
                    }
                    Ok(PeerFrame::StateAck { seq }) => {
                        link.acked.send_if_modified(|a| {
                            let newer = seq > *a;
                            if newer {
                                *a = seq;
                            }
                            newer
                        });
                    }
                    Ok(other) => tracing::warn!(peer = %link.node_id, ?other, "unexpected frame"),
                    Err(e) => break e.to_string(),
                },
                Some(Ok(Message::Close(_))) | None => break "closed by the peer".to_owned(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
            },
        }
    };
    // No caller can write once the writer is gone; then everything written is failed.
    if let Some(mut sink) = link.writer.lock().await.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    let lost: Vec<Waiter> = link.waiters().drain().map(|(_, w)| w).collect();
    for w in lost {
        let _ = w.send(Err(LinkError::Lost(format!(
            "node {} was lost while running the call ({why})",
            link.node_id
        ))));
    }
    why
}
