//! Per-call host state and the host side of our WIT imports. The crate's one `bindgen!` site is
//! here, so the plugin ABI is generated exactly once.

use std::sync::Arc;

use serde_json::{Map, Value};

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::{MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::GuestMemory;
use super::nested::{CallContext, NestedCall, NestedError};
use super::slots::{RunSlots, Slot};
use crate::sandbox::Sandbox;

/// Generated from `wit/plugin.wit`; in a module of its own so the generated `mpreg` package
/// module cannot clash with this crate's name.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "mpreg:plugin/plugin@0.1.0",
        exports: { default: async },
        // A nested call waits for the callee, which may run on another task or node.
        imports: {
            "mpreg:plugin/call.call": async,
            "mpreg:plugin/queue.send": async,
            "mpreg:plugin/cache.get": async,
            "mpreg:plugin/cache.put": async,
            "mpreg:plugin/cache.delete": async,
            "mpreg:plugin/cache.incr": async,
        },
    });
}

pub use bindings::PluginPre;
use bindings::mpreg::plugin as wit;

/// How much a guest may write to stderr per call; what it writes there (a panic message, say) is
/// attached to the error when the call fails.
const STDERR_CAPACITY: usize = 64 * 1024;
/// Longest log line taken from a guest; the rest is cut off.
const MAX_LOG_LINE: usize = 4096;

/// Everything one call's `Store` owns: a fresh WASI context with only what the plugin's sandbox
/// grants, the memory limiter, and who is calling (for log lines and nested calls).
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory limiter of this store.
    pub limiter: MemoryLimiter,
    stderr: MemoryOutputPipe,
    /// Where this call's stderr starts (an instance that serves calls in turn keeps its pipe).
    stderr_mark: usize,
    plugin: Arc<str>,
    ctx: CallContext,
    max_depth: u32,
    /// This call's run slot, and the pool it came from: given back while a nested call runs.
    slot: Option<(Slot, RunSlots)>,
    /// Cache namespaces and secrets the sandbox grants (see [`Sandbox::grants_cache`]).
    cache_grant: Sandbox,
    /// The node's secrets; the `secrets` import reads those `cache_grant.secrets` names.
    secrets: Arc<crate::secrets::SecretStore>,
}

impl HostState {
    /// Holds `slot` for the call.
    pub fn hold(&mut self, slot: Slot, pool: RunSlots) {
        self.slot = Some((slot, pool));
    }

    /// Gives the slot back (the call is over).
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    /// Runs `wait` (a nested call) without holding a run slot, and takes one again after:
    /// a guest that waits does not run, and holding its slot could deadlock the pool.
    async fn without_slot<T>(&mut self, wait: impl std::future::Future<Output = T>) -> T {
        let pool = self.slot.take().map(|(slot, pool)| {
            drop(slot);
            pool
        });
        let out = wait.await;
        if let Some(pool) = pool
            && let Some(slot) = pool.reacquire().await
        {
            self.slot = Some((slot, pool));
        }
        out
    }

