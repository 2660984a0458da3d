//! One node's cache: the memory tier in front of the persistent one, with the operations the
//! wire offers (docs/cache.md). Reads of the memory tier take only their shard's lock; every
//! write of a key (put, delete, atomic, structure) and every read that must go to disk holds
//! the key's stripe of [`Cache::locks`], so per key the operations happen one at a time, in
//! the order they arrive: linearizable on the node that owns the key.
//!
//! Invalidation cascades: changing or removing an entry invalidates every entry that depends
//! on it (or on one of its tags), transitively, in both tiers.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::disk::{Disk, DiskError};
use super::key::{CacheKey, Dependency, Entry, KeyError, KeyId, Select};
use super::memory::{Found, Memory, MemoryError, Removal};
use super::ops::{self, AtomicOp, Change, OpError, Outcome, StructureOp};
use crate::config::cache::{CacheConfig, Consistency};

/// Milliseconds since the Unix epoch (a test's clock can be moved by hand).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Stripes of the per-key write lock.
const STRIPES: usize = 1024;
/// How long an invalidation keeps an entry handed over from a former owner from being adopted.
const RECENT_MS: u64 = 30_000;
/// Most invalidations remembered; past it every adoption is refused until the window passes.
const RECENT_MAX: usize = 100_000;

/// Invalidations of the last [`RECENT_MS`]: an entry a former owner hands over after a
/// membership change is not adopted if one of them concerns it, so a value invalidated while
/// it was in flight does not come back.
#[derive(Default)]
struct Recent {
    /// Keys removed and tags invalidated, with when (Unix ms).
    marks: HashMap<Dependency, u64>,
    /// Patterns invalidated (namespace clears, published patterns), with when.
    patterns: VecDeque<(u64, Select)>,
    /// Until when everything is refused (the marks overflowed).
    refuse_until: u64,
}

impl Recent {
    fn prune(&mut self, now: u64) {
        let since = now.saturating_sub(RECENT_MS);
        self.marks.retain(|_, at| *at >= since);
        while self.patterns.front().is_some_and(|(at, _)| *at < since) {
            self.patterns.pop_front();
        }
    }

    fn note(&mut self, dep: Dependency, now: u64) {
        if self.marks.len() >= RECENT_MAX {
            self.prune(now);
            if self.marks.len() >= RECENT_MAX {
                self.marks.clear();
                self.refuse_until = now + RECENT_MS;
            }
        }
        self.marks.insert(dep, now);
    }

    fn note_pattern(&mut self, select: Select, now: u64) {
        if self.patterns.len() >= RECENT_MAX {
            self.prune(now);
            if self.patterns.len() >= RECENT_MAX {
                self.patterns.clear();
                self.refuse_until = now + RECENT_MS;
            }
        }
        self.patterns.push_back((now, select));
    }

    /// Whether `entry` was invalidated recently (or could have been).
    fn concerns(&self, entry: &Entry, now: u64) -> bool {
        let since = now.saturating_sub(RECENT_MS);
        let id = entry.key.id();
        let marked = |d: &Dependency| self.marks.get(d).is_some_and(|at| *at >= since);
        now < self.refuse_until
            || marked(&Dependency::Key(id.clone()))
            || entry.listens().any(|d| marked(&d))
            || self
                .patterns
                .iter()
                .any(|(at, sel)| *at >= since && sel.matches(&id))
    }
}

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A bad key, tag or dependency.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// A value over `cache.max_value_bytes`.
    #[error("value is {size} bytes; this node takes at most {max} (cache.max_value_bytes)")]
    TooLarge {
        /// Its JSON length.
        size: usize,
        /// The limit.
        max: u64,
    },
    /// The memory tier refused it.
    #[error("{0}")]
    Memory(#[from] MemoryError),
    /// The persistent tier failed.
    #[error("{0}")]
    Disk(#[from] DiskError),
    /// An atomic or structure operation was refused.
    #[error("{0}")]
    Op(#[from] OpError),
}

/// Which tier answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Memory.
    L1,
    /// Disk.
    L2,
}

impl Tier {
    /// As the wire names it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::L1 => "L1",
            Tier::L2 => "L2",
        }
    }
}

/// Which tiers an operation may use (`options.cache_levels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// Memory.
    pub l1: bool,
    /// Disk.
    pub l2: bool,
}

impl Default for Levels {
    fn default() -> Self {
        Levels { l1: true, l2: true }
    }
}

