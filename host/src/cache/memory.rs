//! L1, the memory tier (docs/cache.md, "Tiers"): entries in shards, each behind its own lock,
//! so concurrent readers of different keys do not wait on each other; byte budgets per
//! namespace and in total, kept exactly with counters shared by the shards; an eviction policy
//! of the namespace's choice ([`super::policy`]) per namespace in each shard; expiry by time;
//! and the index of dependents that makes invalidation cascade.
//!
//! A shard chooses victims among its own entries (as segmented caches do): the budgets are
//! global, the choice of victim is local to the shard that went over. No lock is held while
//! another shard's is taken; the dependents index is locked only inside a shard's lock (a leaf
//! lock), so an entry is indexed and unindexed in step with being stored and removed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::key::{Dependency, Entry, KeyId, Select};
use super::policy::Policy;
#[cfg(test)]
use super::policy::PolicyKind;

/// Shards of the entry map and of the dependents index.
const SHARDS: usize = 16;

pub use crate::config::cache::NamespaceSpec;

/// Counters of one namespace, read by `cache.stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reads answered.
    pub hits: AtomicU64,
    /// Reads that found nothing.
    pub misses: AtomicU64,
    /// Entries stored.
    pub puts: AtomicU64,
    /// Entries evicted for want of room.
    pub evictions: AtomicU64,
    /// Entries removed by delete, invalidation or clear.
    pub removals: AtomicU64,
    /// Entries that expired.
    pub expirations: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One namespace: its spec, what it holds and its counters.
#[derive(Debug)]
pub struct Space {
    /// Its name.
    pub name: Arc<str>,
    /// How it is kept.
    pub spec: NamespaceSpec,
    /// Bytes it holds in the memory tier.
    pub bytes: AtomicU64,
    /// Entries it holds in the memory tier.
    pub entries: AtomicU64,
    /// What happened to it.
    pub counters: Counters,
}

/// Why the memory tier refuses an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// Bigger than its namespace's budget (or the tier's).
    #[error(
        "entry of {size} bytes does not fit in the {budget}-byte budget of namespace '{namespace}'"
    )]
    TooLarge {
        /// Its namespace.
        namespace: String,
        /// Its size.
        size: u64,
        /// The smaller budget.
        budget: u64,
    },
    /// A new namespace beyond the limit.
    #[error("at most {0} namespaces")]
    TooManyNamespaces(usize),
}

/// What the tier holds for one key.
#[derive(Debug)]
struct Slot {
    entry: Arc<Entry>,
    access_count: u64,
    accessed_ms: u64,
    /// Its namespace, whose counters a read bumps without a lookup.
    space: Arc<Space>,
}

#[derive(Default)]
struct Shard {
    slots: foldhash::HashMap<KeyId, Slot>,
    /// One policy per namespace present in this shard.
    policies: foldhash::HashMap<Arc<str>, Box<dyn Policy<KeyId>>>,
    /// `(expires_at_ms, key)` of entries with a time to live.
    expiry: BTreeSet<(u64, KeyId)>,
}

/// An entry read from the tier, with its read counters.
#[derive(Debug, Clone)]
pub struct Found {
    /// The entry.
    pub entry: Arc<Entry>,
    /// Reads of it so far (this one included).
    pub access_count: u64,
    /// When it was read last (now).
    pub accessed_ms: u64,
}

/// What an insert did besides storing.
#[derive(Debug, Default)]
pub struct Inserted {
    /// The entry it replaced.
    pub replaced: Option<Arc<Entry>>,
    /// Entries evicted to make room.
    pub evicted: Vec<Arc<Entry>>,
}

/// Why an entry left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Deleted, invalidated or cleared.
    Removed,
    /// Its time ran out.
    Expired,
}

/// Who listens to each dependency (one shard of the index).
type Dependents = HashMap<Dependency, HashSet<KeyId>>;

