//! Cranelift's incremental compilation cache: the machine code of each function, keyed by the
//! function's body. A rebuilt plugin (a Python or JavaScript image whose interpreter did not
//! change, a Rust crate with one edited function) then compiles only what changed: a Python
//! image of 18 MB goes from seconds to a fraction of one on the dev loop.
//!
//! The cache lives in memory, bounded by `[runtime] compile_cache_mib` (0 turns it off, the
//! default for a production node, whose plugins rarely share code). When an insert would pass
//! the bound the cache is emptied and starts again: simple, and the next compile refills it
//! with what is in use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use wasmtime::CacheStore;

/// A bounded in-memory [`CacheStore`].
#[derive(Debug)]
pub struct FunctionCache {
    limit: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl FunctionCache {
    /// A cache holding at most `limit` bytes of keys and code.
    pub fn new(limit: usize) -> FunctionCache {
        FunctionCache {
            limit,
            inner: Mutex::default(),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |e| e.bytes)
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entries = self.inner.lock().ok()?;
        entries.map.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > self.limit {
            return false;
        }
        let Ok(mut entries) = self.inner.lock() else {
            return false;
        };
        if entries.bytes + size > self.limit {
            entries.map.clear();
            entries.bytes = 0;
        }
        if let Some(old) = entries.map.insert(key.to_vec(), value) {
            entries.bytes -= key.len() + old.len();
        }
        entries.bytes += size;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_and_the_bound_holds() {
        let cache = FunctionCache::new(100);
        assert!(cache.insert(b"a", vec![1; 40]));
        assert_eq!(cache.get(b"a").as_deref(), Some(&[1u8; 40][..]));
        assert!(cache.insert(b"a", vec![2; 40]), "replacing counts once");
        assert_eq!(cache.bytes(), 41);
        assert!(cache.insert(b"b", vec![3; 40]));
        assert_eq!(cache.bytes(), 82);
        // Past the bound: emptied, then holds the newcomer.
        assert!(cache.insert(b"c", vec![4; 40]));
        assert_eq!(cache.bytes(), 41);
        assert!(cache.get(b"a").is_none());
        assert!(cache.get(b"c").is_some());
        assert!(!cache.insert(b"d", vec![0; 200]), "larger than the bound");
    }
}
