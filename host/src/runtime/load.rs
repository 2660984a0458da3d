//! Loading: bytes → compiled code (Cranelift, or the node's compile cache) → a checked,
//! described, pre-instantiated [`LoadedPlugin`].

use std::time::Instant;

use wasmtime::component::{Component, Type, types::ComponentItem};

use super::host::{HostState, PluginPre};
use super::loaded::{
    CallStats, Compiled, LoadError, LoadedPlugin, Manifest, PluginFunction, check_component_header,
};
use super::nested::CallContext;
use super::{Runtime, convert, signature};
use crate::digest::sha256_hex;
use crate::protocol::CacheRule;
use crate::sandbox::Sandbox;

/// The component's `mpreg-manifest` section, or why it is unreadable.
fn read_stamp(bytes: &[u8], source: &str) -> Result<Option<super::stamp::Stamp>, LoadError> {
    super::stamp::read(bytes).map_err(|e| LoadError::Manifest {
        origin: source.to_owned(),
        reason: e.to_string(),
    })
}

impl Runtime {
    /// Compiles `bytes` with Cranelift, on a blocking thread (it takes tens of milliseconds to
    /// seconds). `Bytes`, so the caller can keep (and store) the same buffer without a copy.
    pub async fn compile(&self, bytes: bytes::Bytes, source: &str) -> Result<Compiled, LoadError> {
        check_component_header(&bytes).map_err(|reason| LoadError::Compile {
            origin: source.to_owned(),
            reason,
        })?;
        // Bytes that are not a component at all are the compiler's to describe (not_loadable),
        // so a stamp that cannot be read counts only once they compiled.
        let stamp = read_stamp(&bytes, source);
        let language = super::language::Language::of(&bytes);
        let engine = self.engine.clone();
        let started = Instant::now();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Engine(e.to_string()))?
            .map_err(|e| LoadError::Compile {
                origin: source.to_owned(),
                reason: format!("{e:#}"),
            })?;
        self.metrics.compiled(started.elapsed());
        Ok(Compiled {
            component,
            stamp: stamp?,
            language,
        })
    }

    /// Loads code that [`Compiled::serialize`] produced on an engine with the same
    /// [`Runtime::engine_fingerprint`]. `bytes` are the component it was compiled from (only
    /// its `mpreg-manifest` section is read).
    pub fn deserialize(
        &self,
        compiled: &[u8],
        bytes: &[u8],
        source: &str,
    ) -> Result<Compiled, LoadError> {
        let stamp = read_stamp(bytes, source)?;
        // SAFETY: wasmtime runs these bytes as machine code, so they must come from
        // `Component::serialize` and must not have been tampered with. The only caller is the
        // plugin store, which reads them from the node's own data directory, where this node
        // wrote them after compiling bytes whose sha256 it checked. wasmtime itself rejects code
        // from another version or engine configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, compiled) }.map_err(|e| {
            LoadError::Compile {
                origin: source.to_owned(),
                reason: format!("compiled code is unusable: {e:#}"),
            }
        })?;
        self.metrics.cache_hit();
        Ok(Compiled {
            component,
            stamp,
            language: super::language::Language::of(bytes),
        })
    }

    /// Compiles and pre-instantiates `bytes` with the default sandbox.
    pub async fn load(&self, bytes: Vec<u8>, source: &str) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let (sha256, size) = (sha256_hex(&bytes), bytes.len());
        let compiled = self.compile(bytes.into(), source).await?;
        self.instantiate(&compiled, source, Sandbox::default(), sha256, size, started)
            .await
    }

    /// Checks compiled code against our world (imports we provide, the `metadata` export),
    /// pre-instantiates it, and reads its manifest by calling `describe` in a fresh instance
    /// under the plugin's own limits. `started` is when loading began (for `load_ms`).
    pub async fn instantiate(
        &self,
        compiled: &Compiled,
        source: &str,
        sandbox: Sandbox,
        sha256: String,
        size: usize,
        started: Instant,
    ) -> Result<LoadedPlugin, LoadError> {
        let component = &compiled.component;
        let limits = sandbox
            .limits(&self.config)
            .map_err(|source_err| LoadError::Sandbox {
                origin: source.to_owned(),
                source: source_err,
            })?;
        let world = |reason: String| LoadError::World {
            origin: source.to_owned(),
            reason,
        };
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| world(format!("{e:#}")))?;
        let plugin_pre = PluginPre::new(pre.clone()).map_err(|e| world(format!("{e:#}")))?;

        let mut store = self
            .store(
                "loader".into(),
                &sandbox,
                &limits,
                CallContext::isolated("load".into()),
            )
            .map_err(|e| world(format!("{e:#}")))?;
        let described = async {
            let plugin = plugin_pre.instantiate_async(&mut store).await?;
            let manifest = plugin
                .mpreg_plugin_metadata()
                .call_describe(&mut store)
                .await?;
            let rules = cache_rules(&pre, component, &mut store).await?;
            Ok::<_, wasmtime::Error>((manifest, rules))
        }
        .await
        .map_err(|e| {
            let stderr = store.data().stderr_text();
            world(format!("calling describe failed: {e:#} {stderr}"))
        })?;
        let (described, mut rules) = described;
        let manifest_err = |reason: String| LoadError::Manifest {
            origin: source.to_owned(),
            reason,
        };
        if let Err(why) = check_plugin_name(&described.name) {
            return Err(manifest_err(why));
        }
        // A build stamp names the version (mpreg.toml is where it lives) and adds cache rules.
        let mut version_text = described.version.as_str();
        if let Some(stamp) = &compiled.stamp {
            if stamp.name != described.name {
                return Err(manifest_err(format!(
                    "the {} section names plugin '{}' but describe returns '{}'",
                    super::stamp::SECTION,
                    stamp.name,
                    described.name
                )));
            }
            version_text = &stamp.version;
            rules.extend(stamp.cache.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let version = crate::rpc::version::parse_version_lenient(version_text)
            .map_err(|e| manifest_err(format!("version: {e}")))?;
        let manifest = Manifest {
            name: described.name.clone(),
            version,
            resources: described.resources.clone(),
        };
        if described.commands.is_empty() {
            return Err(manifest_err("no commands".into()));
        }
        let ctype = component.component_type();
        let mut functions = Vec::with_capacity(described.commands.len());
        for cmd in &described.commands {
            if cmd.name.is_empty()
                || functions
                    .iter()
                    .any(|f: &PluginFunction| f.name == cmd.name)
            {
                return Err(manifest_err(format!(
                    "command name '{}' is empty or repeated",
                    cmd.name
                )));
            }
            let Some(ComponentItem::ComponentFunc(fty)) = ctype
                .get_export(&self.engine, &cmd.export_name)
                .map(|e| e.ty)
            else {
                return Err(manifest_err(format!(
                    "command '{}' names export '{}', which is not a top-level exported function",
                    cmd.name, cmd.export_name
                )));
            };
            let params: Vec<(String, Type)> =
                fty.params().map(|(n, t)| (n.to_owned(), t)).collect();
            let result = fty.results().next();
            if let Some(bad) = params
                .iter()
                .map(|(_, t)| t)
                .chain(result.as_ref())
                .find(|t| !convert::is_supported(t))
            {
                return Err(manifest_err(format!(
                    "command '{}' uses {}, which cannot be passed as JSON",
                    cmd.name,
                    signature::type_name(bad)
                )));
            }
            let export = component
                .get_export_index(None, cmd.export_name.as_str())
                .ok_or_else(|| manifest_err(format!("export '{}' not found", cmd.export_name)))?;
            let mut resources = described.resources.clone();
            resources.extend(cmd.resources.iter().cloned());
            resources.sort();
            resources.dedup();
            let cache = rules.remove(&cmd.name);
            functions.push(PluginFunction {
                cache,
                style: compiled.stamp.as_ref().map(|s| s.style).unwrap_or_default(),
                metrics: self
                    .metrics
                    .calls
                    .function(&cmd.name, &manifest.version.to_string()),
                name: cmd.name.clone(),
                export_name: cmd.export_name.clone(),
                function_id: cmd.function_id.clone().unwrap_or_else(|| cmd.name.clone()),
                resources,
                description: cmd.description.clone(),
                signature: signature::func_signature(&params, result.as_ref()),
                params,
                result,
                export,
            });
        }
        if let Some(unknown) = rules.keys().next() {
            return Err(manifest_err(format!(
                "caching declares command '{unknown}', which the manifest does not list"
            )));
        }
        let reuse = sandbox
            .instance_reuse
            .unwrap_or_else(|| compiled.language.default_reuse());
        Ok(LoadedPlugin {
            name: described.name.as_str().into(),
            manifest,
            functions,
            origin: source.to_owned(),
            sha256,
            size,
            sandbox,
            limits,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
            loaded_at: crate::clock::unix_now(),
            stats: CallStats::default(),
            reuse,
            warm: Default::default(),
            pre,
        })
    }
}

