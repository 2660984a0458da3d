//! Pub/sub frames of protocol.md §3, shared by the node and the Rust client.
//!
//! A published `message` is kept as raw JSON text from the moment it is read: the node only
//! needs its `topic` and `message_id`, and forwards the rest verbatim (notifications, peers,
//! backlog) without re-encoding it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Topics under this prefix name queues: subscribing to `mpreg.queue.<name>` makes the
/// subscription a push consumer of that queue; publishing there is refused.
pub const QUEUE_TOPIC_PREFIX: &str = "mpreg.queue.";

use super::null_default;

/// `{"role":"pubsub-publish","u":…,"message":{…}}`.
#[derive(Debug, Deserialize)]
pub struct PublishFrame {
    /// Request id; the ack's `operation_id`.
    pub u: String,
    /// The message, verbatim.
    pub message: Box<RawValue>,
}

/// The fields of a published message the node reads; everything else travels untouched.
#[derive(Debug, Deserialize)]
pub struct MessageHead {
    /// Where it is published.
    pub topic: String,
    /// Names the message in notification ids; the request's `u` when absent.
    #[serde(default)]
    pub message_id: Option<String>,
}

/// One pattern of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternSpec {
    /// `a.*.c`, `metrics.#`, or a literal topic.
    pub pattern: String,
    /// Every segment literal (`*` and `#` not allowed).
    #[serde(default, deserialize_with = "null_default")]
    pub exact_match: bool,
}

/// The `subscription` object of a subscribe frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Chosen by the client; names the subscription in notifications and unsubscribe.
    pub subscription_id: String,
    /// One notification per message that matches any of them.
    pub patterns: Vec<PatternSpec>,
    /// Who subscribes (informational).
    #[serde(default)]
    pub subscriber: Option<String>,
    /// Client's clock (informational).
    #[serde(default)]
    pub created_at: Option<f64>,
    /// Deliver retained messages that match, before live ones.
    #[serde(default, deserialize_with = "null_default")]
    pub get_backlog: bool,
    /// How far back the backlog goes (seconds; MPREG's default is 300).
    #[serde(default)]
    pub backlog_seconds: Option<f64>,
}

/// `{"role":"pubsub-subscribe","u":…,"subscription":{…}}`.
#[derive(Debug, Deserialize)]
pub struct SubscribeFrame {
    /// Request id.
    pub u: String,
    /// What to subscribe to.
    pub subscription: Subscription,
}

/// `{"role":"pubsub-unsubscribe","u":…,"subscription_id":…}`.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeFrame {
    /// Request id.
    pub u: String,
    /// The subscription to end.
    pub subscription_id: String,
}

/// The answer to every pub/sub request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubsubAck {
    /// Always `"pubsub-ack"`.
    pub role: String,
    /// `ack_<request u>`.
    pub u: String,
    /// The request's `u`.
    pub operation_id: String,
    /// Whether it was done.
    pub success: bool,
    /// Why not.
    pub error: Option<String>,
}

impl PubsubAck {
    /// The ack of request `u`: success, or the reason for failure.
    pub fn new(u: &str, outcome: Result<(), String>) -> Self {
        PubsubAck {
            role: "pubsub-ack".into(),
            u: format!("ack_{u}"),
            operation_id: u.to_owned(),
            success: outcome.is_ok(),
            error: outcome.err(),
        }
    }
}

/// A delivered message, as a client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubsubNotification {
    /// Always `"pubsub-notification"`.
    pub role: String,
    /// `notification_<message_id>_<subscription_id>`, or `backlog_…` for a retained message.
    pub u: String,
    /// The subscription it matched.
    pub subscription_id: String,
    /// The published message, verbatim.
    pub message: Value,
}

/// A message to publish, in the shape MPREG's client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubsubMessage {
    /// Topic (no wildcards).
    pub topic: String,
    /// Any JSON.
    pub payload: Value,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    /// Unique id.
    pub message_id: String,
    /// Who published.
    pub publisher: String,
    /// Free-form headers.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// Unused by MPREG's client; kept for shape.
    #[serde(default)]
    pub routing_path: Option<Value>,
    /// Unused by MPREG's client; kept for shape.
    #[serde(default)]
    pub current_hop: Option<Value>,
}

