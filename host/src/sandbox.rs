//! Per-plugin sandbox spec: limits (memory, deadline, fuel) and capability grants (environment
//! variables, preopened directories). Everything is denied unless a plugin's sandbox grants it;
//! a limit left unset falls back to the node's `[runtime]` default.
//!
//! Vocabulary: the config, the plugin store, the gossip catalog and the admin API all carry a
//! `Sandbox`; only the runtime applies it (`runtime/sandbox.rs` turns grants into WASI).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::RuntimeConfig;
use serde::{Deserialize, Serialize};

/// What one plugin may use, set in the node config (`[[plugins]]` tables) or at publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Linear memory cap; the node's `runtime.memory_limit_mib` when unset. JavaScript guests
    /// need about 150 MiB, Python about 16 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// Wall-time limit of one call; the node's `runtime.call_timeout_ms` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    /// Instructions budget (wasmtime fuel) per call. Needs `runtime.fuel_metering = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Environment variables the guest sees (none by default).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Host directories the guest may open (none by default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirGrant>,
    /// Cache namespaces the guest may read and write through the `cache` import (none by
    /// default; `"*"` grants every namespace, `"ml*"` every one starting with `ml`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_namespaces: Vec<String>,
    /// Secrets of the node's `[secrets]` the guest may read through the `secrets` import, by
    /// name (none by default). Only the names are part of the sandbox; values stay on the node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Whether a call may run in an instance an earlier call of this version finished in
    /// (docs/plugins.md, "Instance reuse"). Unset: `serial` for Python and JavaScript
    /// components, whose interpreter images are costly to start, `never` for the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_reuse: Option<InstanceReuse>,
}

/// Whether calls of one plugin version share instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceReuse {
    /// Every call gets a fresh instance: nothing one call leaves in memory is seen by another.
    Never,
    /// A finished call's instance serves later calls, one call at a time, until it has served
    /// `runtime.max_calls_per_instance` or a call fails in it. What a call leaves in the
    /// guest's memory (globals, caches) is seen by later calls of the same version; calls of
    /// other versions and plugins never share an instance.
    Serial,
}

impl std::str::FromStr for InstanceReuse {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(InstanceReuse::Never),
            "serial" => Ok(InstanceReuse::Serial),
            other => Err(SandboxError(format!(
                "instance_reuse is \"never\" or \"serial\", got '{other}'"
            ))),
        }
    }
}

/// One preopened directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the node.
    pub host: PathBuf,
    /// Path the guest opens it by, e.g. `/data`.
    pub guest: String,
    /// Read-only unless set to `false`.
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

/// The limits in force for one plugin, after defaults were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory cap in MiB.
    pub memory_limit_mib: u64,
    /// Deadline of one call in ms.
    pub call_timeout_ms: u64,
    /// Fuel per call, when metered.
    pub fuel: Option<u64>,
}

/// A sandbox the node cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox: {0}")]
pub struct SandboxError(pub String);

impl Sandbox {
    /// Checks the sandbox against what the engine was built for and resolves the limits.
    pub fn limits(&self, runtime: &RuntimeConfig) -> Result<Limits, SandboxError> {
        let memory = self.memory_limit_mib.unwrap_or(runtime.memory_limit_mib);
        if memory == 0 || memory > runtime.max_memory_limit_mib {
            return Err(SandboxError(format!(
                "memory_limit_mib must be between 1 and {} (runtime.max_memory_limit_mib), got {memory}",
                runtime.max_memory_limit_mib
            )));
        }
        let timeout = self.call_timeout_ms.unwrap_or(runtime.call_timeout_ms);
        if timeout == 0 {
            return Err(SandboxError("call_timeout_ms must be at least 1".into()));
        }
        if self.fuel.is_some() && !runtime.fuel_metering {
            return Err(SandboxError(
                "fuel needs runtime.fuel_metering = true on this node".into(),
            ));
        }
        if self.fuel == Some(0) {
            return Err(SandboxError("fuel must be at least 1".into()));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(SandboxError(format!(
                    "environment variable name '{key}' is not usable"
                )));
            }
        }
        for dir in &self.dirs {
            if !dir.host.is_dir() {
                return Err(SandboxError(format!(
                    "granted directory {} does not exist on this node",
                    dir.host.display()
                )));
            }
            if !dir.guest.starts_with('/') {
                return Err(SandboxError(format!(
                    "guest path '{}' must be absolute",
                    dir.guest
                )));
            }
        }
        if let Some(bad) = self
            .secrets
            .iter()
            .find(|n| !crate::config::secrets::valid_name(n))
        {
            return Err(SandboxError(format!(
                "secret name '{bad}' must be 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Limits {
            memory_limit_mib: memory,
            call_timeout_ms: timeout,
            fuel: self.fuel,
        })
    }

    /// A sandbox from command-line flags: limits, `NAME=VALUE` environment entries and
    /// `HOST:GUEST[:rw|:ro]` directory grants (read-only unless `:rw`). `None` when nothing
    /// was given, so a publish keeps the stored or default sandbox.
    pub fn from_flags(
        limits: (Option<u64>, Option<u64>, Option<u64>),
        env: &[String],
        dirs: &[String],
        instance_reuse: Option<&str>,
    ) -> Result<Option<Sandbox>, SandboxError> {
        let (memory_limit_mib, call_timeout_ms, fuel) = limits;
        let mut s = Sandbox {
            memory_limit_mib,
            call_timeout_ms,
            fuel,
            instance_reuse: instance_reuse.map(str::parse).transpose()?,
            ..Default::default()
        };
        for kv in env {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(SandboxError(format!("--env takes NAME=VALUE, got '{kv}'")));
            };
            s.env.insert(k.to_owned(), v.to_owned());
        }
        for d in dirs {
            let parts: Vec<&str> = d.split(':').collect();
            let (host, guest, read_only) = match parts.as_slice() {
                [h, g] => (h, g, true),
                [h, g, "rw"] => (h, g, false),
                [h, g, "ro"] => (h, g, true),
                _ => {
                    return Err(SandboxError(format!(
                        "--dir takes HOST:GUEST or HOST:GUEST:rw, got '{d}'"
                    )));
                }
            };
            s.dirs.push(DirGrant {
                host: PathBuf::from(host),
                guest: (*guest).to_owned(),
                read_only,
            });
        }
        Ok((s != Sandbox::default()).then_some(s))
    }

