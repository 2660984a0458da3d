//! The backlog: recently published messages kept per topic, delivered to a new subscription
//! that asks for them (MPREG documents this but never delivers it).
//!
//! Bounded four ways so a busy or hostile publisher cannot grow it without end: messages per
//! topic, age, number of topics (the least recently published topic goes first) and total
//! bytes (the oldest message anywhere goes first). Pure: the caller passes the clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::topic::Pattern;

/// How much the backlog keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Messages kept per topic (oldest dropped first). 0 turns the backlog off.
    pub per_topic: usize,
    /// Messages older than this are never delivered and are dropped.
    pub max_age: Duration,
    /// Topics with a backlog.
    pub max_topics: usize,
    /// Bytes of message text kept, all topics together.
    pub max_bytes: usize,
}

/// One retained message.
#[derive(Debug, Clone)]
pub struct Retained {
    /// Arrival order on this node.
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// Its id (for the notification's `u`).
    pub message_id: Arc<str>,
    /// The message, verbatim JSON.
    pub raw: Arc<str>,
}

#[derive(Default)]
struct TopicLog {
    entries: VecDeque<Retained>,
    /// Sequence number of the newest entry: orders topics for eviction.
    last: u64,
}

/// Retained messages by topic.
pub struct Backlog {
    limits: Limits,
    topics: HashMap<Arc<str>, TopicLog>,
    /// (seq, topic) of every message pushed, oldest first; entries already dropped from their
    /// topic are skipped when met.
    order: VecDeque<(u64, Arc<str>)>,
    bytes: usize,
    live: usize,
    seq: u64,
}

impl Backlog {
    /// An empty backlog.
    pub fn new(limits: Limits) -> Self {
        Backlog {
            limits,
            topics: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            live: 0,
            seq: 0,
        }
    }

    /// Messages retained now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Nothing retained.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes of message text retained now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Retains a message published on `topic` at `now`.
    pub fn push(&mut self, topic: &str, message_id: Arc<str>, raw: Arc<str>, now: Instant) {
        let l = self.limits;
        if l.per_topic == 0 || l.max_topics == 0 || raw.len() > l.max_bytes {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let key: Arc<str> = match self.topics.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => {
                if self.topics.len() >= l.max_topics {
                    self.evict_topic();
                }
                let k: Arc<str> = topic.into();
                self.topics.insert(k.clone(), TopicLog::default());
                k
            }
        };
        self.bytes += raw.len();
        self.live += 1;
        self.order.push_back((seq, key.clone()));
        let mut dropped = 0usize;
        let mut dropped_bytes = 0usize;
        if let Some(log) = self.topics.get_mut(&key) {
            log.last = seq;
            log.entries.push_back(Retained {
                seq,
                at: now,
                message_id,
                raw,
            });
            while log.entries.len() > l.per_topic
                || log
                    .entries
                    .front()
                    .is_some_and(|e| now.duration_since(e.at) > l.max_age)
            {
                if let Some(e) = log.entries.pop_front() {
                    dropped += 1;
                    dropped_bytes += e.raw.len();
                }
            }
        }
        self.live -= dropped;
        self.bytes -= dropped_bytes;
        while self.bytes > l.max_bytes {
            if !self.drop_oldest() {
                break;
            }
        }
        // Skipped entries pile up in `order`; rebuild it once they outnumber the live ones.
        if self.order.len() > 2 * self.live + 1024 {
            self.compact();
        }
    }

    /// Messages whose topic matches any of `patterns` and that arrived within `within` of
    /// `now`, oldest first.
    pub fn collect(&self, patterns: &[Pattern], within: Duration, now: Instant) -> Vec<Retained> {
        let max_age = within.min(self.limits.max_age);
        let mut out: Vec<Retained> = Vec::new();
        for (topic, log) in &self.topics {
            if !patterns.iter().any(|p| p.matches(topic)) {
                continue;
            }
            out.extend(
                log.entries
                    .iter()
                    .filter(|e| now.duration_since(e.at) <= max_age)
                    .cloned(),
            );
        }
        out.sort_by_key(|e| e.seq);
        out
    }

    /// Drops the topic published to least recently.
    fn evict_topic(&mut self) {
        let Some(oldest) = self
            .topics
            .iter()
            .min_by_key(|(_, log)| log.last)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(log) = self.topics.remove(&oldest) {
            self.live -= log.entries.len();
            self.bytes -= log.entries.iter().map(|e| e.raw.len()).sum::<usize>();
        }
    }

