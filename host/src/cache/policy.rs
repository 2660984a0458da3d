//! Eviction policies of the cache's memory tier (issue 15, item 2): which entry goes when a
//! namespace or the whole tier is over its byte budget. Each policy tracks keys with their size
//! (and, for the cost-based one, what they cost to compute again); the store inserts, reports
//! hits and removals, and asks for a victim while it is over budget.
//!
//! - [`Lru`]: least recently used.
//! - [`S4lru`]: four LRU segments of a quarter of the budget each; a hit moves an entry one
//!   segment up, an overflowing segment pushes its oldest down, victims leave from the bottom
//!   (Huang et al., "An Analysis of Facebook Photo Caching", SOSP 2013).
//! - [`S3fifo`]: a small FIFO (10 % of the budget) for new entries, a main FIFO, and a ghost
//!   list of keys recently evicted from the small one; entries seen again are kept, one-hit
//!   wonders leave quickly (Yang et al., "FIFO queues are all you need", SOSP 2023).
//! - [`Cost`]: GreedyDual-Size (Cao and Irani, 1997): keeps what is expensive to compute again
//!   per byte, ageing what is not used.
//!
//! Pure: no I/O, no clock. Property-tested against simple reference models below.

use std::collections::{BTreeMap, VecDeque};

// Keys come from clients: foldhash is seeded per process and several times cheaper than SipHash
// on the hot path (every read touches the policy).
use foldhash::{HashMap, HashSet};
use std::hash::Hash;

/// What the store tells a policy, and what it asks of it.
pub trait Policy<K>: Send {
    /// A key not tracked yet, of `size` bytes, that costs `cost` (any unit, ≥ 0) to compute
    /// again.
    fn insert(&mut self, key: K, size: u64, cost: f64);
    /// A hit on `key`; false when it is not tracked.
    fn access(&mut self, key: &K) -> bool;
    /// `key` left from outside (deleted, invalidated, expired); false when it was not tracked.
    fn remove(&mut self, key: &K) -> bool;
    /// Chooses the entry to evict and stops tracking it; `None` when nothing is tracked.
    fn victim(&mut self) -> Option<K>;
    /// Entries tracked.
    fn len(&self) -> usize;
    /// Bytes tracked.
    fn bytes(&self) -> u64;
    /// Whether nothing is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub use crate::config::cache::PolicyKind;

impl PolicyKind {
    /// A policy of this kind for a budget of `capacity` bytes.
    pub fn build<K: Hash + Eq + Clone + Send + 'static>(self, capacity: u64) -> Box<dyn Policy<K>> {
        match self {
            PolicyKind::Lru => Box::new(Lru::default()),
            PolicyKind::S4lru => Box::new(S4lru::new(capacity)),
            PolicyKind::S3fifo => Box::new(S3fifo::new(capacity)),
            PolicyKind::Cost => Box::new(Cost::default()),
        }
    }
}

/// Least recently used: recency stamps in an ordered map (O(log n) per operation).
#[derive(Debug)]
pub struct Lru<K> {
    order: BTreeMap<u64, K>,
    index: HashMap<K, (u64, u64)>,
    clock: u64,
    bytes: u64,
}

