//! `[runtime]`: how plugins run (limits and engine settings). Its own module because the
//! sandbox spec resolves its limits against it while the node config holds sandboxes.

use serde::{Deserialize, Serialize};

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
    /// Largest memory limit any plugin may be given (the size of an instance slot).
    pub max_memory_limit_mib: u64,
    /// Compile guests with fuel metering so plugins can be given a `fuel` budget (costs a
    /// little speed in every guest).
    pub fuel_metering: bool,
    /// How deep plugins may nest `call`s (a plugin calling a plugin calling …).
    pub max_call_depth: u32,
    /// Guest linear memory all running calls of the node may hold together; 0 means half of
    /// the machine's memory. A call that would not fit waits briefly, then gets 1007; a guest
    /// growing past it gets 1008.
    pub max_guest_memory_mib: u64,
    /// Plugin calls running at once on this node; 0 means four per core. Further calls wait
    /// (for at most their time limit, then 1007), so guests cannot starve the node's sessions.
    pub max_running_calls: usize,
    /// Memory for Cranelift's per-function compile cache, so a rebuilt plugin compiles only
    /// the functions that changed (an edited Python or JavaScript image: its interpreter is
    /// reused). 0 (the default) turns it off; `mpreg dev`'s node turns it on.
    pub compile_cache_mib: u64,
    /// Which code generator compiles guests: Cranelift (the default: optimised code) or
    /// Winch (a baseline compiler: compiles a large image about 3× faster, runs it slower).
    /// `mpreg plugin build` reads a component's commands with Winch.
    pub compiler: Compiler,
    /// Idle instances kept per plugin version whose calls reuse instances (`instance_reuse =
    /// "serial"`): how many finished calls' instances wait for the next call. They hold their
    /// memory in the node's guest-memory budget and an instance slot each. 0 turns reuse off.
    pub warm_instances: usize,
    /// Calls one reused instance serves before it is replaced by a fresh one, so what calls
    /// leave behind (a leak, a growing cache) is bounded.
    pub max_calls_per_instance: u32,
}

/// The code generator that turns a component into machine code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// Optimising: slower to compile, fast code. What a node serves with.
    #[default]
    Cranelift,
    /// Baseline (single pass): fast to compile, slower code. For reading a component's
    /// metadata and for loops where compile time dominates.
    Winch,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            call_timeout_ms: 5_000,
            memory_limit_mib: 64,
            epoch_tick_ms: 2,
            max_instances: 1_000,
            max_stack_kib: 512,
            max_memory_limit_mib: 256,
            fuel_metering: false,
            max_call_depth: 8,
            max_guest_memory_mib: 0,
            max_running_calls: 0,
            compile_cache_mib: 0,
            compiler: Compiler::Cranelift,
            warm_instances: 4,
            max_calls_per_instance: 1_000,
        }
    }
}
