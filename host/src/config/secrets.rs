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
