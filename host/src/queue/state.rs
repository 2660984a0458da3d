//! One queue's state machine: ordering, delays, visibility timeouts, acknowledgements, delivery
//! modes, deduplication and dead-lettering. Pure: every operation takes the time (Unix ms) and
//! returns the records to persist, so the rules are tested without a clock or a disk.
//!
//! A message is a *candidate* (in `order`) while it is visible and still owes deliveries: for
//! at-least-once that means nobody holds it; for broadcast, some listed consumer neither holds
//! nor acknowledged it; for quorum, holders plus acknowledgements are below the quorum.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How a queue orders ready messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Send order.
    #[default]
    Fifo,
    /// Highest `priority` first, send order among equals.
    Priority,
}

/// When a message is done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// One consumer at a time holds it; it is done when acknowledged, and visible again when
    /// the holder neither acks nor nacks within the visibility timeout.
    #[default]
    AtLeastOnce,
    /// Done when received: no acknowledgement, never redelivered.
    FireAndForget,
    /// Every listed consumer receives it and must acknowledge it.
    Broadcast {
        /// The consumers that must each acknowledge.
        consumers: Vec<String>,
    },
    /// Done once `quorum` different consumers acknowledged it.
    Quorum {
        /// Acknowledgements needed.
        quorum: u32,
    },
}

/// A queue's settings, fixed at creation. On the wire the mode is flat:
/// `{"mode": "quorum", "quorum": 2}`, `{"mode": "broadcast", "consumers": ["a", "b"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpecRepr", into = "SpecRepr")]
pub struct QueueSpec {
    /// Ready order.
    pub order: Order,
    /// Delivery mode.
    pub mode: Mode,
    /// How long a received message stays invisible to others before it is delivered again.
    pub visibility_timeout_ms: u64,
    /// Deliveries to one consumer (to anyone, for at-least-once) before the message moves to
    /// the dead-letter queue; 0: never.
    pub max_receives: u32,
    /// A send repeating a `dedup_id` seen within this window is not enqueued again.
    pub dedup_window_ms: u64,
    /// Messages held at most (sends beyond fail: backpressure, nothing dropped).
    pub max_messages: usize,
    /// Largest message body (JSON text bytes).
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum ModeName {
    #[default]
    AtLeastOnce,
    FireAndForget,
    Broadcast,
    Quorum,
}

/// The wire shape of [`QueueSpec`]: flat, every field optional, unknown fields refused.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SpecRepr {
    order: Order,
    mode: ModeName,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    consumers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum: Option<u32>,
    visibility_timeout_ms: u64,
    max_receives: u32,
    dedup_window_ms: u64,
    max_messages: usize,
    max_message_bytes: usize,
}

impl Default for SpecRepr {
    fn default() -> Self {
        QueueSpec::default().into()
    }
}

impl From<QueueSpec> for SpecRepr {
    fn from(s: QueueSpec) -> Self {
        let (mode, consumers, quorum) = match s.mode {
            Mode::AtLeastOnce => (ModeName::AtLeastOnce, Vec::new(), None),
            Mode::FireAndForget => (ModeName::FireAndForget, Vec::new(), None),
            Mode::Broadcast { consumers } => (ModeName::Broadcast, consumers, None),
            Mode::Quorum { quorum } => (ModeName::Quorum, Vec::new(), Some(quorum)),
        };
        SpecRepr {
            order: s.order,
            mode,
            consumers,
            quorum,
            visibility_timeout_ms: s.visibility_timeout_ms,
            max_receives: s.max_receives,
            dedup_window_ms: s.dedup_window_ms,
            max_messages: s.max_messages,
            max_message_bytes: s.max_message_bytes,
        }
    }
}

impl TryFrom<SpecRepr> for QueueSpec {
    type Error = String;
    fn try_from(r: SpecRepr) -> Result<Self, String> {
        let mode = match (r.mode, r.consumers.is_empty(), r.quorum) {
            (ModeName::Broadcast, _, None) => Mode::Broadcast {
                consumers: r.consumers,
            },
            (ModeName::Quorum, true, Some(quorum)) => Mode::Quorum { quorum },
            (ModeName::Quorum, true, None) => {
                return Err("mode 'quorum' needs `quorum` (acknowledgements needed)".into());
            }
            (ModeName::AtLeastOnce, true, None) => Mode::AtLeastOnce,
            (ModeName::FireAndForget, true, None) => Mode::FireAndForget,
            (m, _, _) => {
                return Err(format!(
                    "`consumers` goes with mode 'broadcast' and `quorum` with mode 'quorum', not with {m:?}"
                ));
            }
        };
        Ok(QueueSpec {
            order: r.order,
            mode,
            visibility_timeout_ms: r.visibility_timeout_ms,
            max_receives: r.max_receives,
            dedup_window_ms: r.dedup_window_ms,
            max_messages: r.max_messages,
            max_message_bytes: r.max_message_bytes,
        })
    }
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            order: Order::Fifo,
            mode: Mode::AtLeastOnce,
            visibility_timeout_ms: 30_000,
            max_receives: 5,
            dedup_window_ms: 300_000,
            max_messages: 100_000,
            max_message_bytes: 256 * 1024,
        }
    }
}

