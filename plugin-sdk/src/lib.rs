//! Write MPREG plugins in Rust.
//!
//! An MPREG plugin is a WebAssembly component that exports ordinary typed functions plus the
//! `mpreg:plugin/metadata` interface, which tells the node which exports are callable commands,
//! under which `function_id`, semver version and resource tags. The node reads the export types
//! itself, so clients call `add(2, 3)` with plain JSON and get a clear error naming the parameter
//! when an argument has the wrong type.
//!
//! This crate owns the bindings of the host imports (so every plugin shares one copy) and a
//! builder for the manifest. A complete plugin:
//!
//! ```ignore
//! use mpreg_plugin_sdk::{Command, Manifest};
//!
//! mpreg_plugin_sdk::plugin! {
//!     // The MPREG WIT package (the `wit/` folder of the MPREG repository, or a vendored copy),
//!     // relative to the plugin's Cargo.toml.
//!     wit: "../../wit",
//!     // The plugin's world: our `plugin` world plus its own exports (or leave `inline` out
//!     // and keep the world in a `.wit` file under `wit`).
//!     inline: r#"
//!         package example:greeter;
//!         world greeter {
//!             include mpreg:plugin/plugin@0.1.0;
//!             export greet: func(name: string) -> string;
//!         }
//!     "#,
//!     world: "example:greeter/greeter",
//!     // The type that implements the exports, and the manifest it describes itself with.
//!     export: Greeter,
//!     describe: {
//!         Manifest::new("greeter", env!("CARGO_PKG_VERSION"))
//!             .command(Command::new("greet").describe("Says hello"))
//!     },
//! }
//!
//! struct Greeter;
//!
//! impl Guest for Greeter {
//!     fn greet(name: String) -> String {
//!         mpreg_plugin_sdk::log::info(&format!("greeting {name}"));
//!         format!("hello, {name}")
//!     }
//! }
//! ```
//!
//! [`plugin!`] generates the world's bindings against this crate's shared ones, implements the
//! `metadata` export with the `describe` block, and exports the type.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the plugin. See `docs/plugins.md` in the repository.

pub use wit_bindgen;

/// Generated bindings of the `mpreg:plugin/sdk` world. Plugins point their own `generate!` at
/// these through `with`, so the host imports and the manifest types exist once.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "mpreg:plugin/sdk@0.1.0",
    });
}

pub use bindings::mpreg::plugin::types::{Command, Manifest};

/// Declares a plugin: its world (from `wit`, optionally `inline`), the type that implements its
/// exports, and the manifest it describes itself with. Expands to wit-bindgen's `generate!`
/// pointed at this crate's shared bindings of the host imports, the `metadata` export, and
/// `export!`. The plugin crate must depend on this one as `mpreg_plugin_sdk` (the name the
/// generated code uses). See the crate documentation for a whole plugin.
///
/// A world that also has `export mpreg:plugin/caching@0.1.0;` takes a `cacheable` block after
/// `describe`: the commands whose results depend only on their arguments, memoized by the node
/// without the caller asking (docs/cache.md):
///
/// ```ignore
/// cacheable: {
///     vec![exports::mpreg::plugin::caching::CacheRule {
///         command: "analyze".into(),
///         ttl_seconds: Some(600.0),
///         dependencies: vec!["dataset:current".into()],
///     }]
/// },
/// ```
#[macro_export]
macro_rules! plugin {
    (
        wit: $wit:literal,
        $(inline: $inline:literal,)?
        world: $world:literal,
        export: $ty:ident,
        describe: $describe:block
        $(, cacheable: $cacheable:block)? $(,)?
    ) => {
        $crate::wit_bindgen::generate!({
            path: $wit,
            $(inline: $inline,)?
            world: $world,
            runtime_path: "mpreg_plugin_sdk::wit_bindgen::rt",
            with: {
                "mpreg:plugin/log@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::log,
                "mpreg:plugin/call@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::call,
                "mpreg:plugin/publish@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::publish,
                "mpreg:plugin/queue@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::queue,
                "mpreg:plugin/cache@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::cache,
                "mpreg:plugin/secrets@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::secrets,
                "mpreg:plugin/types@0.1.0": mpreg_plugin_sdk::bindings::mpreg::plugin::types,
            },
        });

        impl exports::mpreg::plugin::metadata::Guest for $ty {
            fn describe() -> $crate::Manifest $describe
        }

        $(
            impl exports::mpreg::plugin::caching::Guest for $ty {
                fn cacheable() -> Vec<exports::mpreg::plugin::caching::CacheRule> $cacheable
            }
        )?

        export!($ty);
    };
}

