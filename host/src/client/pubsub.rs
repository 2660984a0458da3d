//! Pub/sub for the Rust client (protocol.md §3): publish, and subscriptions that yield
//! notifications (backlog first when asked for). Also how a Rust program consumes a queue by
//! push: subscribe to `mpreg.queue.<name>` and ack each message with `queue.ack`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::client::ClientError> {
//! use mpreg::client::Client;
//! use serde_json::json;
//!
//! let client = Client::connect("ws://127.0.0.1:6666").await?;
//! let mut sub = client.subscribe("sensors", &["sensors.#"], None).await?;
//! client.publish("sensors.kitchen.temp", json!(21.5)).await?;
//! while let Some(n) = sub.next().await {
//!     println!("{} {}", n.message["topic"], n.message["payload"]);
//! #   break;
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::routes::lock;
use super::{Client, ClientError};
use crate::protocol::pubsub::{PubsubMessage, PubsubNotification};

/// Notifications buffered per subscription before the connection's reader waits for the
/// program to take them (and the node, past its slow-subscriber limit, disconnects it).
const BUFFER: usize = 4096;

/// A subscription: notifications in the order the node sent them.
pub struct Subscription {
    /// The subscription id (for a queue topic, the consumer name).
    pub id: String,
    rx: mpsc::Receiver<PubsubNotification>,
    client: Client,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// The next notification; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<PubsubNotification> {
        self.rx.recv().await
    }

    /// Ends the subscription on the node.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let u = self.client.next_id();
        let frame = json!({"role": "pubsub-unsubscribe", "u": u, "subscription_id": self.id});
        let out = self.client.pubsub_request(&u, frame).await;
        lock(&self.client.routes).subs.remove(&self.id);
        out
    }
}

impl Client {
    async fn pubsub_request(&self, u: &str, frame: Value) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        {
            let mut routes = lock(&self.routes);
            if self.is_closed() {
                return Err(ClientError::Closed);
            }
            routes.acks.insert(u.to_owned(), done);
        }
        if self
            .tx
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            lock(&self.routes).acks.remove(u);
            return Err(ClientError::Closed);
        }
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(ack)) if ack.success => Ok(()),
            Ok(Ok(ack)) => Err(ClientError::Refused(
                ack.error.unwrap_or_else(|| "refused".into()),
            )),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.routes).acks.remove(u);
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }

    /// Publishes `payload` on `topic`; returns the message id once the node acknowledged it
    /// (its local subscribers have it by then).
    pub async fn publish(&self, topic: &str, payload: Value) -> Result<String, ClientError> {
        let u = self.next_id();
        let message = PubsubMessage {
            topic: topic.to_owned(),
            payload,
            timestamp: crate::clock::unix_now(),
            message_id: u.clone(),
            publisher: format!("rust-client-{}", self.prefix),
            headers: Default::default(),
            routing_path: None,
            current_hop: None,
        };
        let frame = json!({"role": "pubsub-publish", "u": u, "message": message});
        self.pubsub_request(&u, frame).await?;
        Ok(u)
    }

    /// Subscribes to `patterns` (`*` one segment, `#` any number) under id `id`. With
    /// `backlog`, retained messages from that far back come first.
    pub async fn subscribe(
        &self,
        id: &str,
        patterns: &[&str],
        backlog: Option<Duration>,
    ) -> Result<Subscription, ClientError> {
        let (to, rx) = mpsc::channel(BUFFER);
        // Registered first: the backlog arrives before the ack.
        lock(&self.routes).subs.insert(id.to_owned(), to);
        let u = self.next_id();
        let patterns: Vec<Value> = patterns
            .iter()
            .map(|p| json!({"pattern": p, "exact_match": false}))
            .collect();
        let frame = json!({"role": "pubsub-subscribe", "u": u, "subscription": {
            "subscription_id": id, "patterns": patterns, "subscriber": self.prefix.to_string(),
            "created_at": 0.0, "get_backlog": backlog.is_some(),
            "backlog_seconds": backlog.map_or(0.0, |d| d.as_secs_f64())}});
        if let Err(e) = self.pubsub_request(&u, frame).await {
            lock(&self.routes).subs.remove(id);
            return Err(e);
        }
        Ok(Subscription {
            id: id.to_owned(),
            rx,
            client: self.clone(),
        })
    }
}
