//! L2, the persistent tier (docs/cache.md, "Tiers"): entries in sled under the node's data
//! directory, with an expiry index of its own (sled has no TTL), so a restarted node serves
//! what it held at once and nothing that expired meanwhile.
//!
//! Two ways to write, as a put's `consistency_level` asks:
//! - `strong`: written and flushed to disk before the put is answered;
//! - `eventual`: queued and written with the others in one batch a few milliseconds later;
//!   reads see the queued value until then.
//!
//! Writes are ordered per key: a strong write of a key drops any queued write of it, and the
//! batch writer and strong writers take turns ([`Disk::apply`]), so an older queued value never
//! lands over a newer one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::key::{Dependency, Entry, KeyId, Select};

/// How often queued writes go to disk.
const BATCH_EVERY: Duration = Duration::from_millis(20);
/// Queued writes that start a batch at once.
const BATCH_AT: usize = 1024;

/// Why the persistent tier failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// sled failed.
    #[error("cache store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored entry could not be read (written by an incompatible version, or damaged).
    #[error("cache store: entry '{key}' is unreadable: {why}")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        why: String,
    },
}

/// A queued write: an entry to store, or a removal.
type Pending = HashMap<KeyId, Option<Arc<Entry>>>;

/// The persistent tier.
pub struct Disk {
    db: sled::Db,
    entries: sled::Tree,
    /// `expires_at_ms` (8 bytes, big-endian) + key id → nothing.
    expiry: sled::Tree,
    /// What an entry listens to ([`dep_prefix`]) + key id → nothing: the dependents of entries
    /// that left the memory tier are still found when what they depend on is invalidated.
    dependents: sled::Tree,
    pending: Mutex<Pending>,
    /// Held while writing to the trees (the batch writer and strong writes take turns).
    apply: Mutex<()>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The prefix of `dep`'s marks in the dependents tree.
fn dep_prefix(dep: &Dependency) -> Vec<u8> {
    let mut k = match dep {
        Dependency::Key(id) => format!("k{}", id.as_str()),
        Dependency::Tag(t) => format!("t{t}"),
    }
    .into_bytes();
    k.push(0);
    k
}

fn dep_key(dep: &Dependency, id: &KeyId) -> Vec<u8> {
    let mut k = dep_prefix(dep);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn expiry_key(at: u64, id: &KeyId) -> Vec<u8> {
    let mut k = at.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

impl Disk {
    /// Opens the tier in `dir/cache` (blocking: call it off the async runtime).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, DiskError> {
        let db = crate::sled_db::open(Some(dir), "cache", cache_bytes)?;
        Self::on(db)
    }

    /// The tier in a temporary database (tests).
    pub fn temporary() -> Result<Self, DiskError> {
        Self::on(crate::sled_db::open(None, "cache", 16 << 20)?)
    }

    fn on(db: sled::Db) -> Result<Self, DiskError> {
        Ok(Disk {
            entries: db.open_tree("entries")?,
            expiry: db.open_tree("expiry")?,
            dependents: db.open_tree("dependents")?,
            db,
            pending: Mutex::new(HashMap::new()),
            apply: Mutex::new(()),
            wake: Notify::new(),
        })
    }

    /// The entry of `id`, queued or stored; `None` when absent or expired at `now_ms`.
    pub fn get(&self, id: &KeyId, now_ms: u64) -> Result<Option<Entry>, DiskError> {
        if let Some(queued) = lock(&self.pending).get(id) {
            return Ok(queued.as_deref().filter(|e| !e.expired(now_ms)).cloned());
        }
        let Some(raw) = self.entries.get(id.as_str())? else {
            return Ok(None);
        };
        let entry: Entry = serde_json::from_slice(&raw).map_err(|e| DiskError::Corrupt {
            key: id.display(),
            why: e.to_string(),
        })?;
        Ok((!entry.expired(now_ms)).then_some(entry))
    }

    /// Writes `entry` now and waits until it is on disk.
    pub async fn put_strong(&self, entry: &Arc<Entry>) -> Result<(), DiskError> {
        {
            let _turn = lock(&self.apply);
            let id = entry.key.id();
            lock(&self.pending).remove(&id);
            self.write(&id, Some(entry))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Queues `entry` for the next batch.
    pub fn put_eventual(&self, entry: Arc<Entry>) {
        self.queue(entry.key.id(), Some(entry));
    }

    /// Removes `id`; with `strong`, on disk before it returns.
    pub async fn remove(&self, id: &KeyId, strong: bool) -> Result<(), DiskError> {
        if !strong {
            self.queue(id.clone(), None);
            return Ok(());
        }
        {
            let _turn = lock(&self.apply);
            lock(&self.pending).remove(id);
            self.write(id, None)?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    fn queue(&self, id: KeyId, write: Option<Arc<Entry>>) {
        let n = {
            let mut p = lock(&self.pending);
            p.insert(id, write);
            p.len()
        };
        if n >= BATCH_AT {
            self.wake.notify_one();
        }
    }

    /// Writes (or removes) one key in both trees; the caller holds `apply`.
    fn write(&self, id: &KeyId, entry: Option<&Arc<Entry>>) -> Result<(), DiskError> {
        let old = match entry {
            Some(e) => {
                let bytes = serde_json::to_vec(&**e).map_err(|err| DiskError::Corrupt {
                    key: id.display(),
                    why: err.to_string(),
                })?;
                if let Some(at) = e.expires_at_ms {
                    self.expiry.insert(expiry_key(at, id), &[])?;
                }
                for dep in e.listens() {
                    self.dependents.insert(dep_key(&dep, id), &[])?;
                }
                self.entries.insert(id.as_str(), bytes)?
            }
            None => self.entries.remove(id.as_str())?,
        };
        let Some(old) = old.and_then(|o| serde_json::from_slice::<Entry>(&o).ok()) else {
            return Ok(());
        };
        // The old value's marks go unless the new one has the same.
        if let Some(at) = old.expires_at_ms
            && entry.and_then(|e| e.expires_at_ms) != Some(at)
        {
            self.expiry.remove(expiry_key(at, id))?;
        }
        for dep in old.listens() {
            if !entry.is_some_and(|e| e.listens().any(|d| d == dep)) {
                self.dependents.remove(dep_key(&dep, id))?;
            }
        }
        Ok(())
    }

    /// Writes every queued change in one turn; returns how many.
    pub fn write_batch(&self) -> Result<usize, DiskError> {
        let _turn = lock(&self.apply);
        let batch = std::mem::take(&mut *lock(&self.pending));
        let n = batch.len();
        for (id, entry) in &batch {
            self.write(id, entry.as_ref())?;
        }
        Ok(n)
    }

    /// Writes queued changes every few milliseconds until `stop`, then the last of them, and
    /// flushes.
    pub async fn run_writer(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(BATCH_EVERY) => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.write_batch() {
                tracing::warn!(error = %e, "cache: queued writes not stored");
            }
        }
        if let Err(e) = self.write_batch() {
            tracing::warn!(error = %e, "cache: last queued writes not stored");
        }
        if let Err(e) = self.db.flush_async().await {
            tracing::warn!(error = %e, "cache: flush at shutdown failed");
        }
    }

    /// Removes every entry whose time ran out by `now_ms`; returns their keys.
    pub fn sweep(&self, now_ms: u64) -> Result<Vec<KeyId>, DiskError> {
        let _turn = lock(&self.apply);
        let mut gone = Vec::new();
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        for item in self.expiry.range(..end.as_slice()) {
            let (k, _) = item?;
            self.expiry.remove(&k)?;
            let Some(id) = std::str::from_utf8(&k[8..]).ok().and_then(KeyId::parse) else {
                continue;
            };
            // Still the entry that mark was for (not a newer value with another expiry)?
            let due = match self.entries.get(id.as_str())? {
                Some(raw) => {
                    serde_json::from_slice::<Entry>(&raw).map_or(true, |e| e.expired(now_ms))
                }
                None => false,
            };
            if due {
                self.write(&id, None)?;
                gone.push(id);
            }
        }
        Ok(gone)
    }

    /// Stored (or queued) keys that listen to `dep`.
    pub fn dependents(&self, dep: &Dependency) -> Result<Vec<KeyId>, DiskError> {
        let prefix = dep_prefix(dep);
        let mut out = Vec::new();
        for item in self.dependents.scan_prefix(&prefix) {
            let (k, _) = item?;
            if let Some(id) = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(KeyId::parse)
            {
                out.push(id);
            }
        }
        for (id, e) in lock(&self.pending).iter() {
            if let Some(e) = e
                && e.listens().any(|d| d == *dep)
                && !out.contains(id)
            {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Stored keys `select` takes, at most `max`.
    pub fn keys(&self, select: &Select, max: usize) -> Result<Vec<KeyId>, DiskError> {
        let prefix = select.prefix().unwrap_or_default();
        let mut out = BTreeSet::new();
        for item in self.entries.scan_prefix(prefix.as_bytes()) {
            if out.len() >= max {
                break;
            }
            let (k, _) = item?;
            if let Some(id) = std::str::from_utf8(&k).ok().and_then(KeyId::parse)
                && select.matches(&id)
            {
                out.insert(id);
            }
        }
        let queued = lock(&self.pending);
        for (id, e) in queued.iter() {
            if select.matches(id) {
                match e {
                    Some(_) if out.len() < max => {
                        out.insert(id.clone());
                    }
                    None => {
                        out.remove(id);
                    }
                    _ => {}
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Entries stored (queued changes not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::CacheKey;
    use serde_json::json;

    fn entry(id: &str, ttl: Option<f64>) -> Arc<Entry> {
        Arc::new(
            Entry::new(CacheKey::new("ns", id), json!({"v": id}), 10, 1_000).with_ttl(ttl, 1_000),
        )
    }

    #[tokio::test]
    async fn strong_puts_survive_a_reopen_with_their_expiry() {
        let dir = tempfile::tempdir().expect("disk tier operation");
        {
            let d = Disk::open(dir.path(), 1 << 20).expect("disk tier operation");
            d.put_strong(&entry("a", None))
                .await
                .expect("disk tier operation");
            d.put_strong(&entry("b", Some(5.0)))
                .await
                .expect("disk tier operation");
        }
        let d = Disk::open(dir.path(), 1 << 20).expect("disk tier operation");
        let a = d
            .get(&KeyId::new("ns", "a", "v1.0.0"), 2_000)
            .expect("disk tier operation")
            .expect("disk tier operation");
        assert_eq!(*a.value, json!({"v": "a"}));
        let b = KeyId::new("ns", "b", "v1.0.0");
        assert!(d.get(&b, 5_999).expect("disk tier operation").is_some());
        assert!(
            d.get(&b, 6_000).expect("disk tier operation").is_none(),
            "expired after the reopen"
        );
        assert_eq!(d.sweep(6_000).expect("disk tier operation"), [b]);
        assert_eq!(d.len(), 1);
    }

    #[tokio::test]
    async fn eventual_writes_are_read_back_before_and_after_their_batch() {
        let d = Disk::temporary().expect("disk tier operation");
        d.put_eventual(entry("a", None));
        let id = KeyId::new("ns", "a", "v1.0.0");
        assert!(
            d.get(&id, 0).expect("disk tier operation").is_some(),
            "queued and read"
        );
        assert_eq!(d.len(), 0);
        assert_eq!(d.write_batch().expect("disk tier operation"), 1);
        assert_eq!(d.len(), 1);
        d.remove(&id, false).await.expect("disk tier operation");
        assert!(
            d.get(&id, 0).expect("disk tier operation").is_none(),
            "a queued removal hides it"
        );
        d.write_batch().expect("disk tier operation");
        assert!(d.is_empty());
    }

    #[tokio::test]
    async fn a_strong_write_is_not_overwritten_by_an_older_queued_one() {
        let d = Disk::temporary().expect("disk tier operation");
        let id = KeyId::new("ns", "a", "v1.0.0");
        d.put_eventual(entry("a", None));
        let mut newer = (*entry("a", None)).clone();
        newer.value = Arc::new(json!("newer"));
        d.put_strong(&Arc::new(newer))
            .await
            .expect("disk tier operation");
        d.write_batch().expect("disk tier operation");
        assert_eq!(
            *d.get(&id, 0)
                .expect("disk tier operation")
                .expect("disk tier operation")
                .value,
            json!("newer")
        );
    }

    #[tokio::test]
    async fn dependents_are_found_on_disk_and_forgotten_with_their_entry() {
        let d = Disk::temporary().expect("disk tier operation");
        let mut e = (*entry("report", None)).clone();
        e.dependencies = vec![Dependency::Tag("dataset:v2".into())];
        let id = e.key.id();
        d.put_strong(&Arc::new(e))
            .await
            .expect("disk tier operation");
        let tag = Dependency::Tag("dataset:v2".into());
        assert_eq!(
            d.dependents(&tag).expect("disk tier operation"),
            std::slice::from_ref(&id)
        );
        d.remove(&id, true).await.expect("disk tier operation");
        assert!(d.dependents(&tag).expect("disk tier operation").is_empty());
    }

    #[tokio::test]
    async fn a_replaced_value_leaves_no_stale_expiry_mark() {
        let d = Disk::temporary().expect("disk tier operation");
        d.put_strong(&entry("a", Some(1.0)))
            .await
            .expect("disk tier operation");
        d.put_strong(&entry("a", None))
            .await
            .expect("disk tier operation");
        assert!(
            d.sweep(10_000).expect("disk tier operation").is_empty(),
            "the forever value stays"
        );
        assert_eq!(d.len(), 1);
        let keys = d
            .keys(&Select::namespace("ns", "*"), 10)
            .expect("disk tier operation");
        assert_eq!(keys.len(), 1);
    }
}
