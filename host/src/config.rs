//! Node configuration: TOML file, then `MPREG_*` environment variables, then command-line flags
//! (each overrides the one before). Unknown keys are errors, so a typo never silently does
//! nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeConfig;

/// Everything a node needs to start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Listening and connection limits.
    pub server: ServerConfig,
    /// Identity and resources.
    pub node: IdentityConfig,
    /// Plugin execution limits.
    pub runtime: RuntimeConfig,
    /// Component files to load at start-up (relative paths are relative to the config file).
    pub plugins: Vec<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Largest inbound WebSocket message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Largest reply; a larger result is replaced by a 1008 error (MPREG clients close at 20 MiB).
    pub max_reply_bytes: usize,
    /// Requests one connection may have running at once; further ones wait (backpressure).
    pub max_in_flight_per_connection: usize,
    /// Replies queued per connection before request tasks wait for the writer.
    pub outbound_queue: usize,
    /// Default request deadline (requests may ask for another with `timeout_ms`).
    pub request_timeout_ms: u64,
    /// Upper bound for a request's `timeout_ms`.
    pub max_request_timeout_ms: u64,
    /// On shutdown, how long in-flight requests get to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 6666,
            max_message_bytes: 16 << 20,
            max_reply_bytes: 16 << 20,
            max_in_flight_per_connection: 1024,
            outbound_queue: 1024,
            request_timeout_ms: 30_000,
            max_request_timeout_ms: 600_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Node id; generated when absent.
    pub id: Option<String>,
    /// Cluster this node belongs to (`target_cluster` matches it).
    pub cluster_id: String,
    /// Free-form region label shown in `cluster_map`.
    pub region: String,
    /// Resource tags of this node; every function here has them (matched against `locs`).
    pub resources: Vec<String>,
    /// URLs clients should use to reach this node; derived from the bound address when empty.
    pub advertised_urls: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            id: None,
            cluster_id: "default".into(),
            region: "local".into(),
            resources: Vec::new(),
            advertised_urls: Vec::new(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Values that do not make sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads a TOML file; plugin paths are made relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut cfg.plugins {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `MPREG_HOST`, `MPREG_PORT`, `MPREG_CLUSTER_ID`, `MPREG_REGION`, `MPREG_RESOURCES`
    /// (comma-separated) and `MPREG_NODE_ID` from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("MPREG_HOST") {
            self.server.host = v;
        }
        if let Some(v) = env("MPREG_PORT") {
            self.server.port = v.parse().map_err(|e| ConfigError::Env {
                name: "MPREG_PORT".into(),
                message: format!("{e}"),
            })?;
        }
        if let Some(v) = env("MPREG_CLUSTER_ID") {
            self.node.cluster_id = v;
        }
        if let Some(v) = env("MPREG_REGION") {
            self.node.region = v;
        }
        if let Some(v) = env("MPREG_NODE_ID") {
            self.node.id = Some(v);
        }
        if let Some(v) = env("MPREG_RESOURCES") {
            self.node.resources = split_list(&v);
        }
        Ok(())
    }

    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let s = &self.server;
        if s.max_message_bytes < 1024 {
            return bad("server.max_message_bytes must be at least 1024");
        }
        if s.max_reply_bytes < 1024 || s.max_reply_bytes > 20 << 20 {
            return bad(
                "server.max_reply_bytes must be between 1 KiB and 20 MiB (MPREG clients close above 20 MiB)",
            );
        }
        if s.max_in_flight_per_connection == 0 || s.outbound_queue == 0 {
            return bad(
                "server.max_in_flight_per_connection and server.outbound_queue must be positive",
            );
        }
        if s.request_timeout_ms == 0 || s.request_timeout_ms > s.max_request_timeout_ms {
            return bad(
                "server.request_timeout_ms must be positive and at most server.max_request_timeout_ms",
            );
        }
        let r = &self.runtime;
        if r.call_timeout_ms == 0 || r.epoch_tick_ms == 0 || r.epoch_tick_ms > r.call_timeout_ms {
            return bad(
                "runtime.call_timeout_ms and runtime.epoch_tick_ms must be positive, tick <= timeout",
            );
        }
        if r.memory_limit_mib == 0 || r.memory_limit_mib > 4096 {
            return bad("runtime.memory_limit_mib must be between 1 and 4096");
        }
        if r.max_instances == 0 || r.max_stack_kib < 64 {
            return bad(
                "runtime.max_instances must be positive and runtime.max_stack_kib at least 64",
            );
        }
        if self.node.cluster_id.is_empty() {
            return bad("node.cluster_id must not be empty");
        }
        Ok(())
    }
}

/// `a, b,,c` → `["a", "b", "c"]`.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_rejects_unknown_keys() {
        let cfg = NodeConfig::from_toml(
            "plugins = [\"a.wasm\"]\n[server]\nport = 0\n[node]\nresources = [\"gpu\"]\n[runtime]\ncall_timeout_ms = 100\n",
        )
        .expect("parses");
        assert_eq!(cfg.server.port, 0);
        assert_eq!(cfg.node.resources, ["gpu"]);
        assert_eq!(cfg.runtime.call_timeout_ms, 100);
        assert!(cfg.validate().is_ok());
        let err = NodeConfig::from_toml("[server]\nprot = 1\n").expect_err("typo");
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn env_overrides_and_validation() {
        let mut cfg = NodeConfig::default();
        cfg.apply_env(|k| match k {
            "MPREG_PORT" => Some("7000".into()),
            "MPREG_RESOURCES" => Some("a, b,,c".into()),
            _ => None,
        })
        .expect("env");
        assert_eq!(cfg.server.port, 7000);
        assert_eq!(cfg.node.resources, ["a", "b", "c"]);
        assert!(
            cfg.apply_env(|k| (k == "MPREG_PORT").then(|| "x".into()))
                .is_err()
        );
        cfg.server.max_reply_bytes = 100 << 20;
        assert!(cfg.validate().is_err());
    }
}
