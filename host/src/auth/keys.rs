//! The API keys file (`auth.keys_file`): one `[[key]]` per key with its id, name, roles and
//! the sha256 of the key. The key itself is shown once, when `mpreg auth key new` makes it,
//! and never stored.
//!
//! ```toml
//! [[key]]
//! id = "3f9a1c2e"
//! name = "ci-bot"
//! roles = ["reader"]
//! sha256 = "…"
//! created = 1764748800
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::policy::PolicySpec;
use crate::digest::sha256_hex;

/// What every generated key starts with, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "mpreg_";

/// One key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Short id, shown in listings and used to revoke.
    pub id: String,
    /// The identity the key stands for.
    pub name: String,
    /// Roles of `[auth.roles]` it holds.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Permissions of its own, merged with its roles'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,
    /// sha256 (hex) of the key.
    pub sha256: String,
    /// When it was made (Unix seconds).
    #[serde(default)]
    pub created: u64,
}

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Every key.
    #[serde(default)]
    pub key: Vec<KeyEntry>,
}

/// The keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing failed.
    #[error("keys file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a keys file.
    #[error("keys file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No key has that id or name.
    #[error("no key with id or name '{0}'")]
    Unknown(String),
    /// The system's random source failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io {
        path: path.to_owned(),
        source,
    }
}

impl KeysFile {
    /// Reads `path`; a missing file is an empty one (the first `key new` creates it).
    pub fn load(path: &Path) -> Result<KeysFile, KeysError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeysFile::default()),
            Err(e) => return Err(io(path)(e)),
        };
        let file: KeysFile = toml::from_str(&text).map_err(|e| KeysError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for k in &file.key {
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeysError::Parse {
                    path: path.to_owned(),
                    message: format!("key '{}': sha256 must be 64 hex digits", k.id),
                });
            }
        }
        Ok(file)
    }

    /// Writes the file whole (a temporary file renamed over it, readable by its owner only),
    /// so a node re-reading it never sees half of it.
    pub fn save(&self, path: &Path) -> Result<(), KeysError> {
        let text = toml::to_string_pretty(self).map_err(|e| KeysError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(io(path))?;
        }
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io(path))?;
            f.write_all(text.as_bytes()).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// Makes a key for `name` with `roles`, adds its entry, and returns the key (shown once).
    pub fn add(&mut self, name: &str, roles: Vec<String>) -> Result<(String, KeyEntry), KeysError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| KeysError::Random(e.to_string()))?;
        let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("{KEY_PREFIX}{secret}");
        let sha256 = sha256_hex(key.as_bytes());
        let entry = KeyEntry {
            id: sha256[..8].to_owned(),
            name: name.to_owned(),
            roles,
            policy: None,
            sha256,
            created: crate::clock::unix_now() as u64,
        };
        self.key.push(entry.clone());
        Ok((key, entry))
    }

    /// Removes every key whose id or name is `which`; says how many went.
    pub fn revoke(&mut self, which: &str) -> Result<usize, KeysError> {
        let before = self.key.len();
        self.key.retain(|k| k.id != which && k.name != which);
        match before - self.key.len() {
            0 => Err(KeysError::Unknown(which.to_owned())),
            n => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_stored_hashed_and_revoked() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("keys.toml");
        let mut file = KeysFile::load(&path).expect("missing is empty");
        assert!(file.key.is_empty());
        let (key, entry) = file.add("ci", vec!["reader".into()]).expect("add");
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_eq!(entry.sha256, sha256_hex(key.as_bytes()));
        file.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&key), "the key itself is never written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut again = KeysFile::load(&path).expect("load");
        assert_eq!(again, file);
        assert!(matches!(again.revoke("nobody"), Err(KeysError::Unknown(_))));
        assert_eq!(again.revoke(&entry.id).expect("by id"), 1);
        assert!(again.key.is_empty());
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "[[key]]\nid='a'\nname='b'\nsha256='xyz'\n").expect("write");
        let e = KeysFile::load(&path).expect_err("bad hash");
        assert!(e.to_string().contains("64 hex"), "{e}");
        std::fs::write(&path, "[[key]]\nid='a'\n").expect("write");
        assert!(matches!(
            KeysFile::load(&path),
            Err(KeysError::Parse { .. })
        ));
    }
}
