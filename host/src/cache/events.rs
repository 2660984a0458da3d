//! The cache on pub/sub (docs/cache.md, "Events"), the two uses MPREG's client guide makes:
//!
//! - **Events out.** Each change (put, delete, invalidate, atomic, structure, clear) is
//!   published once, by the node that made it, on `cache.events.<namespace>.<op>` with the
//!   original's `CacheEvent` fields. Built only while someone in the cluster subscribes to a
//!   pattern the topic matches, so an unwatched cache pays one trie lookup per change.
//! - **Invalidations in.** Every node subscribes to `cache.invalidation.#`: a message on
//!   `cache.invalidation.pattern.<anything>` with payload `{"pattern": "ml.*"}` drops the keys
//!   whose `namespace.identifier` matches the glob (what depends on them too), and one on
//!   `cache.invalidation.key.<namespace>` with `{"cache_key": {…}}` drops that key. Publishing
//!   reaches every node with the subscription, and each drops what it holds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Message;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::key::CacheKey;
use super::store::Cache;
use crate::protocol::pubsub::{PatternSpec, PubsubMessage, Subscription};
use crate::pubsub::exchange::Exchange;

/// Topics events are published under.
pub const EVENTS_PREFIX: &str = "cache.events.";
/// Topics whose messages invalidate.
pub const INVALIDATION_PREFIX: &str = "cache.invalidation.";
/// What every node's cache subscribes to.
pub const INVALIDATION_PATTERN: &str = "cache.invalidation.#";
/// Notifications the listener may have waiting.
const LISTEN_QUEUE: usize = 256;

/// Publishes the cache's events on this node's exchange.
pub struct Events {
    exchange: Arc<Exchange>,
    publisher: String,
    node_id: String,
    on: bool,
    /// Numbers this node's events.
    next: std::sync::atomic::AtomicU64,
}

/// One change to report.
pub struct Event<'a> {
    /// `put`, `delete`, `invalidate`, `atomic`, `structure`, `clear`.
    pub op: &'a str,
    /// The namespace changed.
    pub namespace: &'a str,
    /// The key, for a keyed change.
    pub key: Option<&'a Value>,
    /// Where it was made (`L1`, `L2`), when known.
    pub cache_level: Option<&'a str>,
    /// The operation's result (counts, the new value of an atomic operation).
    pub result: Option<&'a Value>,
    /// What the request said beyond the key (tag, pattern, operation name).
    pub metadata: Value,
}

impl Events {
    /// Events of `node_id`'s cache on `exchange`; `on` false publishes none.
    pub fn new(exchange: Arc<Exchange>, node_id: &str, on: bool) -> Self {
        // A pattern in an invalidation topic is text, as the original's client publishes it.
        exchange.allow_wildcards_under(INVALIDATION_PREFIX);
        Events {
            exchange,
            publisher: format!("cache-system-{node_id}"),
            node_id: node_id.to_owned(),
            on,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The original's event type for an operation.
    fn event_type(op: &str) -> &'static str {
        match op {
            "put" => "cache_put",
            "delete" => "cache_delete",
            "invalidate" => "cache_invalidate",
            "atomic" => "atomic_operation",
            "structure" => "data_structure_operation",
            _ => "namespace_operation",
        }
    }

    /// The topic of `op` in `namespace`, when events are on and anyone subscribes to it:
    /// asked before an event is built.
    pub fn watched(&self, namespace: &str, op: &str) -> Option<String> {
        if !self.on {
            return None;
        }
        let topic = format!("{EVENTS_PREFIX}{namespace}.{op}");
        self.exchange.wanted(&topic).then_some(topic)
    }

    /// Publishes `event` on `topic` (from [`Events::watched`]).
    pub fn emit(&self, topic: String, event: Event<'_>) {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(
            "cache-event-{}-{:x}-{n}",
            self.node_id,
            crate::clock::unix_nanos() as u64
        );
        let now = crate::clock::unix_now();
        let mut payload = json!({
            "event_type": Self::event_type(event.op),
            "operation": event.op,
            "namespace": event.namespace,
            "cache_key": event.key,
            "cache_level": event.cache_level,
            "result": event.result,
            "operation_metadata": event.metadata,
            "timestamp": now,
            "event_id": id,
            "cluster_id": self.node_id,
        });
        if event.key.is_none()
            && let Some(m) = payload.as_object_mut()
        {
            m.remove("cache_key");
        }
        let message = PubsubMessage {
            topic: topic.clone(),
            payload,
            timestamp: now,
            message_id: id,
            publisher: self.publisher.clone(),
            headers: [("event_type".to_owned(), json!(Self::event_type(event.op)))]
                .into_iter()
                .collect(),
            routing_path: None,
            current_hop: None,
        };
        let raw = match serde_json::to_string(&message) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cache event not encoded");
                return;
            }
        };
        if let Err(e) = self.exchange.publish_detached(&raw, &message.message_id) {
            tracing::debug!(%topic, error = %e, "cache event not published");
        }
    }

    /// Applies the invalidations published to `cache.invalidation.…` to `cache` until `stop`.
    pub async fn listen(exchange: Arc<Exchange>, cache: Arc<Cache>, stop: CancellationToken) {
        let (tx, mut rx) = mpsc::channel(LISTEN_QUEUE);
        let conn = exchange.connect_service(tx);
        let sub = Subscription {
            subscription_id: "cache-invalidation".into(),
            patterns: vec![PatternSpec {
                pattern: INVALIDATION_PATTERN.into(),
                exact_match: false,
            }],
            subscriber: Some("cache".into()),
            created_at: None,
            get_backlog: false,
            backlog_seconds: None,
        };
        if let Err(e) = exchange.subscribe(&conn, &sub, Instant::now()) {
            tracing::error!(error = %e, "cache invalidation subscription refused; published invalidations will not apply");
            return;
        }
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                _ = conn.kicked().cancelled() => {
                    tracing::error!("cache invalidation listener cut off; published invalidations no longer apply");
                    return;
                }
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let Message::Text(text) = msg else { continue };
            conn.mailbox().written(text.len());
            match invalidation(text.as_str()) {
                Ok(inv) => {
                    if let Err(e) = apply(&cache, &inv).await {
                        tracing::warn!(error = %e, "published cache invalidation failed");
                    }
                }
                Err(why) => tracing::warn!(%why, "published cache invalidation ignored"),
            }
        }
    }
}