/// The memory tier.
pub struct Memory {
    shards: Box<[Mutex<Shard>]>,
    dependents: Box<[Mutex<Dependents>]>,
    spaces: ArcSwap<HashMap<String, Arc<Space>>>,
    creating: Mutex<()>,
    configured: HashMap<String, NamespaceSpec>,
    default_spec: NamespaceSpec,
    max_namespaces: usize,
    total_budget: u64,
    total_bytes: AtomicU64,
    hasher: foldhash::fast::FixedState,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a shard was held leaves it consistent enough to keep serving: every
    // change to a shard is made in one step after its checks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Memory {
    /// A tier of `total_budget` bytes; `configured` namespaces get their spec, others
    /// `default_spec`; at most `max_namespaces` exist at once.
    pub fn new(
        total_budget: u64,
        default_spec: NamespaceSpec,
        configured: HashMap<String, NamespaceSpec>,
        max_namespaces: usize,
    ) -> Self {
        Memory {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            dependents: (0..SHARDS).map(|_| Mutex::default()).collect(),
            spaces: ArcSwap::from_pointee(HashMap::new()),
            creating: Mutex::new(()),
            configured,
            default_spec,
            max_namespaces,
            total_budget,
            total_bytes: AtomicU64::new(0),
            hasher: foldhash::fast::FixedState::with_seed(0x006d_7072_6567),
        }
    }

    fn index<T: Hash + ?Sized>(&self, t: &T) -> usize {
        (self.hasher.hash_one(t) as usize) % SHARDS
    }

