//! The pub/sub frames of a client connection (protocol.md §3): publish, subscribe and
//! unsubscribe, each answered with a `pubsub-ack`. A subscription to `mpreg.queue.<name>` is a
//! push consumer of that queue (see [`crate::queue::push`]).
//!
//! Everything this returns is written by the session before it reads the next frame, in order:
//! for a publish, the connection's own notifications and then the ack (other subscribers' queues
//! were filled before that); for a subscribe, the backlog and then the ack.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::json;

use super::state::ServerState;
use crate::auth::policy::Need;
use crate::auth::{Denied, Principal};
use crate::cluster::Part;
use crate::protocol::RpcCommand;
use crate::protocol::pubsub::QUEUE_TOPIC_PREFIX;
use crate::protocol::pubsub::{
    Delivery, PublishFrame, PubsubAck, SubscribeFrame, Subscription, UnsubscribeFrame,
    notification_text,
};
use crate::pubsub::exchange::Connection;
use crate::queue::push;
use crate::rpc::execute::{Call, Dispatcher};

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Refused pub/sub frames logged: at most one line a second, with how many were left out.
static REFUSED: crate::throttle::Throttle =
    crate::throttle::Throttle::new(std::time::Duration::from_secs(1));

fn ack(state: &ServerState, u: &str, outcome: Result<(), String>) -> Message {
    use super::metrics::Outcome;
    let counted = if outcome.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Refused
    };
    state.counts.other("pubsub", counted);
    if let Err(why) = &outcome
        && let Some(suppressed) = REFUSED.admit()
    {
        tracing::warn!(request_id = u, error = %why, suppressed, "pub/sub request refused");
    }
    text(serde_json::to_string(&PubsubAck::new(u, outcome)).unwrap_or_default())
}

/// Answers one pub/sub frame whose `role` is `role` and whose `u` is `u`.
pub async fn handle(
    bytes: &[u8],
    role: &str,
    u: &str,
    state: &ServerState,
    conn: &Connection,
    principal: &Principal,
) -> Vec<Message> {
    let exchange = &state.exchange;
    match role {
        "pubsub-publish" => {
            let frame = match serde_json::from_slice::<PublishFrame>(bytes) {
                Ok(f) => f,
                Err(e) => return vec![ack(state, u, Err(format!("invalid publish: {e}")))],
            };
            if let Err(why) = may_publish(principal, frame.message.get()) {
                return vec![ack(state, u, Err(why))];
            }
            let _span = tracing::debug_span!(
                target: "mpreg::pubsub",
                "publish",
                request_id = u,
                node = %state.node.node_id,
            )
            .entered();
            match exchange.publish(frame.message.get(), u, Some(conn.id()), Instant::now()) {
                Ok(routed) => {
                    exchange.deliver(routed.others);
                    let mut out: Vec<Message> = routed.own.into_iter().map(text).collect();
                    out.push(ack(state, u, Ok(())));
                    out
                }
                Err(e) => vec![ack(state, u, Err(e.to_string()))],
            }
        }
        "pubsub-subscribe" => {
            let frame = match serde_json::from_slice::<SubscribeFrame>(bytes) {
                Ok(f) => f,
                Err(e) => return vec![ack(state, u, Err(format!("invalid subscribe: {e}")))],
            };
            if let Err(d) = may_subscribe(principal, &frame.subscription) {
                return vec![ack(state, u, Err(d.to_string()))];
            }
            let queue = match queue_subscription(&frame.subscription, state).await {
                Ok(q) => q,
                Err(e) => return vec![ack(state, u, Err(e))],
            };
            // Other nodes' retained messages are asked for before subscribing here: none of
            // them can also arrive live (peers forward only once they know of this one).
            let remote = remote_backlog(&frame.subscription, state).await;
            let now = Instant::now();
            match exchange.subscribe(conn, &frame.subscription, now) {
                Ok(done) => {
                    // The ack waits until the live peers know of the new patterns: a message
                    // published on any node after it is forwarded here (docs/pubsub.md).
                    if let Some(cluster) = state.dispatcher.cluster() {
                        cluster.settle(Part::Interest).await;
                    }
                    if let Some(queue) = queue {
                        let dispatcher = state.dispatcher.clone() as Arc<dyn Dispatcher>;
                        // Ends with the subscription; the server waits for it at shutdown.
                        state.sessions.spawn(push::run(
                            dispatcher,
                            conn.outbox().clone(),
                            done.ended,
                            queue,
                            frame.subscription.subscription_id.clone(),
                        ));
                    }
                    let mut backlog = done.backlog;
                    // Every age against the same instant, whichever node answered when.
                    backlog.extend(
                        remote
                            .into_iter()
                            .map(|(at, t)| (now.saturating_duration_since(at), t)),
                    );
                    // Oldest first, across nodes (a stable sort keeps each node's own order).
                    backlog.sort_by_key(|b| std::cmp::Reverse(b.0));
                    let mut out: Vec<Message> = backlog.into_iter().map(|(_, t)| text(t)).collect();
                    out.push(ack(state, u, Ok(())));
                    out
                }
                Err(e) => vec![ack(state, u, Err(e.to_string()))],
            }
        }
        "pubsub-unsubscribe" => {
            let frame = match serde_json::from_slice::<UnsubscribeFrame>(bytes) {
                Ok(f) => f,
                Err(e) => return vec![ack(state, u, Err(format!("invalid unsubscribe: {e}")))],
            };
            let outcome = if exchange.unsubscribe(conn, &frame.subscription_id) {
                Ok(())
            } else {
                Err(format!(
                    "no subscription '{}' on this connection",
                    frame.subscription_id
                ))
            };
            vec![ack(state, u, outcome)]
        }
        _ => Vec::new(),
    }
}