    /// Whether the `cache` import may use namespace `ns`: a granted name, a granted prefix
    /// (`ml*`), or `*`.
    pub fn grants_cache(&self, ns: &str) -> bool {
        self.cache_namespaces
            .iter()
            .any(|g| match g.strip_suffix('*') {
                Some(prefix) => ns.starts_with(prefix),
                None => g == ns,
            })
    }

    /// Whether the `secrets` import may read `name`.
    pub fn grants_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name)
    }

    /// Whether the guest gets anything beyond the empty default.
    pub fn grants_anything(&self) -> bool {
        !self.env.is_empty() || !self.dirs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_namespaces_are_granted_by_name_prefix_or_star() {
        let none = Sandbox::default();
        assert!(!none.grants_cache("ml"));
        let some = Sandbox {
            cache_namespaces: vec!["ml*".into(), "users".into()],
            ..Sandbox::default()
        };
        assert!(some.grants_cache("ml") && some.grants_cache("ml.features"));
        assert!(some.grants_cache("users") && !some.grants_cache("users2"));
        assert!(!some.grants_cache("mpreg.memo"));
        let all = Sandbox {
            cache_namespaces: vec!["*".into()],
            ..Sandbox::default()
        };
        assert!(all.grants_cache("anything"));
    }

    #[test]
    fn defaults_come_from_the_runtime() {
        let rt = RuntimeConfig::default();
        let limits = Sandbox::default().limits(&rt).expect("valid");
        assert_eq!(limits.memory_limit_mib, rt.memory_limit_mib);
        assert_eq!(limits.call_timeout_ms, rt.call_timeout_ms);
        assert_eq!(limits.fuel, None);
    }

    #[test]
    fn rejects_what_the_engine_cannot_do() {
        let rt = RuntimeConfig::default();
        let too_big = Sandbox {
            memory_limit_mib: Some(rt.max_memory_limit_mib + 1),
            ..Sandbox::default()
        };
        assert!(too_big.limits(&rt).is_err());
        let fuel = Sandbox {
            fuel: Some(1000),
            ..Sandbox::default()
        };
        assert!(fuel.limits(&rt).is_err(), "fuel without metering");
        let metered = RuntimeConfig {
            fuel_metering: true,
            ..RuntimeConfig::default()
        };
        assert_eq!(fuel.limits(&metered).expect("ok").fuel, Some(1000));
        let missing = Sandbox {
            dirs: vec![DirGrant {
                host: "/definitely/not/here".into(),
                guest: "/data".into(),
                read_only: true,
            }],
            ..Sandbox::default()
        };
        assert!(missing.limits(&rt).is_err());
        let bad_env = Sandbox {
            env: [("A=B".to_owned(), "x".to_owned())].into(),
            ..Sandbox::default()
        };
        assert!(bad_env.limits(&rt).is_err());
    }

    #[test]
    fn flags_make_a_sandbox_or_none() {
        assert_eq!(
            Sandbox::from_flags((None, None, None), &[], &[], None),
            Ok(None)
        );
        let s = Sandbox::from_flags(
            (Some(128), None, None),
            &["MODE=fast".into()],
            &["/tmp:/data".into(), "/var:/out:rw".into()],
            Some("serial"),
        )
        .expect("valid")
        .expect("something given");
        assert_eq!(s.memory_limit_mib, Some(128));
        assert_eq!(s.env["MODE"], "fast");
        assert!(s.dirs[0].read_only && !s.dirs[1].read_only);
        assert_eq!(s.instance_reuse, Some(InstanceReuse::Serial));
        let e = Sandbox::from_flags((None, None, None), &[], &[], Some("always"))
            .expect_err("not a policy");
        assert!(e.to_string().contains("\"never\" or \"serial\""), "{e}");
        assert!(Sandbox::from_flags((None, None, None), &["NOVALUE".into()], &[], None).is_err());
        assert!(Sandbox::from_flags((None, None, None), &[], &["/tmp".into()], None).is_err());
        assert!(Sandbox::from_flags((None, None, None), &[], &["/a:/b:wx".into()], None).is_err());
    }

    #[test]
    fn parses_from_toml_with_read_only_default() {
        let s: Sandbox = toml::from_str(
            "memory_limit_mib = 128\nenv = { MODE = \"fast\" }\n[[dirs]]\nhost = \"/tmp\"\nguest = \"/data\"\n",
        )
        .expect("parses");
        assert_eq!(s.memory_limit_mib, Some(128));
        assert!(s.dirs[0].read_only);
        assert!(toml::from_str::<Sandbox>("memroy_limit_mib = 1").is_err());
    }
}