    fn shard(&self, id: &KeyId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.index(id)])
    }

    /// The namespace `name`, created with its spec on first use.
    pub fn space(&self, name: &str) -> Result<Arc<Space>, MemoryError> {
        if let Some(s) = self.spaces.load().get(name) {
            return Ok(s.clone());
        }
        let _one = lock(&self.creating);
        let current = self.spaces.load_full();
        if let Some(s) = current.get(name) {
            return Ok(s.clone());
        }
        if current.len() >= self.max_namespaces {
            return Err(MemoryError::TooManyNamespaces(self.max_namespaces));
        }
        let spec = self
            .configured
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default_spec.clone());
        let space = Arc::new(Space {
            name: name.into(),
            spec,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let mut next = (*current).clone();
        next.insert(name.to_owned(), space.clone());
        self.spaces.store(Arc::new(next));
        Ok(space)
    }

    /// The namespace `name` if it exists.
    pub fn existing_space(&self, name: &str) -> Option<Arc<Space>> {
        self.spaces.load().get(name).cloned()
    }

    /// Every namespace that exists.
    pub fn spaces(&self) -> Vec<Arc<Space>> {
        let mut all: Vec<_> = self.spaces.load().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The spec namespace `name` has or would get.
    pub fn spec_of(&self, name: &str) -> NamespaceSpec {
        match self.existing_space(name) {
            Some(s) => s.spec.clone(),
            None => self
                .configured
                .get(name)
                .cloned()
                .unwrap_or_else(|| self.default_spec.clone()),
        }
    }

    /// Bytes held, in total.
    pub fn bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// The tier's byte budget.
    pub fn budget(&self) -> u64 {
        self.total_budget
    }

    /// The entry of `id`, counted as a read; an expired one is removed (and returned in
    /// `expired`) instead.
    pub fn get(&self, id: &KeyId, now_ms: u64) -> (Option<Found>, Option<Arc<Entry>>) {
        let mut shard = self.shard(id);
        let Some(slot) = shard.slots.get_mut(id) else {
            return (None, None);
        };
        if slot.entry.expired(now_ms) {
            drop(shard);
            let gone = self.remove(id, Removal::Expired);
            return (None, gone);
        }
        slot.access_count += 1;
        slot.accessed_ms = now_ms;
        Counters::bump(&slot.space.counters.hits);
        let found = Found {
            entry: slot.entry.clone(),
            access_count: slot.access_count,
            accessed_ms: now_ms,
        };
        let ns = found.entry.key.namespace.as_str();
        if let Some(p) = shard.policies.get_mut(ns) {
            p.access(id);
        }
        (Some(found), None)
    }

    /// The entry of `id` without counting a read (expired: `None`).
    pub fn peek(&self, id: &KeyId, now_ms: u64) -> Option<Arc<Entry>> {
        let shard = self.shard(id);
        shard
            .slots
            .get(id)
            .filter(|s| !s.entry.expired(now_ms))
            .map(|s| s.entry.clone())
    }

    /// Stores `entry`, evicting what its namespace's policy (or, over the total budget, the
    /// shard's) chooses until both budgets hold.
    pub fn insert(&self, entry: Arc<Entry>) -> Result<Inserted, MemoryError> {
        let space = self.space(&entry.key.namespace)?;
        let budget = space.spec.max_bytes.min(self.total_budget);
        if entry.size > budget {
            return Err(MemoryError::TooLarge {
                namespace: entry.key.namespace.clone(),
                size: entry.size,
                budget,
            });
        }
        let id = entry.key.id();
        let ns: Arc<str> = space.name.clone();
        let mut out = Inserted::default();
        let shard_index = self.index(&id);
        {
            let mut shard = lock(&self.shards[shard_index]);
            if let Some(old) = shard.slots.remove(&id) {
                self.forget(&mut shard, &id, &old.entry);
                out.replaced = Some(old.entry);
            }
            let policy_cap = (space.spec.max_bytes / SHARDS as u64).max(1);
            shard
                .policies
                .entry(ns.clone())
                .or_insert_with(|| space.spec.policy.build(policy_cap))
                .insert(id.clone(), entry.size, entry.cost_ms.max(0.0));
            if let Some(t) = entry.expires_at_ms {
                shard.expiry.insert((t, id.clone()));
            }
            space.bytes.fetch_add(entry.size, Ordering::Relaxed);
            space.entries.fetch_add(1, Ordering::Relaxed);
            self.total_bytes.fetch_add(entry.size, Ordering::Relaxed);
            Counters::bump(&space.counters.puts);
            shard.slots.insert(
                id.clone(),
                Slot {
                    entry: entry.clone(),
                    access_count: 0,
                    accessed_ms: entry.created_ms,
                    space: space.clone(),
                },
            );
            // Indexed under the shard's lock, as it is unindexed: a key evicted here and stored
            // again by another writer meanwhile keeps its dependents.
            self.index_entry(&id, &entry);
            self.evict_in(&mut shard, &space, Some(&ns), &mut out.evicted);
        }
        // Still over: victims from the other shards, one shard at a time.
        for i in (1..SHARDS).map(|k| (shard_index + k) % SHARDS) {
            if !self.over(&space) {
                break;
            }
            let mut shard = lock(&self.shards[i]);
            self.evict_in(&mut shard, &space, Some(&ns), &mut out.evicted);
        }
        Ok(out)
    }

    fn over(&self, space: &Space) -> bool {
        space.bytes.load(Ordering::Relaxed) > space.spec.max_bytes
            || self.total_bytes.load(Ordering::Relaxed) > self.total_budget
    }

    /// Evicts from `shard` while the namespace (or the tier) is over budget: the namespace's
    /// own victims first, then, over the total budget, any namespace's in this shard.
    fn evict_in(
        &self,
        shard: &mut Shard,
        space: &Space,
        ns: Option<&Arc<str>>,
        evicted: &mut Vec<Arc<Entry>>,
    ) {
        while space.bytes.load(Ordering::Relaxed) > space.spec.max_bytes {
            let Some(victim) = ns
                .and_then(|n| shard.policies.get_mut(n))
                .and_then(|p| p.victim())
            else {
                break;
            };
            if let Some(e) = self.drop_slot(shard, &victim) {
                evicted.push(e);
            }
        }
        while self.total_bytes.load(Ordering::Relaxed) > self.total_budget {
            // The namespace that holds the most in this shard gives way.
            let Some(name) = shard
                .policies
                .iter()
                .filter(|(_, p)| !p.is_empty())
                .max_by_key(|(_, p)| p.bytes())
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            let Some(victim) = shard.policies.get_mut(&name).and_then(|p| p.victim()) else {
                break;
            };
            if let Some(e) = self.drop_slot(shard, &victim) {
                evicted.push(e);
            }
        }
    }

    /// Removes an evicted key's slot (its policy already let it go).
    fn drop_slot(&self, shard: &mut Shard, id: &KeyId) -> Option<Arc<Entry>> {
        let slot = shard.slots.remove(id)?;
        if let Some(t) = slot.entry.expires_at_ms {
            shard.expiry.remove(&(t, id.clone()));
        }
        if let Some(space) = self.existing_space(&slot.entry.key.namespace) {
            self.account_out(&space, slot.entry.size);
            Counters::bump(&space.counters.evictions);
        }
        self.unindex(&slot.entry);
        Some(slot.entry)
    }

    fn account_out(&self, space: &Space, size: u64) {
        space.bytes.fetch_sub(size, Ordering::Relaxed);
        space.entries.fetch_sub(1, Ordering::Relaxed);
        self.total_bytes.fetch_sub(size, Ordering::Relaxed);
    }

    /// Takes a slot that is being replaced or removed out of the policy, the expiry index and
    /// the accounts.
    fn forget(&self, shard: &mut Shard, id: &KeyId, entry: &Entry) {
        if let Some(p) = shard.policies.get_mut(entry.key.namespace.as_str()) {
            p.remove(id);
        }
        if let Some(t) = entry.expires_at_ms {
            shard.expiry.remove(&(t, id.clone()));
        }
        if let Some(space) = self.existing_space(&entry.key.namespace) {
            self.account_out(&space, entry.size);
        }
        self.unindex(entry);
    }

    /// Removes `id`; returns what it held.
    pub fn remove(&self, id: &KeyId, why: Removal) -> Option<Arc<Entry>> {
        let entry = {
            let mut shard = self.shard(id);
            let slot = shard.slots.remove(id)?;
            self.forget(&mut shard, id, &slot.entry);
            slot.entry
        };
        if let Some(space) = self.existing_space(&entry.key.namespace) {
            match why {
                Removal::Removed => Counters::bump(&space.counters.removals),
                Removal::Expired => Counters::bump(&space.counters.expirations),
            }
        }
        Some(entry)
    }

    fn index_entry(&self, id: &KeyId, entry: &Entry) {
        for dep in entry.listens() {
            let mut idx = lock(&self.dependents[self.index(&dep)]);
            idx.entry(dep).or_default().insert(id.clone());
        }
    }

    fn unindex(&self, entry: &Entry) {
        let id = entry.key.id();
        for dep in entry.listens() {
            let mut idx = lock(&self.dependents[self.index(&dep)]);
            if let Some(set) = idx.get_mut(&dep) {
                set.remove(&id);
                if set.is_empty() {
                    idx.remove(&dep);
                }
            }
        }
    }

    /// The keys held here that listen to `dep` (depend on it or carry it as a tag).
    pub fn dependents(&self, dep: &Dependency) -> Vec<KeyId> {
        let idx = lock(&self.dependents[self.index(dep)]);
        idx.get(dep)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes every entry whose time ran out by `now_ms`; returns them.
    pub fn sweep(&self, now_ms: u64) -> Vec<Arc<Entry>> {
        let mut due = Vec::new();
        for s in self.shards.iter() {
            let shard = lock(s);
            due.extend(
                shard
                    .expiry
                    .iter()
                    .take_while(|(t, _)| *t <= now_ms)
                    .map(|(_, id)| id.clone()),
            );
        }
        due.iter()
            .filter_map(|id| self.remove(id, Removal::Expired))
            .collect()
    }

    /// The keys of namespace `ns` whose identifier matches `pattern` (a glob), at most `max`.
    pub fn keys(&self, select: &Select, max: usize) -> Vec<KeyId> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let shard = lock(s);
            out.extend(shard.slots.keys().filter(|id| select.matches(id)).cloned());
        }
        out.sort();
        out.truncate(max);
        out
    }

    /// Entries held, in total.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::CacheKey;
    use serde_json::json;

    fn entry(ns: &str, id: &str, bytes: usize) -> Arc<Entry> {
        let v = json!("x".repeat(bytes));
        Arc::new(Entry::new(CacheKey::new(ns, id), v, bytes + 2, 1_000))
    }

    fn tier(total: u64, ns_bytes: u64) -> Memory {
        let spec = NamespaceSpec {
            policy: PolicyKind::Lru,
            max_bytes: ns_bytes,
            default_ttl_seconds: None,
        };
        Memory::new(total, spec, HashMap::new(), 8)
    }

    #[test]
    fn budgets_hold_per_namespace_and_in_total() {
        let m = tier(20_000, 5_000);
        for i in 0..200 {
            m.insert(entry("a", &format!("k{i}"), 100))
                .expect("memory tier operation");
            m.insert(entry("b", &format!("k{i}"), 100))
                .expect("memory tier operation");
        }
        let a = m.existing_space("a").expect("memory tier operation");
        assert!(a.bytes.load(Ordering::Relaxed) <= 5_000);
        assert!(a.counters.evictions.load(Ordering::Relaxed) > 0);
        let c = tier(3_000, 5_000);
        for i in 0..100 {
            c.insert(entry("a", &format!("k{i}"), 100))
                .expect("memory tier operation");
        }
        assert!(c.bytes() <= 3_000, "{} over the total", c.bytes());
        // The accounts match what is held.
        let held: u64 = (0..100)
            .filter_map(|i| c.peek(&KeyId::new("a", &format!("k{i}"), "v1.0.0"), 0))
            .map(|e| e.size)
            .sum();
        assert_eq!(held, c.bytes());
    }

    #[test]
    fn an_entry_larger_than_its_budget_is_refused_and_nothing_changes() {
        let m = tier(1_000_000, 500);
        m.insert(entry("a", "small", 10))
            .expect("memory tier operation");
        let err = m
            .insert(entry("a", "big", 1_000))
            .expect_err("should be refused");
        assert!(matches!(err, MemoryError::TooLarge { .. }), "{err}");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn reads_count_and_replacing_keeps_accounts_right() {
        let m = tier(1_000_000, 1_000_000);
        m.insert(entry("a", "k", 10))
            .expect("memory tier operation");
        let id = KeyId::new("a", "k", "v1.0.0");
        m.get(&id, 2_000);
        let (found, _) = m.get(&id, 3_000);
        let found = found.expect("memory tier operation");
        assert_eq!((found.access_count, found.accessed_ms), (2, 3_000));
        let space = m.existing_space("a").expect("namespace a");
        assert_eq!(space.counters.hits.load(Ordering::Relaxed), 2);
        let before = m.bytes();
        let out = m
            .insert(entry("a", "k", 10))
            .expect("memory tier operation");
        assert!(out.replaced.is_some());
        assert_eq!(m.bytes(), before);
        assert!(m.remove(&id, Removal::Removed).is_some());
        assert_eq!(m.bytes(), 0);
        assert!(m.is_empty());
    }

    #[test]
    fn entries_expire_on_read_and_on_sweep() {
        let m = tier(1_000_000, 1_000_000);
        let short = Arc::new(
            Entry::new(CacheKey::new("a", "short"), json!(1), 1, 1_000).with_ttl(Some(1.0), 1_000),
        );
        let long = Arc::new(
            Entry::new(CacheKey::new("a", "long"), json!(1), 1, 1_000).with_ttl(Some(10.0), 1_000),
        );
        m.insert(short).expect("memory tier operation");
        m.insert(long).expect("memory tier operation");
        let (hit, gone) = m.get(&KeyId::new("a", "short", "v1.0.0"), 2_000);
        assert!(hit.is_none() && gone.is_some(), "expired on read");
        assert!(m.sweep(5_000).is_empty());
        assert_eq!(m.sweep(11_000).len(), 1);
        assert!(m.is_empty());
        let space = m.existing_space("a").expect("memory tier operation");
        assert_eq!(space.counters.expirations.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn dependents_are_indexed_and_forgotten() {
        let m = tier(1_000_000, 1_000_000);
        let mut e = Entry::new(CacheKey::new("a", "report"), json!(1), 1, 0);
        e.dependencies = vec![Dependency::Tag("dataset:v2".into())];
        e.key.tags = vec!["reports".into()];
        m.insert(Arc::new(e)).expect("memory tier operation");
        let id = KeyId::new("a", "report", "v1.0.0");
        assert_eq!(
            m.dependents(&Dependency::Tag("dataset:v2".into())),
            std::slice::from_ref(&id)
        );
        assert_eq!(
            m.dependents(&Dependency::Tag("reports".into())),
            std::slice::from_ref(&id)
        );
        m.remove(&id, Removal::Removed);
        assert!(
            m.dependents(&Dependency::Tag("dataset:v2".into()))
                .is_empty()
        );
    }

    #[test]
    fn namespaces_are_bounded_and_listed_by_glob() {
        let m = tier(1_000_000, 1_000_000);
        for i in 0..8 {
            m.insert(entry(&format!("ns{i}"), "k", 1))
                .expect("memory tier operation");
        }
        assert_eq!(
            m.insert(entry("ns9", "k", 1))
                .expect_err("should be refused"),
            MemoryError::TooManyNamespaces(8)
        );
        m.insert(entry("ns0", "user:1", 1))
            .expect("memory tier operation");
        m.insert(entry("ns0", "user:2", 1))
            .expect("memory tier operation");
        let keys = m.keys(&Select::namespace("ns0", "user:*"), 10);
        assert_eq!(keys.len(), 2);
        assert_eq!(m.keys(&Select::namespace("ns0", "*"), 1).len(), 1);
    }
}
