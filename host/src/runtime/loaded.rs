//! What a loaded plugin is (its manifest, functions, compiled and pre-instantiated code, call
//! counters) and why loading one fails.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Type};

use super::host::HostState;
use crate::sandbox::{Limits, Sandbox, SandboxError};

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
    /// Memoized by default, as the plugin's `caching` export declares.
    pub cache: Option<crate::protocol::CacheRule>,
    /// How its values look in JSON (from the build stamp; WIT's style without one).
    pub style: super::convert::JsonStyle,
    /// Its call metrics (handles into the runtime's families).
    pub metrics: crate::metrics::FunctionCalls,
    pub(super) params: Vec<(String, Type)>,
    pub(super) result: Option<Type>,
    pub(super) export: ComponentExportIndex,
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
    /// Whether its calls reuse instances (its sandbox's choice, else its language's).
    pub reuse: crate::sandbox::InstanceReuse,
    /// Its idle instances, when calls reuse them ([`super::warm`]).
    pub warm: super::warm::WarmPool,
    pub(super) pre: InstancePre<HostState>,
    pub(super) name: Arc<str>,
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
    /// Linear memory a fresh instance of this plugin holds (learned from its first call): what
    /// a call needs free in the node's guest-memory budget to start.
    pub initial_memory: std::sync::atomic::AtomicUsize,
}

/// Compiled code of a component, before it is checked against our world.
pub struct Compiled {
    pub(super) component: Component,
    /// The component's `mpreg-manifest` section ([`super::stamp`]), when it has one.
    pub(super) stamp: Option<super::stamp::Stamp>,
    /// What built it (decides whether its calls reuse instances by default).
    pub(super) language: super::language::Language,
}

impl Compiled {
    /// The component's `mpreg-manifest` section, when it has one.
    pub fn stamp(&self) -> Option<&super::stamp::Stamp> {
        self.stamp.as_ref()
    }

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
