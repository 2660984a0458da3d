//! Per-call host state and the host side of our WIT imports. The crate's one `bindgen!` site is
//! here, so the plugin ABI is generated exactly once.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::{MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Generated from `wit/plugin.wit`; in a module of its own so the generated `mpreg` package
/// module cannot clash with this crate's name.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "mpreg:plugin/plugin@0.1.0",
        exports: { default: async },
    });
}

pub use bindings::PluginPre;
use bindings::mpreg::plugin as wit;

/// How much a guest may write to stderr per call; what it writes there (a panic message, say) is
/// attached to the error when the call fails.
const STDERR_CAPACITY: usize = 64 * 1024;
/// Longest log line taken from a guest; the rest is cut off.
const MAX_LOG_LINE: usize = 4096;

/// Everything one call's `Store` owns: a fresh WASI context with no ambient authority, the
/// memory limiter, and who is calling (for log lines).
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory limiter of this store.
    pub limiter: MemoryLimiter,
    stderr: MemoryOutputPipe,
    plugin: Arc<str>,
    request_id: Arc<str>,
}

impl HostState {
    /// State for one call of `plugin` on behalf of request `request_id`.
    pub fn new(plugin: Arc<str>, request_id: Arc<str>, memory_limit: usize) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopened directories, no environment, no network, no inherited stdio.
        let wasi = WasiCtx::builder()
            .stdout(SinkOutputStream)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            stderr,
            plugin,
            request_id,
        }
    }

    /// What the guest wrote to stderr during this call, lossily decoded and trimmed.
    pub fn stderr_text(&self) -> String {
        let raw = self.stderr.contents();
        let text = String::from_utf8_lossy(&raw);
        // Rust's panic hint is noise for someone reading an RPC error.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        lines.join("\n").trim().to_owned()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::log::Host for HostState {
    fn log(&mut self, level: wit::log::Level, message: String) {
        use wit::log::Level;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, request) = (&*self.plugin, &*self.request_id);
        match level {
            Level::Trace => tracing::trace!(target: "mpreg::plugin", plugin, request, "{message}"),
            Level::Debug => tracing::debug!(target: "mpreg::plugin", plugin, request, "{message}"),
            Level::Info => tracing::info!(target: "mpreg::plugin", plugin, request, "{message}"),
            Level::Warn => tracing::warn!(target: "mpreg::plugin", plugin, request, "{message}"),
            Level::Error => tracing::error!(target: "mpreg::plugin", plugin, request, "{message}"),
        }
    }
}

impl wit::types::Host for HostState {}

/// Adds every import a plugin may use: WASI p2 (with the empty context above) and our interfaces.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// Caps linear memory per store and remembers whether the cap was hit, so a guest that aborts
/// after a failed allocation is reported as "memory limit exceeded" rather than a bare trap.
pub struct MemoryLimiter {
    limit: usize,
    /// Set when a growth request was refused.
    pub hit: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        MemoryLimiter { limit, hit: false }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
