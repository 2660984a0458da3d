//! The node's topic exchange: every subscription of every connection in one trie, the backlog,
//! and delivery into each subscriber's outbound queue.
//!
//! Routing a message is synchronous and happens under one read lock together with its backlog
//! entry, and a subscribe inserts and reads the backlog under the write lock: so each message
//! reaches a new subscription exactly once, either live or from the backlog, never both.
//! Delivery is separate and never waits: a subscriber whose queue is full gets an overflow of
//! the same bound, drained by a task of its own, and is disconnected as a slow consumer when it
//! takes nothing for `slow_subscriber` or falls a whole overflow behind (`pubsub::mailbox`), so
//! one stuck reader can neither stall a publisher nor grow the node's memory.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::backlog::{Backlog, Limits};
use super::mailbox::{Mailbox, Posted};
use super::topic::{MatchScratch, Pattern, TopicTrie, check_topic};
use crate::cluster::catalog::{EXACT_INTEREST_PREFIX, INTEREST_PREFIX};
use crate::config::PubsubConfig;
use crate::protocol::pubsub::{
    Delivery, MessageHead, QUEUE_TOPIC_PREFIX, Subscription, notification_text,
};
use crate::shutdown::Tasks;

/// A connection's outbound queue.
pub type Outbox = mpsc::Sender<Message>;

/// Tuning of the exchange (`[pubsub]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct ExchangeSettings {
    /// Backlog bounds.
    pub backlog: Limits,
    /// How long a subscriber's full queue may take nothing before it is cut off.
    pub slow_subscriber: Duration,
    /// Notifications held for a subscriber whose queue is full, beyond the queue itself.
    pub overflow: usize,
    /// Bytes of notifications one subscriber connection may have unwritten.
    pub max_unwritten_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Patterns one subscription may hold.
    pub max_patterns_per_subscription: usize,
}

impl From<&PubsubConfig> for ExchangeSettings {
    fn from(c: &PubsubConfig) -> Self {
        ExchangeSettings {
            backlog: Limits {
                per_topic: c.backlog_per_topic,
                max_age: Duration::from_secs(c.backlog_max_age_s),
                max_topics: c.backlog_max_topics,
                max_bytes: c.backlog_max_mib.saturating_mul(1 << 20),
            },
            slow_subscriber: Duration::from_millis(c.slow_subscriber_ms),
            overflow: c.subscriber_overflow,
            max_unwritten_bytes: c.subscriber_max_mib.saturating_mul(1 << 20),
            max_subscriptions_per_connection: c.max_subscriptions_per_connection,
            max_patterns_per_subscription: c.max_patterns_per_subscription,
        }
    }
}

/// Sends a locally published message to the other nodes whose subscriptions match it.
pub trait Fanout: Send + Sync {
    /// Forwards `raw` (published on `topic`) to every other node interested in `topic`.
    fn forward(&self, topic: &str, raw: &Arc<str>);
    /// Whether some other node subscribes to something `topic` matches.
    fn wants(&self, topic: &str) -> bool;
}

/// Why a pub/sub request was refused; the text goes into the ack's `error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PubsubError {
    /// Bad topic or pattern.
    #[error(transparent)]
    Topic(#[from] super::topic::TopicError),
    /// The message or subscription is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A per-connection limit.
    #[error("{0}")]
    Limit(String),
}

/// One notification waiting to be queued.
pub struct Outgoing {
    conn: u64,
    mailbox: Arc<Mailbox>,
    text: String,
}

/// What a publish routed.
pub struct Routed {
    /// Notifications for the publishing connection itself: it writes them directly (its own
    /// queue is drained by the very task that is publishing).
    pub own: Vec<String>,
    /// Notifications for other connections.
    pub others: Vec<Outgoing>,
}

struct Sub {
    conn: u64,
    subscription_id: Arc<str>,
    patterns: Vec<(Pattern, String, bool)>,
    mailbox: Arc<Mailbox>,
    /// Cancelled when the subscription ends (unsubscribe, replaced, connection gone).
    ended: CancellationToken,
    /// Held by a service of the node (the cache's invalidations), not a client.
    service: bool,
}