/// Which id prefix a notification carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Published while subscribed: `notification_…`.
    Live,
    /// Retained and delivered on subscribe: `backlog_…`.
    Backlog,
}

/// The notification frame for `message` (raw JSON) matched by `subscription_id`, built as text
/// so the message is not parsed and re-encoded once per subscriber.
pub fn notification_text(
    kind: Delivery,
    message_id: &str,
    subscription_id: &str,
    message: &str,
) -> String {
    let prefix = match kind {
        Delivery::Live => "notification",
        Delivery::Backlog => "backlog",
    };
    let u = Value::String(format!("{prefix}_{message_id}_{subscription_id}"));
    let sid = Value::String(subscription_id.to_owned());
    let mut out = String::with_capacity(message.len() + 2 * subscription_id.len() + 96);
    out.push_str(r#"{"role":"pubsub-notification","u":"#);
    out.push_str(&u.to_string());
    out.push_str(r#","subscription_id":"#);
    out.push_str(&sid.to_string());
    out.push_str(r#","message":"#);
    out.push_str(message);
    out.push('}');
    out
}

/// The message a request's `intermediate_result_callback_topic` receives for one completed
/// level, shaped as MPREG publishes it: `message_id` `rpc_intermediate_<u>_<level>`, header
/// `event: rpc.intermediate_result`, the level as payload.
pub fn level_message(topic: &str, publisher: &str, level: &super::IntermediateResult) -> String {
    let mut headers = Map::new();
    headers.insert("event".into(), "rpc.intermediate_result".into());
    headers.insert("request_id".into(), level.request_id.clone().into());
    let message = PubsubMessage {
        topic: topic.to_owned(),
        payload: serde_json::to_value(level).unwrap_or_default(),
        timestamp: level.timestamp,
        message_id: format!(
            "rpc_intermediate_{}_{}",
            level.request_id, level.level_index
        ),
        publisher: publisher.to_owned(),
        headers,
        routing_path: None,
        current_hop: None,
    };
    serde_json::to_string(&message).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_is_valid_json_with_escaped_ids() {
        let text = notification_text(
            Delivery::Live,
            "m\"1",
            "s1",
            r#"{"topic":"a.b","payload":[1]}"#,
        );
        let n: PubsubNotification = serde_json::from_str(&text).expect("json");
        assert_eq!(n.u, "notification_m\"1_s1");
        assert_eq!(n.subscription_id, "s1");
        assert_eq!(n.message["payload"][0], 1);
        let b = notification_text(Delivery::Backlog, "m", "s", "{}");
        assert!(b.contains(r#""u":"backlog_m_s""#));
    }

    #[test]
    fn frames_parse_what_mpregs_client_sends() {
        let f: SubscribeFrame = serde_json::from_str(
            r#"{"role":"pubsub-subscribe","u":"x","subscription":{"subscription_id":"s",
            "patterns":[{"pattern":"a.*","exact_match":null}],"subscriber":"c","created_at":1.5,
            "get_backlog":true,"backlog_seconds":300}}"#,
        )
        .expect("subscribe");
        assert!(f.subscription.get_backlog);
        assert!(!f.subscription.patterns[0].exact_match);
        let p: PublishFrame = serde_json::from_str(
            r#"{"role":"pubsub-publish","u":"p","message":{"topic":"a.b","payload":null}}"#,
        )
        .expect("publish");
        let head: MessageHead = serde_json::from_str(p.message.get()).expect("head");
        assert_eq!(head.topic, "a.b");
        assert_eq!(head.message_id, None);
        let ack = serde_json::to_value(PubsubAck::new("p", Err("no".into()))).expect("ack");
        assert_eq!(ack["u"], "ack_p");
        assert_eq!(ack["operation_id"], "p");
        assert_eq!(ack["success"], false);
    }
}