impl<K> Default for Lru<K> {
    fn default() -> Self {
        Lru {
            order: BTreeMap::new(),
            index: HashMap::default(),
            clock: 0,
            bytes: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Lru<K> {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn push(&mut self, key: K, size: u64) {
        let stamp = self.tick();
        if let Some((old, old_size)) = self.index.insert(key.clone(), (stamp, size)) {
            self.order.remove(&old);
            self.bytes -= old_size;
        }
        self.order.insert(stamp, key);
        self.bytes += size;
    }

    /// The size of `key`, or `None`.
    fn take(&mut self, key: &K) -> Option<u64> {
        let (stamp, size) = self.index.remove(key)?;
        self.order.remove(&stamp);
        self.bytes -= size;
        Some(size)
    }

    /// The least recently used entry and its size.
    fn pop_oldest(&mut self) -> Option<(K, u64)> {
        let (_, key) = self.order.pop_first()?;
        let (_, size) = self.index.remove(&key)?;
        self.bytes -= size;
        Some((key, size))
    }

    fn count(&self) -> usize {
        self.index.len()
    }
}

impl<K: Hash + Eq + Clone + Send> Policy<K> for Lru<K> {
    fn insert(&mut self, key: K, size: u64, _cost: f64) {
        self.push(key, size);
    }
    fn access(&mut self, key: &K) -> bool {
        let Some(&(old, size)) = self.index.get(key) else {
            return false;
        };
        let stamp = self.tick();
        self.order.remove(&old);
        self.order.insert(stamp, key.clone());
        self.index.insert(key.clone(), (stamp, size));
        true
    }
    fn remove(&mut self, key: &K) -> bool {
        self.take(key).is_some()
    }
    fn victim(&mut self) -> Option<K> {
        self.pop_oldest().map(|(k, _)| k)
    }
    fn len(&self) -> usize {
        self.index.len()
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Segmented LRU with four segments.
#[derive(Debug)]
pub struct S4lru<K> {
    segments: [Lru<K>; 4],
    /// Bytes each segment above the lowest may hold before its oldest move down.
    segment_bytes: u64,
    at: HashMap<K, usize>,
}

impl<K: Hash + Eq + Clone> S4lru<K> {
    /// For a budget of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        S4lru {
            segments: Default::default(),
            segment_bytes: (capacity / 4).max(1),
            at: HashMap::default(),
        }
    }

    /// Moves the oldest of each overflowing segment one down, from `from` to segment 1.
    fn settle(&mut self, from: usize) {
        for i in (1..=from).rev() {
            while self.segments[i].bytes > self.segment_bytes && self.segments[i].count() > 1 {
                let Some((key, size)) = self.segments[i].pop_oldest() else {
                    break;
                };
                self.at.insert(key.clone(), i - 1);
                self.segments[i - 1].push(key, size);
            }
        }
    }
}

impl<K: Hash + Eq + Clone + Send> Policy<K> for S4lru<K> {
    fn insert(&mut self, key: K, size: u64, _cost: f64) {
        self.at.insert(key.clone(), 0);
        self.segments[0].push(key, size);
    }
    fn access(&mut self, key: &K) -> bool {
        let Some(&i) = self.at.get(key) else {
            return false;
        };
        let Some(size) = self.segments[i].take(key) else {
            return false;
        };
        let up = (i + 1).min(3);
        self.at.insert(key.clone(), up);
        self.segments[up].push(key.clone(), size);
        self.settle(up);
        true
    }
    fn remove(&mut self, key: &K) -> bool {
        match self.at.remove(key) {
            Some(i) => self.segments[i].take(key).is_some(),
            None => false,
        }
    }
    fn victim(&mut self) -> Option<K> {
        let segment = self.segments.iter_mut().find(|s| s.count() > 0)?;
        let (key, _) = segment.pop_oldest()?;
        self.at.remove(&key);
        Some(key)
    }
    fn len(&self) -> usize {
        self.at.len()
    }
    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Fifo {
    /// Hits since it entered its queue, at most 3.
    freq: u8,
    size: u64,
    in_main: bool,
    /// Which queue slot is current: earlier slots of the key (removed, reinserted) are skipped.
    entry: u64,
}

/// S3-FIFO: small, main and ghost queues. Removed keys leave the queues lazily.
#[derive(Debug)]
pub struct S3fifo<K> {
    small: VecDeque<(K, u64)>,
    main: VecDeque<(K, u64)>,
    ghost: VecDeque<K>,
    ghosts: HashSet<K>,
    meta: HashMap<K, Fifo>,
    small_bytes: u64,
    main_bytes: u64,
    small_target: u64,
    next: u64,
}

impl<K: Hash + Eq + Clone> S3fifo<K> {
    /// For a budget of `capacity` bytes: the small queue takes a tenth.
    pub fn new(capacity: u64) -> Self {
        S3fifo {
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghosts: HashSet::default(),
            meta: HashMap::default(),
            small_bytes: 0,
            main_bytes: 0,
            small_target: (capacity / 10).max(1),
            next: 0,
        }
    }

    fn current(&self, key: &K, entry: u64) -> Option<Fifo> {
        self.meta.get(key).copied().filter(|m| m.entry == entry)
    }

    fn promote(&mut self, key: K, mut m: Fifo) {
        if !m.in_main {
            self.small_bytes -= m.size;
            self.main_bytes += m.size;
        }
        self.next += 1;
        m.entry = self.next;
        m.in_main = true;
        m.freq = 0;
        self.meta.insert(key.clone(), m);
        self.main.push_back((key, m.entry));
    }

    fn remember(&mut self, key: K) {
        if self.ghosts.insert(key.clone()) {
            self.ghost.push_back(key);
        }
        // As many ghosts as entries: enough to recognise what comes back soon.
        while self.ghost.len() > self.meta.len().max(16) {
            if let Some(old) = self.ghost.pop_front() {
                self.ghosts.remove(&old);
            }
        }
    }

    fn evict_small(&mut self) -> Option<Option<K>> {
        let (key, entry) = self.small.pop_front()?;
        let Some(m) = self.current(&key, entry) else {
            return Some(None);
        };
        if m.freq > 1 {
            self.promote(key, m);
            return Some(None);
        }
        self.meta.remove(&key);
        self.small_bytes -= m.size;
        self.remember(key.clone());
        Some(Some(key))
    }

    fn evict_main(&mut self) -> Option<Option<K>> {
        let (key, entry) = self.main.pop_front()?;
        let Some(mut m) = self.current(&key, entry) else {
            return Some(None);
        };
        if m.freq > 0 {
            m.freq -= 1;
            self.meta.insert(key.clone(), m);
            self.main.push_back((key, entry));
            return Some(None);
        }
        self.meta.remove(&key);
        self.main_bytes -= m.size;
        Some(Some(key))
    }
}

impl<K: Hash + Eq + Clone + Send> Policy<K> for S3fifo<K> {
    fn insert(&mut self, key: K, size: u64, _cost: f64) {
        self.remove(&key);
        self.next += 1;
        let m = Fifo {
            freq: 0,
            size,
            in_main: false,
            entry: self.next,
        };
        if self.ghosts.remove(&key) {
            self.main_bytes += size;
            self.meta.insert(key.clone(), Fifo { in_main: true, ..m });
            self.main.push_back((key, m.entry));
        } else {
            self.small_bytes += size;
            self.meta.insert(key.clone(), m);
            self.small.push_back((key, m.entry));
        }
    }
    fn access(&mut self, key: &K) -> bool {
        match self.meta.get_mut(key) {
            Some(m) => {
                m.freq = (m.freq + 1).min(3);
                true
            }
            None => false,
        }
    }
    fn remove(&mut self, key: &K) -> bool {
        match self.meta.remove(key) {
            Some(m) => {
                if m.in_main {
                    self.main_bytes -= m.size;
                } else {
                    self.small_bytes -= m.size;
                }
                true
            }
            None => false,
        }
    }
    fn victim(&mut self) -> Option<K> {
        while !self.meta.is_empty() {
            let from_small = self.small_bytes > self.small_target || self.main_bytes == 0;
            let step = if from_small {
                self.evict_small().or_else(|| self.evict_main())
            } else {
                self.evict_main().or_else(|| self.evict_small())
            };
            match step {
                Some(Some(key)) => return Some(key),
                Some(None) => continue,
                None => return None,
            }
        }
        None
    }
    fn len(&self) -> usize {
        self.meta.len()
    }
    fn bytes(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }
}

/// A priority that orders as `f64::total_cmp` does.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Priority(f64);

impl Eq for Priority {}
impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// GreedyDual-Size: each entry's priority is the running floor plus its cost per byte; the
/// lowest goes, and the floor rises to it (so what is not used ages). Ties go to the oldest.
#[derive(Debug)]
pub struct Cost<K> {
    floor: f64,
    order: BTreeMap<(Priority, u64), K>,
    index: HashMap<K, (Priority, u64, u64, f64)>,
    clock: u64,
    bytes: u64,
}

impl<K> Default for Cost<K> {
    fn default() -> Self {
        Cost {
            floor: 0.0,
            order: BTreeMap::new(),
            index: HashMap::default(),
            clock: 0,
            bytes: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Cost<K> {
    fn place(&mut self, key: K, size: u64, cost: f64) {
        self.clock += 1;
        let value = if cost.is_finite() { cost.max(0.0) } else { 0.0 };
        let priority = Priority(self.floor + value / size.max(1) as f64);
        self.order.insert((priority, self.clock), key.clone());
        self.index.insert(key, (priority, self.clock, size, value));
    }
}

impl<K: Hash + Eq + Clone + Send> Policy<K> for Cost<K> {
    fn insert(&mut self, key: K, size: u64, cost: f64) {
        self.remove(&key);
        self.bytes += size;
        self.place(key, size, cost);
    }
    fn access(&mut self, key: &K) -> bool {
        let Some(&(priority, stamp, size, cost)) = self.index.get(key) else {
            return false;
        };
        self.order.remove(&(priority, stamp));
        self.place(key.clone(), size, cost);
        true
    }
    fn remove(&mut self, key: &K) -> bool {
        match self.index.remove(key) {
            Some((priority, stamp, size, _)) => {
                self.order.remove(&(priority, stamp));
                self.bytes -= size;
                true
            }
            None => false,
        }
    }
    fn victim(&mut self) -> Option<K> {
        let ((priority, _), key) = self.order.pop_first()?;
        let (_, _, size, _) = self.index.remove(&key)?;
        self.bytes -= size;
        self.floor = priority.0;
        Some(key)
    }
    fn len(&self) -> usize {
        self.index.len()
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8, u8),
        Access(u8),
        Remove(u8),
        Victim,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                (0u8..24, 1u8..8, 0u8..10).prop_map(|(k, s, c)| Op::Insert(k, s, c)),
                (0u8..24).prop_map(Op::Access),
                (0u8..24).prop_map(Op::Remove),
                Just(Op::Victim),
            ],
            0..200,
        )
    }

    /// The reference LRU: a list, most recent last.
    #[derive(Default)]
    struct RefLru(Vec<(u8, u64)>);

    impl RefLru {
        fn pos(&self, k: u8) -> Option<usize> {
            self.0.iter().position(|(x, _)| *x == k)
        }
    }

    /// The reference S4LRU: four lists, most recent last.
    struct RefS4 {
        seg: [Vec<(u8, u64)>; 4],
        cap: u64,
    }

    impl RefS4 {
        fn find(&self, k: u8) -> Option<(usize, usize)> {
            (0..4).find_map(|i| {
                self.seg[i]
                    .iter()
                    .position(|(x, _)| *x == k)
                    .map(|p| (i, p))
            })
        }
        fn settle(&mut self, from: usize) {
            for i in (1..=from).rev() {
                while self.seg[i].iter().map(|e| e.1).sum::<u64>() > self.cap
                    && self.seg[i].len() > 1
                {
                    let e = self.seg[i].remove(0);
                    self.seg[i - 1].push(e);
                }
            }
        }
    }

    /// The reference GreedyDual-Size: a list scanned for the lowest priority.
    #[derive(Default)]
    struct RefGds {
        floor: f64,
        clock: u64,
        items: Vec<(u8, f64, u64, u64, f64)>,
    }

    proptest! {
        #[test]
        fn lru_evicts_exactly_as_a_recency_list(ops in ops()) {
            let (mut p, mut r) = (Lru::<u8>::default(), RefLru::default());
            for op in ops {
                match op {
                    Op::Insert(k, s, _) => {
                        if let Some(i) = r.pos(k) { r.0.remove(i); p.remove(&k); }
                        r.0.push((k, s as u64));
                        p.insert(k, s as u64, 0.0);
                    }
                    Op::Access(k) => {
                        let hit = r.pos(k).map(|i| { let e = r.0.remove(i); r.0.push(e); });
                        prop_assert_eq!(p.access(&k), hit.is_some());
                    }
                    Op::Remove(k) => {
                        let had = r.pos(k).map(|i| r.0.remove(i));
                        prop_assert_eq!(p.remove(&k), had.is_some());
                    }
                    Op::Victim => {
                        let want = (!r.0.is_empty()).then(|| r.0.remove(0).0);
                        prop_assert_eq!(p.victim(), want);
                    }
                }
                prop_assert_eq!(p.len(), r.0.len());
                prop_assert_eq!(p.bytes(), r.0.iter().map(|e| e.1).sum::<u64>());
            }
        }

        #[test]
        fn s4lru_evicts_exactly_as_four_recency_lists(ops in ops(), cap in 4u64..40) {
            let mut p = S4lru::<u8>::new(cap);
            let mut r = RefS4 { seg: Default::default(), cap: (cap / 4).max(1) };
            for op in ops {
                match op {
                    Op::Insert(k, s, _) => {
                        if let Some((i, j)) = r.find(k) { r.seg[i].remove(j); p.remove(&k); }
                        r.seg[0].push((k, s as u64));
                        p.insert(k, s as u64, 0.0);
                    }
                    Op::Access(k) => {
                        let hit = r.find(k).map(|(i, j)| {
                            let e = r.seg[i].remove(j);
                            let up = (i + 1).min(3);
                            r.seg[up].push(e);
                            r.settle(up);
                        });
                        prop_assert_eq!(p.access(&k), hit.is_some());
                    }
                    Op::Remove(k) => {
                        let had = r.find(k).map(|(i, j)| r.seg[i].remove(j));
                        prop_assert_eq!(p.remove(&k), had.is_some());
                    }
                    Op::Victim => {
                        let want = r.seg.iter_mut().find(|s| !s.is_empty()).map(|s| s.remove(0).0);
                        prop_assert_eq!(p.victim(), want);
                    }
                }
                let n: usize = r.seg.iter().map(Vec::len).sum();
                prop_assert_eq!(p.len(), n);
                prop_assert_eq!(p.bytes(), r.seg.iter().flatten().map(|e| e.1).sum::<u64>());
            }
        }

        #[test]
        fn cost_evicts_exactly_as_greedy_dual_size(ops in ops()) {
            let (mut p, mut r) = (Cost::<u8>::default(), RefGds::default());
            let place = |r: &mut RefGds, k: u8, size: u64, cost: f64| {
                r.clock += 1;
                let prio = r.floor + cost / size as f64;
                r.items.push((k, prio, r.clock, size, cost));
            };
            for op in ops {
                match op {
                    Op::Insert(k, s, c) => {
                        r.items.retain(|e| e.0 != k);
                        place(&mut r, k, s as u64, c as f64);
                        p.insert(k, s as u64, c as f64);
                    }
                    Op::Access(k) => {
                        let at = r.items.iter().position(|e| e.0 == k);
                        if let Some(i) = at {
                            let e = r.items.remove(i);
                            place(&mut r, k, e.3, e.4);
                        }
                        prop_assert_eq!(p.access(&k), at.is_some());
                    }
                    Op::Remove(k) => {
                        let at = r.items.iter().position(|e| e.0 == k);
                        if let Some(i) = at { r.items.remove(i); }
                        prop_assert_eq!(p.remove(&k), at.is_some());
                    }
                    Op::Victim => {
                        let lowest = r.items.iter().enumerate()
                            .min_by(|a, b| a.1.1.total_cmp(&b.1.1).then(a.1.2.cmp(&b.1.2)))
                            .map(|(i, _)| i);
                        let want = lowest.map(|i| { let e = r.items.remove(i); r.floor = e.1; e.0 });
                        prop_assert_eq!(p.victim(), want);
                    }
                }
                prop_assert_eq!(p.len(), r.items.len());
            }
        }

        #[test]
        fn s3fifo_tracks_exactly_the_live_keys_and_evicts_each_once(ops in ops(), cap in 4u64..40) {
            let mut p = S3fifo::<u8>::new(cap);
            let mut live: HashMap<u8, u64> = HashMap::default();
            for op in ops {
                match op {
                    Op::Insert(k, s, _) => {
                        live.insert(k, s as u64);
                        p.insert(k, s as u64, 0.0);
                    }
                    Op::Access(k) => prop_assert_eq!(p.access(&k), live.contains_key(&k)),
                    Op::Remove(k) => prop_assert_eq!(p.remove(&k), live.remove(&k).is_some()),
                    Op::Victim => match p.victim() {
                        Some(k) => prop_assert!(live.remove(&k).is_some(), "evicted {} twice or never inserted", k),
                        None => prop_assert!(live.is_empty()),
                    },
                }
                prop_assert_eq!(p.len(), live.len());
                prop_assert_eq!(p.bytes(), live.values().sum::<u64>());
            }
            // Everything left comes out, each once.
            while let Some(k) = p.victim() {
                prop_assert!(live.remove(&k).is_some());
            }
            prop_assert!(live.is_empty());
        }
    }

    /// A Zipf-distributed trace (deterministic): `n` requests over `keys` keys, skew `alpha`.
    fn zipf(keys: usize, alpha: f64, n: usize, seed: u64) -> Vec<u32> {
        let weights: Vec<f64> = (1..=keys).map(|r| 1.0 / (r as f64).powf(alpha)).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(keys);
        let mut acc = 0.0;
        for w in weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let rank = cdf.partition_point(|c| *c < u).min(keys - 1);
                // Scatter ranks over the key space so key order says nothing.
                ((rank as u64).wrapping_mul(2654435761) % keys as u64) as u32
            })
            .collect()
    }

    fn hit_ratio(kind: PolicyKind, trace: &[u32], capacity: u64) -> f64 {
        let mut p = kind.build::<u32>(capacity);
        let mut hits = 0usize;
        for &k in trace {
            if p.access(&k) {
                hits += 1;
            } else {
                p.insert(k, 1, 1.0);
                while p.bytes() > capacity {
                    p.victim();
                }
            }
        }
        hits as f64 / trace.len() as f64
    }

    #[test]
    fn on_a_zipf_trace_s4lru_and_s3fifo_hit_at_least_as_often_as_lru() {
        let trace = zipf(20_000, 0.9, 100_000, 7);
        for capacity in [200, 1_000] {
            let lru = hit_ratio(PolicyKind::Lru, &trace, capacity);
            let s4 = hit_ratio(PolicyKind::S4lru, &trace, capacity);
            let s3 = hit_ratio(PolicyKind::S3fifo, &trace, capacity);
            let cost = hit_ratio(PolicyKind::Cost, &trace, capacity);
            println!(
                "zipf 0.9, 20k keys, 100k requests, cache of {capacity}: LRU {lru:.3}, S4LRU {s4:.3}, S3-FIFO {s3:.3}, GDS {cost:.3}"
            );
            assert!(s4 >= lru, "S4LRU {s4} < LRU {lru}");
            assert!(s3 >= lru, "S3-FIFO {s3} < LRU {lru}");
        }
    }

    #[test]
    fn cost_keeps_what_is_expensive_per_byte() {
        let mut p = Cost::<&str>::default();
        p.insert("cheap", 10, 0.5);
        p.insert("dear", 10, 100.0);
        p.insert("big", 1000, 100.0);
        assert_eq!(p.victim(), Some("cheap"), "0.05 per byte");
        assert_eq!(p.victim(), Some("big"), "0.1 per byte");
        // The floor rose to 0.1: what comes now starts from it, and a hit re-prices from it.
        p.insert("late", 10, 0.5);
        p.insert("used", 10, 0.4);
        assert!(p.access(&"used"), "0.1 + 0.04, re-priced at the same floor");
        assert_eq!(p.victim(), Some("used"));
        assert_eq!(p.victim(), Some("late"));
        assert_eq!(p.victim(), Some("dear"));
        assert_eq!(p.victim(), None);
    }

    #[test]
    fn s3fifo_keeps_what_is_seen_again_over_one_hit_wonders() {
        let mut p = S3fifo::<u32>::new(100);
        // A working set used twice, then a scan of one-hit wonders.
        for k in 0..50 {
            p.insert(k, 1, 0.0);
            p.access(&k);
            p.access(&k);
        }
        for k in 1_000..2_000 {
            p.insert(k, 1, 0.0);
            while p.bytes() > 100 {
                p.victim();
            }
        }
        let kept = (0..50).filter(|k| p.access(k)).count();
        assert!(kept >= 45, "the scan pushed out {} of 50", 50 - kept);
    }
}
