//! Secrets for plugins (`[secrets]`, docs/security.md): named values a node reads at start from
//! an environment variable or a file, handed to a plugin only through its `secrets` import and
//! only when its sandbox grants the name. Values never appear in `describe`, logs or metrics:
//! this type's `Debug` prints names only, and nothing else reads the values.
//!
//! ```toml
//! [secrets]
//! db-password = { env = "DB_PASSWORD" }
//! api-token = { file = "/run/secrets/api-token" }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

pub use crate::config::secrets::{SecretSource, valid_name};

/// A configured secret that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable is not set.
    #[error("secret '{name}': environment variable {var} is not set")]
    Unset {
        /// The secret.
        name: String,
        /// The variable.
        var: String,
    },
    /// The file cannot be read.
    #[error("secret '{name}': {path}: {source}")]
    File {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A name that could not be granted.
    #[error("secret name '{0}' must be 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
}

/// The node's secrets, read once at start.
#[derive(Default)]
pub struct SecretStore {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("SecretStore")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// Reads every configured secret; the first that cannot be read is the error (a node with
    /// a secret it cannot read does not start).
    pub fn read(
        config: &BTreeMap<String, SecretSource>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretStore, SecretError> {
        let mut values = HashMap::new();
        for (name, source) in config {
            if !valid_name(name) {
                return Err(SecretError::Name(name.clone()));
            }
            let value = match source {
                SecretSource::Env(var) => env(var).ok_or_else(|| SecretError::Unset {
                    name: name.clone(),
                    var: var.clone(),
                })?,
                SecretSource::File(path) => {
                    let mut text =
                        std::fs::read_to_string(path).map_err(|source| SecretError::File {
                            name: name.clone(),
                            path: path.clone(),
                            source,
                        })?;
                    while text.ends_with('\n') || text.ends_with('\r') {
                        text.pop();
                    }
                    text
                }
            };
            values.insert(name.clone(), value);
        }
        Ok(SecretStore { values })
    }

    /// The value of `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// How many are configured.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_written_as_env_or_file_tables() {
        let cfg = crate::config::NodeConfig::from_toml(
            "[secrets]\ndb = { env = \"DB_PW\" }\napi = { file = \"api.token\" }\n",
        )
        .expect("parses");
        assert_eq!(cfg.secrets["db"], SecretSource::Env("DB_PW".into()));
        assert_eq!(cfg.secrets["api"], SecretSource::File("api.token".into()));
        let bad = crate::config::NodeConfig::from_toml("[secrets]\ndb = { vault = \"x\" }\n");
        assert!(bad.is_err());
    }

    #[test]
    fn secrets_come_from_the_environment_or_files_and_debug_shows_names_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").expect("write");
        let mut config = BTreeMap::new();
        config.insert("db".to_owned(), SecretSource::Env("DB_PW".into()));
        config.insert("api".to_owned(), SecretSource::File(file));
        let env = |k: &str| (k == "DB_PW").then(|| "hunter2".to_owned());
        let store = SecretStore::read(&config, &env).expect("read");
        assert_eq!(store.get("db"), Some("hunter2"));
        assert_eq!(store.get("api"), Some("from-a-file"));
        assert_eq!(store.get("other"), None);
        let shown = format!("{store:?}");
        assert!(
            shown.contains("db") && !shown.contains("hunter2"),
            "{shown}"
        );
        let e = SecretStore::read(&config, &|_| None).expect_err("unset");
        assert!(e.to_string().contains("DB_PW"), "{e}");
        assert!(!valid_name("a b") && !valid_name("") && valid_name("db-password.v2"));
    }
}