impl Levels {
    /// From `["L1", "L2", "L3", "L4"]`; L3 and L4 are the cluster's and federation's, which
    /// the caller handles.
    pub fn from_names(names: &[String]) -> Self {
        let has = |n: &str| names.iter().any(|x| x.eq_ignore_ascii_case(n));
        Levels {
            l1: has("L1"),
            l2: has("L2"),
        }
    }
}

/// A put, with everything an entry carries.
#[derive(Debug, Clone)]
pub struct Put {
    /// Its key.
    pub key: CacheKey,
    /// Its value.
    pub value: Value,
    /// Its time to live (`None`: the namespace's default).
    pub ttl_seconds: Option<f64>,
    /// What invalidates it.
    pub dependencies: Vec<Dependency>,
    /// What it cost to compute.
    pub cost_ms: f64,
    /// When the put counts as done (`None`: the node's default).
    pub consistency: Option<Consistency>,
    /// Which tiers it goes to.
    pub levels: Levels,
}

impl Put {
    /// A put of `value` under `key` with the defaults.
    pub fn new(key: CacheKey, value: Value) -> Self {
        Put {
            key,
            value,
            ttl_seconds: None,
            dependencies: Vec::new(),
            cost_ms: 0.0,
            consistency: None,
            levels: Levels::default(),
        }
    }
}

/// What a read found.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The entry with its read counters.
    pub found: Found,
    /// Where.
    pub tier: Tier,
}

/// Operation counters beyond the namespaces' own.
#[derive(Debug, Default)]
struct Totals {
    l2_hits: AtomicU64,
    cascaded: AtomicU64,
    /// Memoized calls that waited on an execution already under way (single flight).
    memo_joined: AtomicU64,
    /// Memoized calls that ran the function.
    memo_executed: AtomicU64,
}

/// One node's cache.
pub struct Cache {
    memory: Memory,
    disk: Option<Arc<Disk>>,
    locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: foldhash::fast::FixedState,
    clock: Clock,
    config: CacheConfig,
    totals: Totals,
    recent: std::sync::Mutex<Recent>,
}

impl Cache {
    /// A cache as `config` says, persisted under `data_dir` when it is given and
    /// `config.persistent` (opening the store blocks: call it off the async runtime).
    pub fn open(
        config: &CacheConfig,
        data_dir: Option<&Path>,
        clock: Clock,
    ) -> Result<Self, CacheError> {
        let disk = match data_dir {
            Some(dir) if config.persistent => Some(Arc::new(Disk::open(
                dir,
                config.persistent_cache_mib << 20,
            )?)),
            _ => None,
        };
        Ok(Self::with_disk(config, disk, clock))
    }

