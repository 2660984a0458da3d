//! The WebAssembly component host: the only part of MPREG that touches wasmtime.
//!
//! One [`Runtime`] per node owns the engine (pooling allocator with copy-on-write memory images,
//! epoch interruption driven by a ticker thread) and the linker with our imports. Loading a
//! plugin compiles it once and pre-instantiates it ([`InstancePre`]); every call then gets a
//! fresh `Store`, so a trap, a runaway loop or a memory bomb fails that call only.

pub mod convert;
mod host;
pub mod nested;
pub mod sandbox;
pub mod signature;
pub mod teardown;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Linker, Type, Val, types::ComponentItem,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use host::{HostState, PluginPre};

pub use crate::config::RuntimeConfig;
pub use crate::digest::sha256_hex;
pub use crate::sandbox::{DirGrant, Limits, Sandbox, SandboxError};
pub use convert::ConvertError;
pub use nested::{CallContext, NestedCall, NestedCalls, NestedError, NestedFuture};

/// Why a component could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a valid component, or compilation failed.
    #[error("{origin} is not a loadable WebAssembly component: {reason}")]
    Compile {
        /// Where it came from (file path).
        origin: String,
        /// The compiler's message.
        reason: String,
    },
    /// It imports something the node does not provide, or lacks `mpreg:plugin/metadata`.
    #[error("{origin} does not target the mpreg:plugin world: {reason}")]
    World {
        /// Where it came from.
        origin: String,
        /// What is missing.
        reason: String,
    },
    /// Its manifest is unusable.
    #[error("{origin} has an invalid manifest: {reason}")]
    Manifest {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Its sandbox cannot be honoured.
    #[error("{origin}: {source}")]
    Sandbox {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        source: SandboxError,
    },
    /// The engine could not be built.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// An argument does not fit the parameter types.
    #[error("{0}")]
    BadArguments(String),
    /// The guest trapped (panic, abort, unreachable, out-of-bounds access).
    #[error("plugin trapped: {0}")]
    Trapped(String),
    /// The function returned `err(...)`.
    #[error("function returned an error: {0}")]
    Returned(Value),
    /// The call ran past its execution limit.
    #[error("exceeded its execution limit of {0} ms")]
    Timeout(u64),
    /// The guest used up its fuel budget.
    #[error("exceeded its fuel budget of {0} units")]
    OutOfFuel(u64),
    /// The guest asked for more memory than its limit.
    #[error("exceeded its memory limit of {0} MiB")]
    MemoryLimit(u64),
    /// The guest overflowed its stack.
    #[error("exceeded its stack limit (stack overflow)")]
    StackOverflow,
    /// No instance slot was free.
    #[error("no free instance slot (more than {0} calls in progress)")]
    Overloaded(u32),
}

/// A plugin's self-description, read from its `describe` export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Plugin name.
    pub name: String,
    /// Semver version of all its commands.
    pub version: semver::Version,
    /// Resource tags of every command.
    pub resources: Vec<String>,
}

/// One callable command of a loaded plugin.
#[derive(Debug, Clone)]
pub struct PluginFunction {
    /// Name clients call.
    pub name: String,
    /// Exported function implementing it.
    pub export_name: String,
    /// Identity for `function_id` matching.
    pub function_id: String,
    /// Plugin-wide plus per-command resource tags.
    pub resources: Vec<String>,
    /// From the manifest.
    pub description: Option<String>,
    /// WIT signature, e.g. `func(a: s32, b: s32) -> s32`.
    pub signature: String,
    params: Vec<(String, Type)>,
    result: Option<Type>,
    export: ComponentExportIndex,
}

/// A compiled, pre-instantiated plugin version.
pub struct LoadedPlugin {
    /// From the component's `describe`.
    pub manifest: Manifest,
    /// Its commands.
    pub functions: Vec<PluginFunction>,
    /// Where it was loaded from.
    pub origin: String,
    /// Lowercase hex sha256 of the component bytes: its identity in the plugin store.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// What the plugin may use.
    pub sandbox: Sandbox,
    /// The limits in force (sandbox over node defaults).
    pub limits: Limits,
    /// How long compiling (or loading compiled code) and pre-instantiation took.
    pub load_ms: f64,
    /// When it was loaded (Unix seconds).
    pub loaded_at: f64,
    /// Call counters.
    pub stats: CallStats,
    pre: InstancePre<HostState>,
    name: Arc<str>,
}

/// Calls of one plugin version, for `describe` and for draining on retire.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Calls started.
    pub calls: AtomicU64,
    /// Calls that failed (any reason).
    pub failures: AtomicU64,
    /// Calls running now.
    pub in_flight: AtomicU64,
}

/// Compiled code of a component, before it is checked against our world.
pub struct Compiled {
    component: Component,
}

