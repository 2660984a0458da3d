//! Opening a node's sled databases (plugin store, queues) the same way.

use std::path::Path;

/// Opens `dir/file` (created if missing); without a directory, a temporary database that is
/// gone when dropped. Blocking: it may wait for the file lock, so call it off the async runtime.
///
/// A database closed a moment ago (a node restarted in the same process) may still be held by
/// sled's flusher thread for a few milliseconds: the lock is retried for up to 2 s.
///
/// `cache_bytes` bounds the pages sled keeps in memory (its default is 1 GiB): what does not
/// fit is read back from the file (and the OS page cache) when needed.
pub fn open(dir: Option<&Path>, file: &str, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let config = match dir {
        Some(d) => sled::Config::new().path(d.join(file)),
        None => sled::Config::new().temporary(true),
    }
    .cache_capacity(cache_bytes);
    let mut attempts = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && attempts < 100 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
