//! Invoking: JSON arguments → a fresh `Store` with its limits (or a warm instance, see
//! [`super::warm`]) → the export → a JSON result, and how a call fails.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wasmtime::component::{Type, Val};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::host::HostState;
use super::loaded::{LoadedPlugin, PluginFunction};
use super::nested::CallContext;
use super::warm::Warm;
use super::{Runtime, convert, signature, teardown};
use crate::metrics::Phase;
use crate::sandbox::{InstanceReuse, Limits, Sandbox};

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// An argument does not fit the parameter types: the caller's mistake, so the details
    /// say "bad arguments" where a plugin's own failure says "plugin trapped" or "function
    /// returned an error" (all 1003, the code MPREG's clients expect).
    #[error("bad arguments: {0}")]
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
    /// Every run slot stayed taken for the call's whole time limit.
    #[error("all {0} run slots stayed busy for the call's time limit; not run")]
    Busy(usize),
    /// The node's guest-memory budget had no room for another instance of this plugin.
    #[error("the node's guest memory budget ({0} MiB) is in use by other calls; not run")]
    MemoryBusy(u64),
    /// The guest grew past what was left of the node's guest-memory budget.
    #[error("the node's guest memory budget ({0} MiB) ran out while the call grew its memory")]
    NodeMemory(u64),
}

impl InvokeError {
    /// The failure's kind, as the `kind` label of `mpreg_plugin_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::BadArguments(_) => "bad_arguments",
            InvokeError::Trapped(_) => "trap",
            InvokeError::Returned(_) => "returned_error",
            InvokeError::Timeout(_) => "deadline",
            InvokeError::OutOfFuel(_) => "fuel",
            InvokeError::MemoryLimit(_) => "memory_limit",
            InvokeError::StackOverflow => "stack_overflow",
            InvokeError::NodeMemory(_) => "node_memory",
            InvokeError::Overloaded(_) => "no_instance_slot",
            InvokeError::Busy(_) => "run_slots_busy",
            InvokeError::MemoryBusy(_) => "guest_memory_busy",
        }
    }
}

/// Whether an out-of-bounds access was the guest's own stack running out. Compilers for wasm32
/// (Rust, C, componentize-py's CPython) keep their stack in linear memory, below the data,
/// growing down: overflowing it writes below address 0, which wraps to an address far out of
/// bounds. The trap itself says only "out of bounds"; what tells a stack overflow from a stray
/// pointer is the call stack under it: [`super::BACKTRACE_FRAMES`] deep (it was cut there) and, under
/// the few frames at its top, the same cycle of at most 16 functions over and over.
fn ran_off_its_stack(e: &wasmtime::Error) -> bool {
    let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let funcs: Vec<u32> = bt.frames().iter().map(|f| f.func_index()).collect();
    funcs.len() >= super::BACKTRACE_FRAMES && is_recursion(&funcs[4..])
}

/// `funcs` repeats one cycle of at most 16 functions.
fn is_recursion(funcs: &[u32]) -> bool {
    (1..=16.min(funcs.len() / 2)).any(|p| (p..funcs.len()).all(|i| funcs[i] == funcs[i - p]))
}

/// How long a call waits for room in the node's guest-memory budget before it is refused.
const MEMORY_PATIENCE: Duration = Duration::from_millis(250);

impl Runtime {
    fn guest_memory_mib(&self) -> u64 {
        (self.guest_memory.limit() >> 20) as u64
    }