    /// State for one call of `plugin` within `ctx`.
    pub fn new(
        plugin: Arc<str>,
        ctx: CallContext,
        memory_limit: usize,
        budget: Arc<GuestMemory>,
        max_depth: u32,
        sandbox: &Sandbox,
        secrets: Arc<crate::secrets::SecretStore>,
    ) -> wasmtime::Result<Self> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No network and no inherited stdio; environment and directories only when granted.
        let mut builder = WasiCtx::builder();
        builder
            .stdout(SinkOutputStream)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if sandbox.grants_anything() {
            super::sandbox::grant(sandbox, &mut builder)?;
        }
        Ok(HostState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit, budget),
            stderr,
            stderr_mark: 0,
            plugin,
            ctx,
            max_depth,
            slot: None,
            cache_grant: Sandbox {
                cache_namespaces: sandbox.cache_namespaces.clone(),
                secrets: sandbox.secrets.clone(),
                ..Sandbox::default()
            },
            secrets,
        })
    }

    /// Starts another call in this state's instance (see [`super::warm`]): who calls, and
    /// the stderr that is this call's own.
    pub(super) fn begin_call(&mut self, ctx: CallContext) {
        self.ctx = ctx;
        self.stderr_mark = self.stderr.contents().len();
    }

    /// Ends a call whose instance waits for another: drops what ties it to the caller (the
    /// nested-call port reaches the node, which holds this plugin; keeping it would make a
    /// cycle that outlives the node).
    pub(super) fn end_call(&mut self) {
        self.ctx = CallContext::isolated(self.ctx.request_id.clone());
    }

    /// Whether the instance may serve another call: no limit was hit in it, and its stderr
    /// pipe has room left (a full pipe would fail the guest's writes).
    pub(super) fn reusable(&self) -> bool {
        !self.limiter.hit
            && !self.limiter.budget_hit
            && self.stderr.contents().len() < STDERR_CAPACITY / 2
    }

    /// What the guest wrote to stderr during this call, lossily decoded and trimmed.
    pub fn stderr_text(&self) -> String {
        let raw = self.stderr.contents();
        let text = String::from_utf8_lossy(raw.get(self.stderr_mark..).unwrap_or_default());
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
        let (plugin, request) = (&*self.plugin, &*self.ctx.request_id);
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

impl wit::call::Host for HostState {
    async fn call(
        &mut self,
        fun: String,
        args: String,
        options: wit::call::CallOptions,
    ) -> Result<String, wit::call::CallError> {
        use wit::call::CallError;
        let depth = self.ctx.depth + 1;
        if depth > self.max_depth {
            return Err(CallError::TooDeep(self.max_depth));
        }
        let Some(nested) = self.ctx.nested.clone() else {
            return Err(CallError::Other(
                "calls are not available here (the plugin is being loaded)".into(),
            ));
        };
        let args = match serde_json::from_str::<Value>(&args) {
            Ok(Value::Array(a)) => a,
            Ok(other) => {
                return Err(CallError::BadArguments(format!(
                    "args must be a JSON array, got {}",
                    json_kind(&other)
                )));
            }
            Err(e) => {
                return Err(CallError::BadArguments(format!(
                    "args are not valid JSON: {e}"
                )));
            }
        };
        let kwargs = match options.kwargs.as_deref().map(serde_json::from_str::<Value>) {
            None => Map::new(),
            Some(Ok(Value::Object(m))) => m,
            Some(Ok(other)) => {
                return Err(CallError::BadArguments(format!(
                    "kwargs must be a JSON object, got {}",
                    json_kind(&other)
                )));
            }
            Some(Err(e)) => {
                return Err(CallError::BadArguments(format!(
                    "kwargs are not valid JSON: {e}"
                )));
            }
        };
        let call = NestedCall {
            fun,
            args,
            kwargs,
            function_id: options.function_id,
            version: options.version,
            locs: options.locs,
            request_id: self.ctx.request_id.clone(),
            depth,
            principal: self.ctx.principal.clone(),
        };
        match self.without_slot(nested.call(call)).await {
            Ok(v) => Ok(v.to_string()),
            Err(NestedError::NotFound(m)) => Err(CallError::NotFound(m)),
            Err(NestedError::BadArguments(m)) => Err(CallError::BadArguments(m)),
            Err(NestedError::Failed(m)) => Err(CallError::Failed(m)),
            Err(NestedError::Other(m)) => Err(CallError::Other(m)),
        }
    }
}

impl wit::publish::Host for HostState {
    fn publish(&mut self, topic: String, payload: String) -> Result<String, String> {
        let Some(node) = self.ctx.nested.clone() else {
            return Err("publishing is not available here (the plugin is being loaded)".into());
        };
        node.publish(
            &topic,
            &payload,
            &self.plugin,
            &self.ctx.request_id,
            &self.ctx.principal,
        )
    }
}

impl wit::queue::Host for HostState {
    async fn send(
        &mut self,
        name: String,
        body: String,
        options: wit::queue::SendOptions,
    ) -> Result<String, String> {
        let Some(node) = self.ctx.nested.clone() else {
            return Err("queues are not available here (the plugin is being loaded)".into());
        };
        let body: Value =
            serde_json::from_str(&body).map_err(|e| format!("body is not valid JSON: {e}"))?;
        let mut opts = Map::new();
        opts.insert("priority".into(), options.priority.into());
        opts.insert("delay_ms".into(), options.delay_ms.into());
        if let Some(d) = options.dedup_id {
            opts.insert("dedup_id".into(), d.into());
        }
        let call = self.builtin_call(
            "queue.send",
            vec![Value::String(name), body, Value::Object(opts)],
        );
        match self.without_slot(node.call(call)).await {
            Ok(sent) => sent["message_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("unexpected reply from queue.send: {sent}")),
            Err(
                NestedError::NotFound(m)
                | NestedError::BadArguments(m)
                | NestedError::Failed(m)
                | NestedError::Other(m),
            ) => Err(m),
        }
    }
}

impl HostState {
    /// A call of built-in `fun` on behalf of this call (one level deeper, same request).
    fn builtin_call(&self, fun: &str, args: Vec<Value>) -> NestedCall {
        NestedCall {
            fun: fun.into(),
            args,
            kwargs: Map::new(),
            function_id: None,
            version: None,
            locs: Vec::new(),
            request_id: self.ctx.request_id.clone(),
            depth: self.ctx.depth + 1,
            principal: self.ctx.principal.clone(),
        }
    }

    /// Runs built-in `fun` for the `cache` import: the namespace must be granted, and the call
    /// goes through the dispatcher to the key's owner like a client's.
    async fn cache_call(
        &mut self,
        fun: &str,
        ns: String,
        args: Vec<Value>,
    ) -> Result<Value, String> {
        let Some(node) = self.ctx.nested.clone() else {
            return Err("the cache is not available here (the plugin is being loaded)".into());
        };
        if !self.cache_grant.grants_cache(&ns) {
            return Err(format!(
                "cache namespace '{ns}' is not granted to plugin '{}' (sandbox cache_namespaces)",
                self.plugin
            ));
        }
        let mut all = vec![Value::String(ns)];
        all.extend(args);
        let call = self.builtin_call(fun, all);
        self.without_slot(node.call(call))
            .await
            .map_err(|e| match e {
                NestedError::NotFound(m)
                | NestedError::BadArguments(m)
                | NestedError::Failed(m)
                | NestedError::Other(m) => m,
            })
    }
}

impl wit::secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<String, String> {
        if !self.cache_grant.grants_secret(&name) {
            return Err(format!(
                "secret '{name}' is not granted to plugin '{}' (sandbox secrets)",
                self.plugin
            ));
        }
        self.secrets
            .get(&name)
            .map(str::to_owned)
            .ok_or_else(|| format!("secret '{name}' is not configured on this node ([secrets])"))
    }
}

impl wit::cache::Host for HostState {
    async fn get(&mut self, namespace: String, key: String) -> Result<Option<String>, String> {
        let entry = self
            .cache_call("cache.entry", namespace, vec![Value::String(key)])
            .await?;
        Ok(match entry {
            Value::Null => None,
            e => Some(e["value"].to_string()),
        })
    }

    async fn put(
        &mut self,
        namespace: String,
        key: String,
        value: String,
        options: wit::cache::PutOptions,
    ) -> Result<(), String> {
        let value: Value =
            serde_json::from_str(&value).map_err(|e| format!("value is not valid JSON: {e}"))?;
        let mut opts = Map::new();
        if let Some(t) = options.ttl_seconds {
            opts.insert("ttl_seconds".into(), t.into());
        }
        if !options.dependencies.is_empty() {
            opts.insert("dependencies".into(), options.dependencies.into());
        }
        self.cache_call(
            "cache.put",
            namespace,
            vec![Value::String(key), value, Value::Object(opts)],
        )
        .await
        .map(drop)
    }

    async fn delete(&mut self, namespace: String, key: String) -> Result<bool, String> {
        let out = self
            .cache_call("cache.delete", namespace, vec![Value::String(key)])
            .await?;
        Ok(out["deleted"].as_bool().unwrap_or(false))
    }

    async fn incr(&mut self, namespace: String, key: String, by: i64) -> Result<i64, String> {
        let out = self
            .cache_call(
                "cache.incr",
                namespace,
                vec![Value::String(key.clone()), by.into()],
            )
            .await?;
        out.as_i64()
            .ok_or_else(|| format!("the value under '{key}' is not an integer: {out}"))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Adds every import a plugin may use: WASI p2 (with the empty context above) and our interfaces.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::call::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::publish::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::queue::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::cache::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wit::secrets::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// Caps linear memory per store, reserves every growth in the node's guest-memory budget, and
/// remembers which cap was hit, so a guest that aborts after a failed allocation is reported as
/// "memory limit exceeded" rather than a bare trap.
pub struct MemoryLimiter {
    limit: usize,
    /// Set when a growth past this store's limit was refused.
    pub hit: bool,
    budget: Arc<GuestMemory>,
    /// Bytes this store holds in the budget.
    pub committed: usize,
    /// Set when a growth was refused because the node's budget was spent.
    pub budget_hit: bool,
}

impl MemoryLimiter {
    fn new(limit: usize, budget: Arc<GuestMemory>) -> Self {
        MemoryLimiter {
            limit,
            hit: false,
            budget,
            committed: 0,
            budget_hit: false,
        }
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.release(self.committed);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        if !self.budget.try_reserve(more) {
            self.budget_hit = true;
            return Ok(false);
        }
        self.committed += more;
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