impl Compiled {
    /// The machine code, for the compile cache; only this engine's configuration can load it.
    pub fn serialize(&self) -> Result<Vec<u8>, LoadError> {
        self.component
            .serialize()
            .map_err(|e| LoadError::Engine(format!("serializing compiled code: {e:#}")))
    }
}

/// Why bytes are not a WebAssembly component, judged from the header alone.
pub fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    match bytes {
        [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, ..] => Ok(()),
        [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ..] => Err(
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        [0x00, 0x61, 0x73, 0x6d, ..] => {
            Err("unsupported WebAssembly binary version (expected a component)".into())
        }
        _ => Err(format!(
            "not a WebAssembly component (the file does not start with \\0asm; {} bytes)",
            bytes.len()
        )),
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("manifest", &self.manifest)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The node's wasm engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    stop_ticker: Arc<AtomicBool>,
    /// How many finished stores may wait for teardown (see [`teardown`]).
    teardown: Arc<teardown::Budget>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine (pooling allocator, epochs) and starts the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let memory = config.memory_limit_mib.saturating_mul(1 << 20);
        let slot = config.max_memory_limit_mib.saturating_mul(1 << 20);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances.saturating_mul(4))
            .total_memories(config.max_instances.saturating_mul(2))
            .total_tables(config.max_instances.saturating_mul(4))
            .total_stacks(config.max_instances)
            .max_memory_size(slot.max(memory) as usize)
            .max_memories_per_component(4)
            .max_core_instances_per_component(32)
            .linear_memory_keep_resident(4 << 20)
            .async_stack_keep_resident(128 << 10)
            .table_keep_resident(1 << 20)
            .pagemap_scan(Enabled::Auto);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(config.max_stack_kib as usize * 1024)
            .async_stack_size(config.max_stack_kib as usize * 1024 + (256 << 10))
            // Reserve only what a guest may use (plus guard) instead of 4 GiB per slot.
            .memory_reservation(slot.max(memory).max(1 << 20).next_power_of_two())
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0)
            .consume_fuel(config.fuel_metering)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(engine_err)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        let (weak, stop) = (engine.weak(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("mpreg-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| LoadError::Engine(format!("epoch ticker: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            teardown: teardown::Budget::for_pool(config.max_instances),
            config,
            stop_ticker,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// A fingerprint of everything that makes compiled code loadable: wasmtime's own
    /// compatibility hash (version, target, engine settings). Keys the compile cache.
    pub fn engine_fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Compiles `bytes` with Cranelift, on a blocking thread (it takes tens of milliseconds to
    /// seconds). `Bytes`, so the caller can keep (and store) the same buffer without a copy.
    pub async fn compile(&self, bytes: bytes::Bytes, source: &str) -> Result<Compiled, LoadError> {
        check_component_header(&bytes).map_err(|reason| LoadError::Compile {
            origin: source.to_owned(),
            reason,
        })?;
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Engine(e.to_string()))?
            .map_err(|e| LoadError::Compile {
                origin: source.to_owned(),
                reason: format!("{e:#}"),
            })?;
        Ok(Compiled { component })
    }

    /// Loads code that [`Compiled::serialize`] produced on an engine with the same
    /// [`Runtime::engine_fingerprint`].
    pub fn deserialize(&self, compiled: &[u8], source: &str) -> Result<Compiled, LoadError> {
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
        Ok(Compiled { component })
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
            plugin
                .mpreg_plugin_metadata()
                .call_describe(&mut store)
                .await
        }
        .await
        .map_err(|e| {
            let stderr = store.data().stderr_text();
            world(format!("calling describe failed: {e:#} {stderr}"))
        })?;
        let manifest_err = |reason: String| LoadError::Manifest {
            origin: source.to_owned(),
            reason,
        };
        if described.name.trim().is_empty() || described.name.len() > 128 {
            return Err(manifest_err(
                "the plugin name must be 1 to 128 characters".into(),
            ));
        }
        let version = crate::rpc::version::parse_version_lenient(&described.version)
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
            functions.push(PluginFunction {
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
            pre,
        })
    }

    fn store(
        &self,
        plugin: Arc<str>,
        sandbox: &Sandbox,
        limits: &Limits,
        ctx: CallContext,
    ) -> wasmtime::Result<Store<HostState>> {
        let memory = (limits.memory_limit_mib as usize).saturating_mul(1 << 20);
        let state = HostState::new(plugin, ctx, memory, self.config.max_call_depth, sandbox)?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Some(fuel) = limits.fuel {
            store.set_fuel(fuel)?;
        } else if self.config.fuel_metering {
            store.set_fuel(u64::MAX)?;
        }
        let deadline = Instant::now() + Duration::from_millis(limits.call_timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let other calls on this worker thread run between ticks.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    /// Calls `func` of `plugin` in a fresh instance. `args` fill parameters in order, then
    /// `kwargs` by name; a missing `option` parameter is `none`.
    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        func: &PluginFunction,
        args: &[Value],
        kwargs: &Map<String, Value>,
        ctx: CallContext,
    ) -> Result<Value, InvokeError> {
        let stats = &plugin.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        // A guard, so a call whose future is dropped (request deadline, client gone) still
        // stops counting as running.
        let _running = crate::identity::Counted::enter(&stats.in_flight);
        let out = async {
            let params = bind_args(func, args, kwargs)?;
            let mut store = self
                .store(plugin.name.clone(), &plugin.sandbox, &plugin.limits, ctx)
                .map_err(|e| InvokeError::Trapped(format!("cannot set up the sandbox: {e:#}")))?;
            let mut results = if func.result.is_some() {
                vec![Val::Bool(false)]
            } else {
                Vec::new()
            };
            let outcome = async {
                let instance = plugin.pre.instantiate_async(&mut store).await?;
                let f = instance
                    .get_func(&mut store, func.export)
                    .ok_or_else(|| wasmtime::Error::msg("export vanished"))?;
                f.call_async(&mut store, &params, &mut results).await
            }
            .await;
            if let Err(e) = outcome {
                let err = self.classify(e, &store, &plugin.limits);
                teardown::defer(store, &self.teardown);
                return Err(err);
            }
            // The slot's reset waits until the reply is out (see `teardown`).
            teardown::defer(store, &self.teardown);
            match results.pop() {
                None => Ok(Value::Null),
                // A top-level `result` is how a function reports failure: `err` fails the call.
                Some(Val::Result(Ok(v))) => Ok(v.map_or(Value::Null, |v| convert::to_json(*v))),
                Some(Val::Result(Err(e))) => Err(InvokeError::Returned(
                    e.map_or(Value::Null, |v| convert::to_json(*v)),
                )),
                Some(v) => Ok(convert::to_json(v)),
            }
        }
        .await;
        if out.is_err() {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    fn classify(
        &self,
        e: wasmtime::Error,
        store: &Store<HostState>,
        limits: &Limits,
    ) -> InvokeError {
        if store.data().limiter.hit {
            return InvokeError::MemoryLimit(limits.memory_limit_mib);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => InvokeError::Timeout(limits.call_timeout_ms),
            Some(Trap::StackOverflow) => InvokeError::StackOverflow,
            Some(Trap::OutOfFuel) => InvokeError::OutOfFuel(limits.fuel.unwrap_or(u64::MAX)),
            Some(Trap::AllocationTooLarge) => InvokeError::MemoryLimit(limits.memory_limit_mib),
            Some(trap) => {
                let stderr = store.data().stderr_text();
                if stderr.is_empty() {
                    InvokeError::Trapped(trap.to_string())
                } else {
                    InvokeError::Trapped(format!("{trap}; guest stderr: {stderr}"))
                }
            }
            None => {
                let text = format!("{e:#}");
                if text.contains("maximum concurrent") || text.contains("pooling allocator") {
                    InvokeError::Overloaded(self.config.max_instances)
                } else {
                    InvokeError::Trapped(text)
                }
            }
        }
    }
}

/// Lines up positional and keyword arguments with the parameters and converts them.
fn bind_args(
    func: &PluginFunction,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Vec<Val>, InvokeError> {
    if args.len() > func.params.len() {
        return Err(InvokeError::BadArguments(format!(
            "'{}' takes {} argument(s) {}, got {}",
            func.name,
            func.params.len(),
            func.signature,
            args.len()
        )));
    }
    if let Some(unknown) = kwargs.keys().find(|k| {
        !func
            .params
            .iter()
            .any(|(n, _)| n == *k || n.replace('-', "_") == **k)
    }) {
        return Err(InvokeError::BadArguments(format!(
            "'{}' has no parameter named '{unknown}' {}",
            func.name, func.signature
        )));
    }
    let mut vals = Vec::with_capacity(func.params.len());
    for (i, (pname, pty)) in func.params.iter().enumerate() {
        let by_name = kwargs
            .get(pname)
            .or_else(|| kwargs.get(&pname.replace('-', "_")));
        let value = match (args.get(i), by_name) {
            (Some(_), Some(_)) => {
                return Err(InvokeError::BadArguments(format!(
                    "argument '{pname}' given both by position and by name"
                )));
            }
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) if matches!(pty, Type::Option(_)) => &Value::Null,
            (None, None) => {
                return Err(InvokeError::BadArguments(format!(
                    "missing argument '{pname}' ({}) for {} {}",
                    signature::type_name(pty),
                    func.name,
                    func.signature
                )));
            }
        };
        let val = convert::to_val(value, pty, &format!("argument '{pname}'"))
            .map_err(|e| InvokeError::BadArguments(e.to_string()))?;
        vals.push(val);
    }
    Ok(vals)
}
