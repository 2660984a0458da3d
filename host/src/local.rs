//! Running a component without a node (`mpreg run`, `mpreg plugin test`; docs/plugins.md):
//! the node's own runtime, sandbox defaults and JSON⇄WIT conversion, so what a call returns
//! here is what it returns on a node. Imports that reach a node (`call`, `publish`, `queue`,
//! `cache`) answer that no node is there.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Compiler, RuntimeConfig};
use crate::runtime::{CallContext, LoadError, LoadedPlugin, Runtime};

/// Why a local run could not happen (the call's own failure is [`Outcome::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The component does not load (not a component, not our world, a bad manifest).
    #[error("{0}")]
    Load(String),
    /// No such command; the ones there are listed.
    #[error("'{fun}' is not a command of {plugin}; it has: {known}")]
    Unknown {
        /// What was asked.
        fun: String,
        /// The plugin.
        plugin: String,
        /// Its commands, comma-separated.
        known: String,
    },
    /// A test file that cannot be read.
    #[error("test file {path}: {why}")]
    Cases {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// A component loaded for local runs.
pub struct Local {
    runtime: Arc<Runtime>,
    plugin: Arc<LoadedPlugin>,
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its result.
    Returned(Value),
    /// Its failure, as a node would report it (kind and message).
    Failed {
        /// `bad_arguments`, `trapped`, `timeout`, ...
        kind: &'static str,
        /// What happened.
        message: String,
    },
}

impl Local {
    /// Loads the component at `path` with the node's default runtime settings.
    pub async fn load(path: &Path) -> Result<Local, LocalError> {
        let bytes = std::fs::read(path).map_err(|source| LocalError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let runtime = Arc::new(
            Runtime::new(RuntimeConfig::default()).map_err(|e| LocalError::Load(e.to_string()))?,
        );
        let plugin = load_cached(&runtime, bytes, &path.display().to_string())
            .await
            .map_err(|e| LocalError::Load(e.to_string()))?;
        Ok(Local {
            runtime,
            plugin: Arc::new(plugin),
        })
    }

    /// The plugin as loaded.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// Calls command `fun` with `args` and `kwargs`.
    pub async fn call(
        &self,
        fun: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> Result<Outcome, LocalError> {
        let Some(func) = self.plugin.functions.iter().find(|f| f.name == fun) else {
            let known: Vec<&str> = self
                .plugin
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            return Err(LocalError::Unknown {
                fun: fun.to_owned(),
                plugin: self.plugin.manifest.name.clone(),
                known: known.join(", "),
            });
        };
        let ctx = CallContext::isolated("local".into());
        Ok(
            match self
                .runtime
                .invoke(&self.plugin, func, args, kwargs, ctx)
                .await
            {
                Ok(v) => Outcome::Returned(v),
                Err(e) => Outcome::Failed {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            },
        )
    }
}

/// One case of a test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report; defaults to the call.
    #[serde(default)]
    pub name: Option<String>,
    /// The command.
    pub call: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// The result expected.
    #[serde(default)]
    pub expect: Option<Value>,
    /// Text the failure's message must contain (the call must fail).
    #[serde(default)]
    pub expect_error: Option<String>,
}

/// What a test file holds: `[[case]]` entries (TOML) or a JSON array of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

/// Reads a test file: `*.json` is an array of cases, anything else TOML with `[[case]]`.
pub fn read_cases(path: &Path) -> Result<Vec<Case>, LocalError> {
    let bad = |why: String| LocalError::Cases {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let cases: Vec<Case> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        toml::from_str::<CaseFile>(&text)
            .map_err(|e| bad(e.to_string()))?
            .case
    };
    for (i, c) in cases.iter().enumerate() {
        if c.expect.is_some() == c.expect_error.is_some() {
            return Err(bad(format!(
                "case {} ('{}') needs exactly one of expect and expect_error",
                i + 1,
                c.name.as_deref().unwrap_or(&c.call)
            )));
        }
    }
    Ok(cases)
}

/// The verdict on one case: `None` when it passed, else what differed.
pub async fn check(local: &Local, case: &Case) -> Result<Option<String>, LocalError> {
    let outcome = local.call(&case.call, &case.args, &case.kwargs).await?;
    Ok(match (outcome, &case.expect, &case.expect_error) {
        (Outcome::Returned(v), Some(want), _) if v == *want => None,
        (Outcome::Returned(v), Some(want), _) => Some(format!("expected {want}, got {v}")),
        (Outcome::Returned(v), None, Some(_)) => Some(format!("expected a failure, got {v}")),
        (Outcome::Failed { message, .. }, _, Some(text)) if message.contains(text.as_str()) => None,
        (Outcome::Failed { kind, message }, _, _) => Some(format!("failed ({kind}): {message}")),
        (Outcome::Returned(_), None, None) => Some("nothing expected".into()),
    })
}

/// Where this machine's tools keep compiled code: `<cache>/compiled/<sha256>-<engine>.cwasm`.
fn compiled_path(sha256: &str, fingerprint: &str) -> std::path::PathBuf {
    crate::scaffold::cache_dir()
        .join("compiled")
        .join(format!("{sha256}-{fingerprint}.cwasm"))
}

/// Loads `bytes` to read what they carry (`mpreg plugin build`): as a node would, but compiled
/// with Winch, the baseline compiler, which turns a 12–18 MB Python or JavaScript image into
/// code about 3× faster than Cranelift (docs/benchmarks.md). Nothing is run here but
/// `describe`, so the slower code costs nothing. A component Winch cannot compile (a feature
/// it lacks) is loaded with Cranelift instead; both kinds of code are cached as
/// [`load_cached`] says.
pub async fn describe(bytes: Vec<u8>, source: &str) -> Result<LoadedPlugin, LoadError> {
    let runtime = |compiler| {
        Runtime::new(RuntimeConfig {
            compiler,
            ..RuntimeConfig::default()
        })
    };
    let winch = runtime(Compiler::Winch)?;
    match load_cached(&winch, bytes.clone(), source).await {
        // Bytes that are no component fail Cranelift's validation as fast, with its message.
        Err(LoadError::Compile { reason, .. }) => {
            tracing::debug!(%reason, "Winch cannot compile it; loading with Cranelift");
            load_cached(&runtime(Compiler::Cranelift)?, bytes, source).await
        }
        other => other,
    }
}

/// Loads `bytes` as [`Runtime::load`] does, compiling them only the first time this user's tools
/// see them: the machine code is kept in the per-user cache folder by sha256 and engine
/// fingerprint, so `plugin build`, `run` and `plugin test` of the same bytes compile once.
/// Code that no longer loads (another wasmtime) is compiled again and replaced. The folder is
/// the user's own, trusted like the binary itself (wasmtime runs what it holds as machine code).
pub async fn load_cached(
    runtime: &Runtime,
    bytes: Vec<u8>,
    source: &str,
) -> Result<LoadedPlugin, LoadError> {
    let started = std::time::Instant::now();
    let (sha256, size) = (crate::digest::sha256_hex(&bytes), bytes.len());
    let path = compiled_path(&sha256, &runtime.engine_fingerprint());
    let cached = std::fs::read(&path)
        .ok()
        .and_then(|code| runtime.deserialize(&code, &bytes, source).ok());
    let compiled = match cached {
        Some(c) => c,
        None => {
            let c = runtime.compile(bytes.into(), source).await?;
            if let Ok(code) = c.serialize() {
                // A cache that cannot be written only costs the next compile.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let written = path
                    .parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .and_then(|_| std::fs::write(&tmp, code))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if written.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            c
        }
    };
    runtime
        .instantiate(
            &compiled,
            source,
            crate::sandbox::Sandbox::default(),
            sha256,
            size,
            started,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_file_needs_one_expectation_per_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "[[case]]\ncall = \"add\"\nargs = [1, 2]\nexpect = 3\n\n[[case]]\ncall = \"div\"\nexpect_error = \"zero\"\n",
        )
        .expect("write");
        let cases = read_cases(&good).expect("reads");
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].expect, Some(Value::from(3)));
        let both = dir.path().join("both.json");
        std::fs::write(
            &both,
            r#"[{"call": "x", "expect": 1, "expect_error": "e"}]"#,
        )
        .expect("write");
        let e = read_cases(&both).expect_err("both");
        assert!(e.to_string().contains("exactly one"), "{e}");
    }
}