/// A subscription just made.
pub struct Subscribed {
    /// Backlog notifications to write before anything else, oldest first, with their age.
    pub backlog: Vec<(Duration, String)>,
    /// Cancelled when the subscription ends.
    pub ended: CancellationToken,
}

#[derive(Default)]
struct Inner {
    trie: TopicTrie<u64>,
    subs: HashMap<u64, Sub>,
    /// Connection → subscription id → key in `subs`.
    by_conn: HashMap<u64, HashMap<Arc<str>, u64>>,
    /// Gossip key → how many local subscriptions hold that pattern.
    interest: BTreeMap<String, usize>,
}

/// Counters for `/health` and tests.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    /// Messages published on this node.
    pub published: AtomicU64,
    /// Messages received from peers.
    pub received: AtomicU64,
    /// Notifications queued to subscribers.
    pub delivered: AtomicU64,
    /// Subscribers disconnected as slow consumers.
    pub slow_consumers: AtomicU64,
}

/// The node's exchange.
pub struct Exchange {
    inner: RwLock<Inner>,
    backlog: Mutex<Backlog>,
    settings: ExchangeSettings,
    next_sub: AtomicU64,
    next_conn: AtomicU64,
    fanout: OnceLock<Arc<dyn Fanout>>,
    /// Deliveries that wait for room in a subscriber's queue run here.
    tasks: Tasks,
    interest_changed: Notify,
    /// Topic prefixes under which `*` and `#` in a published topic are plain text (a service's
    /// own topics that carry a pattern as data, such as `cache.invalidation.pattern.ml.*`).
    literal_wildcards: RwLock<Vec<Box<str>>>,
    /// Counters.
    pub stats: ExchangeStats,
}

/// Slow consumers cut off: logged at most once a second.
static SLOW: crate::throttle::Throttle = crate::throttle::Throttle::new(Duration::from_secs(1));

thread_local! {
    static SCRATCH: RefCell<(MatchScratch, Vec<u64>)> = RefCell::default();
}

/// A connection's membership in the exchange: its subscriptions end when this is dropped.
pub struct Connection {
    id: u64,
    mailbox: Arc<Mailbox>,
    exchange: Arc<Exchange>,
    service: bool,
}

impl Connection {
    /// Cancelled when the connection is cut off as a slow consumer.
    pub fn kicked(&self) -> &CancellationToken {
        self.mailbox.kicked()
    }

    /// This connection's id within the exchange.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its mailbox (to count what else goes into the outbound queue, and what was written).
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Its mailbox, shared (for a request task streaming into the outbound queue).
    pub fn mailbox_handle(&self) -> Arc<Mailbox> {
        self.mailbox.clone()
    }

    /// Its outbound queue.
    pub fn outbox(&self) -> &Outbox {
        self.mailbox.sender()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.exchange.disconnect(self.id);
    }
}

fn text_message(text: String) -> Message {
    Message::Text(Utf8Bytes::from(text))
}

impl Exchange {
    /// An exchange with no subscriptions.
    pub fn new(settings: ExchangeSettings, tasks: Tasks) -> Arc<Self> {
        Arc::new(Exchange {
            tasks,
            inner: RwLock::default(),
            backlog: Mutex::new(Backlog::new(settings.backlog)),
            settings,
            next_sub: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            fanout: OnceLock::new(),
            interest_changed: Notify::new(),
            literal_wildcards: RwLock::default(),
            stats: ExchangeStats::default(),
        })
    }