impl QueueSpec {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |m: String| Err(QueueError::Invalid(m));
        match &self.mode {
            Mode::Broadcast { consumers } if consumers.is_empty() => {
                return bad("a broadcast queue needs at least one consumer".into());
            }
            Mode::Broadcast { consumers } if consumers.iter().any(String::is_empty) => {
                return bad("broadcast consumer names must not be empty".into());
            }
            Mode::Quorum { quorum: 0 } => return bad("quorum must be at least 1".into()),
            _ => {}
        }
        if self.visibility_timeout_ms == 0 || self.visibility_timeout_ms > 12 * 3_600_000 {
            return bad("visibility_timeout_ms must be between 1 and 43200000 (12 h)".into());
        }
        if self.max_messages == 0 || self.max_messages > MAX_MESSAGES {
            return bad(format!("max_messages must be between 1 and {MAX_MESSAGES}"));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_MESSAGE_BYTES {
            return bad(format!(
                "max_message_bytes must be between 1 and {MAX_MESSAGE_BYTES} (16 MiB, the largest frame a node reads)"
            ));
        }
        if self.dedup_window_ms > 7 * 24 * 3_600_000 {
            return bad("dedup_window_ms must be at most 604800000 (7 days)".into());
        }
        Ok(())
    }

    fn needs_consumer(&self) -> bool {
        matches!(self.mode, Mode::Broadcast { .. } | Mode::Quorum { .. })
    }
}

/// The largest `max_messages` a queue may have.
pub const MAX_MESSAGES: usize = 10_000_000;
/// The largest `max_message_bytes` a queue may have: a node reads no larger frame.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What a queue keeps across restarts besides its messages: where its sequence stands and its
/// totals. Persisted with every change (see `QueueStore::apply`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// The next message's seq (so seqs are never reused, even after the queue empties).
    pub next_seq: u64,
    /// The totals (`sent`, `acked`, …); its sizes are not used: they are counted afresh.
    pub totals: Stats,
}

/// A message as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Position in send order; the storage key.
    pub seq: u64,
    /// The id clients see.
    pub id: String,
    /// JSON text.
    pub body: String,
    /// Higher first in priority queues.
    pub priority: i64,
    /// When sent, Unix ms.
    pub sent_ms: u64,
    /// Not delivered before this, Unix ms.
    pub visible_ms: u64,
    /// Sender's deduplication id.
    pub dedup_id: Option<String>,
    /// Deliveries per consumer (`""` for at-least-once: every consumer shares one count).
    pub attempts: BTreeMap<String, u32>,
    /// Consumers that acknowledged it (broadcast, quorum).
    pub acked_by: BTreeSet<String>,
    /// Set on a dead letter: why, and where it came from.
    pub dead: Option<DeadLetter>,
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The queue it failed in.
    pub source: String,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// A record change the caller must persist.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write (insert or replace) this message.
    Put(Stored),
    /// Delete message `seq`.
    Delete(u64),
    /// Delete message `seq` here and add it to the dead-letter queue.
    DeadLetter(Stored),
    /// Delete message `seq` here: it moves to another queue under the same id (redrive), so
    /// its body stays.
    MovedOut(u64),
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueError {
    /// Bad settings or arguments.
    #[error("{0}")]
    Invalid(String),
    /// The queue holds `max_messages`.
    #[error("queue is full ({0} messages); retry after consumers catch up")]
    Full(usize),
    /// A node-wide limit (the number of queues).
    #[error("{0}")]
    Limit(String),
    /// The body is larger than `max_message_bytes`.
    #[error("message of {size} bytes exceeds this queue's limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No such receipt (never issued, already acked, or its visibility timeout passed).
    #[error(
        "receipt '{0}' is not held (unknown, already acknowledged, or its visibility timeout passed)"
    )]
    Receipt(String),
}

/// One message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Message id.
    pub message_id: String,
    /// Pass to `ack` / `nack`; valid until the visibility timeout passes.
    pub receipt: String,
    /// The body (JSON).
    pub body: serde_json::Value,
    /// 1 on the first delivery to this consumer.
    pub attempt: u32,
    /// Priority it was sent with.
    pub priority: i64,
    /// When sent, Unix ms.
    pub sent_ms: u64,
    /// Present on dead letters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

/// What a send did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sent {
    /// The message's id (the original one for a duplicate).
    pub message_id: String,
    /// The dedup id was seen within the window: nothing new was enqueued.
    pub duplicate: bool,
}

/// What to send.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendOptions {
    /// Priority (priority queues).
    pub priority: i64,
    /// Invisible for this long after sending.
    pub delay_ms: u64,
    /// Deduplication id.
    pub dedup_id: Option<String>,
}

/// Counters and sizes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages held (any state).
    pub messages: usize,
    /// Ready to receive now.
    pub visible: usize,
    /// Sent with a delay that has not passed.
    pub delayed: usize,
    /// Received and not acknowledged yet.
    pub in_flight: usize,
    /// Totals since the queue was created (kept across restarts).
    pub sent: u64,
    /// Deliveries made.
    pub delivered: u64,
    /// Acknowledgements.
    pub acked: u64,
    /// Negative acknowledgements.
    pub nacked: u64,
    /// Visibility timeouts that passed.
    pub expired: u64,
    /// Moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Sends recognised as duplicates.
    pub duplicates: u64,
    /// Milliseconds from delivery to acknowledgement, summed over the acks (with `acked`, the
    /// mean ack latency).
    #[serde(default)]
    pub ack_ms_total: u64,
}

