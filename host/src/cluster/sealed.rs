//! Gossip over UDP sealed with the cluster keyring ([`super::keyring`]): a chitchat transport
//! that encrypts and authenticates every datagram, and drops (and counts) every datagram that
//! does not open, so a process without a key can neither read the cluster's state nor join it
//! or inject catalog entries.
//!
//! The keyring file is re-read when it changes (read once a second), so a key is
//! rotated on a running cluster by editing the files (docs/security.md). A file that stops
//! reading keeps the keys in force and is counted.
//!
//! chitchat 0.13 keeps its wire codec to itself (`ChitchatEnvelope::serialize` is
//! crate-private), so this transport uses chitchat's own UDP socket as the codec: the socket is
//! bound to a loopback port of this node and talks only to a relay socket beside it. Sending,
//! chitchat's socket encodes the envelope to the relay, which hands the bytes to be sealed;
//! receiving, an opened datagram goes from the relay to chitchat's socket, which decodes it. The
//! sender of each datagram handed over is queued, so chitchat sees the real peer address. The
//! gossip port itself only ever carries sealed datagrams.
//!
//! chitchat fills datagrams up to the largest UDP payload; sealing adds [`OVERHEAD`] bytes, so
//! a datagram that no longer fits is sent in two fragments and put together on arrival before
//! it is opened (at most [`PENDING`] partial datagrams are held, for [`FRAGMENT_TTL`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};

use super::keyring::{Keyring, KeyringError};

/// Largest UDP payload (IPv4).
const MAX_DATAGRAM: usize = 65_507;
/// A whole sealed datagram follows.
const WHOLE: u8 = 0;
/// A fragment follows: `[id u32][index u8][count u8][bytes]`.
const FRAGMENT: u8 = 1;
const FRAGMENT_HEADER: usize = 1 + 4 + 1 + 1;
/// Partial datagrams held at once.
pub const PENDING: usize = 32;
/// How long a partial datagram waits for its other fragments.
pub const FRAGMENT_TTL: Duration = Duration::from_secs(2);
/// How often the keyring file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A keyring file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringFileError {
    /// Reading it failed.
    #[error("gossip keyring {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its contents are not a keyring.
    #[error("gossip keyring {path}: {source}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyringError,
    },
}

/// The keyring as a file: read at start, re-read when it changes.
pub struct KeyringFile {
    path: PathBuf,
    ring: ArcSwap<Keyring>,
    /// When the file was last read, and its text then.
    checked: Mutex<(Instant, String)>,
    /// Datagrams dropped because they did not open (no key of the ring, forged, malformed).
    pub rejected: AtomicU64,
    /// Re-reads of the file that failed (the previous keys stay in force).
    pub reload_errors: AtomicU64,
}

fn read(path: &Path) -> Result<String, KeyringFileError> {
    std::fs::read_to_string(path).map_err(|source| KeyringFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse(path: &Path, text: &str) -> Result<Keyring, KeyringFileError> {
    Keyring::parse(text).map_err(|source| KeyringFileError::Bad {
        path: path.to_owned(),
        source,
    })
}

impl KeyringFile {
    /// Reads `path`; a node with a keyring it cannot read does not start.
    pub fn open(path: &Path) -> Result<Arc<KeyringFile>, KeyringFileError> {
        let text = read(path)?;
        let ring = parse(path, &text)?;
        Ok(Arc::new(KeyringFile {
            path: path.to_owned(),
            ring: ArcSwap::from_pointee(ring),
            checked: Mutex::new((Instant::now(), text)),
            rejected: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        }))
    }

    /// The keys in force, re-read first if the file changed since it was last checked.
    fn current(&self) -> Arc<Keyring> {
        self.refresh();
        self.ring.load_full()
    }

    fn refresh(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < RELOAD_EVERY {
            return;
        }
        checked.0 = Instant::now();
        // The file is small: read it whole, so an edit that keeps its size and time is seen.
        let text = read(&self.path);
        if text.as_ref().is_ok_and(|t| *t == checked.1) {
            return;
        }
        // A text that failed is not tried again until it changes (one warning per edit).
        let outcome = text.and_then(|t| {
            let ring = parse(&self.path, &t);
            checked.1 = t;
            ring
        });
        match outcome {
            Ok(ring) => {
                tracing::info!(keys = ring.len(), path = %self.path.display(), "gossip keyring reloaded");
                self.ring.store(Arc::new(ring));
            }
            Err(e) => {
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "gossip keyring not reloaded; the previous keys stay in force");
            }
        }
    }
}

/// Gossip over UDP, sealed with a keyring.
pub struct SealedUdp {
    keys: Arc<KeyringFile>,
}

impl SealedUdp {
    /// A transport sealing with `keys`.
    pub fn new(keys: Arc<KeyringFile>) -> SealedUdp {
        SealedUdp { keys }
    }
}

/// How long chitchat's socket may take to decode a datagram handed to it; past it, the
/// datagram is taken to have been unreadable (chitchat drops those silently).
const DECODE_WAIT: Duration = Duration::from_secs(1);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, bind: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("failed to bind to {bind}/UDP for gossip: {e}"))?;
        let codec = UdpSocket::open(loopback()).await?;
        let codec_addr = codec.local_addr()?;
        let relay = tokio::net::UdpSocket::bind(loopback()).await?;
        let relay_addr = relay.local_addr()?;
        Ok(Box::new(SealedSocket {
            public,
            codec,
            codec_addr,
            relay,
            relay_addr,
            keys: self.keys.clone(),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            partial: Reassembly::default(),
            handed: VecDeque::new(),
            next_id: 0,
        }))
    }
}