    /// Lets messages be published on topics under `prefix` that contain `*` or `#` (as text:
    /// subscribers' patterns still match them segment by segment).
    pub fn allow_wildcards_under(&self, prefix: &str) {
        let mut list = self
            .literal_wildcards
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|p| &**p == prefix) {
            list.push(prefix.into());
        }
    }

    /// Checks a published topic: no wildcards, except under a prefix allowed them.
    fn check_published(&self, topic: &str) -> Result<(), PubsubError> {
        match check_topic(topic) {
            Err(super::topic::TopicError::Wildcard { .. })
                if self
                    .literal_wildcards
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|p| topic.starts_with(&**p)) =>
            {
                Ok(())
            }
            r => Ok(r?),
        }
    }

    /// Publishes reach other nodes through `fanout` from now on.
    pub fn join(&self, fanout: Arc<dyn Fanout>) {
        let _ = self.fanout.set(fanout);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Every write leaves `Inner` consistent before anything that could panic.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection whose notifications go to `outbox`.
    pub fn connect(self: &Arc<Self>, outbox: Outbox) -> Connection {
        self.connection(outbox, false)
    }

    /// A connection for a service of the node itself: its subscriptions route and gossip like
    /// a client's but are not counted as clients' ([`Exchange::subscriptions`]).
    pub fn connect_service(self: &Arc<Self>, outbox: Outbox) -> Connection {
        self.connection(outbox, true)
    }

    fn connection(self: &Arc<Self>, outbox: Outbox, service: bool) -> Connection {
        let mailbox = Mailbox::new(
            outbox,
            CancellationToken::new(),
            self.settings.overflow,
            self.settings.max_unwritten_bytes,
        );
        Connection {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            mailbox: Arc::new(mailbox),
            exchange: self.clone(),
            service,
        }
    }

    /// Wakes when the set of patterns held on this node changed.
    pub fn interest_changed(&self) -> &Notify {
        &self.interest_changed
    }

    /// The gossip keys naming every pattern held on this node.
    pub fn interest(&self) -> BTreeMap<String, String> {
        self.read()
            .interest
            .keys()
            .map(|k| (k.clone(), String::new()))
            .collect()
    }

    /// Whether any pattern a subscription on this node holds satisfies `f` (a feed checks
    /// before it builds messages nobody would get).
    pub fn any_pattern(&self, f: impl Fn(&str) -> bool) -> bool {
        self.read()
            .interest
            .keys()
            .any(|k| f(k.split_once(':').map_or(k.as_str(), |(_, p)| p)))
    }

    /// Whether a message published on `topic` would reach anyone, on this node or another:
    /// a service that publishes events checks before it builds them.
    pub fn wanted(&self, topic: &str) -> bool {
        !self.read().trie.matches(topic).is_empty()
            || self.fanout.get().is_some_and(|f| f.wants(topic))
    }

    /// Subscriptions clients hold on this node (a service's own are not counted).
    pub fn subscriptions(&self) -> usize {
        self.read().subs.values().filter(|s| !s.service).count()
    }

    /// Every client subscription here, by connection then id: `(connection id, subscription
    /// id, patterns)` (what `/monitor/subsz` lists).
    pub fn subscription_list(&self) -> Vec<(u64, String, Vec<String>)> {
        let inner = self.read();
        let mut out: Vec<(u64, String, Vec<String>)> = inner
            .subs
            .values()
            .filter(|s| !s.service)
            .map(|s| {
                let patterns = s.patterns.iter().map(|(_, p, _)| p.clone()).collect();
                (s.conn, s.subscription_id.to_string(), patterns)
            })
            .collect();
        out.sort();
        out
    }

    /// Messages retained in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog().len()
    }

    /// Retained messages matching `patterns` (`(pattern, exact_match)`; invalid ones match
    /// nothing) from the last `within`, oldest first: `(age ms, message id, message JSON)`.
    /// What a peer asks for when one of its clients subscribes with the backlog.
    pub fn retained(
        &self,
        patterns: &[(String, bool)],
        within: Duration,
        now: Instant,
    ) -> Vec<(u64, String, String)> {
        let parsed: Vec<Pattern> = patterns
            .iter()
            .filter_map(|(p, exact)| Pattern::parse(p, *exact).ok())
            .collect();
        if parsed.is_empty() {
            return Vec::new();
        }
        self.backlog()
            .collect(&parsed, within, now)
            .into_iter()
            .map(|m| {
                let age = now.saturating_duration_since(m.at).as_millis() as u64;
                (age, m.message_id.to_string(), m.raw.to_string())
            })
            .collect()
    }

    /// Counters and sizes, for `/health`.
    pub fn describe(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "subscriptions": self.subscriptions(),
            "backlog_messages": self.backlog_len(),
            "published": s.published.load(Ordering::Relaxed),
            "received_from_peers": s.received.load(Ordering::Relaxed),
            "notifications": s.delivered.load(Ordering::Relaxed),
            "slow_consumers": s.slow_consumers.load(Ordering::Relaxed),
        })
    }

    /// Registers a collector of the exchange's counters and sizes (read at scrape time: the
    /// publish path pays nothing more for metrics).
    pub fn register_metrics(self: &Arc<Self>, r: &mut crate::metrics::Registry) {
        let weak = Arc::downgrade(self);
        crate::metrics::collect(r, move |m| {
            let Some(x) = weak.upgrade() else {
                return Ok(());
            };
            let s = &x.stats;
            m.counter(
                "pubsub_published",
                "Messages published on this node",
                s.published.load(Ordering::Relaxed),
            )?;
            m.counter(
                "pubsub_received_from_peers",
                "Messages peers forwarded to this node's subscribers",
                s.received.load(Ordering::Relaxed),
            )?;
            m.counter(
                "pubsub_notifications",
                "Notifications delivered to subscribers here",
                s.delivered.load(Ordering::Relaxed),
            )?;
            m.counter(
                "pubsub_slow_subscriber_cutoffs",
                "Subscribers disconnected as slow consumers",
                s.slow_consumers.load(Ordering::Relaxed),
            )?;
            m.gauge(
                "pubsub_subscriptions",
                "Subscriptions held by clients of this node",
                x.subscriptions() as f64,
            )?;
            m.gauge(
                "pubsub_backlog_messages",
                "Messages retained in topic backlogs",
                x.backlog_len() as f64,
            )
        });
    }

    /// Adds (or replaces: same id on the same connection) a subscription. Returns the backlog
    /// notifications to write before anything else, oldest first.
    pub fn subscribe(
        &self,
        conn: &Connection,
        sub: &Subscription,
        now: Instant,
    ) -> Result<Subscribed, PubsubError> {
        if sub.subscription_id.is_empty() {
            return Err(PubsubError::Invalid("subscription_id is empty".into()));
        }
        if sub.patterns.is_empty() {
            return Err(PubsubError::Invalid(
                "a subscription needs at least one pattern".into(),
            ));
        }
        if sub.patterns.len() > self.settings.max_patterns_per_subscription {
            return Err(PubsubError::Limit(format!(
                "a subscription may hold at most {} patterns",
                self.settings.max_patterns_per_subscription
            )));
        }
        let mut patterns: Vec<(Pattern, String, bool)> = Vec::new();
        for p in &sub.patterns {
            let parsed = Pattern::parse(&p.pattern, p.exact_match)?;
            if !patterns.iter().any(|(q, _, _)| *q == parsed) {
                patterns.push((parsed, p.pattern.clone(), p.exact_match));
            }
        }
        let within = match sub.backlog_seconds {
            Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(1e9)),
            Some(s) => {
                return Err(PubsubError::Invalid(format!(
                    "backlog_seconds must be a non-negative number, got {s}"
                )));
            }
            None => Duration::from_secs(300),
        };
        let sid: Arc<str> = sub.subscription_id.as_str().into();
        let mut inner = self.write();
        let held = inner.by_conn.get(&conn.id).map_or(0, HashMap::len);
        let replacing = inner
            .by_conn
            .get(&conn.id)
            .and_then(|m| m.get(&sid))
            .copied();
        if replacing.is_none() && held >= self.settings.max_subscriptions_per_connection {
            return Err(PubsubError::Limit(format!(
                "a connection may hold at most {} subscriptions",
                self.settings.max_subscriptions_per_connection
            )));
        }
        let mut changed = false;
        if let Some(old) = replacing {
            changed |= remove_sub(&mut inner, old);
        }
        let key = self.next_sub.fetch_add(1, Ordering::Relaxed);
        for (p, text, exact) in &patterns {
            inner.trie.insert(p, key);
            let count = inner
                .interest
                .entry(interest_key(text, *exact))
                .or_insert(0);
            *count += 1;
            changed |= *count == 1;
        }
        let backlog = if sub.get_backlog {
            let only: Vec<Pattern> = patterns.iter().map(|(p, _, _)| p.clone()).collect();
            self.backlog().collect(&only, within, now)
        } else {
            Vec::new()
        };
        let ended = CancellationToken::new();
        inner.subs.insert(
            key,
            Sub {
                conn: conn.id,
                subscription_id: sid.clone(),
                patterns,
                mailbox: conn.mailbox.clone(),
                ended: ended.clone(),
                service: conn.service,
            },
        );
        inner.by_conn.entry(conn.id).or_default().insert(sid, key);
        drop(inner);
        if changed {
            self.interest_changed.notify_one();
        }
        let backlog = backlog
            .iter()
            .map(|m| {
                let text = notification_text(
                    Delivery::Backlog,
                    &m.message_id,
                    &sub.subscription_id,
                    &m.raw,
                );
                (now.saturating_duration_since(m.at), text)
            })
            .collect();
        Ok(Subscribed { backlog, ended })
    }

    /// Ends a subscription of `conn`; false when it has none by that id.
    pub fn unsubscribe(&self, conn: &Connection, subscription_id: &str) -> bool {
        let mut inner = self.write();
        let Some(key) = inner
            .by_conn
            .get_mut(&conn.id)
            .and_then(|m| m.remove(subscription_id))
        else {
            return false;
        };
        let changed = remove_sub(&mut inner, key);
        drop(inner);
        if changed {
            self.interest_changed.notify_one();
        }
        true
    }

    fn disconnect(&self, conn: u64) {
        let mut inner = self.write();
        let Some(subs) = inner.by_conn.remove(&conn) else {
            return;
        };
        let mut changed = false;
        for key in subs.into_values() {
            changed |= remove_sub(&mut inner, key);
        }
        drop(inner);
        if changed {
            self.interest_changed.notify_one();
        }
    }

    /// Routes a message published by a client of this node (`from`) or by a plugin (`None`):
    /// local notifications, backlog, and forwarding to interested nodes. `fallback_id` names
    /// the message when it has no `message_id`.
    pub fn publish(
        &self,
        raw: &str,
        fallback_id: &str,
        from: Option<u64>,
        now: Instant,
    ) -> Result<Routed, PubsubError> {
        let head: MessageHead = serde_json::from_str(raw)
            .map_err(|e| PubsubError::Invalid(format!("invalid message: {e}")))?;
        self.check_published(&head.topic)?;
        if head.topic.starts_with(QUEUE_TOPIC_PREFIX) {
            return Err(PubsubError::Invalid(format!(
                "topics under '{QUEUE_TOPIC_PREFIX}' are reserved for queue push delivery; use queue.send"
            )));
        }
        let id: Arc<str> = head.message_id.as_deref().unwrap_or(fallback_id).into();
        let raw: Arc<str> = raw.into();
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let routed = self.route(&head.topic, &id, &raw, from, Some(now));
        if let Some(f) = self.fanout.get() {
            f.forward(&head.topic, &raw);
        }
        Ok(routed)
    }

    /// Routes a message another node forwarded: local subscribers only (it is retained and
    /// forwarded by the node it was published on).
    pub fn receive(&self, raw: &str) -> Result<Routed, PubsubError> {
        let head: MessageHead = serde_json::from_str(raw)
            .map_err(|e| PubsubError::Invalid(format!("invalid message: {e}")))?;
        self.check_published(&head.topic)?;
        let id: Arc<str> = head.message_id.as_deref().unwrap_or("").into();
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Ok(self.route(&head.topic, &id, &raw.into(), None, None))
    }

    fn route(
        &self,
        topic: &str,
        id: &Arc<str>,
        raw: &Arc<str>,
        from: Option<u64>,
        retain_at: Option<Instant>,
    ) -> Routed {
        let mut routed = Routed {
            own: Vec::new(),
            others: Vec::new(),
        };
        let inner = self.read();
        SCRATCH.with_borrow_mut(|(scratch, keys)| {
            keys.clear();
            inner.trie.matches_into(topic, scratch, keys);
            for key in keys.iter() {
                let Some(sub) = inner.subs.get(key) else {
                    continue;
                };
                let text = notification_text(Delivery::Live, id, &sub.subscription_id, raw);
                if Some(sub.conn) == from {
                    routed.own.push(text);
                } else {
                    routed.others.push(Outgoing {
                        conn: sub.conn,
                        mailbox: sub.mailbox.clone(),
                        text,
                    });
                }
            }
        });
        if let Some(now) = retain_at {
            self.backlog().push(topic, id.clone(), raw.clone(), now);
        }
        drop(inner);
        let n = routed.own.len() + routed.others.len();
        self.stats.delivered.fetch_add(n as u64, Ordering::Relaxed);
        routed
    }

    /// Queues notifications without waiting on any subscriber: a full queue overflows into
    /// the subscriber's mailbox, drained by a task of its own, and a subscriber too far behind
    /// or taking nothing for `slow_subscriber` is cut off.
    pub fn deliver(self: &Arc<Self>, others: Vec<Outgoing>) {
        for o in others {
            match o.mailbox.post(text_message(o.text)) {
                Posted::Queued | Posted::Closed => {}
                Posted::Overflowing => {
                    let me = self.clone();
                    let patience = self.settings.slow_subscriber;
                    // Ends when the overflow is drained, the connection is gone, or the
                    // subscriber is cut off; at most `slow_subscriber` per notification.
                    self.tasks.spawn(async move {
                        if !o.mailbox.drain(patience).await {
                            me.cut_off(
                                o.conn,
                                &o.mailbox,
                                "took nothing for the slow-subscriber time",
                            );
                        }
                    });
                }
                Posted::TooFarBehind => {
                    self.cut_off(o.conn, &o.mailbox, "fell a whole overflow behind");
                }
            }
        }
    }

    /// Disconnects a slow consumer: its session closes with 1008, its subscriptions end now.
    fn cut_off(&self, conn: u64, mailbox: &Mailbox, why: &str) {
        if mailbox.kicked().is_cancelled() {
            return;
        }
        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = SLOW.admit() {
            tracing::warn!(
                why,
                wait_ms = self.settings.slow_subscriber.as_millis() as u64,
                suppressed,
                "subscriber not reading its notifications; disconnecting it as a slow consumer"
            );
        }
        mailbox.kicked().cancel();
        self.disconnect(conn);
    }

    /// Publishes from inside the node (a plugin's `publish`, a request's callback topic):
    /// every subscriber, this node's and other nodes', gets it; nothing waits.
    pub fn publish_detached(
        self: &Arc<Self>,
        raw: &str,
        fallback_id: &str,
    ) -> Result<(), PubsubError> {
        let routed = self.publish(raw, fallback_id, None, Instant::now())?;
        self.deliver(routed.others);
        Ok(())
    }
}

fn interest_key(text: &str, exact: bool) -> String {
    let prefix = if exact {
        EXACT_INTEREST_PREFIX
    } else {
        INTEREST_PREFIX
    };
    format!("{prefix}{text}")
}

/// Removes subscription `key` everywhere but `by_conn`; returns whether the set of patterns
/// held changed.
fn remove_sub(inner: &mut Inner, key: u64) -> bool {
    let Some(sub) = inner.subs.remove(&key) else {
        return false;
    };
    sub.ended.cancel();
    let mut changed = false;
    for (p, text, exact) in &sub.patterns {
        inner.trie.remove(p, &key);
        let k = interest_key(text, *exact);
        if let Some(count) = inner.interest.get_mut(&k) {
            *count -= 1;
            if *count == 0 {
                inner.interest.remove(&k);
                changed = true;
            }
        }
    }
    changed
}