struct Holder {
    consumer: String,
    deadline: u64,
    /// When it was delivered (ms).
    delivered: u64,
}

struct Msg {
    stored: Stored,
    /// Receipt nonce → holder.
    holders: HashMap<u64, Holder>,
}

/// One queue.
pub struct QueueState {
    name: String,
    spec: QueueSpec,
    msgs: HashMap<u64, Msg>,
    /// Candidates: (ordering key, seq).
    order: BTreeSet<(i64, u64)>,
    delayed: BTreeSet<(u64, u64)>,
    /// (deadline, nonce).
    deadlines: BTreeSet<(u64, u64)>,
    /// nonce → seq.
    receipts: HashMap<u64, u64>,
    dedup: HashMap<String, (String, u64)>,
    dedup_order: VecDeque<(u64, String)>,
    next_seq: u64,
    next_nonce: u64,
    stats: Stats,
    /// Whether bodies stay in memory. A node's queues keep them only on disk (the store reads
    /// them back per delivery); the pure rules' own tests keep them here.
    bodies_in_memory: bool,
}

/// A message's body as JSON; `null` when it is not held in memory (the caller fills it).
fn body_of(m: &Stored) -> serde_json::Value {
    if m.body.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&m.body).unwrap_or(serde_json::Value::Null)
}

fn key_of(order: Order, m: &Stored) -> (i64, u64) {
    match order {
        Order::Fifo => (0, m.seq),
        Order::Priority => (m.priority.saturating_neg(), m.seq),
    }
}