    /// A cache over an opened persistent tier (or none).
    pub fn with_disk(config: &CacheConfig, disk: Option<Arc<Disk>>, clock: Clock) -> Self {
        Cache {
            memory: Memory::new(
                config.max_bytes,
                config.default_namespace.clone(),
                config.namespaces.clone(),
                config.max_namespaces,
            ),
            disk,
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x6c6f_636b),
            clock,
            config: config.clone(),
            totals: Totals::default(),
            recent: std::sync::Mutex::default(),
        }
    }

    /// The memory tier (for stats and listings).
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Whether entries persist.
    pub fn persistent(&self) -> bool {
        self.disk.is_some()
    }

    /// Its configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The time now, by its clock.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    async fn lock(&self, id: &KeyId) -> tokio::sync::MutexGuard<'_, ()> {
        let i = (self.hasher.hash_one(id) as usize) % STRIPES;
        self.locks[i].lock().await
    }

    /// The entry of `key`, from memory, else from disk (then kept in memory too).
    pub async fn get(&self, id: &KeyId, levels: Levels) -> Result<Option<Hit>, CacheError> {
        let now = self.now();
        if levels.l1 {
            let (found, expired) = self.memory.get(id, now);
            if let Some(found) = found {
                return Ok(Some(Hit {
                    found,
                    tier: Tier::L1,
                }));
            }
            if let (Some(gone), Some(disk)) = (expired, &self.disk) {
                disk.remove(&gone.key.id(), false).await?;
            }
        }
        let Some(disk) = self.disk.as_ref().filter(|_| levels.l2) else {
            self.miss(id);
            return Ok(None);
        };
        // From disk under the key's lock: a write of the key meanwhile is not undone by
        // promoting the older value read here.
        let _turn = self.lock(id).await;
        if levels.l1
            && let (Some(found), _) = self.memory.get(id, now)
        {
            return Ok(Some(Hit {
                found,
                tier: Tier::L1,
            }));
        }
        let Some(mut entry) = disk.get(id, now)? else {
            self.miss(id);
            return Ok(None);
        };
        entry.access_count += 1;
        entry.accessed_ms = now;
        let entry = Arc::new(entry);
        if levels.l1 {
            // Too large for memory now (a smaller budget after a restart): served from disk.
            let _ = self.memory.insert(entry.clone());
        }
        self.totals.l2_hits.fetch_add(1, Ordering::Relaxed);
        if let Some(space) = self.memory.existing_space(id.namespace()) {
            space.counters.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(Hit {
            found: Found {
                access_count: entry.access_count,
                accessed_ms: now,
                entry,
            },
            tier: Tier::L2,
        }))
    }

    fn miss(&self, id: &KeyId) {
        if let Ok(space) = self.memory.space(id.namespace()) {
            space.counters.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stores a value; what depended on the value it replaces is invalidated.
    pub async fn put(&self, put: Put) -> Result<Arc<Entry>, CacheError> {
        put.key.validate()?;
        let bytes = serde_json::to_vec(&put.value).map_or(0, |b| b.len());
        if bytes as u64 > self.config.max_value_bytes {
            return Err(CacheError::TooLarge {
                size: bytes,
                max: self.config.max_value_bytes,
            });
        }
        let id = put.key.id();
        let _turn = self.lock(&id).await;
        let now = self.now();
        let ttl = put
            .ttl_seconds
            .or_else(|| self.memory.spec_of(&put.key.namespace).default_ttl_seconds);
        let mut entry = Entry::new(put.key, put.value, bytes, now).with_ttl(ttl, now);
        entry.dependencies = put.dependencies;
        entry.cost_ms = put.cost_ms;
        let entry = Arc::new(entry);
        self.store(&id, entry.clone(), put.levels, put.consistency)
            .await?;
        Ok(entry)
    }

    /// Writes `entry` to the tiers `levels` names; the caller holds the key's lock.
    async fn store(
        &self,
        id: &KeyId,
        entry: Arc<Entry>,
        levels: Levels,
        consistency: Option<Consistency>,
    ) -> Result<(), CacheError> {
        // Kept out of memory (`cache_levels` without L1): an older copy there goes.
        let replaced = if levels.l1 {
            self.memory.insert(entry.clone())?.replaced
        } else {
            self.memory.remove(id, Removal::Removed)
        };
        if let Some(disk) = self.disk.as_ref().filter(|_| levels.l2) {
            match consistency.unwrap_or(self.config.default_consistency) {
                Consistency::Strong => disk.put_strong(&entry).await?,
                Consistency::Eventual => disk.put_eventual(entry.clone()),
            }
        }
        if replaced.is_some() || self.disk.is_some() {
            // What listened to the old value (held in memory, or only on disk) goes.
            self.cascade(vec![Dependency::Key(id.clone())], Some(id))
                .await?;
        }
        Ok(())
    }

    /// Removes `id` from both tiers and what depends on it; returns whether it was there and
    /// how many dependents went.
    pub async fn delete(
        &self,
        id: &KeyId,
        consistency: Option<Consistency>,
    ) -> Result<(bool, usize), CacheError> {
        let existed = {
            let _turn = self.lock(id).await;
            self.remove_one(id, consistency).await?
        };
        let mut deps = vec![Dependency::Key(id.clone())];
        if let Some(e) = &existed {
            deps = e.invalidates();
        }
        let cascaded = self.cascade(deps, None).await?;
        Ok((existed.is_some(), cascaded))
    }

    /// Removes one key from both tiers (the caller holds its lock); what it held, if known.
    async fn remove_one(
        &self,
        id: &KeyId,
        consistency: Option<Consistency>,
    ) -> Result<Option<Arc<Entry>>, CacheError> {
        let now = self.now();
        self.recent().note(Dependency::Key(id.clone()), now);
        let mut held = self.memory.remove(id, Removal::Removed);
        if let Some(disk) = &self.disk {
            if held.is_none() {
                held = disk.get(id, now)?.map(Arc::new);
            }
            let strong =
                consistency.unwrap_or(self.config.default_consistency) == Consistency::Strong;
            disk.remove(id, strong).await?;
        }
        Ok(held)
    }

    /// Invalidates everything listening to `deps`, transitively, in both tiers (skipping
    /// `except`, whose lock the caller holds); returns how many entries went.
    async fn cascade(
        &self,
        deps: Vec<Dependency>,
        except: Option<&KeyId>,
    ) -> Result<usize, CacheError> {
        let mut queue: VecDeque<Dependency> = deps.into();
        let mut seen: HashSet<Dependency> = queue.iter().cloned().collect();
        let mut removed = 0;
        while let Some(dep) = queue.pop_front() {
            // A put's own key is not invalidated (its new value is here): the put path takes no
            // lock for it. What goes because of it is noted as it is removed.
            if !matches!((&dep, except), (Dependency::Key(k), Some(e)) if k == e) {
                self.recent().note(dep.clone(), self.now());
            }
            let mut keys = self.memory.dependents(&dep);
            if let Some(disk) = &self.disk {
                for k in disk.dependents(&dep)? {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            for k in keys {
                if Some(&k) == except {
                    continue;
                }
                let gone = {
                    let _turn = self.lock(&k).await;
                    self.remove_one(&k, None).await?
                };
                removed += 1;
                let next =
                    gone.map_or_else(|| vec![Dependency::Key(k.clone())], |e| e.invalidates());
                for d in next {
                    if seen.insert(d.clone()) {
                        queue.push_back(d);
                    }
                }
            }
        }
        self.totals
            .cascaded
            .fetch_add(removed as u64, Ordering::Relaxed);
        Ok(removed)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Single inserts and prunes: a panic elsewhere cannot leave it half-changed.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `entry` over from a node that owned its key before a membership change: stored
    /// (eventually, both tiers) unless this node holds the key already or an invalidation of
    /// the last 30 s concerns it. Whether it was adopted.
    pub async fn adopt(&self, entry: Entry) -> Result<bool, CacheError> {
        entry.key.validate()?;
        let id = entry.key.id();
        let _turn = self.lock(&id).await;
        let now = self.now();
        if entry.expired(now)
            || self.current(&id, now)?.is_some()
            || self.recent().concerns(&entry, now)
        {
            return Ok(false);
        }
        self.store(
            &id,
            Arc::new(entry),
            Levels::default(),
            Some(Consistency::Eventual),
        )
        .await?;
        Ok(true)
    }

    /// Drops `id` from both tiers without invalidating what depends on it (it was handed
    /// to its new owner, which keeps it).
    pub async fn forget(&self, id: &KeyId) -> Result<(), CacheError> {
        let _turn = self.lock(id).await;
        self.memory.remove(id, Removal::Removed);
        if let Some(disk) = &self.disk {
            disk.remove(id, false).await?;
        }
        Ok(())
    }

    /// The entry stored for `id`, without counting a read.
    pub fn peek(&self, id: &KeyId) -> Result<Option<Arc<Entry>>, CacheError> {
        self.current(id, self.now())
    }

    /// Invalidates a key and what depends on it.
    pub async fn invalidate_key(&self, id: &KeyId) -> Result<usize, CacheError> {
        let (existed, cascaded) = self.delete(id, None).await?;
        Ok(usize::from(existed) + cascaded)
    }

    /// Invalidates every entry that carries or depends on `tag`, transitively.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<usize, CacheError> {
        self.cascade(vec![Dependency::Tag(tag.to_owned())], None)
            .await
    }

    /// Removes up to `max` keys of namespace `ns` whose identifier matches the glob `pattern`
    /// (and what depends on them); with `dry_run`, only counts them. Returns the keys.
    pub async fn clear(
        &self,
        ns: &str,
        pattern: &str,
        max: usize,
        dry_run: bool,
    ) -> Result<Vec<KeyId>, CacheError> {
        let keys = self.keys(ns, pattern, max)?;
        if !dry_run {
            let now = self.now();
            self.recent()
                .note_pattern(Select::namespace(ns, pattern), now);
            for k in &keys {
                self.delete(k, None).await?;
            }
        }
        Ok(keys)
    }

    /// Keys of namespace `ns` in either tier whose identifier matches the glob `pattern`.
    pub fn keys(&self, ns: &str, pattern: &str, max: usize) -> Result<Vec<KeyId>, CacheError> {
        self.select(&Select::namespace(ns, pattern), max)
    }

    /// Keys in either tier that `select` takes, at most `max`, in order.
    pub fn select(&self, select: &Select, max: usize) -> Result<Vec<KeyId>, CacheError> {
        let mut keys: BTreeSet<KeyId> = self.memory.keys(select, max).into_iter().collect();
        if let Some(disk) = &self.disk {
            keys.extend(disk.keys(select, max)?);
        }
        Ok(keys.into_iter().take(max).collect())
    }

    /// Invalidates every key whose `namespace.identifier` matches the glob `pattern` (and
    /// what depends on them); returns how many went.
    pub async fn invalidate_dotted(&self, pattern: &str) -> Result<usize, CacheError> {
        let now = self.now();
        self.recent().note_pattern(Select::dotted(pattern), now);
        let mut n = 0;
        for k in self.select(&Select::dotted(pattern), usize::MAX)? {
            let (existed, cascaded) = self.delete(&k, None).await?;
            n += usize::from(existed) + cascaded;
        }
        Ok(n)
    }

    /// What is stored for `id` (for a read-modify-write under its lock).
    fn current(&self, id: &KeyId, now: u64) -> Result<Option<Arc<Entry>>, CacheError> {
        if let Some(e) = self.memory.peek(id, now) {
            return Ok(Some(e));
        }
        match &self.disk {
            Some(d) => Ok(d.get(id, now)?.map(Arc::new)),
            None => Ok(None),
        }
    }

    /// Runs `op` on what `key` holds and stores what it leaves, in one step.
    async fn modify(
        &self,
        key: CacheKey,
        ttl_seconds: Option<f64>,
        consistency: Option<Consistency>,
        op: impl FnOnce(ops::Current<'_>) -> Result<Outcome, OpError>,
    ) -> Result<Outcome, CacheError> {
        key.validate()?;
        let id = key.id();
        let _turn = self.lock(&id).await;
        let now = self.now();
        let current = self.current(&id, now)?;
        let outcome = op(current.as_deref().map(|e| (e.kind, &*e.value)))?;
        match &outcome.change {
            Change::Keep => {}
            Change::Remove => {
                self.remove_one(&id, consistency).await?;
                drop(_turn);
                self.cascade(vec![Dependency::Key(id)], None).await?;
            }
            Change::Store(kind, value) => {
                let bytes = serde_json::to_vec(value).map_or(0, |b| b.len());
                if bytes as u64 > self.config.max_value_bytes {
                    return Err(CacheError::TooLarge {
                        size: bytes,
                        max: self.config.max_value_bytes,
                    });
                }
                let mut entry = Entry::new(key, value.clone(), bytes, now);
                entry.kind = *kind;
                match (ttl_seconds, &current) {
                    (Some(t), _) => entry = entry.with_ttl(Some(t), now),
                    // A change keeps the time the entry had left.
                    (None, Some(old)) => {
                        entry.expires_at_ms = old.expires_at_ms;
                        entry.ttl_seconds = old.ttl_seconds;
                        entry.created_ms = old.created_ms;
                        entry.dependencies = old.dependencies.clone();
                        entry.key.tags = old.key.tags.clone();
                    }
                    (None, None) => {
                        let ttl = self
                            .memory
                            .spec_of(&entry.key.namespace)
                            .default_ttl_seconds;
                        entry = entry.with_ttl(ttl, now);
                    }
                }
                self.store(&id, Arc::new(entry), Levels::default(), consistency)
                    .await?;
            }
        }
        Ok(outcome)
    }

    /// An atomic operation (test-and-set, compare-and-swap, increment, append, set-if-absent).
    pub async fn atomic(
        &self,
        key: CacheKey,
        op: &AtomicOp,
        consistency: Option<Consistency>,
    ) -> Result<Outcome, CacheError> {
        self.modify(key, op.ttl_seconds, consistency, |cur| ops::atomic(cur, op))
            .await
    }

    /// A structure operation (set, list, map, sorted set).
    pub async fn structure(
        &self,
        key: CacheKey,
        op: &StructureOp,
        ttl_seconds: Option<f64>,
        consistency: Option<Consistency>,
    ) -> Result<Outcome, CacheError> {
        self.modify(key, ttl_seconds, consistency, |cur| ops::structure(cur, op))
            .await
    }

    /// Stats of one namespace.
    pub fn namespace_stats(&self, ns: &str) -> Value {
        let spec = self.memory.spec_of(ns);
        let space = self.memory.existing_space(ns);
        let read = |f: fn(&super::memory::Space) -> u64| space.as_deref().map_or(0, f);
        let hits = read(|s| s.counters.hits.load(Ordering::Relaxed));
        let misses = read(|s| s.counters.misses.load(Ordering::Relaxed));
        json!({
            "namespace": ns,
            "policy": spec.policy,
            "max_bytes": spec.max_bytes,
            "default_ttl_seconds": spec.default_ttl_seconds,
            "entries": read(|s| s.entries.load(Ordering::Relaxed)),
            "bytes": read(|s| s.bytes.load(Ordering::Relaxed)),
            "hits": hits,
            "misses": misses,
            "hit_ratio": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "puts": read(|s| s.counters.puts.load(Ordering::Relaxed)),
            "evictions": read(|s| s.counters.evictions.load(Ordering::Relaxed)),
            "removals": read(|s| s.counters.removals.load(Ordering::Relaxed)),
            "expirations": read(|s| s.counters.expirations.load(Ordering::Relaxed)),
        })
    }

    /// Counts a memoized call that joined an execution under way (`joined`) or started one.
    pub fn note_flight(&self, joined: bool) {
        let c = if joined {
            &self.totals.memo_joined
        } else {
            &self.totals.memo_executed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a collector of the cache's tiers and namespaces, read at scrape time (the
    /// counters are the ones `cache stats` reports; namespaces are configured or created by
    /// writers, and labelled up to 200).
    pub fn register_metrics(self: &Arc<Self>, r: &mut crate::metrics::Registry) {
        let weak = Arc::downgrade(self);
        crate::metrics::collect(r, move |m| {
            let Some(c) = weak.upgrade() else {
                return Ok(());
            };
            let spaces = c.memory.spaces();
            let spaces = &spaces[..spaces.len().min(200)];
            let cache = &c;
            let per = |f: fn(&super::memory::Space) -> u64| {
                spaces.iter().map(move |s| {
                    let policy = cache.memory.spec_of(&s.name).policy.as_str().to_owned();
                    (
                        vec![("namespace", s.name.to_string()), ("policy", policy)],
                        f(s),
                    )
                })
            };
            m.counters(
                "cache_l1_hits",
                "Memory-tier hits",
                per(|s| s.counters.hits.load(Ordering::Relaxed)),
            )?;
            m.counters(
                "cache_l1_misses",
                "Memory-tier misses",
                per(|s| s.counters.misses.load(Ordering::Relaxed)),
            )?;
            m.counters(
                "cache_evictions",
                "Entries evicted for room, by namespace and its policy",
                per(|s| s.counters.evictions.load(Ordering::Relaxed)),
            )?;
            m.counters(
                "cache_expirations",
                "Entries dropped when their TTL passed",
                per(|s| s.counters.expirations.load(Ordering::Relaxed)),
            )?;
            m.gauges(
                "cache_namespace_bytes",
                "Bytes held in memory per namespace",
                per(|s| s.bytes.load(Ordering::Relaxed)).map(|(l, v)| (l, v as f64)),
            )?;
            m.bytes(
                "cache_l1",
                "Bytes held in the memory tier",
                c.memory.bytes(),
            )?;
            m.gauge(
                "cache_l1_entries",
                "Entries in the memory tier",
                c.memory.len() as f64,
            )?;
            if let Some(d) = &c.disk {
                m.counter(
                    "cache_l2_hits",
                    "Persistent-tier hits (memory misses found on disk)",
                    c.totals.l2_hits.load(Ordering::Relaxed),
                )?;
                m.gauge(
                    "cache_l2_entries",
                    "Entries in the persistent tier",
                    d.len() as f64,
                )?;
            }
            m.counter(
                "cache_single_flight_waits",
                "Memoized calls that waited for an identical call already running (single flight)",
                c.totals.memo_joined.load(Ordering::Relaxed),
            )?;
            m.counter(
                "cache_memo_executions",
                "Memoized calls that ran their function (misses)",
                c.totals.memo_executed.load(Ordering::Relaxed),
            )?;
            m.counter(
                "cache_cascaded_invalidations",
                "Entries dropped because something they depend on changed",
                c.totals.cascaded.load(Ordering::Relaxed),
            )
        });
    }

    /// Stats of the whole cache and each namespace.
    pub fn stats(&self) -> Value {
        let namespaces: Vec<Value> = self
            .memory
            .spaces()
            .iter()
            .map(|s| self.namespace_stats(&s.name))
            .collect();
        json!({
            "l1": {
                "entries": self.memory.len(),
                "bytes": self.memory.bytes(),
                "max_bytes": self.memory.budget(),
            },
            "l2": self.disk.as_ref().map(|d| json!({
                "entries": d.len(),
                "bytes_on_disk": d.size_on_disk(),
                "hits": self.totals.l2_hits.load(Ordering::Relaxed),
            })),
            "cascaded_invalidations": self.totals.cascaded.load(Ordering::Relaxed),
            "namespaces": namespaces,
        })
    }

    /// Sweeps expired entries out of both tiers every `cache.sweep_ms`, and writes the
    /// persistent tier's queued writes, until `stop`.
    pub fn start(self: &Arc<Self>, tasks: &crate::shutdown::Tasks) {
        if let Some(disk) = &self.disk {
            tasks.spawn(disk.clone().run_writer(tasks.stopping().clone()));
        }
        tasks.spawn(self.clone().sweeper(tasks.stopping().clone()));
    }

    async fn sweeper(self: Arc<Self>, stop: CancellationToken) {
        let every = Duration::from_millis(self.config.sweep_ms);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = self.now();
            let gone = self.memory.sweep(now);
            if let Some(disk) = &self.disk {
                for e in &gone {
                    if let Err(err) = disk.remove(&e.key.id(), false).await {
                        tracing::warn!(error = %err, "cache: expired entry not removed from disk");
                    }
                }
                if let Err(err) = disk.sweep(now) {
                    tracing::warn!(error = %err, "cache: disk sweep failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn clock() -> (Arc<AtomicU64>, Clock) {
        let t = Arc::new(AtomicU64::new(1_000_000));
        let c = t.clone();
        (t, Arc::new(move || c.load(Ordering::Relaxed)))
    }

    fn key(id: &str) -> CacheKey {
        CacheKey::new("ns", id)
    }

    #[tokio::test]
    async fn a_handed_over_entry_is_adopted_unless_held_or_invalidated_meanwhile() {
        let (t, c) = clock();
        let cache = Cache::with_disk(&CacheConfig::default(), None, c);
        let handed = |id: &str, deps: Vec<Dependency>| {
            let mut e = Entry::new(key(id), json!(id), 10, 1_000_000);
            e.dependencies = deps;
            e
        };
        let adopt = |e: Entry| {
            let cache = &cache;
            async move { cache.adopt(e).await.expect("cache operation") }
        };
        assert!(adopt(handed("fresh", vec![])).await);
        assert!(cache.peek(&key("fresh").id()).expect("peek").is_some());
        // Held here already (a newer write): kept.
        cache
            .put(Put::new(key("held"), json!("newer")))
            .await
            .expect("cache operation");
        assert!(!adopt(handed("held", vec![])).await);
        let held = cache.peek(&key("held").id()).expect("peek").expect("held");
        assert_eq!(*held.value, json!("newer"));
        // Deleted, tag-invalidated or pattern-cleared here while in flight: not adopted.
        cache.delete(&key("gone").id(), None).await.expect("delete");
        assert!(!adopt(handed("gone", vec![])).await);
        cache.invalidate_tag("dataset:v2").await.expect("tag");
        assert!(!adopt(handed("dep", vec![Dependency::Tag("dataset:v2".into())])).await);
        cache
            .invalidate_dotted("ns.batch-*")
            .await
            .expect("pattern");
        assert!(!adopt(handed("batch-7", vec![])).await);
        assert!(cache.peek(&key("gone").id()).expect("peek").is_none());
        // Thirty seconds later those invalidations no longer stand in the way.
        t.fetch_add(RECENT_MS + 1, Ordering::Relaxed);
        assert!(adopt(handed("gone", vec![])).await);
        // Expired in flight: not adopted.
        let mut old = handed("old", vec![]);
        old.expires_at_ms = Some(1);
        assert!(!adopt(old).await);
    }

    #[tokio::test]
    async fn put_get_delete_in_memory() {
        let (_, c) = clock();
        let cache = Cache::with_disk(&CacheConfig::default(), None, c);
        cache
            .put(Put::new(key("a"), json!({"x": 1})))
            .await
            .expect("cache operation");
        let hit = cache
            .get(&key("a").id(), Levels::default())
            .await
            .expect("cache operation")
            .expect("cache operation");
        assert_eq!(hit.tier, Tier::L1);
        assert_eq!(*hit.found.entry.value, json!({"x": 1}));
        assert_eq!(hit.found.access_count, 1);
        assert_eq!(
            cache
                .delete(&key("a").id(), None)
                .await
                .expect("cache operation"),
            (true, 0)
        );
        assert!(
            cache
                .get(&key("a").id(), Levels::default())
                .await
                .expect("cache operation")
                .is_none()
        );
        let big = json!("x".repeat(5 << 20));
        assert!(matches!(
            cache.put(Put::new(key("big"), big)).await,
            Err(CacheError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn invalidation_cascades_through_keys_and_tags() {
        let (_, c) = clock();
        let cache = Cache::with_disk(
            &CacheConfig::default(),
            Some(Arc::new(Disk::temporary().expect("cache operation"))),
            c,
        );
        cache
            .put(Put::new(key("raw"), json!(1)))
            .await
            .expect("cache operation");
        let mut features = Put::new(key("features"), json!(2));
        features.dependencies = vec![Dependency::Key(key("raw").id())];
        cache.put(features).await.expect("cache operation");
        let mut model = Put::new(key("model"), json!(3));
        model.dependencies = vec![
            Dependency::Key(key("features").id()),
            Dependency::Tag("dataset:v2".into()),
        ];
        cache.put(model).await.expect("cache operation");
        let mut report = Put::new(key("report"), json!(4));
        report.dependencies = vec![Dependency::Key(key("model").id())];
        cache.put(report).await.expect("cache operation");
        // Changing `raw` drops features, model and report.
        cache
            .put(Put::new(key("raw"), json!(10)))
            .await
            .expect("cache operation");
        for gone in ["features", "model", "report"] {
            assert!(
                cache
                    .get(&key(gone).id(), Levels::default())
                    .await
                    .expect("cache operation")
                    .is_none(),
                "{gone}"
            );
        }
        // A tag reaches entries that only the disk still holds.
        let mut model = Put::new(key("model"), json!(3));
        model.dependencies = vec![Dependency::Tag("dataset:v2".into())];
        cache.put(model).await.expect("cache operation");
        cache.memory.remove(&key("model").id(), Removal::Removed);
        assert_eq!(
            cache
                .invalidate_tag("dataset:v2")
                .await
                .expect("cache operation"),
            1
        );
        assert!(
            cache
                .get(&key("model").id(), Levels::default())
                .await
                .expect("cache operation")
                .is_none()
        );
        assert!(
            cache
                .get(&key("raw").id(), Levels::default())
                .await
                .expect("cache operation")
                .is_some()
        );
    }

    #[tokio::test]
    async fn atomics_keep_ttl_and_refuse_without_changing() {
        let (t, c) = clock();
        let cache = Cache::with_disk(&CacheConfig::default(), None, c);
        let lock: AtomicOp = serde_json::from_value(json!({
            "operation_type": "test_and_set", "expected_value": null, "new_value": "owner-1", "ttl_seconds": 5
        })).expect("cache operation");
        assert!(
            cache
                .atomic(key("lock"), &lock, None)
                .await
                .expect("cache operation")
                .applied
        );
        assert!(
            !cache
                .atomic(key("lock"), &lock, None)
                .await
                .expect("cache operation")
                .applied
        );
        t.fetch_add(5_000, Ordering::Relaxed);
        assert!(
            cache
                .atomic(key("lock"), &lock, None)
                .await
                .expect("cache operation")
                .applied,
            "the lease ran out"
        );
        let inc: AtomicOp = serde_json::from_value(json!({"operation_type": "increment"}))
            .expect("cache operation");
        let handles: Vec<_> = (0..50)
            .map(|_| cache.atomic(key("n"), &inc, None))
            .collect();
        for h in handles {
            h.await.expect("cache operation");
        }
        let n = cache
            .get(&key("n").id(), Levels::default())
            .await
            .expect("cache operation")
            .expect("cache operation");
        assert_eq!(*n.found.entry.value, json!(50));
        let push: StructureOp = serde_json::from_value(
            json!({"structure_type": "list", "operation": "push", "values": [1]}),
        )
        .expect("cache operation");
        assert!(matches!(
            cache.structure(key("n"), &push, None, None).await,
            Err(CacheError::Op(_))
        ));
        assert_eq!(
            *cache
                .get(&key("n").id(), Levels::default())
                .await
                .expect("cache operation")
                .expect("cache operation")
                .found
                .entry
                .value,
            json!(50)
        );
    }

    #[tokio::test]
    async fn a_reopened_cache_serves_from_disk_and_clears_by_glob() {
        let dir = tempfile::tempdir().expect("cache operation");
        let (_, c) = clock();
        let config = CacheConfig::default();
        {
            let cache = Cache::open(&config, Some(dir.path()), c.clone()).expect("cache operation");
            for i in 0..5 {
                let mut p = Put::new(key(&format!("user:{i}")), json!(i));
                p.consistency = Some(Consistency::Strong);
                cache.put(p).await.expect("cache operation");
            }
        }
        let cache = Cache::open(&config, Some(dir.path()), c).expect("cache operation");
        let hit = cache
            .get(&key("user:3").id(), Levels::default())
            .await
            .expect("cache operation")
            .expect("cache operation");
        assert_eq!(hit.tier, Tier::L2);
        assert_eq!(
            cache
                .get(&key("user:3").id(), Levels::default())
                .await
                .expect("cache operation")
                .expect("cache operation")
                .tier,
            Tier::L1
        );
        let cleared = cache
            .clear("ns", "user:*", 2, false)
            .await
            .expect("cache operation");
        assert_eq!(cleared.len(), 2);
        assert_eq!(
            cache.keys("ns", "*", 100).expect("cache operation").len(),
            3
        );
        let stats = cache.stats();
        assert_eq!(stats["l2"]["hits"], 1);
    }
}