/// The interface a plugin may export to declare memoized commands (`wit/plugin.wit`).
const CACHING: &str = "mpreg:plugin/caching@0.1.0";

/// What the plugin's optional `caching` export declares, by command (none without it). The
/// export is looked up by name, since the world does not require it, and its answer read as
/// values.
async fn cache_rules(
    pre: &wasmtime::component::InstancePre<HostState>,
    component: &Component,
    store: &mut wasmtime::Store<HostState>,
) -> wasmtime::Result<std::collections::HashMap<String, CacheRule>> {
    use wasmtime::component::Val;
    let mut out = std::collections::HashMap::new();
    let Some(iface) = component.get_export_index(None, CACHING) else {
        return Ok(out);
    };
    let Some(idx) = component.get_export_index(Some(&iface), "cacheable") else {
        wasmtime::bail!("{CACHING} exports no 'cacheable' function");
    };
    let instance = pre.instantiate_async(&mut *store).await?;
    let Some(func) = instance.get_func(&mut *store, idx) else {
        wasmtime::bail!("{CACHING}#cacheable is not a function");
    };
    let mut results = [Val::Bool(false)];
    func.call_async(&mut *store, &[], &mut results).await?;
    let Val::List(rules) = &results[0] else {
        wasmtime::bail!("{CACHING}#cacheable returned {:?}", results[0]);
    };
    for rule in rules {
        let Val::Record(fields) = rule else {
            wasmtime::bail!("{CACHING}#cacheable: not a cache-rule: {rule:?}");
        };
        let mut command = None;
        let mut r = CacheRule::default();
        for (name, v) in fields {
            match (name.as_str(), v) {
                ("command", Val::String(s)) => command = Some(s.clone()),
                ("ttl-seconds", Val::Option(Some(t))) => match &**t {
                    Val::Float64(t) if *t > 0.0 && t.is_finite() => r.ttl_seconds = Some(*t),
                    other => {
                        wasmtime::bail!("cache-rule ttl-seconds must be positive, got {other:?}")
                    }
                },
                ("ttl-seconds", Val::Option(None)) => {}
                ("dependencies", Val::List(tags)) => {
                    for t in tags {
                        let Val::String(t) = t else {
                            wasmtime::bail!("cache-rule dependencies are strings");
                        };
                        r.dependencies.push(t.clone());
                    }
                }
                (other, _) => wasmtime::bail!("cache-rule field '{other}' not understood"),
            }
        }
        let Some(command) = command else {
            wasmtime::bail!("a cache-rule names no command");
        };
        out.insert(command, r);
    }
    Ok(out)
}

/// A plugin name names files, URL paths (`/admin/plugins/{name}`) and gossip keys: 1 to 128
/// characters, letters, digits, `-`, `_` and `.`, starting with a letter or digit (so never
/// `..`, `a/b` or `../../etc/evil`).
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    let ok_len = (1..=128).contains(&name.len());
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "the plugin name '{}' must be 1 to 128 characters: letters, digits, '-', '_' and '.', \
             starting with a letter or digit",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_plugin_name;

    #[test]
    fn plugin_names_cannot_name_paths() {
        for ok in ["math", "greeter2", "my-fn", "a.b_c", "X1"] {
            assert!(check_plugin_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            "../../etc/evil",
            "a/b",
            "..",
            ".hidden",
            "-x",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(check_plugin_name(bad).is_err(), "{bad}");
        }
    }
}