impl QueueState {
    /// An empty queue.
    pub fn new(name: &str, spec: QueueSpec) -> Self {
        QueueState {
            name: name.to_owned(),
            spec,
            msgs: HashMap::new(),
            order: BTreeSet::new(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            receipts: HashMap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            next_seq: 1,
            next_nonce: 1,
            stats: Stats::default(),
            bodies_in_memory: true,
        }
    }

    /// From now on, bodies are not kept in memory: a message's `Stored::body` is empty here,
    /// and deliveries and peeks carry `null` for the caller to fill from the store.
    pub fn without_bodies(mut self) -> Self {
        self.bodies_in_memory = false;
        self
    }

    /// Its settings.
    pub fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Holds nothing.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Puts back a persisted message (at start-up): nothing is in flight after a restart.
    pub fn restore(&mut self, m: Stored, now: u64) {
        self.next_seq = self.next_seq.max(m.seq + 1);
        if let Some(d) = &m.dedup_id {
            self.remember(d.clone(), m.id.clone(), m.sent_ms);
        }
        self.insert(m, now);
    }

    /// Files a message nobody holds.
    fn insert(&mut self, mut m: Stored, now: u64) {
        if !self.bodies_in_memory {
            m.body = String::new();
        }
        let seq = m.seq;
        self.msgs.insert(
            seq,
            Msg {
                stored: m,
                holders: HashMap::new(),
            },
        );
        self.place(seq, now);
    }

    fn remember(&mut self, dedup: String, id: String, at: u64) {
        self.dedup_order.push_back((at, dedup.clone()));
        self.dedup.insert(dedup, (id, at));
    }

    /// Whether `m` still owes a delivery to someone.
    fn wants_more(&self, m: &Msg) -> bool {
        let taken = m.holders.len() + m.stored.acked_by.len();
        match &self.spec.mode {
            Mode::AtLeastOnce | Mode::FireAndForget => m.holders.is_empty(),
            Mode::Broadcast { consumers } => taken < consumers.len(),
            Mode::Quorum { quorum } => taken < *quorum as usize,
        }
    }

    /// Files message `seq` as delayed, candidate or neither, from its current state.
    fn place(&mut self, seq: u64, now: u64) {
        let Some(m) = self.msgs.get(&seq) else {
            return;
        };
        let key = key_of(self.spec.order, &m.stored);
        let visible = m.stored.visible_ms;
        let wants = self.wants_more(m);
        self.order.remove(&key);
        self.delayed.remove(&(visible, seq));
        if !wants {
            return;
        }
        if visible > now {
            self.delayed.insert((visible, seq));
        } else {
            self.order.insert(key);
        }
    }

    /// Moves due delayed messages to the candidates and takes back expired deliveries.
    pub fn tick(&mut self, now: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(&(at, seq)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            self.place(seq, now);
        }
        while let Some(&(deadline, nonce)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.stats.expired += 1;
            if let Some(c) = self.release(nonce, now, 0, "visibility timeout passed") {
                changes.push(c);
            }
        }
        while let Some((at, _)) = self.dedup_order.front() {
            if now.saturating_sub(*at) <= self.spec.dedup_window_ms {
                break;
            }
            if let Some((at, d)) = self.dedup_order.pop_front()
                && self.dedup.get(&d).is_some_and(|(_, t)| *t == at)
            {
                self.dedup.remove(&d);
            }
        }
        changes
    }

    /// Enqueues a message with body `body` (JSON text).
    pub fn send(
        &mut self,
        body: String,
        opts: &SendOptions,
        now: u64,
    ) -> Result<(Sent, Option<Change>), QueueError> {
        if body.len() > self.spec.max_message_bytes {
            return Err(QueueError::TooLarge {
                size: body.len(),
                limit: self.spec.max_message_bytes,
            });
        }
        self.tick(now);
        if let Some(d) = &opts.dedup_id
            && let Some((id, _)) = self.dedup.get(d)
        {
            self.stats.duplicates += 1;
            let sent = Sent {
                message_id: id.clone(),
                duplicate: true,
            };
            return Ok((sent, None));
        }
        if self.msgs.len() >= self.spec.max_messages {
            return Err(QueueError::Full(self.msgs.len()));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("{}-{seq}", self.name);
        let stored = Stored {
            seq,
            id: id.clone(),
            body,
            priority: opts.priority,
            sent_ms: now,
            visible_ms: now.saturating_add(opts.delay_ms),
            dedup_id: opts.dedup_id.clone(),
            attempts: BTreeMap::new(),
            acked_by: BTreeSet::new(),
            dead: None,
        };
        if let Some(d) = &opts.dedup_id {
            self.remember(d.clone(), id.clone(), now);
        }
        self.stats.sent += 1;
        let change = Change::Put(stored.clone());
        self.insert(stored, now);
        Ok((
            Sent {
                message_id: id,
                duplicate: false,
            },
            Some(change),
        ))
    }

    /// Hands up to `max` messages to `consumer`, each invisible to others for `visibility_ms`
    /// (the queue's timeout when `None`).
    pub fn receive(
        &mut self,
        consumer: &str,
        max: usize,
        visibility_ms: Option<u64>,
        now: u64,
    ) -> Result<(Vec<Delivery>, Vec<Change>), QueueError> {
        self.receive_held(consumer, max, usize::MAX, visibility_ms, now)
    }

    /// Deliveries `consumer` holds now.
    pub fn held_by(&self, consumer: &str) -> usize {
        self.receipts_of(consumer).count()
    }

    /// Nonces of the deliveries `consumer` holds.
    fn receipts_of<'a>(&'a self, consumer: &'a str) -> impl Iterator<Item = u64> + 'a {
        self.receipts
            .iter()
            .filter(move |(n, seq)| {
                self.msgs
                    .get(seq)
                    .and_then(|m| m.holders.get(n))
                    .is_some_and(|h| h.consumer == consumer)
            })
            .map(|(n, _)| *n)
    }

    /// Like [`receive`](Self::receive), but `consumer` ends up holding at most `max_held`
    /// deliveries: how a push consumer's credit is kept.
    pub fn receive_held(
        &mut self,
        consumer: &str,
        max: usize,
        max_held: usize,
        visibility_ms: Option<u64>,
        now: u64,
    ) -> Result<(Vec<Delivery>, Vec<Change>), QueueError> {
        let max = if max_held == usize::MAX {
            max
        } else {
            max.min(max_held.saturating_sub(self.held_by(consumer)))
        };
        let mut changes = self.tick(now);
        if self.spec.needs_consumer() && consumer.is_empty() {
            return Err(QueueError::Invalid(
                "this queue's mode needs a `consumer` name on receive".into(),
            ));
        }
        if let Mode::Broadcast { consumers } = &self.spec.mode
            && !consumers.iter().any(|c| c == consumer)
        {
            return Err(QueueError::Invalid(format!(
                "'{consumer}' is not one of this broadcast queue's consumers ({})",
                consumers.join(", ")
            )));
        }
        let shared = matches!(self.spec.mode, Mode::AtLeastOnce | Mode::FireAndForget);
        let who = if shared { "" } else { consumer };
        let visibility = visibility_ms
            .unwrap_or(self.spec.visibility_timeout_ms)
            .max(1);
        let mut picked = Vec::new();
        for &(_, seq) in &self.order {
            if picked.len() >= max {
                break;
            }
            let Some(m) = self.msgs.get(&seq) else {
                continue;
            };
            let mine = m.stored.acked_by.contains(who)
                || m.holders
                    .values()
                    .any(|h| h.consumer == consumer && !shared);
            if !mine {
                picked.push(seq);
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        for seq in picked {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            let fire = matches!(self.spec.mode, Mode::FireAndForget);
            let Some(m) = self.msgs.get_mut(&seq) else {
                continue;
            };
            let attempt = {
                let a = m.stored.attempts.entry(who.to_owned()).or_insert(0);
                *a += 1;
                *a
            };
            out.push(Delivery {
                message_id: m.stored.id.clone(),
                receipt: format!("{seq}.{nonce}"),
                body: body_of(&m.stored),
                attempt,
                priority: m.stored.priority,
                sent_ms: m.stored.sent_ms,
                dead_letter: m.stored.dead.clone(),
            });
            self.stats.delivered += 1;
            if fire {
                let key = key_of(self.spec.order, &m.stored);
                self.order.remove(&key);
                self.msgs.remove(&seq);
                changes.push(Change::Delete(seq));
                continue;
            }
            let deadline = now.saturating_add(visibility);
            m.holders.insert(
                nonce,
                Holder {
                    consumer: consumer.to_owned(),
                    deadline,
                    delivered: now,
                },
            );
            changes.push(Change::Put(m.stored.clone()));
            self.deadlines.insert((deadline, nonce));
            self.receipts.insert(nonce, seq);
            self.place(seq, now);
        }
        Ok((out, changes))
    }

    fn parse_receipt(&self, receipt: &str) -> Result<(u64, u64), QueueError> {
        let bad = || QueueError::Receipt(receipt.to_owned());
        let (seq, nonce) = receipt.split_once('.').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let nonce: u64 = nonce.parse().map_err(|_| bad())?;
        if self.receipts.get(&nonce) != Some(&seq) {
            return Err(bad());
        }
        Ok((seq, nonce))
    }

    /// Acknowledges a delivery: the message is done once its mode is satisfied.
    pub fn ack(&mut self, receipt: &str, now: u64) -> Result<Change, QueueError> {
        self.tick(now);
        let (seq, nonce) = self.parse_receipt(receipt)?;
        self.receipts.remove(&nonce);
        let Some(m) = self.msgs.get_mut(&seq) else {
            return Err(QueueError::Receipt(receipt.to_owned()));
        };
        let Some(h) = m.holders.remove(&nonce) else {
            return Err(QueueError::Receipt(receipt.to_owned()));
        };
        self.deadlines.remove(&(h.deadline, nonce));
        self.stats.acked += 1;
        self.stats.ack_ms_total += now.saturating_sub(h.delivered);
        m.stored.acked_by.insert(h.consumer);
        let done = match &self.spec.mode {
            Mode::AtLeastOnce | Mode::FireAndForget => true,
            Mode::Broadcast { consumers } => {
                consumers.iter().all(|c| m.stored.acked_by.contains(c))
            }
            Mode::Quorum { quorum } => m.stored.acked_by.len() >= *quorum as usize,
        };
        if done {
            let key = key_of(self.spec.order, &m.stored);
            let visible = m.stored.visible_ms;
            // Other holders of a completed quorum message: their receipts lapse.
            for n in m.holders.keys() {
                self.receipts.remove(n);
            }
            for (n, h) in &m.holders {
                self.deadlines.remove(&(h.deadline, *n));
            }
            self.order.remove(&key);
            self.delayed.remove(&(visible, seq));
            self.msgs.remove(&seq);
            return Ok(Change::Delete(seq));
        }
        let stored = m.stored.clone();
        self.place(seq, now);
        Ok(Change::Put(stored))
    }

    /// Gives a delivery back: visible again after `delay_ms`, or dead-lettered when it was
    /// delivered `max_receives` times.
    pub fn nack(&mut self, receipt: &str, delay_ms: u64, now: u64) -> Result<Change, QueueError> {
        self.tick(now);
        let (_, nonce) = self.parse_receipt(receipt)?;
        self.stats.nacked += 1;
        self.release(nonce, now, delay_ms, "negatively acknowledged")
            .ok_or_else(|| QueueError::Receipt(receipt.to_owned()))
    }

    /// Ends delivery `nonce` without an ack.
    fn release(&mut self, nonce: u64, now: u64, delay_ms: u64, why: &str) -> Option<Change> {
        let seq = self.receipts.remove(&nonce)?;
        let shared = matches!(self.spec.mode, Mode::AtLeastOnce | Mode::FireAndForget);
        let max = self.spec.max_receives;
        let m = self.msgs.get_mut(&seq)?;
        let h = m.holders.remove(&nonce)?;
        self.deadlines.remove(&(h.deadline, nonce));
        let who = if shared { "" } else { h.consumer.as_str() };
        let attempts = m.stored.attempts.get(who).copied().unwrap_or(0);
        if max > 0 && attempts >= max {
            let mut dead = m.stored.clone();
            dead.dead = Some(DeadLetter {
                source: self.name.clone(),
                reason: format!("{why} after {attempts} deliveries (max_receives {max})"),
                at_ms: now,
            });
            for n in m.holders.keys() {
                self.receipts.remove(n);
            }
            for (n, h) in &m.holders {
                self.deadlines.remove(&(h.deadline, *n));
            }
            let key = key_of(self.spec.order, &m.stored);
            self.order.remove(&key);
            self.msgs.remove(&seq);
            self.stats.dead_lettered += 1;
            return Some(Change::DeadLetter(dead));
        }
        m.stored.visible_ms = m.stored.visible_ms.max(now.saturating_add(delay_ms));
        let stored = m.stored.clone();
        self.place(seq, now);
        Some(Change::Put(stored))
    }

    /// Gives back every delivery `consumer` holds (its connection went away), as nacks.
    pub fn release_consumer(&mut self, consumer: &str, now: u64) -> (usize, Vec<Change>) {
        let nonces: Vec<u64> = self.receipts_of(consumer).collect();
        let changes: Vec<Change> = nonces
            .iter()
            .filter_map(|n| self.release(*n, now, 0, "released by its consumer"))
            .collect();
        (nonces.len(), changes)
    }

    /// Deletes every message; returns how many.
    pub fn purge(&mut self) -> (usize, Vec<Change>) {
        let changes: Vec<Change> = self.msgs.keys().map(|s| Change::Delete(*s)).collect();
        let n = self.msgs.len();
        self.msgs.clear();
        self.order.clear();
        self.delayed.clear();
        self.deadlines.clear();
        self.receipts.clear();
        (n, changes)
    }

    /// Up to `max` messages in delivery order, without receiving them.
    pub fn peek(&self, max: usize) -> Vec<Delivery> {
        let mut seqs: Vec<(i64, u64)> = self
            .msgs
            .values()
            .map(|m| key_of(self.spec.order, &m.stored))
            .collect();
        seqs.sort_unstable();
        seqs.into_iter()
            .take(max)
            .filter_map(|(_, s)| self.msgs.get(&s))
            .map(|m| Delivery {
                message_id: m.stored.id.clone(),
                receipt: String::new(),
                body: body_of(&m.stored),
                attempt: m.stored.attempts.values().copied().max().unwrap_or(0),
                priority: m.stored.priority,
                sent_ms: m.stored.sent_ms,
                dead_letter: m.stored.dead.clone(),
            })
            .collect()
    }

    /// Takes up to `max` messages out (for redrive), oldest first.
    pub fn take(&mut self, max: usize) -> Vec<Stored> {
        let mut seqs: Vec<u64> = self.msgs.keys().copied().collect();
        seqs.sort_unstable();
        let mut out = Vec::new();
        for seq in seqs.into_iter().take(max) {
            if let Some(m) = self.msgs.remove(&seq) {
                let key = key_of(self.spec.order, &m.stored);
                self.order.remove(&key);
                self.delayed.remove(&(m.stored.visible_ms, seq));
                for (n, h) in &m.holders {
                    self.receipts.remove(n);
                    self.deadlines.remove(&(h.deadline, *n));
                }
                out.push(m.stored);
            }
        }
        out
    }

    /// Adds a message taken from elsewhere (a dead letter, a redriven one) under a new seq.
    pub fn adopt(&mut self, mut m: Stored, now: u64) -> Result<Change, QueueError> {
        if self.msgs.len() >= self.spec.max_messages {
            return Err(QueueError::Full(self.msgs.len()));
        }
        m.seq = self.next_seq;
        self.next_seq += 1;
        let change = Change::Put(m.clone());
        self.insert(m, now);
        Ok(change)
    }

    /// The earliest time something changes by itself (a delay or a visibility timeout ends).
    pub fn next_event(&self) -> Option<u64> {
        let d = self.delayed.first().map(|(t, _)| *t);
        let v = self.deadlines.first().map(|(t, _)| *t);
        match (d, v) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Its sequence position and totals, to persist.
    pub fn counters(&self) -> Counters {
        Counters {
            next_seq: self.next_seq,
            totals: self.stats.clone(),
        }
    }

    /// Takes back persisted counters (at start-up, before or after its messages).
    pub fn restore_counters(&mut self, c: &Counters) {
        self.next_seq = self.next_seq.max(c.next_seq);
        self.stats = c.totals.clone();
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> Stats {
        Stats {
            messages: self.msgs.len(),
            visible: self.order.len(),
            delayed: self.delayed.len(),
            in_flight: self.receipts.len(),
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(spec: QueueSpec) -> QueueState {
        QueueState::new("q", spec)
    }

    fn send(q: &mut QueueState, body: &str, opts: SendOptions, now: u64) -> String {
        q.send(body.into(), &opts, now).expect("send").0.message_id
    }

    fn bodies(d: &[Delivery]) -> Vec<String> {
        d.iter().map(|d| d.body.to_string()).collect()
    }

    fn recv(q: &mut QueueState, who: &str, max: usize, now: u64) -> Vec<Delivery> {
        q.receive(who, max, None, now).expect("receive").0
    }

    #[test]
    fn fifo_and_priority_order() {
        let mut f = q(QueueSpec::default());
        for (b, p) in [("1", 0), ("2", 9), ("3", 5)] {
            send(
                &mut f,
                b,
                SendOptions {
                    priority: p,
                    ..Default::default()
                },
                0,
            );
        }
        assert_eq!(bodies(&recv(&mut f, "", 10, 0)), ["1", "2", "3"]);
        let mut p = q(QueueSpec {
            order: Order::Priority,
            ..Default::default()
        });
        for (b, pr) in [("1", 0), ("2", 9), ("3", 5), ("4", 9)] {
            send(
                &mut p,
                b,
                SendOptions {
                    priority: pr,
                    ..Default::default()
                },
                0,
            );
        }
        assert_eq!(bodies(&recv(&mut p, "", 10, 0)), ["2", "4", "3", "1"]);
    }

    #[test]
    fn acks_add_up_their_latency_from_delivery() {
        let mut s = q(QueueSpec::default());
        send(&mut s, "1", SendOptions::default(), 0);
        send(&mut s, "2", SendOptions::default(), 0);
        let d = recv(&mut s, "a", 2, 1_000);
        s.ack(&d[0].receipt, 1_250).expect("ack");
        s.ack(&d[1].receipt, 1_050).expect("ack");
        assert_eq!((s.stats().acked, s.stats().ack_ms_total), (2, 300));
    }

    #[test]
    fn delayed_messages_appear_when_due() {
        let mut s = q(QueueSpec::default());
        send(
            &mut s,
            "\"late\"",
            SendOptions {
                delay_ms: 1000,
                ..Default::default()
            },
            0,
        );
        send(&mut s, "\"now\"", SendOptions::default(), 0);
        assert_eq!(bodies(&recv(&mut s, "", 10, 10)), ["\"now\""]);
        assert_eq!(s.stats().delayed, 1);
        assert_eq!(s.next_event(), Some(1000));
        assert!(recv(&mut s, "", 10, 999).is_empty());
        assert_eq!(bodies(&recv(&mut s, "", 10, 1000)), ["\"late\""]);
    }

    #[test]
    fn unacked_messages_come_back_after_the_visibility_timeout_and_stale_receipts_fail() {
        let mut s = q(QueueSpec {
            visibility_timeout_ms: 100,
            ..Default::default()
        });
        send(&mut s, "1", SendOptions::default(), 0);
        let first = recv(&mut s, "a", 1, 0);
        assert_eq!(first[0].attempt, 1);
        // Invisible to others while held.
        assert!(recv(&mut s, "b", 1, 50).is_empty());
        let again = recv(&mut s, "b", 1, 100);
        assert_eq!(again[0].attempt, 2);
        assert_eq!(s.stats().expired, 1);
        // The first receipt lapsed with its timeout.
        assert!(matches!(
            s.ack(&first[0].receipt, 110),
            Err(QueueError::Receipt(_))
        ));
        assert!(matches!(s.ack("garbage", 110), Err(QueueError::Receipt(_))));
        assert_eq!(s.ack(&again[0].receipt, 110), Ok(Change::Delete(1)));
        assert!(s.is_empty());
        assert!(recv(&mut s, "a", 1, 10_000).is_empty());
    }

    #[test]
    fn max_receives_moves_a_message_to_the_dead_letters() {
        let mut s = q(QueueSpec {
            max_receives: 2,
            visibility_timeout_ms: 10,
            ..Default::default()
        });
        send(&mut s, "1", SendOptions::default(), 0);
        let d = recv(&mut s, "", 1, 0);
        assert!(matches!(s.nack(&d[0].receipt, 0, 1), Ok(Change::Put(_))));
        let d = recv(&mut s, "", 1, 2);
        assert_eq!(d[0].attempt, 2);
        // The second failure is the last: by timeout this time.
        let changes = s.tick(20);
        let [Change::DeadLetter(dead)] = changes.as_slice() else {
            panic!("expected a dead letter, got {changes:?}")
        };
        let why = dead.dead.as_ref().expect("reason");
        assert_eq!(why.source, "q");
        assert!(why.reason.contains("visibility timeout") && why.reason.contains("2 deliveries"));
        assert!(s.is_empty());
        assert_eq!(s.stats().dead_lettered, 1);
    }

    #[test]
    fn credit_limits_what_one_consumer_holds_and_release_gives_it_back() {
        let mut s = q(QueueSpec::default());
        for i in 0..5 {
            send(&mut s, &i.to_string(), SendOptions::default(), 0);
        }
        let (a, _) = s.receive_held("push", 10, 2, None, 0).expect("receive");
        assert_eq!(a.len(), 2);
        let (b, _) = s.receive_held("push", 10, 2, None, 0).expect("receive");
        assert!(b.is_empty(), "no credit left");
        s.ack(&a[0].receipt, 1).expect("ack");
        let (c, _) = s.receive_held("push", 10, 2, None, 1).expect("receive");
        assert_eq!(bodies(&c), ["2"]);
        assert_eq!(s.held_by("push"), 2);
        let (n, changes) = s.release_consumer("push", 2);
        assert_eq!((n, changes.len()), (2, 2));
        assert_eq!(s.held_by("push"), 0);
        // Released deliveries are first in line again.
        assert_eq!(bodies(&recv(&mut s, "other", 1, 3)), ["1"]);
    }

    #[test]
    fn a_nack_with_delay_hides_the_message_for_that_long() {
        let mut s = q(QueueSpec::default());
        send(&mut s, "1", SendOptions::default(), 0);
        let d = recv(&mut s, "", 1, 0);
        s.nack(&d[0].receipt, 500, 10).expect("nack");
        assert!(recv(&mut s, "", 1, 100).is_empty());
        assert_eq!(recv(&mut s, "", 1, 510).len(), 1);
    }

    #[test]
    fn dedup_within_the_window_only() {
        let mut s = q(QueueSpec {
            dedup_window_ms: 1000,
            ..Default::default()
        });
        let d = || SendOptions {
            dedup_id: Some("k".into()),
            ..Default::default()
        };
        let (a, ch) = s.send("1".into(), &d(), 0).expect("send");
        assert!(!a.duplicate && ch.is_some());
        let (b, ch) = s.send("2".into(), &d(), 500).expect("send");
        assert!(b.duplicate && ch.is_none());
        assert_eq!(b.message_id, a.message_id);
        assert_eq!(s.len(), 1);
        let (c, _) = s.send("3".into(), &d(), 1600).expect("send");
        assert!(!c.duplicate);
        assert_eq!(s.len(), 2);
        assert_eq!(s.stats().duplicates, 1);
    }

    #[test]
    fn fire_and_forget_is_done_on_receive() {
        let mut s = q(QueueSpec {
            mode: Mode::FireAndForget,
            ..Default::default()
        });
        send(&mut s, "1", SendOptions::default(), 0);
        let (d, changes) = s.receive("", 5, None, 0).expect("receive");
        assert_eq!(d.len(), 1);
        assert_eq!(changes, vec![Change::Delete(1)]);
        assert!(s.is_empty());
    }

    #[test]
    fn broadcast_completes_when_every_consumer_acked() {
        let mode = Mode::Broadcast {
            consumers: vec!["a".into(), "b".into()],
        };
        let mut s = q(QueueSpec {
            mode,
            ..Default::default()
        });
        send(&mut s, "1", SendOptions::default(), 0);
        assert!(matches!(
            s.receive("", 1, None, 0),
            Err(QueueError::Invalid(_))
        ));
        assert!(matches!(
            s.receive("z", 1, None, 0),
            Err(QueueError::Invalid(_))
        ));
        let a = recv(&mut s, "a", 5, 0);
        assert_eq!(a.len(), 1);
        // Each consumer gets it once while holding it.
        assert!(recv(&mut s, "a", 5, 1).is_empty());
        assert!(matches!(s.ack(&a[0].receipt, 2), Ok(Change::Put(_))));
        assert!(recv(&mut s, "a", 5, 3).is_empty(), "a already acked");
        let b = recv(&mut s, "b", 5, 3);
        assert_eq!(b.len(), 1);
        assert_eq!(s.ack(&b[0].receipt, 4), Ok(Change::Delete(1)));
        assert!(s.is_empty());
    }

    #[test]
    fn quorum_completes_at_n_distinct_acks() {
        let mut s = q(QueueSpec {
            mode: Mode::Quorum { quorum: 2 },
            ..Default::default()
        });
        send(&mut s, "1", SendOptions::default(), 0);
        let a = recv(&mut s, "a", 1, 0);
        let b = recv(&mut s, "b", 1, 0);
        // Two holders already cover the quorum: a third consumer is not offered it.
        assert!(recv(&mut s, "c", 1, 0).is_empty());
        assert!(matches!(s.ack(&a[0].receipt, 1), Ok(Change::Put(_))));
        assert_eq!(s.ack(&b[0].receipt, 2), Ok(Change::Delete(1)));
        assert!(s.is_empty());
    }

    #[test]
    fn specs_read_flat_and_refuse_typos_and_mismatched_fields() {
        let s: QueueSpec =
            serde_json::from_str(r#"{"mode":"quorum","quorum":2,"order":"priority"}"#)
                .expect("spec");
        assert_eq!(s.mode, Mode::Quorum { quorum: 2 });
        assert_eq!(s.order, Order::Priority);
        assert_eq!(s.visibility_timeout_ms, 30_000);
        let b: QueueSpec =
            serde_json::from_str(r#"{"mode":"broadcast","consumers":["a"]}"#).expect("spec");
        assert_eq!(
            serde_json::from_str::<QueueSpec>(&serde_json::to_string(&b).expect("json"))
                .expect("again"),
            b
        );
        assert_eq!(
            serde_json::from_str::<QueueSpec>("{}").expect("default"),
            QueueSpec::default()
        );
        for bad in [
            r#"{"visiblity_timeout_ms":1}"#,
            r#"{"mode":"quorum"}"#,
            r#"{"quorum":2}"#,
            r#"{"mode":"x"}"#,
        ] {
            assert!(serde_json::from_str::<QueueSpec>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_clear_errors() {
        let mut s = q(QueueSpec {
            max_messages: 1,
            max_message_bytes: 4,
            ..Default::default()
        });
        assert!(matches!(
            s.send("12345".into(), &SendOptions::default(), 0),
            Err(QueueError::TooLarge { size: 5, limit: 4 })
        ));
        send(&mut s, "1", SendOptions::default(), 0);
        assert!(matches!(
            s.send("2".into(), &SendOptions::default(), 0),
            Err(QueueError::Full(1))
        ));
        assert!(
            QueueSpec {
                mode: Mode::Quorum { quorum: 0 },
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            QueueSpec {
                mode: Mode::Broadcast { consumers: vec![] },
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            QueueSpec {
                visibility_timeout_ms: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn restored_messages_are_all_visible_again_and_keep_their_delay() {
        let mut s = q(QueueSpec::default());
        send(&mut s, "1", SendOptions::default(), 0);
        send(
            &mut s,
            "2",
            SendOptions {
                delay_ms: 100,
                ..Default::default()
            },
            0,
        );
        let (_, changes) = s.receive("", 1, None, 0).expect("receive");
        let Some(Change::Put(held)) = changes.into_iter().next() else {
            panic!("put")
        };
        let mut r = q(QueueSpec::default());
        r.restore(held, 5);
        assert_eq!(r.stats().visible, 1);
        let d = recv(&mut r, "", 1, 5);
        assert_eq!(d[0].attempt, 2, "attempts survive a restart");
        // New sends continue after the restored seq.
        let id = send(&mut r, "3", SendOptions::default(), 6);
        assert_eq!(id, "q-2");
    }
}
