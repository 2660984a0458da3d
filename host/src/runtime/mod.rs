//! The WebAssembly component host: the only part of MPREG that touches wasmtime.
//!
//! One [`Runtime`] per node owns the engine (pooling allocator with copy-on-write memory images,
//! epoch interruption driven by a ticker thread) and the linker with our imports. Loading a
//! plugin compiles it once and pre-instantiates it ([`InstancePre`]); every call then gets a
//! fresh `Store`, so a trap, a runaway loop or a memory bomb fails that call only.

pub mod budget;
pub mod compile_cache;
pub mod convert;
mod host;
mod invoke;
pub mod language;
mod load;
mod loaded;
pub mod metrics;
pub mod nested;
mod pool;
pub mod sandbox;
pub mod signature;
pub mod slots;
pub mod stamp;
pub mod teardown;
pub mod warm;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use host::HostState;

pub use crate::config::RuntimeConfig;
pub use crate::digest::sha256_hex;
pub use crate::sandbox::{DirGrant, InstanceReuse, Limits, Sandbox, SandboxError};
pub use convert::ConvertError;
pub use invoke::InvokeError;
pub use loaded::{
    CallStats, Compiled, LoadError, LoadedPlugin, Manifest, PluginFunction, check_component_header,
};
pub use nested::{CallContext, NestedCall, NestedCalls, NestedError, NestedFuture};

/// Frames kept in a trap's backtrace: enough to recognise a recursion that ran out of stack.
const BACKTRACE_FRAMES: usize = 64;

/// The wasmtime engine, linker and budgets every plugin call runs under.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    stop_ticker: Arc<AtomicBool>,
    /// How many finished stores may wait for teardown (see [`teardown`]).
    teardown: Arc<teardown::Budget>,
    /// Guest linear memory all stores may hold together (see [`budget`]).
    guest_memory: Arc<budget::GuestMemory>,
    /// Calls running at once (see [`slots`]).
    slots: slots::RunSlots,
    /// Where calls that outlast their first slice continue (see [`pool`]).
    pool: pool::GuestPool,
    /// What it counts (see [`metrics`]).
    metrics: metrics::RuntimeMetrics,
    /// The node's `[secrets]`, read by plugins whose sandbox grants them.
    secrets: Arc<crate::secrets::SecretStore>,
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
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(BACKTRACE_FRAMES))
            .async_stack_size(config.max_stack_kib as usize * 1024 + (256 << 10))
            // Reserve only what a guest may use (plus guard) instead of 4 GiB per slot.
            .memory_reservation(slot.max(memory).max(1 << 20).next_power_of_two())
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0)
            .consume_fuel(config.fuel_metering)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match config.compiler {
            crate::config::Compiler::Cranelift => cfg.strategy(wasmtime::Strategy::Cranelift),
            crate::config::Compiler::Winch => cfg.strategy(wasmtime::Strategy::Winch),
        };
        // Winch compiles each function in one pass; Cranelift's cache has nothing to keep.
        if config.compile_cache_mib > 0 && config.compiler == crate::config::Compiler::Cranelift {
            let limit = usize::try_from(config.compile_cache_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX);
            cfg.enable_incremental_compilation(Arc::new(compile_cache::FunctionCache::new(limit)))
                .map_err(engine_err)?;
        }
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
        let guest_memory = match config.max_guest_memory_mib {
            0 => budget::default_limit(),
            mib => usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        };
        Ok(Runtime {
            engine,
            linker,
            teardown: teardown::Budget::for_pool(config.max_instances),
            guest_memory: budget::GuestMemory::new(guest_memory),
            slots: slots::RunSlots::new(config.max_running_calls),
            pool: pool::GuestPool::new()
                .map_err(|e| LoadError::Engine(format!("guest threads: {e}")))?,
            config,
            stop_ticker,
            metrics: metrics::RuntimeMetrics::default(),
            secrets: Arc::default(),
        })
    }

    /// The same runtime with the node's secrets (`[secrets]`) for plugins to read.
    pub fn with_secrets(mut self, secrets: crate::secrets::SecretStore) -> Self {
        self.secrets = Arc::new(secrets);
        self
    }

    /// What it counts.
    pub fn metrics(&self) -> &metrics::RuntimeMetrics {
        &self.metrics
    }

    /// Registers what it counts, and a collector of the run slots and guest memory in use.
    pub fn register_metrics(self: &Arc<Self>, r: &mut crate::metrics::Registry) {
        self.metrics.register(r);
        let rt = Arc::downgrade(self);
        crate::metrics::collect(r, move |s| {
            let Some(rt) = rt.upgrade() else {
                return Ok(());
            };
            s.gauge(
                "run_slots_in_use",
                "Guest calls running now (run slots taken)",
                rt.slots().running() as f64,
            )?;
            s.gauge(
                "run_slots",
                "Run slots: guest calls that may run at once",
                rt.slots().size() as f64,
            )?;
            s.bytes(
                "guest_memory_used",
                "Guest linear memory held by running calls",
                rt.guest_memory().used() as u64,
            )?;
            s.bytes(
                "guest_memory_limit",
                "The node's guest-memory budget",
                rt.guest_memory().limit() as u64,
            )
        });
    }

    /// The node's guest-memory budget.
    pub fn guest_memory(&self) -> &Arc<budget::GuestMemory> {
        &self.guest_memory
    }

    /// Runs `call` (a future around [`Runtime::invoke`]) so that, past its first slice, it
    /// continues on the guest threads rather than the caller's (see [`pool`]).
    pub fn isolate<F>(
        &self,
        call: F,
    ) -> impl std::future::Future<Output = Result<serde_json::Value, InvokeError>> + Send + 'static
    where
        F: std::future::Future<Output = Result<serde_json::Value, InvokeError>> + Send + 'static,
    {
        let run = self.pool.run(call);
        async move {
            run.await.unwrap_or_else(|e| {
                Err(InvokeError::Trapped(format!("the call's task failed: {e}")))
            })
        }
    }

    /// The pool of run slots.
    pub fn slots(&self) -> &slots::RunSlots {
        &self.slots
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
        self.config.compiler.hash(&mut h);
        format!("{:016x}", h.finish())
    }
}
