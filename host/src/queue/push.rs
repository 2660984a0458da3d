//! Push delivery: a pub/sub subscription to `mpreg.queue.<name>` is a consumer of that queue
//! (its `subscription_id` is the consumer name). Messages arrive as ordinary
//! `pubsub-notification` frames, so an unmodified MPREG pub/sub client can consume a queue; it
//! acknowledges with `queue.ack(name, headers.receipt)`.
//!
//! The pusher receives through the dispatcher, so it works whichever node owns the queue, and
//! keeps at most [`CREDIT`] unacknowledged deliveries per consumer (`max_held`): a consumer
//! that stops acking stops receiving. When the subscription ends, whatever it still holds is
//! given back at once (`queue.release`) instead of waiting for the visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::protocol::RpcCommand;
use crate::protocol::pubsub::{
    Delivery as Kind, PubsubMessage, QUEUE_TOPIC_PREFIX, notification_text,
};
use crate::pubsub::exchange::Outbox;
use crate::rpc::execute::{Call, CallError, Dispatcher};

/// Unacknowledged deliveries one push consumer may hold.
pub const CREDIT: usize = 32;
/// How long one receive waits before it is renewed.
const LONG_POLL_MS: u64 = 20_000;

/// The queue a topic names, when it is a queue topic.
pub fn queue_of_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix(QUEUE_TOPIC_PREFIX)
}

fn call(fun: &str, args: Vec<Value>, consumer: &str) -> Call {
    Call {
        command: RpcCommand::new(fun, fun, args),
        constraint: None,
        request_id: format!("push:{consumer}").into(),
        depth: 0,
        deadline: None,
        // The subscriber was allowed to receive from the queue when it subscribed.
        principal: crate::auth::Principal::system(),
    }
}

/// Runs `consumer`'s push delivery from `queue` into `outbox` until `ended`.
pub async fn run(
    dispatcher: Arc<dyn Dispatcher>,
    outbox: Outbox,
    ended: CancellationToken,
    queue: String,
    consumer: String,
) {
    let topic = format!("{QUEUE_TOPIC_PREFIX}{queue}");
    loop {
        let options = json!({"consumer": consumer, "max": CREDIT, "max_held": CREDIT,
            "wait_ms": LONG_POLL_MS});
        let receive = call("queue.receive", vec![json!(queue), options], &consumer);
        let got = tokio::select! {
            _ = ended.cancelled() => break,
            r = dispatcher.dispatch(receive) => r,
        };
        let deliveries = match got {
            Ok(Value::Array(d)) => d,
            Ok(other) => {
                tracing::warn!(%queue, %other, "unexpected receive result; push stopped");
                break;
            }
            Err(e) => {
                tracing::warn!(%queue, %consumer, code = e.code(), cause = %e, "push receive failed");
                if matches!(e, CallError::NotFound(_)) {
                    // The queue is gone.
                    break;
                }
                tokio::select! {
                    _ = ended.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        for d in deliveries {
            let span = tracing::debug_span!(
                target: "mpreg::queue",
                "queue_delivery",
                queue = %queue,
                consumer = %consumer,
                message_id = %d.get("message_id").and_then(serde_json::Value::as_str).unwrap_or(""),
            );
            let text = notification(&topic, &queue, &consumer, d);
            // Waits for room: the consumer's pace is the queue's pace (its credit bounds it).
            let sent = outbox
                .send(Message::Text(Utf8Bytes::from(text)))
                .instrument(span)
                .await;
            if sent.is_err() {
                ended.cancel();
                break;
            }
        }
    }
    let release = call(
        "queue.release",
        vec![json!(queue), json!({"consumer": consumer})],
        &consumer,
    );
    match tokio::time::timeout(Duration::from_secs(5), dispatcher.dispatch(release)).await {
        Ok(Ok(_)) => {}
        Ok(Err(f)) => tracing::debug!(%queue, %consumer, cause = %f, "release after push"),
        Err(_) => {
            tracing::warn!(%queue, %consumer, "release after push timed out; visibility timeout will return the messages")
        }
    }
}

fn notification(topic: &str, queue: &str, consumer: &str, d: Value) -> String {
    let id = d["message_id"].as_str().unwrap_or_default().to_owned();
    let mut headers = serde_json::Map::new();
    for k in ["receipt", "attempt", "priority"] {
        headers.insert(k.into(), d[k].clone());
    }
    headers.insert("queue".into(), queue.into());
    let message = PubsubMessage {
        topic: topic.to_owned(),
        payload: d["body"].clone(),
        timestamp: d["sent_ms"].as_f64().map_or(0.0, |ms| ms / 1000.0),
        message_id: id.clone(),
        publisher: format!("queue:{queue}"),
        headers,
        routing_path: None,
        current_hop: None,
    };
    let raw = serde_json::to_string(&message).unwrap_or_default();
    notification_text(Kind::Live, &id, consumer, &raw)
}