/// What a published invalidation asks for.
#[derive(Debug, PartialEq)]
enum Invalidation {
    /// Keys whose `namespace.identifier` matches the glob.
    Pattern(String),
    /// One key.
    Key(CacheKey),
    /// Entries carrying or depending on a tag.
    Tag(String),
}

/// Reads a `pubsub-notification` frame into the invalidation its message asks for.
fn invalidation(frame: &str) -> Result<Invalidation, String> {
    let v: Value = serde_json::from_str(frame).map_err(|e| format!("not JSON: {e}"))?;
    let message = &v["message"];
    let topic = message["topic"].as_str().unwrap_or("");
    let payload = &message["payload"];
    if let Some(k) = payload.get("cache_key") {
        let key: CacheKey =
            serde_json::from_value(k.clone()).map_err(|e| format!("{topic}: cache_key: {e}"))?;
        key.validate()
            .map_err(|e| format!("{topic}: cache_key: {e}"))?;
        return Ok(Invalidation::Key(key));
    }
    if let Some(t) = payload.get("tag").and_then(Value::as_str) {
        return Ok(Invalidation::Tag(t.to_owned()));
    }
    match payload.get("pattern").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => Ok(Invalidation::Pattern(p.to_owned())),
        _ => Err(format!(
            "{topic}: the payload needs \"pattern\" (a glob over namespace.identifier), \"cache_key\" or \"tag\""
        )),
    }
}

async fn apply(cache: &Cache, inv: &Invalidation) -> Result<usize, super::store::CacheError> {
    match inv {
        Invalidation::Pattern(p) => cache.invalidate_dotted(p).await,
        Invalidation::Key(k) => cache.invalidate_key(&k.id()).await,
        Invalidation::Tag(t) => cache.invalidate_tag(t).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &str, payload: Value) -> String {
        json!({"role": "pubsub-notification", "u": "n", "subscription_id": "s",
            "message": {"topic": topic, "payload": payload}})
        .to_string()
    }

    #[test]
    fn invalidations_are_read_from_their_payload() {
        assert_eq!(
            invalidation(&frame(
                "cache.invalidation.pattern.ml.*",
                json!({"pattern": "ml.*", "reason": "model_updated"})
            )),
            Ok(Invalidation::Pattern("ml.*".into()))
        );
        assert_eq!(
            invalidation(&frame(
                "cache.invalidation.key.users",
                json!({"cache_key": {"namespace": "users", "identifier": "u1"}})
            )),
            Ok(Invalidation::Key(CacheKey::new("users", "u1")))
        );
        assert_eq!(
            invalidation(&frame(
                "cache.invalidation.tag",
                json!({"tag": "dataset:v2"})
            )),
            Ok(Invalidation::Tag("dataset:v2".into()))
        );
    }

    #[test]
    fn a_payload_without_a_target_is_refused_with_what_it_needs() {
        let e = invalidation(&frame(
            "cache.invalidation.pattern.x",
            json!({"reason": "r"}),
        ))
        .expect_err("no target");
        assert!(e.contains("needs \"pattern\""), "{e}");
        let e = invalidation(&frame(
            "cache.invalidation.key.x",
            json!({"cache_key": {"namespace": "", "identifier": "a"}}),
        ))
        .expect_err("bad key");
        assert!(e.contains("cache_key"), "{e}");
        assert!(invalidation("not json").is_err());
    }
}