impl Manifest {
    /// A manifest for plugin `name` at semver `version`, with no resource tags and no commands.
    pub fn new(name: &str, version: &str) -> Self {
        Manifest {
            name: name.to_owned(),
            version: version.to_owned(),
            resources: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// Resource tags (matched against a request's `locs`) that every command of this plugin has.
    pub fn resources<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Adds a callable command.
    pub fn command(mut self, command: Command) -> Self {
        self.commands.push(command);
        self
    }
}

impl Command {
    /// A command clients call as `name`, implemented by the exported function of the same name.
    ///
    /// WIT names are kebab-case; a command name with `_` maps to the export with `-`
    /// (`add_point` → `add-point`) unless [`Command::export`] says otherwise.
    pub fn new(name: &str) -> Self {
        Command {
            name: name.to_owned(),
            export_name: name.replace('_', "-"),
            function_id: None,
            resources: Vec::new(),
            description: None,
        }
    }

    /// Implements this command with a differently named export.
    pub fn export(mut self, export_name: &str) -> Self {
        self.export_name = export_name.to_owned();
        self
    }

    /// Registers the command under an explicit `function_id` (defaults to the name).
    pub fn function_id(mut self, id: &str) -> Self {
        self.function_id = Some(id.to_owned());
        self
    }

    /// Resource tags of this command in addition to the plugin-wide ones.
    pub fn resources<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources.extend(tags.into_iter().map(Into::into));
        self
    }

    /// A one-line description shown by `rpc_list` and `rpc_describe`.
    pub fn describe(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }
}

/// Calls into other functions of the cluster, through the node's RPC engine.
///
/// ```ignore
/// // Inside a plugin function: add 2 and 3 with whatever node function `add` is.
/// let sum: i64 = mpreg_plugin_sdk::call::call("add", &[2.into(), 3.into()])?;
/// ```
pub mod call {
    use crate::bindings::mpreg::plugin::call::call as host_call;
    pub use crate::bindings::mpreg::plugin::call::{CallError, CallOptions};

    // Generated type: a derive cannot be added to it here.
    #[allow(clippy::derivable_impls)]
    impl Default for CallOptions {
        fn default() -> Self {
            CallOptions {
                function_id: None,
                version: None,
                locs: Vec::new(),
                kwargs: None,
            }
        }
    }

    impl CallError {
        /// A sentence for humans (and for returning as a plugin's own `err`).
        pub fn message(&self) -> String {
            match self {
                CallError::NotFound(m) => format!("not found: {m}"),
                CallError::BadArguments(m) => format!("bad arguments: {m}"),
                CallError::Failed(m) => format!("call failed: {m}"),
                CallError::TooDeep(limit) => {
                    format!("nested calls reached the node's depth limit of {limit}")
                }
                CallError::Other(m) => m.clone(),
            }
        }
    }

    /// Calls `fun` with JSON text arguments (`"[2, 3]"`) and returns the JSON text of its result.
    pub fn call_json(fun: &str, args: &str, options: &CallOptions) -> Result<String, CallError> {
        host_call(fun, args, options)
    }

    /// Calls `fun` with positional arguments and decodes its result.
    pub fn call<T: serde::de::DeserializeOwned>(
        fun: &str,
        args: &[serde_json::Value],
    ) -> Result<T, CallError> {
        call_with(fun, args, &CallOptions::default())
    }

    /// [`call`] with a `function_id`, a version constraint, `locs` or keyword arguments.
    pub fn call_with<T: serde::de::DeserializeOwned>(
        fun: &str,
        args: &[serde_json::Value],
        options: &CallOptions,
    ) -> Result<T, CallError> {
        let args =
            serde_json::to_string(args).map_err(|e| CallError::BadArguments(e.to_string()))?;
        let out = host_call(fun, &args, options)?;
        serde_json::from_str(&out)
            .map_err(|e| CallError::Other(format!("cannot decode the result of '{fun}': {e}")))
    }
}

/// Logging into the node's tracing output. Each line is tagged by the host with the plugin and
/// the request id, so there is no need to repeat them in the message.
pub mod log {
    use crate::bindings::mpreg::plugin::log::{Level, log};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Publishing on the node's topic exchange: every matching subscription in the cluster gets the
/// message (see `docs/pubsub.md`).
///
/// ```ignore
/// let id = mpreg_plugin_sdk::publish::publish("orders.created", &serde_json::json!({"id": 7}))?;
/// ```
pub mod publish {
    use crate::bindings::mpreg::plugin::publish::publish as host_publish;

