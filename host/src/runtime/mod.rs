//! The WebAssembly component host: the only part of MPREG that touches wasmtime.
//!
//! One [`Runtime`] per node owns the engine (pooling allocator with copy-on-write memory images,
//! epoch interruption driven by a ticker thread) and the linker with our imports. Loading a
//! plugin compiles it once and pre-instantiates it ([`InstancePre`]); every call then gets a
//! fresh `Store`, so a trap, a runaway loop or a memory bomb fails that call only.

pub mod convert;
mod host;
pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

pub use convert::ConvertError;

/// Settings of the runtime (the `[runtime]` section of the node config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Longest a single plugin call may run (wall time, enforced by epochs).
    pub call_timeout_ms: u64,
    /// Linear memory cap of one plugin instance.
    pub memory_limit_mib: u64,
    /// Epoch tick: how often runaway guests are checked and made to yield.
    pub epoch_tick_ms: u64,
    /// Instances that may exist at once (the pooling allocator's slots); calls past this fail
    /// with "overloaded".
    pub max_instances: u32,
    /// Guest stack limit; deeper recursion traps with a stack-overflow error.
    pub max_stack_kib: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            call_timeout_ms: 5_000,
            memory_limit_mib: 64,
            epoch_tick_ms: 2,
            max_instances: 1_000,
            max_stack_kib: 512,
        }
    }
}

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
    pre: InstancePre<HostState>,
    name: Arc<str>,
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
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances.saturating_mul(4))
            .total_memories(config.max_instances.saturating_mul(2))
            .total_tables(config.max_instances.saturating_mul(4))
            .total_stacks(config.max_instances)
            .max_memory_size(memory as usize)
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
            .memory_reservation(memory.max(1 << 20).next_power_of_two())
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0)
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
            config,
            stop_ticker,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles `bytes` (on a blocking thread: Cranelift takes tens of milliseconds),
    /// pre-instantiates it and reads its manifest.
    pub async fn load(&self, bytes: Vec<u8>, source: &str) -> Result<LoadedPlugin, LoadError> {
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Engine(e.to_string()))?
            .map_err(|e| LoadError::Compile {
                origin: source.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let world = |reason: String| LoadError::World {
            origin: source.to_owned(),
            reason,
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| world(format!("{e:#}")))?;
        let plugin_pre = PluginPre::new(pre.clone()).map_err(|e| world(format!("{e:#}")))?;

        let mut store = self.store("loader".into(), "load".into());
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
            pre,
        })
    }

    fn store(&self, plugin: Arc<str>, request_id: Arc<str>) -> Store<HostState> {
        let memory = (self.config.memory_limit_mib as usize).saturating_mul(1 << 20);
        let mut store = Store::new(&self.engine, HostState::new(plugin, request_id, memory));
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + Duration::from_millis(self.config.call_timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let other calls on this worker thread run between ticks.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Calls `func` of `plugin` in a fresh instance. `args` fill parameters in order, then
    /// `kwargs` by name; a missing `option` parameter is `none`.
    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        func: &PluginFunction,
        args: &[Value],
        kwargs: &Map<String, Value>,
        request_id: Arc<str>,
    ) -> Result<Value, InvokeError> {
        let params = bind_args(func, args, kwargs)?;
        let mut store = self.store(plugin.name.clone(), request_id);
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
            return Err(self.classify(e, &store));
        }
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

    fn classify(&self, e: wasmtime::Error, store: &Store<HostState>) -> InvokeError {
        if store.data().limiter.hit {
            return InvokeError::MemoryLimit(self.config.memory_limit_mib);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => InvokeError::Timeout(self.config.call_timeout_ms),
            Some(Trap::StackOverflow) => InvokeError::StackOverflow,
            Some(Trap::AllocationTooLarge) => {
                InvokeError::MemoryLimit(self.config.memory_limit_mib)
            }
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
