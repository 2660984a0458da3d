//! The open client connections, for `GET /monitor/connz` (docs/observability.md): who is
//! connected, since when, and what each connection has done. A session adds itself when it
//! starts and is removed when the [`Listed`] guard it holds drops, however it ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One open connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Its id (the exchange's connection id: subscriptions name it).
    pub id: u64,
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// When it connected (Unix seconds).
    pub connected_at: f64,
    /// Frames read.
    pub frames: AtomicU64,
    /// Bytes read.
    pub bytes_in: AtomicU64,
    /// Size of the frame read last (the request being handled, for the access log).
    pub last_frame: AtomicU64,
}

impl ConnInfo {
    /// Counts a frame of `len` bytes read.
    pub fn read(&self, len: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        self.last_frame.store(len as u64, Ordering::Relaxed);
    }
}

/// Every open client connection of the node.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
}

/// A connection's place in [`Connections`]; removed on drop.
pub struct Listed {
    all: Arc<Connections>,
    /// What the session counts into.
    pub info: Arc<ConnInfo>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.all.lock().remove(&self.info.id);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnInfo>>> {
        // Inserts and removes only: a panic elsewhere cannot leave the map half-changed.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists connection `id` from `remote` until the guard drops.
    pub fn add(self: &Arc<Self>, id: u64, remote: Option<SocketAddr>) -> Listed {
        let info = Arc::new(ConnInfo {
            id,
            remote,
            connected_at: crate::clock::unix_now(),
            frames: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
        });
        self.lock().insert(id, info.clone());
        Listed {
            all: self.clone(),
            info,
        }
    }

    /// Open connections, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnInfo>> {
        self.lock().values().cloned().collect()
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_while_its_guard_lives() {
        let all = Arc::new(Connections::default());
        let a = all.add(3, None);
        let b = all.add(1, "127.0.0.1:9".parse().ok());
        b.info.read(10);
        let listed = all.list();
        assert_eq!(listed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(listed[0].bytes_in.load(Ordering::Relaxed), 10);
        drop(a);
        assert_eq!(all.len(), 1);
        drop(b);
        assert!(all.is_empty());
    }
}
