//! `[secrets]`: where each secret plugins may read comes from (the values are read by
//! `crate::secrets` at start). Here, below the engines, so the sandbox can check names.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where one secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// An environment variable of the node's process.
    Env(String),
    /// A file's contents, a trailing newline removed (relative to the config file).
    File(PathBuf),
}

/// Whether `name` is a usable secret name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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
}
