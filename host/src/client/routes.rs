//! The connection reader's table of everything that is not an RPC reply: pub/sub acks waiting
//! for their operation and subscriptions waiting for notifications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::protocol::pubsub::{PubsubAck, PubsubNotification};

/// What the connection's reader routes besides RPC replies.
#[derive(Default)]
pub(super) struct Routes {
    pub(super) acks: HashMap<String, oneshot::Sender<PubsubAck>>,
    pub(super) subs: HashMap<String, mpsc::Sender<PubsubNotification>>,
    /// Envelope requests (`cache-request`) waiting for their reply, by `u`.
    pub(super) envelopes: HashMap<String, oneshot::Sender<serde_json::Value>>,
}

pub(super) type Shared = Arc<Mutex<Routes>>;

pub(super) fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Routes> {
    // Single inserts and removes: a panic elsewhere cannot leave the maps half-changed.
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes a frame that is not an RPC reply; called by the reader task.
pub(super) async fn route(routes: &Shared, role: &str, bytes: &[u8]) {
    match role {
        "pubsub-ack" => {
            if let Ok(ack) = serde_json::from_slice::<PubsubAck>(bytes)
                && let Some(w) = lock(routes).acks.remove(&ack.operation_id)
            {
                let _ = w.send(ack);
            }
        }
        "pubsub-notification" => {
            let Ok(n) = serde_json::from_slice::<PubsubNotification>(bytes) else {
                return;
            };
            let to = lock(routes).subs.get(&n.subscription_id).cloned();
            if let Some(to) = to {
                // Waits while the program is behind: backpressure, nothing dropped here.
                let _ = to.send(n).await;
            }
        }
        "cache-response" => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                return;
            };
            let waiter = v["u"]
                .as_str()
                .and_then(|u| lock(routes).envelopes.remove(u));
            if let Some(w) = waiter {
                let _ = w.send(v);
            }
        }
        _ => {}
    }
}

/// Drops every waiter when the connection is gone.
pub(super) fn close(routes: &Shared) {
    let mut r = lock(routes);
    r.acks.clear();
    r.subs.clear();
    r.envelopes.clear();
}