struct SealedSocket {
    /// The gossip port: sealed datagrams only.
    public: tokio::net::UdpSocket,
    /// chitchat's own socket on loopback, used as the codec.
    codec: UdpSocket,
    codec_addr: SocketAddr,
    /// Its only correspondent.
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    keys: Arc<KeyringFile>,
    buf: Box<[u8]>,
    partial: Reassembly,
    /// Senders of the datagrams handed to the codec and not yet decoded, oldest first (a
    /// receive cancelled while it waits leaves its datagram here, and the next one returns
    /// it).
    handed: VecDeque<SocketAddr>,
    next_id: u32,
}

impl SealedSocket {
    /// `envelope` as chitchat encodes it.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        // Bytes left by a send that was cancelled half-way are not this envelope's.
        while self.relay.try_recv_from(&mut self.buf).is_ok() {}
        self.codec.send(self.relay_addr, envelope).await?;
        loop {
            let (n, from) = tokio::time::timeout(DECODE_WAIT, self.relay.recv_from(&mut self.buf))
                .await
                .map_err(|_| anyhow::anyhow!("gossip codec did not answer"))??;
            if from == self.codec_addr {
                return Ok(self.buf[..n].to_vec());
            }
        }
    }
}
/// The datagrams to send for `sealed`: one whole, or fragments that each fit.
pub fn frames(sealed: &[u8], id: u32) -> Vec<Vec<u8>> {
    if sealed.len() < MAX_DATAGRAM {
        let mut one = Vec::with_capacity(sealed.len() + 1);
        one.push(WHOLE);
        one.extend_from_slice(sealed);
        return vec![one];
    }
    let chunk = MAX_DATAGRAM - FRAGMENT_HEADER;
    let count = sealed.len().div_ceil(chunk);
    sealed
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut f = Vec::with_capacity(FRAGMENT_HEADER + part.len());
            f.push(FRAGMENT);
            f.extend_from_slice(&id.to_be_bytes());
            f.push(i as u8);
            f.push(count as u8);
            f.extend_from_slice(part);
            f
        })
        .collect()
}

/// The fragments of one datagram received so far, and when the first came.
type Partial = (Instant, Vec<Option<Vec<u8>>>);

/// Partial datagrams by sender and id.
#[derive(Default)]
pub struct Reassembly {
    pending: HashMap<(SocketAddr, u32), Partial>,
}

