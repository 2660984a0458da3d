//! Queue persistence in sled: one tree of specs, one tree of messages per queue (key: the
//! message's seq, big-endian, so a scan restores send order).
//!
//! Durability is by group commit: a caller that must not answer before its changes are on disk
//! awaits [`QueueStore::sync`]; concurrent callers share one flush, so many small sends cost one
//! fsync between them rather than one each.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::state::{Change, Counters, QueueSpec, Stored};

/// The key of a queue's counters in its message tree: message seqs start at 1 and never reach
/// it, and it sorts last, after every message.
const COUNTERS_KEY: [u8; 8] = u64::MAX.to_be_bytes();

/// One queue as loaded: its settings, counters and messages in send order.
pub struct Loaded {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub spec: QueueSpec,
    /// Its counters (default for a queue written before counters were kept).
    pub counters: Counters,
    /// Its messages.
    pub messages: Vec<Stored>,
}

/// Why the queue store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption, directory locked).
    #[error("queue storage: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be read back.
    #[error("queue storage holds an unreadable record: {0}")]
    Corrupt(String),
}

/// The node's queue storage.
pub struct QueueStore {
    db: sled::Db,
    specs: sled::Tree,
    /// Bumped after every write; a flush that starts after reading it covers those writes.
    written: AtomicU64,
    flushed: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
    durable: bool,
}

fn tree_name(queue: &str) -> String {
    format!("m:{queue}")
}

impl QueueStore {
    /// Opens `dir/queues.sled`; without a directory, a temporary store (lost at exit).
    pub fn open(dir: Option<&Path>) -> Result<Self, StoreError> {
        let db = crate::sled_db::open(dir, "queues.sled")?;
        Ok(QueueStore {
            specs: db.open_tree("specs")?,
            db,
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            durable: dir.is_some(),
        })
    }

    /// Whether acknowledged writes survive a crash (false for a node without a data directory).
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Every queue with its counters and messages, in send order.
    pub fn load(&self) -> Result<Vec<Loaded>, StoreError> {
        let mut out = Vec::new();
        for item in self.specs.iter() {
            let (k, v) = item?;
            let name = String::from_utf8(k.to_vec())
                .map_err(|_| StoreError::Corrupt("queue name is not UTF-8".into()))?;
            let spec: QueueSpec = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("spec of '{name}': {e}")))?;
            let tree = self.db.open_tree(tree_name(&name))?;
            let mut messages = Vec::new();
            let mut counters = Counters::default();
            for m in tree.iter() {
                let (k, v) = m?;
                if *k == COUNTERS_KEY {
                    counters = postcard::from_bytes(&v)
                        .map_err(|e| StoreError::Corrupt(format!("counters of '{name}': {e}")))?;
                    continue;
                }
                messages.push(
                    postcard::from_bytes::<Stored>(&v)
                        .map_err(|e| StoreError::Corrupt(format!("message in '{name}': {e}")))?,
                );
            }
            out.push(Loaded {
                name,
                spec,
                counters,
                messages,
            });
        }
        Ok(out)
    }

    /// Records a new queue.
    pub fn create(&self, name: &str, spec: &QueueSpec) -> Result<(), StoreError> {
        let json = serde_json::to_vec(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.specs.insert(name.as_bytes(), json)?;
        self.db.open_tree(tree_name(name))?;
        self.written.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Forgets a queue and its messages.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.specs.remove(name.as_bytes())?;
        self.db.drop_tree(tree_name(name))?;
        self.written.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Applies `changes` to queue `name` together with its `counters`, in one atomic batch
    /// (dead letters are removed here: the caller files them as `Put`s of the dead-letter
    /// queue).
    pub fn apply(
        &self,
        name: &str,
        changes: &[Change],
        counters: &Counters,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tree = self.db.open_tree(tree_name(name))?;
        let mut batch = sled::Batch::default();
        let counted =
            postcard::to_stdvec(counters).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.insert(&COUNTERS_KEY, counted);
        for c in changes {
            match c {
                Change::Put(m) => {
                    let bytes =
                        postcard::to_stdvec(m).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    batch.insert(&m.seq.to_be_bytes(), bytes);
                }
                Change::Delete(seq) => batch.remove(&seq.to_be_bytes()),
                Change::DeadLetter(m) => batch.remove(&m.seq.to_be_bytes()),
            }
        }
        tree.apply_batch(batch)?;
        self.written.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Returns once everything written before the call is on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        if !self.durable {
            return Ok(());
        }
        let mine = self.written.load(Ordering::Acquire);
        if self.flushed.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let _one_flush_at_a_time = self.flushing.lock().await;
        // A flush that ran while this caller waited may have covered it already.
        if self.flushed.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        self.db.flush_async().await?;
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}
