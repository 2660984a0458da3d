//! The plugin store: published components kept in sled under the node's data directory, so
//! plugins and their active versions survive a restart.
//!
//! - `blobs`: sha256 → component bytes (content-addressed: one copy however often published).
//! - `compiled`: `sha256:engine-fingerprint` → wasmtime's serialized machine code, so a restart
//!   or a re-publish of known bytes skips Cranelift.
//! - `records`: `name@version` → [`PluginRecord`]. A record is never deleted: a version, once
//!   published, stays bound to its bytes (retire only marks it inactive).
//! - `meta`: node-level values (the admin token's hash).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::runtime::Sandbox;

/// The store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption, the directory is locked by another node).
    #[error("plugin store: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be decoded.
    #[error("plugin store record {key}: {message}")]
    Decode {
        /// Its key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// One published plugin version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Plugin name (from its manifest).
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of the component.
    pub sha256: String,
    /// Component size in bytes.
    pub size: u64,
    /// Sandbox given at publish.
    pub sandbox: Sandbox,
    /// Served now (false once retired).
    pub active: bool,
    /// When it was (last) published, Unix seconds.
    pub published_at: f64,
    /// When it was last published or retired anywhere in the cluster, Unix seconds: the newest
    /// state of a version wins across nodes. 0 in records written before clustering
    /// (`published_at` stands in).
    #[serde(default)]
    pub changed_at: f64,
    /// Resource tags a node must have to host it (empty: every node).
    #[serde(default)]
    pub placement: Vec<String>,
}

impl PluginRecord {
    /// The key of `name@version`.
    pub fn key_of(name: &str, version: &str) -> String {
        format!("{name}@{version}")
    }

    /// When its state last changed.
    pub fn changed(&self) -> f64 {
        if self.changed_at > 0.0 {
            self.changed_at
        } else {
            self.published_at
        }
    }
}

/// sled-backed plugin store.
#[derive(Clone)]
pub struct PluginStore {
    db: sled::Db,
    blobs: sled::Tree,
    compiled: sled::Tree,
    records: sled::Tree,
    meta: sled::Tree,
}

const TOKEN_KEY: &str = "admin_token_sha256";
const NODE_ID_KEY: &str = "node_id";

impl PluginStore {
    /// Opens (or creates) the store in `dir`; `None` keeps everything in memory (tests, demos).
    /// Blocking (it may wait for the file lock): call it off the async runtime.
    pub fn open(dir: Option<&Path>) -> Result<Self, StoreError> {
        let db = crate::sled_db::open(dir, "plugins.sled", 1 << 30)?;
        Ok(PluginStore {
            blobs: db.open_tree("blobs")?,
            compiled: db.open_tree("compiled")?,
            records: db.open_tree("records")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Component bytes by sha256.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blobs.get(sha256)?.map(|v| v.to_vec()))
    }

    /// Whether the bytes of `sha256` are stored.
    pub fn has_blob(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.blobs.contains_key(sha256)?)
    }

    /// Stores component bytes (a no-op when present).
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.blobs.contains_key(sha256)? {
            self.blobs.insert(sha256, bytes)?;
        }
        Ok(())
    }

    /// Compiled code of `sha256` for this engine.
    pub fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .compiled
            .get(format!("{sha256}:{engine}"))?
            .map(|v| v.to_vec()))
    }

    /// Keeps compiled code of `sha256` for this engine.
    pub fn put_compiled(&self, sha256: &str, engine: &str, code: &[u8]) -> Result<(), StoreError> {
        self.compiled.insert(format!("{sha256}:{engine}"), code)?;
        Ok(())
    }

    /// Forgets compiled code that could not be loaded (it is rebuilt from the blob).
    pub fn drop_compiled(&self, sha256: &str, engine: &str) -> Result<(), StoreError> {
        self.compiled.remove(format!("{sha256}:{engine}"))?;
        Ok(())
    }

    /// The record of `name@version`.
    pub fn record(&self, name: &str, version: &str) -> Result<Option<PluginRecord>, StoreError> {
        let key = PluginRecord::key_of(name, version);
        self.records
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// Writes a record.
    pub fn put_record(&self, record: &PluginRecord) -> Result<(), StoreError> {
        let key = PluginRecord::key_of(&record.name, &record.version);
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Decode {
            key: key.clone(),
            message: e.to_string(),
        })?;
        self.records.insert(key, value)?;
        Ok(())
    }

    /// Every record, active or not, in key order.
    pub fn records(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.records
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// The node id kept from the first start.
    pub fn node_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(NODE_ID_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Keeps the node id.
    pub fn set_node_id(&self, id: &str) -> Result<(), StoreError> {
        self.meta.insert(NODE_ID_KEY, id.as_bytes())?;
        Ok(())
    }

    /// The stored admin token hash, if a token was generated earlier.
    pub fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(TOKEN_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Remembers the hash of a generated admin token.
    pub fn set_admin_token_hash(&self, hash: &str) -> Result<(), StoreError> {
        self.meta.insert(TOKEN_KEY, hash.as_bytes())?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<PluginRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(active: bool) -> PluginRecord {
        PluginRecord {
            name: "math".into(),
            version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            size: 3,
            sandbox: Sandbox::default(),
            active,
            published_at: 1.0,
            changed_at: 0.0,
            placement: Vec::new(),
        }
    }

    #[tokio::test]
    async fn everything_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = PluginStore::open(Some(dir.path())).expect("open");
            store.put_blob("s", b"abc").expect("blob");
            store.put_compiled("s", "e1", b"code").expect("compiled");
            store.put_record(&record(true)).expect("record");
            store.set_admin_token_hash("h").expect("token");
            store.flush().await.expect("flush");
        }
        let store = PluginStore::open(Some(dir.path())).expect("reopen");
        assert_eq!(store.blob("s").expect("read"), Some(b"abc".to_vec()));
        assert_eq!(
            store.compiled("s", "e1").expect("read"),
            Some(b"code".to_vec())
        );
        assert_eq!(store.compiled("s", "other-engine").expect("read"), None);
        assert_eq!(store.records().expect("read"), vec![record(true)]);
        assert_eq!(
            store.admin_token_hash().expect("read").as_deref(),
            Some("h")
        );
        store.put_record(&record(false)).expect("retire");
        assert!(
            !store
                .record("math", "1.0.0")
                .expect("read")
                .expect("some")
                .active
        );
    }
}