impl Reassembly {
    /// The sealed datagram `frame` (from `from`) completes, if it does.
    pub fn add(&mut self, from: SocketAddr, frame: &[u8], now: Instant) -> Option<Vec<u8>> {
        match frame.split_first()? {
            (&WHOLE, rest) => Some(rest.to_vec()),
            (&FRAGMENT, rest) if rest.len() > FRAGMENT_HEADER - 1 => {
                let id = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let (index, count) = (rest[4] as usize, rest[5] as usize);
                if !(2..=4).contains(&count) || index >= count {
                    return None;
                }
                self.pending
                    .retain(|_, (at, _)| now.saturating_duration_since(*at) < FRAGMENT_TTL);
                if self.pending.len() >= PENDING && !self.pending.contains_key(&(from, id)) {
                    let oldest = self.pending.iter().min_by_key(|(_, (at, _))| *at);
                    if let Some(key) = oldest.map(|(k, _)| *k) {
                        self.pending.remove(&key);
                    }
                }
                let entry = self
                    .pending
                    .entry((from, id))
                    .or_insert_with(|| (now, vec![None; count]));
                if entry.1.len() != count {
                    return None;
                }
                entry.1[index] = Some(rest[6..].to_vec());
                if entry.1.iter().all(Option::is_some) {
                    let (_, parts) = self.pending.remove(&(from, id))?;
                    Some(parts.into_iter().flatten().flatten().collect())
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.public.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let plain = self.encode(envelope).await?;
        let sealed = match self.keys.current().seal(&plain) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "gossip datagram not sealed; not sent");
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        self.next_id = self.next_id.wrapping_add(1);
        let mut sent = 0;
        for frame in frames(&sealed, self.next_id) {
            match self.public.send_to(&frame, to).await {
                Ok(n) => sent += n,
                // A peer gone or a full buffer loses this datagram; gossip sends again.
                Err(e) => {
                    tracing::debug!(error = %e, %to, "gossip datagram not sent");
                    break;
                }
            }
        }
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(&from) = self.handed.front() {
                match tokio::time::timeout(DECODE_WAIT, self.codec.recv()).await {
                    Ok(out) => {
                        let mut out = out?;
                        self.handed.pop_front();
                        out.from_addr = from;
                        return Ok(out);
                    }
                    // chitchat dropped what it could not read: nothing is waiting.
                    Err(_) => {
                        self.keys
                            .rejected
                            .fetch_add(self.handed.len() as u64, Ordering::Relaxed);
                        self.handed.clear();
                        continue;
                    }
                }
            }
            let (n, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::OutOfMemory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("fatal UDP recv error: {e}")),
            };
            let Some(sealed) = self.partial.add(from, &self.buf[..n], Instant::now()) else {
                continue;
            };
            let plain = match self.keys.current().open(&sealed) {
                Ok(p) => p,
                Err(e) => {
                    self.keys.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = REJECTED.admit() {
                        tracing::warn!(%from, why = %e, suppressed, "gossip datagram rejected");
                    }
                    continue;
                }
            };
            self.relay.send_to(&plain, self.codec_addr).await?;
            self.handed.push_back(from);
        }
    }
}

/// Rejected datagrams logged at most once a second (a stranger's gossip is hostile input).
static REJECTED: crate::throttle::Throttle = crate::throttle::Throttle::new(Duration::from_secs(1));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keyring::OVERHEAD;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn small_datagrams_go_whole_and_large_ones_in_fragments_put_back_together() {
        let mut r = Reassembly::default();
        let now = Instant::now();
        let small = vec![7u8; 100];
        let f = frames(&small, 1);
        assert_eq!(f.len(), 1);
        assert_eq!(r.add(addr(), &f[0], now), Some(small));
        let large: Vec<u8> = (0..MAX_DATAGRAM + OVERHEAD).map(|i| i as u8).collect();
        let f = frames(&large, 2);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|d| d.len() <= MAX_DATAGRAM));
        assert_eq!(r.add(addr(), &f[1], now), None, "out of order");
        assert_eq!(r.add(addr(), &f[0], now), Some(large));
    }

    #[test]
    fn partial_datagrams_are_bounded_and_expire() {
        let mut r = Reassembly::default();
        let now = Instant::now();
        let large = vec![1u8; MAX_DATAGRAM + 10];
        for id in 0..(PENDING as u32 * 3) {
            let f = frames(&large, id);
            assert_eq!(r.add(addr(), &f[0], now), None);
        }
        assert!(r.pending.len() <= PENDING);
        let f = frames(&large, 9_999);
        r.add(addr(), &f[0], now);
        let later = now + FRAGMENT_TTL + Duration::from_millis(1);
        assert_eq!(r.add(addr(), &f[1], later), None, "its first half expired");
        assert_eq!(r.add(addr(), &[FRAGMENT, 0, 0], now), None, "too short");
        assert_eq!(r.add(addr(), &[9, 1, 2], now), None, "unknown kind");
    }
}