    /// Publishes `payload` as JSON on `topic`; returns the message id.
    pub fn publish<T: serde::Serialize>(topic: &str, payload: &T) -> Result<String, String> {
        let json = serde_json::to_string(payload).map_err(|e| e.to_string())?;
        host_publish(topic, &json)
    }

    /// Publishes JSON text on `topic`.
    pub fn publish_json(topic: &str, payload: &str) -> Result<String, String> {
        host_publish(topic, payload)
    }
}

/// Sending to durable queues, wherever in the cluster they live (see `docs/queues.md`).
///
/// ```ignore
/// let id = mpreg_plugin_sdk::queue::send("jobs", &serde_json::json!({"step": 2}))?;
/// ```
pub mod queue {
    pub use crate::bindings::mpreg::plugin::queue::SendOptions;
    use crate::bindings::mpreg::plugin::queue::send as host_send;

    // Generated type: a derive cannot be added to it here.
    #[allow(clippy::derivable_impls)]
    impl Default for SendOptions {
        fn default() -> Self {
            SendOptions {
                priority: 0,
                delay_ms: 0,
                dedup_id: None,
            }
        }
    }

    /// Sends `body` as JSON to queue `name`; returns the message id once it is durable.
    pub fn send<T: serde::Serialize>(name: &str, body: &T) -> Result<String, String> {
        send_with(name, body, &SendOptions::default())
    }

    /// [`send`] with a priority, a delay or a deduplication id.
    pub fn send_with<T: serde::Serialize>(
        name: &str,
        body: &T,
        options: &SendOptions,
    ) -> Result<String, String> {
        let json = serde_json::to_string(body).map_err(|e| e.to_string())?;
        host_send(name, &json, options)
    }
}

/// The secrets the plugin's sandbox grants (`secrets = ["db-password"]`), configured on each
/// node under `[secrets]`. A value is the plugin's to use, not to return: anything a function
/// returns goes to its caller.
pub mod secrets {
    use crate::bindings::mpreg::plugin::secrets as host;

    /// The value of secret `name`; an error when the sandbox does not grant it or the node
    /// does not configure it.
    pub fn get(name: &str) -> Result<String, String> {
        host::get(name)
    }
}

/// The cluster's cache (see `docs/cache.md`), in the namespaces the plugin's sandbox grants
/// (`cache_namespaces`). Values are any `serde` type, stored as JSON.
///
/// ```ignore
/// use mpreg_plugin_sdk::cache;
/// let seen = cache::incr("visits", "home", 1)?;
/// cache::put("ml", "model", &serde_json::json!({"w": [0.1, 0.2]}))?;
/// let model: Option<serde_json::Value> = cache::get("ml", "model")?;
/// ```
pub mod cache {
    use crate::bindings::mpreg::plugin::cache as host;
    pub use crate::bindings::mpreg::plugin::cache::PutOptions;

    // Generated type: a derive cannot be added to it here.
    #[allow(clippy::derivable_impls)]
    impl Default for PutOptions {
        fn default() -> Self {
            PutOptions {
                ttl_seconds: None,
                dependencies: Vec::new(),
            }
        }
    }

    /// The value under `key` in `namespace`, if there is one (and it reads as a `T`).
    pub fn get<T: serde::de::DeserializeOwned>(
        namespace: &str,
        key: &str,
    ) -> Result<Option<T>, String> {
        match host::get(namespace, key)? {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key` with the namespace's default TTL.
    pub fn put<T: serde::Serialize>(namespace: &str, key: &str, value: &T) -> Result<(), String> {
        put_with(namespace, key, value, &PutOptions::default())
    }

    /// [`put`] with a TTL or dependency tags.
    pub fn put_with<T: serde::Serialize>(
        namespace: &str,
        key: &str,
        value: &T,
        options: &PutOptions,
    ) -> Result<(), String> {
        let json = serde_json::to_string(value).map_err(|e| e.to_string())?;
        host::put(namespace, key, &json, options)
    }

    /// Removes `key` (and what depends on it); whether it was there.
    pub fn delete(namespace: &str, key: &str) -> Result<bool, String> {
        host::delete(namespace, key)
    }

    /// Adds `by` to the integer under `key` (absent counts as 0); the new value.
    pub fn incr(namespace: &str, key: &str, by: i64) -> Result<i64, String> {
        host::incr(namespace, key, by)
    }
}