    pub(super) fn store(
        &self,
        plugin: Arc<str>,
        sandbox: &Sandbox,
        limits: &Limits,
        ctx: CallContext,
    ) -> wasmtime::Result<Store<HostState>> {
        let memory = (limits.memory_limit_mib as usize).saturating_mul(1 << 20);
        let state = HostState::new(
            plugin,
            ctx,
            memory,
            self.guest_memory.clone(),
            self.config.max_call_depth,
            sandbox,
            self.secrets.clone(),
        )?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store, limits)?;
        Ok(store)
    }

    /// Gives `store` one call's budgets: its fuel and its deadline from now.
    fn arm(&self, store: &mut Store<HostState>, limits: &Limits) -> wasmtime::Result<()> {
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
        Ok(())
    }

    /// Calls `func` of `plugin` in a fresh instance, or in a warm one when its calls reuse
    /// instances ([`super::warm`]). `args` fill parameters in order, then
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
            let patience = Duration::from_millis(plugin.limits.call_timeout_ms);
            let m = &func.metrics;
            let timed = m.enabled();
            let mut mark = timed.then(Instant::now);
            let Some(slot) = self.slots.acquire(patience).await else {
                return Err(InvokeError::Busy(self.slots.size()));
            };
            let reuse = plugin.reuse == InstanceReuse::Serial && self.config.warm_instances > 0;
            let warm = if reuse { plugin.warm.take() } else { None };
            // A fresh instance needs room for what this plugin's instances start with (or a
            // short wait for it); a warm one holds its memory already.
            if warm.is_none() {
                let need = stats.initial_memory.load(Ordering::Relaxed);
                if !self.guest_memory.admit(need, MEMORY_PATIENCE).await {
                    return Err(InvokeError::MemoryBusy(self.guest_memory_mib()));
                }
            }
            lap(&mut mark, |t| m.phase(Phase::QueueWait, t));
            let setup = |e: wasmtime::Error| {
                InvokeError::Trapped(format!("cannot set up the sandbox: {e:#}"))
            };
            let (mut store, instance, served) = match warm {
                Some(w) => {
                    let mut store = w.store;
                    store.data_mut().begin_call(ctx);
                    self.arm(&mut store, &plugin.limits).map_err(setup)?;
                    (store, Some(w.instance), w.calls)
                }
                None => (
                    self.store(plugin.name.clone(), &plugin.sandbox, &plugin.limits, ctx)
                        .map_err(setup)?,
                    None,
                    0,
                ),
            };
            store.data_mut().hold(slot, self.slots.clone());
            let mut results = if func.result.is_some() {
                vec![Val::Bool(false)]
            } else {
                Vec::new()
            };
            let outcome = async {
                let instance = match instance {
                    Some(instance) => instance,
                    None => {
                        let instance = plugin.pre.instantiate_async(&mut store).await?;
                        self.metrics.instantiated();
                        stats
                            .initial_memory
                            .store(store.data().limiter.committed, Ordering::Relaxed);
                        instance
                    }
                };
                lap(&mut mark, |t| m.phase(Phase::Instantiate, t));
                let f = instance
                    .get_func(&mut store, func.export)
                    .ok_or_else(|| wasmtime::Error::msg("export vanished"))?;
                let ran = f.call_async(&mut store, &params, &mut results).await;
                lap(&mut mark, |t| m.phase(Phase::Run, t));
                ran.map(|()| instance)
            }
            .await;
            // The slot goes back now, not when the store is torn down.
            store.data_mut().release_slot();
            let instance = match outcome {
                Ok(instance) => instance,
                Err(e) => {
                    // A call that failed never leaves its instance for another.
                    let err = self.classify(e, &store, &plugin.limits);
                    teardown::defer(store, &self.teardown);
                    return Err(err);
                }
            };
            let warm = Warm {
                store,
                instance,
                calls: served.saturating_add(1),
            };
            let keep = reuse
                && warm.calls < self.config.max_calls_per_instance
                && warm.store.data().reusable();
            let spare = if keep {
                let mut warm = warm;
                warm.store.data_mut().end_call();
                plugin.warm.give(warm, self.config.warm_instances)
            } else {
                Some(warm)
            };
            // The slot's reset waits until the reply is out (see `teardown`).
            if let Some(spare) = spare {
                teardown::defer(spare.store, &self.teardown);
            }
            let json = |v: Val, ty: Option<Type>| match ty {
                Some(ty) => convert::to_json_as(v, &ty, func.style),
                None => convert::to_json(v),
            };
            let (ok_ty, err_ty) = match &func.result {
                Some(Type::Result(r)) => (r.ok(), r.err()),
                _ => (None, None),
            };
            match results.pop() {
                None => Ok(Value::Null),
                // A top-level `result` is how a function reports failure: `err` fails the call.
                Some(Val::Result(Ok(v))) => Ok(v.map_or(Value::Null, |v| json(*v, ok_ty))),
                Some(Val::Result(Err(e))) => Err(InvokeError::Returned(
                    e.map_or(Value::Null, |v| json(*v, err_ty)),
                )),
                Some(v) => Ok(json(v, func.result.clone())),
            }
        }
        .await;
        if let Err(e) = &out {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            self.metrics.failed(e.kind());
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
        if store.data().limiter.budget_hit {
            return InvokeError::NodeMemory(self.guest_memory_mib());
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => InvokeError::Timeout(limits.call_timeout_ms),
            Some(Trap::StackOverflow) => InvokeError::StackOverflow,
            Some(Trap::OutOfFuel) => InvokeError::OutOfFuel(limits.fuel.unwrap_or(u64::MAX)),
            Some(Trap::AllocationTooLarge) => InvokeError::MemoryLimit(limits.memory_limit_mib),
            Some(Trap::MemoryOutOfBounds) if ran_off_its_stack(&e) => InvokeError::StackOverflow,
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

/// Hands the time since `mark` to `record` and restarts it (no-op when not timing).
fn lap(mark: &mut Option<Instant>, record: impl FnOnce(Duration)) {
    if let Some(t) = mark {
        let now = Instant::now();
        record(now - *t);
        *t = now;
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

#[cfg(test)]
mod recursion_tests {
    use super::is_recursion;

    #[test]
    fn a_repeated_cycle_is_recursion_and_a_varied_stack_is_not() {
        assert!(is_recursion(&[7; 40]));
        let cycle: Vec<u32> = (0..60).map(|i| [3, 9, 4][i % 3]).collect();
        assert!(is_recursion(&cycle));
        let varied: Vec<u32> = (0..60).collect();
        assert!(!is_recursion(&varied));
    }
}