/// Whether `principal` may publish `message` (checked on its topic; an unreadable message is
/// left to the exchange to refuse).
fn may_publish(principal: &Principal, message: &str) -> Result<(), String> {
    if principal.unrestricted() {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Topic<'a> {
        #[serde(borrow)]
        topic: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_str::<Topic<'_>>(message) {
        Ok(t) => principal
            .check(&Need::Publish(&t.topic))
            .map_err(|d| d.to_string()),
        Err(_) => Ok(()),
    }
}

/// Whether `principal` may hold every pattern of `sub`: `subscribe` for topics, `queue_receive`
/// for a queue's push topic.
fn may_subscribe(principal: &Principal, sub: &Subscription) -> Result<(), Denied> {
    for p in &sub.patterns {
        match push::queue_of_topic(&p.pattern) {
            Some(queue) => principal.check(&Need::QueueReceive(queue))?,
            None => principal.check(&Need::Subscribe(&p.pattern))?,
        }
    }
    Ok(())
}

/// The queue a subscription consumes, when it is a queue subscription (one pattern,
/// `mpreg.queue.<name>`, naming a queue that exists somewhere in the cluster).
async fn queue_subscription(
    sub: &Subscription,
    state: &ServerState,
) -> Result<Option<String>, String> {
    let named: Vec<&str> = sub
        .patterns
        .iter()
        .filter_map(|p| push::queue_of_topic(&p.pattern))
        .collect();
    let Some(name) = named.first() else {
        return Ok(None);
    };
    if sub.patterns.len() != 1 {
        return Err(format!(
            "a queue subscription holds exactly one pattern, {QUEUE_TOPIC_PREFIX}<name>"
        ));
    }
    let stats = Call {
        command: RpcCommand::new("queue.stats", "queue.stats", vec![json!(name)]),
        constraint: None,
        request_id: "subscribe".into(),
        depth: 0,
        deadline: None,
        // Whether the subscriber may receive from it was checked already (`may_subscribe`).
        principal: Principal::system(),
    };
    match state.dispatcher.dispatch(stats).await {
        Ok(_) => Ok(Some((*name).to_owned())),
        Err(f) => Err(f.into_cause()),
    }
}

/// How long a subscribe waits for each peer's backlog.
const REMOTE_BACKLOG_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The backlog notifications other nodes hold for `sub`, with when each was retained; empty when
/// it did not ask for a backlog, or this node is alone. A peer that does not answer in time is skipped.
///
/// Each peer reports ages as of its answer, and the peers answer at different moments: each age
/// is turned into the instant the message was retained, as of when its answer arrived, so
/// messages from different nodes sort by when they were published, not by who answered first.
async fn remote_backlog(sub: &Subscription, state: &ServerState) -> Vec<(Instant, String)> {
    let Some(cluster) = state.dispatcher.cluster() else {
        return Vec::new();
    };
    if !sub.get_backlog {
        return Vec::new();
    }
    let within_ms = sub
        .backlog_seconds
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(300_000, |s| (s.min(1e9) * 1000.0) as u64);
    let patterns: Vec<(String, bool)> = sub
        .patterns
        .iter()
        .map(|p| (p.pattern.clone(), p.exact_match))
        .collect();
    let peers: Vec<_> = cluster
        .view()
        .nodes
        .iter()
        .filter_map(|n| cluster.link(&n.node_id))
        .filter(|l| l.is_connected())
        .collect();
    let asks = peers.iter().map(|link| {
        let patterns = patterns.clone();
        async move {
            match tokio::time::timeout(REMOTE_BACKLOG_WAIT, link.backlog(patterns, within_ms)).await
            {
                Ok(Ok(m)) => {
                    let answered = Instant::now();
                    m.into_iter()
                        .map(|(age, id, raw)| {
                            let at = answered
                                .checked_sub(std::time::Duration::from_millis(age))
                                .unwrap_or(answered);
                            (at, id, raw)
                        })
                        .collect()
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %link.node_id, error = %e, "backlog from peer failed");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(peer = %link.node_id, "backlog from peer timed out");
                    Vec::new()
                }
            }
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .map(|(at, id, raw)| {
            let text = notification_text(Delivery::Backlog, &id, &sub.subscription_id, &raw);
            (at, text)
        })
        .collect()
}

/// Whether `role` is one this module answers.
pub fn is_pubsub(role: &str) -> bool {
    matches!(
        role,
        "pubsub-publish" | "pubsub-subscribe" | "pubsub-unsubscribe"
    )
}