    /// Drops the oldest retained message anywhere; false when there is none.
    fn drop_oldest(&mut self) -> bool {
        while let Some((seq, topic)) = self.order.pop_front() {
            let Some(log) = self.topics.get_mut(&topic) else {
                continue;
            };
            if log.entries.front().is_some_and(|e| e.seq == seq) {
                if let Some(e) = log.entries.pop_front() {
                    self.live -= 1;
                    self.bytes -= e.raw.len();
                }
                if log.entries.is_empty() {
                    self.topics.remove(&topic);
                }
                return true;
            }
        }
        false
    }

    fn compact(&mut self) {
        let mut all: Vec<(u64, Arc<str>)> = self
            .topics
            .iter()
            .flat_map(|(k, log)| log.entries.iter().map(move |e| (e.seq, k.clone())))
            .collect();
        all.sort_by_key(|(s, _)| *s);
        self.order = all.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_topic: 3,
            max_age: Duration::from_secs(60),
            max_topics: 4,
            max_bytes: 1 << 20,
        }
    }

    fn push(b: &mut Backlog, topic: &str, id: &str, now: Instant) {
        b.push(topic, id.into(), format!("{{\"id\":\"{id}\"}}").into(), now);
    }

    fn ids(v: &[Retained]) -> Vec<&str> {
        v.iter().map(|e| &*e.message_id).collect()
    }

    fn pat(p: &str) -> Vec<Pattern> {
        vec![Pattern::parse(p, false).expect("pattern")]
    }

    #[test]
    fn keeps_the_newest_per_topic_in_arrival_order_and_filters_by_pattern() {
        let now = Instant::now();
        let mut b = Backlog::new(limits());
        for i in 0..5 {
            push(&mut b, "a.x", &format!("a{i}"), now);
            push(&mut b, "b.x", &format!("b{i}"), now);
        }
        let all = b.collect(&pat("#"), Duration::from_secs(10), now);
        assert_eq!(ids(&all), ["a2", "b2", "a3", "b3", "a4", "b4"]);
        assert_eq!(
            ids(&b.collect(&pat("a.*"), Duration::from_secs(10), now)),
            ["a2", "a3", "a4"]
        );
        assert!(b.collect(&pat("c.#"), Duration::MAX, now).is_empty());
        assert_eq!(b.len(), 6);
    }

    #[test]
    fn age_limits_what_is_delivered_and_what_is_kept() {
        let t0 = Instant::now();
        let mut b = Backlog::new(limits());
        push(&mut b, "a", "old", t0);
        push(&mut b, "a", "mid", t0 + Duration::from_secs(30));
        let now = t0 + Duration::from_secs(50);
        assert_eq!(
            ids(&b.collect(&pat("a"), Duration::from_secs(30), now)),
            ["mid"]
        );
        // Past max_age (60 s) nothing is delivered even when asked for more, and a push drops it.
        let later = t0 + Duration::from_secs(80);
        assert_eq!(
            ids(&b.collect(&pat("a"), Duration::from_secs(3600), later)),
            ["mid"]
        );
        push(&mut b, "a", "new", later);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn topic_and_byte_limits_evict_the_oldest() {
        let now = Instant::now();
        let mut b = Backlog::new(limits());
        for t in ["t1", "t2", "t3", "t4", "t5"] {
            push(&mut b, t, t, now);
        }
        // t1 was published to least recently.
        assert_eq!(
            ids(&b.collect(&pat("*"), Duration::MAX, now)),
            ["t2", "t3", "t4", "t5"]
        );
        let mut small = Backlog::new(Limits {
            max_bytes: 30,
            ..limits()
        });
        for i in 0..4 {
            push(&mut small, "x", &format!("m{i}"), now);
            push(&mut small, "y", &format!("n{i}"), now);
        }
        // Each message is 11 bytes: two fit.
        assert_eq!(
            ids(&small.collect(&pat("*"), Duration::MAX, now)),
            ["m3", "n3"]
        );
        assert!(small.bytes() <= 30);
        // A message larger than the whole budget is not kept at all.
        small.push("x", "big".into(), "x".repeat(64).into(), now);
        assert_eq!(small.len(), 2);
    }

    #[test]
    fn many_pushes_keep_the_order_queue_bounded() {
        let now = Instant::now();
        let mut b = Backlog::new(limits());
        for i in 0..10_000 {
            push(&mut b, "a", &i.to_string(), now);
        }
        assert_eq!(b.len(), 3);
        assert!(b.order.len() <= 2 * 3 + 1024 + 1);
    }

    #[test]
    fn zero_per_topic_turns_it_off() {
        let mut b = Backlog::new(Limits {
            per_topic: 0,
            ..limits()
        });
        push(&mut b, "a", "x", Instant::now());
        assert!(b.is_empty());
    }
}
