//! Queue persistence in sled: one tree of specs, one tree of message records per queue (key:
//! the message's seq, big-endian, so a scan restores send order), and one tree of bodies for
//! the node (key: the message id, which a message keeps when it moves to its dead-letter queue
//! and back). Only the records are loaded at start-up and held in memory; a body is read when
//! its message is delivered or peeked, so a queue's memory does not grow with its bodies.
//!
//! Durability is by group commit: a caller that must not answer before its changes are on disk
//! awaits [`QueueStore::sync`]; concurrent callers share one flush, so many small sends cost one
//! fsync between them rather than one each.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::state::{Change, Counters, QueueSpec, Stored};

/// Pages of queue storage sled keeps in memory.
const CACHE_BYTES: u64 = 64 << 20;

/// The key of a queue's counters in its message tree: message seqs start at 1 and never reach
/// it, and it sorts last, after every message.
const COUNTERS_KEY: [u8; 8] = u64::MAX.to_be_bytes();

fn encode(m: &Stored) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(m).map_err(|e| StoreError::Corrupt(e.to_string()))
}

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
    bodies: sled::Tree,
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
        // Bodies beyond this stay on disk until a delivery reads them.
        let db = crate::sled_db::open(dir, "queues.sled", CACHE_BYTES)?;
        Ok(QueueStore {
            specs: db.open_tree("specs")?,
            bodies: db.open_tree("bodies")?,
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
                let mut m = postcard::from_bytes::<Stored>(&v)
                    .map_err(|e| StoreError::Corrupt(format!("message in '{name}': {e}")))?;
                if !m.body.is_empty() {
                    // Written before bodies had a tree of their own: move it there.
                    self.bodies.insert(m.id.as_bytes(), m.body.as_bytes())?;
                    m.body = String::new();
                    tree.insert(k, encode(&m)?)?;
                }
                messages.push(m);
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
        let tree = self.db.open_tree(tree_name(name))?;
        for item in tree.iter() {
            let (k, v) = item?;
            if *k != COUNTERS_KEY
                && let Ok(m) = postcard::from_bytes::<Stored>(&v)
            {
                self.bodies.remove(m.id.as_bytes())?;
            }
        }
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
        // Bodies first: a crash between the two leaves at worst a body without its record,
        // never a record without its body.
        let mut gone = Vec::new();
        let mut put: std::collections::HashMap<u64, &str> = std::collections::HashMap::new();
        for c in changes {
            match c {
                Change::Put(m) => {
                    put.insert(m.seq, &m.id);
                    if !m.body.is_empty() {
                        self.bodies.insert(m.id.as_bytes(), m.body.as_bytes())?;
                    }
                    let record = Stored {
                        body: String::new(),
                        ..m.clone()
                    };
                    batch.insert(&m.seq.to_be_bytes(), encode(&record)?);
                }
                Change::Delete(seq) => {
                    if let Some(id) = put.remove(seq) {
                        gone.push(id.to_owned());
                    } else if let Some(v) = tree.get(seq.to_be_bytes())?
                        && let Ok(m) = postcard::from_bytes::<Stored>(&v)
                    {
                        gone.push(m.id);
                    }
                    batch.remove(&seq.to_be_bytes());
                }
                // Their bodies go with them, under the same id.
                Change::DeadLetter(m) => batch.remove(&m.seq.to_be_bytes()),
                Change::MovedOut(seq) => batch.remove(&seq.to_be_bytes()),
            }
        }
        tree.apply_batch(batch)?;
        for id in gone {
            self.bodies.remove(id.as_bytes())?;
        }
        self.written.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The body of message `id`, when it is stored.
    pub fn body(&self, id: &str) -> Result<Option<String>, StoreError> {
        match self.bodies.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("body of '{id}' is not UTF-8"))),
        }
    }

    /// Drops the body of message `id` (a dead letter its dead-letter queue refused).
    pub fn forget_body(&self, id: &str) -> Result<(), StoreError> {
        self.bodies.remove(id.as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::state::QueueSpec;

    fn record(seq: u64, body: &str) -> Stored {
        Stored {
            seq,
            id: format!("q-{seq}"),
            body: body.into(),
            priority: 0,
            sent_ms: 1,
            visible_ms: 1,
            dedup_id: None,
            attempts: Default::default(),
            acked_by: Default::default(),
            dead: None,
        }
    }

    #[test]
    fn records_load_without_bodies_and_bodies_come_back_by_id() {
        let dir = tempfile::tempdir().expect("dir");
        let store = QueueStore::open(Some(dir.path())).expect("open");
        store.create("q", &QueueSpec::default()).expect("create");
        let c = Counters::default();
        store
            .apply(
                "q",
                &[
                    Change::Put(record(1, "\"one\"")),
                    Change::Put(record(2, "2")),
                ],
                &c,
            )
            .expect("put");
        // A metadata update carries no body: the stored one stays.
        store
            .apply("q", &[Change::Put(record(1, ""))], &c)
            .expect("update");
        let loaded = store.load().expect("load");
        assert!(loaded[0].messages.iter().all(|m| m.body.is_empty()));
        assert_eq!(store.body("q-1").expect("body").as_deref(), Some("\"one\""));
        // A delete takes the body with it; a move keeps it.
        store
            .apply("q", &[Change::Delete(1), Change::MovedOut(2)], &c)
            .expect("delete");
        assert_eq!(store.body("q-1").expect("body"), None);
        assert_eq!(store.body("q-2").expect("body").as_deref(), Some("2"));
        // Put and deleted in one batch: no body left behind.
        store
            .apply("q", &[Change::Put(record(3, "3")), Change::Delete(3)], &c)
            .expect("both");
        assert_eq!(store.body("q-3").expect("body"), None);
    }

    #[test]
    fn records_written_with_their_bodies_are_moved_on_load() {
        let dir = tempfile::tempdir().expect("dir");
        let store = QueueStore::open(Some(dir.path())).expect("open");
        store.create("q", &QueueSpec::default()).expect("create");
        // The format before bodies had a tree of their own.
        let tree = store.db.open_tree(tree_name("q")).expect("tree");
        tree.insert(
            7u64.to_be_bytes(),
            encode(&record(7, "{\"old\":1}")).expect("encode"),
        )
        .expect("insert");
        let loaded = store.load().expect("load");
        assert_eq!(loaded[0].messages.len(), 1);
        assert!(loaded[0].messages[0].body.is_empty());
        assert_eq!(
            store.body("q-7").expect("body").as_deref(),
            Some("{\"old\":1}")
        );
        // And the record itself no longer holds it.
        let again = store.load().expect("load");
        assert!(again[0].messages[0].body.is_empty());
        // Deleting the queue deletes its bodies.
        store.delete("q").expect("delete");
        assert_eq!(store.body("q-7").expect("body"), None);
    }
}
