//! `[cache]`: the multi-tier cache's budgets, tiers and namespaces (docs/cache.md,
//! docs/configuration.md).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The memory tier's eviction policies by name (`cache::policy` implements them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Least recently used.
    Lru,
    /// Four LRU segments: entries hit again climb, one-hit entries leave first.
    S4lru,
    /// A small and a main FIFO with a ghost list.
    S3fifo,
    /// GreedyDual-Size: keeps what is expensive to compute again per byte.
    Cost,
}

impl PolicyKind {
    /// Its name in the config (and in metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::S4lru => "s4lru",
            PolicyKind::S3fifo => "s3fifo",
            PolicyKind::Cost => "cost",
        }
    }
}

/// How one namespace is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSpec {
    /// Which entry goes when the namespace is over its budget.
    pub policy: PolicyKind,
    /// Its byte budget in the memory tier.
    pub max_bytes: u64,
    /// Time to live of entries put without one; `None`: they live until evicted or removed.
    pub default_ttl_seconds: Option<f64>,
}

impl Default for NamespaceSpec {
    fn default() -> Self {
        NamespaceSpec {
            policy: PolicyKind::S4lru,
            max_bytes: 64 << 20,
            default_ttl_seconds: None,
        }
    }
}

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// In memory, and on disk within a few milliseconds.
    #[default]
    Eventual,
    /// On disk (flushed) before the reply.
    Strong,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes the memory tier holds in total.
    pub max_bytes: u64,
    /// Largest value one entry may hold (its JSON), in bytes.
    pub max_value_bytes: u64,
    /// Namespaces that may exist at once.
    pub max_namespaces: usize,
    /// The persistent tier (sled, under `node.data_dir`); without a data dir the cache is in
    /// memory only.
    pub persistent: bool,
    /// Keys owned across the cluster (each key lives on one node, chosen by rendezvous
    /// hashing over the live members); off: each node's cache is its own.
    pub cluster: bool,
    /// Changes published on `cache.events.<namespace>.<op>` (while anyone subscribes), and
    /// messages on `cache.invalidation.…` applied (docs/cache.md, "Events").
    pub events: bool,
    /// What a write without `consistency_level` gets.
    pub default_consistency: Consistency,
    /// Memory sled may use for the persistent tier's pages, in MiB.
    pub persistent_cache_mib: u64,
    /// How often expired entries are swept from both tiers, in milliseconds.
    pub sweep_ms: u64,
    /// The spec of namespaces not named in `namespaces`.
    pub default_namespace: NamespaceSpec,
    /// Namespaces with their own spec: `[cache.namespaces.ml] policy = "cost"`.
    pub namespaces: HashMap<String, NamespaceSpec>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 << 20,
            max_value_bytes: 4 << 20,
            max_namespaces: 1024,
            persistent: true,
            cluster: true,
            events: true,
            default_consistency: Consistency::Eventual,
            persistent_cache_mib: 32,
            sweep_ms: 1000,
            default_namespace: NamespaceSpec::default(),
            namespaces: HashMap::new(),
        }
    }
}

impl CacheConfig {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.max_bytes < 1 << 16 {
            return Some("cache.max_bytes must be at least 65536".into());
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > self.max_bytes {
            return Some("cache.max_value_bytes must be between 1 and cache.max_bytes".into());
        }
        if self.max_namespaces == 0 || self.max_namespaces > 100_000 {
            return Some("cache.max_namespaces must be between 1 and 100000".into());
        }
        if self.sweep_ms == 0 {
            return Some("cache.sweep_ms must be at least 1".into());
        }
        for (name, spec) in std::iter::once(("default_namespace", &self.default_namespace))
            .chain(self.namespaces.iter().map(|(n, s)| (n.as_str(), s)))
        {
            if spec.max_bytes == 0 {
                return Some(format!(
                    "cache namespace '{name}': max_bytes must be at least 1"
                ));
            }
            if spec
                .default_ttl_seconds
                .is_some_and(|t| !(t > 0.0 && t.is_finite()))
            {
                return Some(format!(
                    "cache namespace '{name}': default_ttl_seconds must be a positive number"
                ));
            }
        }
        None
    }
}
