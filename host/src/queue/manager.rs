//! The node's queues: each queue's state behind its own lock, persisted through the store,
//! with long-polling receives and dead-letter queues (`<name>.dlq`) kept next to their source.
//!
//! Ordering of effects: a change is applied to memory, written to sled, and — for sends, acks,
//! nacks, purges and redrives — flushed before the caller gets its answer. Receives are not
//! flushed (their only durable effect is the delivery count), so a crash can at worst make a
//! message look delivered one time fewer; it can never lose a message or resurrect an acked one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;

use super::state::{
    Change, Delivery, Mode, QueueError, QueueSpec, QueueState, SendOptions, Sent, Stats,
};
use super::store::{QueueStore, StoreError};

/// Suffix of a queue's dead-letter queue.
pub const DLQ_SUFFIX: &str = ".dlq";
/// Longest queue name.
pub const MAX_NAME: usize = 200;
/// Queues labelled by name in the metrics; more are only summed.
pub const LABELLED_QUEUES: usize = 200;
/// Longest a receive may wait for a message.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The queue does not exist here.
    #[error("no queue '{0}'")]
    Unknown(String),
    /// Refused by the queue.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Storage failed: the operation did not take effect durably.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Unix time in ms, or a test's clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::clock::unix_millis)
}

struct Entry {
    state: Mutex<QueueState>,
    /// Woken when a message may have become available.
    ready: Notify,
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Operations leave the state consistent before anything that could panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One queue in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct QueueInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub spec: QueueSpec,
    /// Counters.
    pub stats: Stats,
}

/// What a nack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NackOutcome {
    /// Visible again (after the delay).
    Requeued,
    /// Moved to the dead-letter queue.
    DeadLettered,
}

/// The node's queues.
pub struct QueueManager {
    store: QueueStore,
    queues: Mutex<HashMap<String, Arc<Entry>>>,
    clock: Clock,
    changed: Notify,
    /// Queues (dead-letter queues included) that may exist at once.
    max_queues: usize,
}

