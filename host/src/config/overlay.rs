//! The last of the three config sources: settings given on the command line. Each one given
//! replaces what the file and the `MPREG_*` environment said; lists (peers, plugins) add to it.

use std::path::{Path, PathBuf};

use super::{ConfigError, NodeConfig, split_list};

/// Settings given as flags to `mpreg server start`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Address to bind.
    pub host: Option<String>,
    /// Port to bind.
    pub port: Option<u16>,
    /// Port of the TCP transport.
    pub tcp_port: Option<u16>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA for client certificates (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Resource tags, comma-separated.
    pub resources: Option<String>,
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Nodes to join, each entry comma-separated `host:port` or `ws://host:port`.
    pub peers: Vec<String>,
    /// Region label.
    pub region: Option<String>,
    /// Node id.
    pub node_id: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Admin token.
    pub admin_token: Option<String>,
    /// Component files to load.
    pub plugins: Vec<PathBuf>,
    /// Log every request (`[logs] access`).
    pub access_log: bool,
    /// Record no call-path metrics (`[metrics] enabled = false`).
    pub no_metrics: bool,
    /// Serve unauthenticated clients on a non-loopback address (`server.insecure`).
    pub insecure: bool,
    /// The API keys file (`auth.keys_file`).
    pub auth_keys: Option<PathBuf>,
}

impl NodeConfig {
    /// The file (if any), then the environment, then the flags: each overrides the one before.
    /// Not validated here; `node::start` validates.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: Overrides,
    ) -> Result<NodeConfig, ConfigError> {
        let mut cfg = match file {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        cfg.apply_env(env)?;
        cfg.apply_overrides(flags);
        Ok(cfg)
    }

    /// Applies command-line settings over what is there.
    pub fn apply_overrides(&mut self, o: Overrides) {
        if let Some(h) = o.host {
            self.server.host = h;
        }
        if let Some(p) = o.port {
            self.server.port = p;
        }
        if let Some(p) = o.tcp_port {
            self.server.tcp_port = Some(p);
        }
        if let Some(c) = o.tls_cert {
            self.tls.cert = Some(c);
        }
        if let Some(k) = o.tls_key {
            self.tls.key = Some(k);
        }
        if let Some(ca) = o.tls_client_ca {
            self.tls.client_ca = Some(ca);
        }
        if let Some(r) = o.resources {
            self.node.resources = split_list(&r);
        }
        if let Some(c) = o.cluster_id {
            self.node.cluster_id = c;
        }
        for p in &o.peers {
            self.cluster.peers.extend(split_list(p));
        }
        if let Some(r) = o.region {
            self.node.region = r;
        }
        if let Some(id) = o.node_id {
            self.node.id = Some(id);
        }
        if let Some(d) = o.data_dir {
            self.node.data_dir = Some(d);
        }
        if let Some(t) = o.admin_token {
            self.admin.token = Some(t);
        }
        self.plugins.extend(o.plugins.into_iter().map(Into::into));
        if o.access_log {
            self.logs.access = true;
        }
        if o.no_metrics {
            self.metrics.enabled = false;
        }
        if o.insecure {
            self.server.insecure = true;
        }
        if let Some(k) = o.auth_keys {
            self.auth.keys_file = Some(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "[server]\nport = 7000\nhost = \"0.0.0.0\"\ninsecure = true\n[node]\nregion = \"file\"\n",
        )
        .expect("write");
        let env = |k: &str| (k == "MPREG_PORT").then(|| "7100".to_owned());
        let cfg = NodeConfig::load(Some(&file), env, Overrides::default()).expect("loads");
        assert_eq!(
            (cfg.server.port, cfg.server.host.as_str()),
            (7100, "0.0.0.0")
        );
        let public = "[server]\nhost = \"0.0.0.0\"\n";
        let public_file = dir.path().join("public.toml");
        std::fs::write(&public_file, public).expect("write");
        let refused = NodeConfig::load(Some(&public_file), |_| None, Overrides::default())
            .and_then(|c| c.validate());
        assert!(
            matches!(&refused, Err(ConfigError::Invalid(m)) if m.contains("--insecure")),
            "{refused:?}"
        );
        let flag = Overrides {
            insecure: true,
            ..Overrides::default()
        };
        let allowed = NodeConfig::load(Some(&public_file), |_| None, flag).expect("loads");
        assert!(allowed.server.insecure);
        allowed.validate().expect("--insecure allows it");
        // With clients authenticated, any address may be bound.
        let keys = Overrides {
            auth_keys: Some(dir.path().join("keys.toml")),
            ..Overrides::default()
        };
        let secured = NodeConfig::load(Some(&public_file), |_| None, keys).expect("loads");
        assert!(secured.auth.enabled());
        secured.validate().expect("[auth] allows it");
        let bad = "[auth]\nanonymous = \"nobody\"\nkeys_file = \"k.toml\"\n";
        let bad_file = dir.path().join("bad.toml");
        std::fs::write(&bad_file, bad).expect("write");
        let refused = NodeConfig::load(Some(&bad_file), |_| None, Overrides::default())
            .and_then(|c| c.validate());
        assert!(
            matches!(&refused, Err(ConfigError::Invalid(m)) if m.contains("'nobody'")),
            "{refused:?}"
        );
        let flags = Overrides {
            port: Some(7200),
            resources: Some("cpu, gpu".into()),
            peers: vec!["a:1,b:2".into(), "ws://c:3".into()],
            plugins: vec!["x.wasm".into()],
            ..Overrides::default()
        };
        let cfg = NodeConfig::load(Some(&file), env, flags).expect("loads");
        assert_eq!(cfg.server.port, 7200);
        assert_eq!(cfg.node.region, "file");
        assert_eq!(cfg.node.resources, ["cpu", "gpu"]);
        assert_eq!(cfg.cluster.peers, ["a:1", "b:2", "ws://c:3"]);
        assert_eq!(cfg.plugins.len(), 1);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = NodeConfig::load(
            Some(Path::new("/definitely/not/here.toml")),
            |_| None,
            Overrides::default(),
        );
        assert!(matches!(err, Err(ConfigError::Read { .. })));
    }
}