fn check_name(name: &str) -> Result<(), QueueError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!(
            "invalid queue name '{name}': 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

impl QueueManager {
    /// Opens the store and restores every queue; at most `max_queues` may exist.
    pub fn open(store: QueueStore, clock: Clock, max_queues: usize) -> Result<Self, ManagerError> {
        let now = clock();
        let mut queues = HashMap::new();
        for loaded in store.load()? {
            let mut state = QueueState::new(&loaded.name, loaded.spec).without_bodies();
            state.restore_counters(&loaded.counters);
            for m in loaded.messages {
                state.restore(m, now);
            }
            queues.insert(
                loaded.name,
                Arc::new(Entry {
                    state: Mutex::new(state),
                    ready: Notify::new(),
                }),
            );
        }
        Ok(QueueManager {
            store,
            queues: Mutex::new(queues),
            clock,
            changed: Notify::new(),
            max_queues,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ManagerError> {
        self.map()
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::Unknown(name.to_owned()))
    }

    /// Whether queue `name` lives on this node.
    pub fn has(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }

    /// Names of the queues on this node.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map().keys().cloned().collect();
        v.sort();
        v
    }

    /// Wakes when a queue is created or deleted (for gossip).
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Whether sends survive a crash here.
    pub fn durable(&self) -> bool {
        self.store.durable()
    }

    /// Creates a queue (and its dead-letter queue when `max_receives` > 0). Creating one that
    /// exists with the same settings is not an error (`false`); with other settings it is.
    pub async fn create(&self, name: &str, spec: QueueSpec) -> Result<bool, ManagerError> {
        check_name(name)?;
        spec.validate()?;
        let mut names = vec![(name.to_owned(), spec.clone())];
        if spec.max_receives > 0 && !name.ends_with(DLQ_SUFFIX) {
            let dlq = QueueSpec {
                mode: Mode::AtLeastOnce,
                max_receives: 0,
                ..spec.clone()
            };
            names.push((format!("{name}{DLQ_SUFFIX}"), dlq));
        }
        let mut created = false;
        {
            let mut map = self.map();
            if let Some(e) = map.get(name) {
                let existing = e.lock().spec().clone();
                if existing != spec {
                    return Err(QueueError::Invalid(format!(
                        "queue '{name}' exists with other settings: {}",
                        serde_json::to_string(&existing).unwrap_or_default()
                    ))
                    .into());
                }
            }
            let new = names.iter().filter(|(n, _)| !map.contains_key(n)).count();
            if new > 0 && map.len() + new > self.max_queues {
                return Err(QueueError::Limit(format!(
                    "this node holds {} queues, its limit (queues.max_queues) is {}",
                    map.len(),
                    self.max_queues
                ))
                .into());
            }
            for (n, s) in names {
                if map.contains_key(&n) {
                    continue;
                }
                self.store.create(&n, &s)?;
                map.insert(
                    n.clone(),
                    Arc::new(Entry {
                        state: Mutex::new(QueueState::new(&n, s).without_bodies()),
                        ready: Notify::new(),
                    }),
                );
                created |= n == name;
            }
        }
        self.store.sync().await?;
        if created {
            self.changed.notify_one();
        }
        Ok(created)
    }

    /// Deletes a queue, its messages and its dead-letter queue.
    pub async fn delete(&self, name: &str) -> Result<bool, ManagerError> {
        let removed = {
            let mut map = self.map();
            let mut removed = false;
            for n in [name.to_owned(), format!("{name}{DLQ_SUFFIX}")] {
                if let Some(e) = map.remove(&n) {
                    self.store.delete(&n)?;
                    e.ready.notify_waiters();
                    removed |= n == name;
                }
            }
            removed
        };
        self.store.sync().await?;
        if removed {
            self.changed.notify_one();
        }
        Ok(removed)
    }

    /// Runs `op` on queue `name`'s state at the current time and persists what it changed;
    /// dead letters are moved into `<name>.dlq`.
    fn with<R>(
        &self,
        name: &str,
        op: impl FnOnce(&mut QueueState, u64) -> Result<(R, Vec<Change>), QueueError>,
    ) -> Result<R, ManagerError> {
        let entry = self.entry(name)?;
        let now = (self.clock)();
        let (out, changes) = {
            let mut q = entry.lock();
            let mut changes = q.tick(now);
            let out = op(&mut q, now)?;
            changes.extend(out.1);
            self.store.apply(name, &changes, &q.counters())?;
            (out.0, changes)
        };
        let changed = !changes.is_empty();
        let dead: Vec<_> = changes
            .into_iter()
            .filter_map(|c| match c {
                Change::DeadLetter(m) => Some(m),
                _ => None,
            })
            .collect();
        if !dead.is_empty() {
            let dlq = format!("{name}{DLQ_SUFFIX}");
            match self.entry(&dlq) {
                Ok(e) => {
                    let mut q = e.lock();
                    let mut puts = Vec::new();
                    for m in dead {
                        let id = m.id.clone();
                        match q.adopt(m, now) {
                            Ok(c) => puts.push(c),
                            Err(err) => {
                                tracing::error!(queue = %dlq, error = %err, "dead letter dropped: dead-letter queue refused it");
                                self.store.forget_body(&id)?;
                            }
                        }
                    }
                    self.store.apply(&dlq, &puts, &q.counters())?;
                    drop(q);
                    e.ready.notify_waiters();
                }
                Err(_) => {
                    tracing::warn!(queue = %name, count = dead.len(), "no dead-letter queue; messages past max_receives dropped");
                    for m in &dead {
                        self.store.forget_body(&m.id)?;
                    }
                }
            }
        }
        // Only a change can make a message available; waking on nothing-changed would have a
        // waiting receive wake itself forever.
        if changed {
            entry.ready.notify_waiters();
        }
        Ok(out)
    }

    /// Sends one message; returns once it is durable.
    pub async fn send(
        &self,
        name: &str,
        body: String,
        opts: &SendOptions,
    ) -> Result<Sent, ManagerError> {
        let sent = self.with(name, |q, now| {
            let (sent, change) = q.send(body, opts, now)?;
            Ok((sent, change.into_iter().collect()))
        })?;
        self.store.sync().await?;
        Ok(sent)
    }

    /// Sends many messages with one flush; each gets its own outcome.
    pub async fn send_batch(
        &self,
        name: &str,
        items: Vec<(String, SendOptions)>,
    ) -> Result<Vec<Result<Sent, QueueError>>, ManagerError> {
        let out = self.with(name, |q, now| {
            let mut changes = Vec::with_capacity(items.len());
            let mut out = Vec::with_capacity(items.len());
            for (body, opts) in items {
                match q.send(body, &opts, now) {
                    Ok((sent, change)) => {
                        changes.extend(change);
                        out.push(Ok(sent));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
            Ok((out, changes))
        })?;
        self.store.sync().await?;
        Ok(out)
    }

    /// Receives up to `max` messages, waiting up to `wait` for the first one.
    pub async fn receive(
        &self,
        name: &str,
        consumer: &str,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ManagerError> {
        self.receive_held(name, consumer, max, usize::MAX, visibility_ms, wait)
            .await
    }

    /// [`receive`](Self::receive) keeping `consumer` at `max_held` deliveries at most: waits
    /// while it holds that many.
    pub async fn receive_held(
        &self,
        name: &str,
        consumer: &str,
        max: usize,
        max_held: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ManagerError> {
        let until = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let entry = self.entry(name)?;
            let ready = entry.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            // Bodies are read inside, before a fire-and-forget delivery's delete is applied.
            let got = self.with(name, |q, now| {
                let (mut got, changes) =
                    q.receive_held(consumer, max, max_held, visibility_ms, now)?;
                self.fill_bodies(&mut got)?;
                Ok((got, changes))
            })?;
            if !got.is_empty() || tokio::time::Instant::now() >= until {
                return Ok(got);
            }
            // Wake for a send or nack, or when a delay or visibility timeout ends.
            let next = entry.lock().next_event();
            let mut wake = until;
            if let Some(at) = next {
                let dt = at.saturating_sub((self.clock)());
                wake = wake.min(tokio::time::Instant::now() + Duration::from_millis(dt.max(1)));
            }
            tokio::select! {
                _ = &mut ready => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Acknowledges deliveries; each receipt gets its own outcome. Durable before it returns.
    pub async fn ack(
        &self,
        name: &str,
        receipts: &[String],
    ) -> Result<Vec<Result<(), QueueError>>, ManagerError> {
        let out = self.with(name, |q, now| {
            let mut changes = Vec::new();
            let mut out = Vec::new();
            for r in receipts {
                match q.ack(r, now) {
                    Ok(c) => {
                        changes.push(c);
                        out.push(Ok(()));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
            Ok((out, changes))
        })?;
        self.store.sync().await?;
        Ok(out)
    }

    /// Gives a delivery back.
    pub async fn nack(
        &self,
        name: &str,
        receipt: &str,
        delay_ms: u64,
    ) -> Result<NackOutcome, ManagerError> {
        let out = self.with(name, |q, now| {
            let c = q.nack(receipt, delay_ms, now)?;
            let outcome = match c {
                Change::DeadLetter(_) => NackOutcome::DeadLettered,
                _ => NackOutcome::Requeued,
            };
            Ok((outcome, vec![c]))
        })?;
        self.store.sync().await?;
        Ok(out)
    }

    /// Applies due delays and visibility timeouts (and the dead-lettering they cause) on every
    /// queue whose next such event has passed, so they happen on time even on a queue nobody
    /// touches. Returns how many queues it ticked.
    pub fn tick_due(&self) -> usize {
        let now = (self.clock)();
        let due: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, e)| e.lock().next_event().is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &due {
            if let Err(e) = self.with(name, |_, _| Ok(((), Vec::new()))) {
                tracing::warn!(queue = %name, error = %e, "queue timer");
            }
        }
        due.len()
    }

    /// Runs [`tick_due`](Self::tick_due) every `every` until `stop`.
    pub async fn run_timer(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => { self.tick_due(); }
            }
        }
    }

    /// Gives back everything `consumer` holds in queue `name`.
    pub async fn release(&self, name: &str, consumer: &str) -> Result<usize, ManagerError> {
        let n = self.with(name, |q, now| Ok(q.release_consumer(consumer, now)))?;
        self.store.sync().await?;
        Ok(n)
    }

    /// Counters of one queue.
    pub fn stats(&self, name: &str) -> Result<Stats, ManagerError> {
        self.with(name, |q, _| Ok((q.stats(), Vec::new())))
    }

    /// Every queue here.
    pub fn list(&self) -> Vec<QueueInfo> {
        self.names()
            .into_iter()
            .filter_map(|n| {
                let stats = self.stats(&n).ok()?;
                let spec = self.entry(&n).ok()?.lock().spec().clone();
                Some(QueueInfo {
                    name: n,
                    spec,
                    stats,
                })
            })
            .collect()
    }

    /// Registers a collector of every queue's depth, in-flight and totals, read at scrape
    /// time. Queues are labelled by name up to [`LABELLED_QUEUES`] (names are chosen by
    /// clients; past that only the sums are exported, so a flood of queues cannot flood the
    /// scraper).
    pub fn register_metrics(self: &Arc<Self>, r: &mut crate::metrics::Registry) {
        let weak = Arc::downgrade(self);
        crate::metrics::collect(r, move |m| {
            let Some(q) = weak.upgrade() else {
                return Ok(());
            };
            let list = q.list();
            m.gauge("queues", "Queues hosted here", list.len() as f64)?;
            let labelled = &list[..list.len().min(LABELLED_QUEUES)];
            let per = |f: fn(&Stats) -> f64| {
                labelled
                    .iter()
                    .map(move |i| (vec![("queue", i.name.clone())], f(&i.stats)))
            };
            m.gauges(
                "queue_depth",
                "Messages held (ready, delayed and in flight)",
                per(|s| s.messages as f64),
            )?;
            m.gauges(
                "queue_visible",
                "Messages ready to receive",
                per(|s| s.visible as f64),
            )?;
            m.gauges(
                "queue_in_flight",
                "Messages received and not acknowledged",
                per(|s| s.in_flight as f64),
            )?;
            let count = |f: fn(&Stats) -> u64| {
                labelled
                    .iter()
                    .map(move |i| (vec![("queue", i.name.clone())], f(&i.stats)))
            };
            m.counters("queue_sent", "Messages sent", count(|s| s.sent))?;
            m.counters(
                "queue_deliveries",
                "Deliveries made (redeliveries included)",
                count(|s| s.delivered),
            )?;
            m.counters("queue_acks", "Acknowledgements", count(|s| s.acked))?;
            m.counters(
                "queue_ack_seconds",
                "Delivery to acknowledgement, summed over the acks (over queue_acks_total: the mean)",
                labelled.iter().map(|i| {
                    let secs = i.stats.ack_ms_total as f64 / 1000.0;
                    (vec![("queue", i.name.clone())], secs)
                }),
            )?;
            m.counters(
                "queue_redeliveries",
                "Messages made visible again after a nack or an expired visibility timeout",
                count(|s| s.nacked + s.expired),
            )?;
            m.counters(
                "queue_dead_lettered",
                "Messages moved to the dead-letter queue",
                count(|s| s.dead_lettered),
            )?;
            let sum = |f: fn(&Stats) -> usize| list.iter().map(|i| f(&i.stats)).sum::<usize>();
            m.gauge(
                "queue_depth_all",
                "Messages held in every queue here",
                sum(|s| s.messages) as f64,
            )?;
            m.gauge(
                "queue_dlq_depth_all",
                "Messages held in every dead-letter queue here",
                list.iter()
                    .filter(|i| i.name.ends_with(DLQ_SUFFIX))
                    .map(|i| i.stats.messages)
                    .sum::<usize>() as f64,
            )
        });
    }

    /// Deletes every message of a queue.
    pub async fn purge(&self, name: &str) -> Result<usize, ManagerError> {
        let n = self.with(name, |q, _| Ok(q.purge()))?;
        self.store.sync().await?;
        Ok(n)
    }

    /// The next `max` messages, without receiving them (dead letters show why they died).
    pub fn peek(&self, name: &str, max: usize) -> Result<Vec<Delivery>, ManagerError> {
        self.with(name, |q, _| {
            let mut got = q.peek(max);
            self.fill_bodies(&mut got)?;
            Ok((got, Vec::new()))
        })
    }

    /// Reads the bodies of `deliveries` from the store (queues keep only records in memory).
    fn fill_bodies(&self, deliveries: &mut [Delivery]) -> Result<(), QueueError> {
        for d in deliveries {
            let body = self
                .store
                .body(&d.message_id)
                .map_err(|e| QueueError::Invalid(format!("reading a message body: {e}")))?;
            d.body = match body {
                Some(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
                None => {
                    tracing::error!(message = %d.message_id, "a message's body is missing from the store");
                    Value::Null
                }
            };
        }
        Ok(())
    }

    /// Moves up to `max` dead letters back to queue `name`, with fresh delivery counts.
    pub async fn redrive(&self, name: &str, max: usize) -> Result<usize, ManagerError> {
        let dlq = format!("{name}{DLQ_SUFFIX}");
        self.entry(name)?;
        let taken = self.with(&dlq, |q, _| {
            let taken = q.take(max);
            // They keep their ids, and so their bodies.
            let changes = taken.iter().map(|m| Change::MovedOut(m.seq)).collect();
            Ok((taken, changes))
        })?;
        let n = taken.len();
        let back = self.with(name, |q, now| {
            let mut changes = Vec::new();
            let mut refused = Vec::new();
            for mut m in taken {
                m.attempts.clear();
                m.acked_by.clear();
                m.dead = None;
                m.visible_ms = now;
                match q.adopt(m.clone(), now) {
                    Ok(c) => changes.push(c),
                    Err(_) => refused.push(m),
                }
            }
            Ok((refused, changes))
        })?;
        // What the source queue could not take (it is full) goes back where it was.
        let returned = back.len();
        if returned > 0 {
            self.with(&dlq, |q, now| {
                let mut changes = Vec::new();
                for m in back {
                    changes.extend(q.adopt(m, now));
                }
                Ok(((), changes))
            })?;
        }
        self.store.sync().await?;
        Ok(n - returned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn manager() -> (QueueManager, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000));
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || clock_now.load(Ordering::Relaxed));
        let m =
            QueueManager::open(QueueStore::open(None).expect("store"), clock, 100).expect("open");
        (m, now)
    }

    #[tokio::test]
    async fn the_timer_expires_deliveries_and_dead_letters_without_any_other_call() {
        let (m, now) = manager();
        let spec = QueueSpec {
            visibility_timeout_ms: 100,
            max_receives: 1,
            ..Default::default()
        };
        assert!(m.create("t", spec).await.expect("create"));
        m.send("t", "1".into(), &SendOptions::default())
            .await
            .expect("send");
        let got = m
            .receive("t", "", 1, None, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(m.tick_due(), 0, "nothing due yet");
        now.fetch_add(100, Ordering::Relaxed);
        assert_eq!(m.tick_due(), 1);
        assert_eq!(m.stats("t").expect("stats").messages, 0);
        let dead = m.peek("t.dlq", 10).expect("peek");
        assert_eq!(dead.len(), 1);
        assert_eq!(m.redrive("t", 10).await.expect("redrive"), 1);
        assert_eq!(m.stats("t").expect("stats").visible, 1);
    }

    #[tokio::test]
    async fn names_and_settings_are_checked() {
        let (m, _) = manager();
        assert!(m.create("", QueueSpec::default()).await.is_err());
        assert!(m.create("a/b", QueueSpec::default()).await.is_err());
        assert!(
            m.create("ok.name-1_x", QueueSpec::default())
                .await
                .expect("create")
        );
        assert!(matches!(
            m.send("nope", "1".into(), &SendOptions::default()).await,
            Err(ManagerError::Unknown(_))
        ));
        assert!(m.delete("ok.name-1_x").await.expect("delete"));
        assert!(
            !m.has("ok.name-1_x.dlq"),
            "its dead-letter queue goes with it"
        );
    }

    #[tokio::test]
    async fn counters_and_sequence_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock: Clock = Arc::new(|| 1_000);
        let open = || {
            let store = QueueStore::open(Some(dir.path())).expect("store");
            QueueManager::open(store, clock.clone(), 100).expect("open")
        };
        let spec = QueueSpec {
            max_receives: 0,
            ..Default::default()
        };
        let first_ids = {
            let m = open();
            m.create("c", spec).await.expect("create");
            let mut ids = Vec::new();
            for i in 0..3 {
                let sent = m
                    .send("c", i.to_string(), &SendOptions::default())
                    .await
                    .expect("send");
                ids.push(sent.message_id);
            }
            let got = m
                .receive("c", "", 3, None, Duration::ZERO)
                .await
                .expect("receive");
            for d in got {
                m.ack("c", std::slice::from_ref(&d.receipt))
                    .await
                    .expect("ack");
            }
            ids
        };
        let m = open();
        let stats = m.stats("c").expect("stats");
        assert_eq!((stats.sent, stats.delivered, stats.acked), (3, 3, 3));
        assert_eq!(stats.messages, 0);
        let again = m
            .send("c", "4".into(), &SendOptions::default())
            .await
            .expect("send");
        assert!(
            !first_ids.contains(&again.message_id),
            "ids are never reused"
        );
        assert_eq!(m.stats("c").expect("stats").sent, 4);
    }

    #[tokio::test]
    async fn the_number_of_queues_and_their_caps_are_bounded() {
        let clock: Clock = Arc::new(|| 1_000);
        let m = QueueManager::open(QueueStore::open(None).expect("store"), clock, 3).expect("open");
        // With its dead-letter queue: two.
        assert!(m.create("a", QueueSpec::default()).await.expect("a"));
        let no_dlq = QueueSpec {
            max_receives: 0,
            ..Default::default()
        };
        assert!(m.create("b", no_dlq.clone()).await.expect("b"));
        let err = m
            .create("c", no_dlq.clone())
            .await
            .expect_err("over the limit");
        assert!(
            err.to_string()
                .contains("its limit (queues.max_queues) is 3"),
            "{err}"
        );
        // Re-creating one that exists is not a new queue.
        assert!(!m.create("b", no_dlq.clone()).await.expect("again"));
        for (spec, needle) in [
            (
                QueueSpec {
                    max_messages: 100_000_000_000,
                    ..no_dlq.clone()
                },
                "max_messages must be between 1 and 10000000",
            ),
            (
                QueueSpec {
                    max_message_bytes: 100_000_000_000,
                    ..no_dlq.clone()
                },
                "max_message_bytes must be between 1 and 16777216",
            ),
        ] {
            let err = m.create("d", spec).await.expect_err("caps");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[tokio::test]
    async fn bodies_come_from_the_store_through_delivery_dead_letters_and_redrive() {
        let (m, now) = manager();
        let spec = QueueSpec {
            visibility_timeout_ms: 100,
            max_receives: 1,
            ..Default::default()
        };
        m.create("b", spec).await.expect("create");
        let body = r#"{"payload":[1,2,3]}"#;
        m.send("b", body.into(), &SendOptions::default())
            .await
            .expect("send");
        assert_eq!(
            m.peek("b", 1).expect("peek")[0].body,
            json!({"payload": [1, 2, 3]})
        );
        let got = m
            .receive("b", "", 1, None, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(got[0].body, json!({"payload": [1, 2, 3]}));
        // Its visibility timeout passes: a dead letter, body and all.
        now.fetch_add(100, Ordering::Relaxed);
        m.tick_due();
        assert_eq!(
            m.peek("b.dlq", 1).expect("peek")[0].body,
            json!({"payload": [1, 2, 3]})
        );
        assert_eq!(m.redrive("b", 10).await.expect("redrive"), 1);
        let again = m
            .receive("b", "", 1, None, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(again[0].body, json!({"payload": [1, 2, 3]}));
        let id = again[0].message_id.clone();
        m.ack("b", std::slice::from_ref(&again[0].receipt))
            .await
            .expect("ack");
        assert_eq!(
            m.store.body(&id).expect("body"),
            None,
            "an acked message's body is gone"
        );
        // Fire and forget: delivered with its body, then deleted.
        m.create(
            "f",
            QueueSpec {
                mode: Mode::FireAndForget,
                max_receives: 0,
                ..Default::default()
            },
        )
        .await
        .expect("create");
        m.send("f", "42".into(), &SendOptions::default())
            .await
            .expect("send");
        let got = m
            .receive("f", "", 1, None, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(got[0].body, json!(42));
        assert_eq!(m.store.body(&got[0].message_id).expect("body"), None);
    }
}
