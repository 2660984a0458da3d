//! MPREG: a cluster of sandboxed nodes hosting user functions compiled to WebAssembly
//! components, called over WebSocket with dependency-resolving multi-command requests.
//!
//! # Layout
//! - [`protocol`]: wire types and error codes (shared with the client).
//! - [`rpc`]: planning, substitution and version matching (pure), execution and routing.
//! - [`runtime`]: the wasmtime host (node feature).
//! - [`plugin`]: the registry of loaded functions, the sled plugin store, publish / retire /
//!   restore (node feature).
//! - [`server`]: WebSocket sessions, `/health` and the admin API (node feature);
//!   [`admin_client`]: its blocking client (node feature).
//! - [`pubsub`]: topic patterns, the matching trie, backlog and the node's exchange (node
//!   feature).
//! - [`queue`]: durable queues and the `queue.*` built-ins (node feature).
//! - [`cluster`]: gossip membership and catalog, peer links, plugin distribution (node feature).
//! - [`node`], [`config`]: assembling and running a node (node feature).
//! - [`scaffold`]: `mpreg plugin new` / `build` for Rust, Python and JavaScript (node feature).
//! - [`client`]: the Rust client (always available); [`bench`]: the load generator on top of it;
//!   [`soak`]: long mixed traffic with the node's memory sampled; [`render`]: what the CLI
//!   prints (node feature).

mod abort;
pub mod auth;
pub mod bench;
mod burst;
pub mod client;
pub mod clock;
pub mod protocol;
pub mod rpc;
pub mod tls;

#[cfg(feature = "node")]
pub mod dev;
#[cfg(feature = "node")]
pub mod digest;
#[cfg(feature = "node")]
pub mod identity;
#[cfg(feature = "node")]
pub mod sandbox;
#[cfg(feature = "node")]
pub mod secrets;
#[cfg(feature = "node")]
pub mod shutdown;
#[cfg(feature = "node")]
mod throttle;

#[cfg(feature = "node")]
pub mod runtime;

#[cfg(feature = "node")]
pub mod admin_client;
#[cfg(feature = "node")]
pub mod cache;
#[cfg(feature = "node")]
pub mod cluster;
#[cfg(feature = "node")]
pub mod config;
#[cfg(feature = "node")]
pub mod doctor;
#[cfg(feature = "node")]
pub mod local;
#[cfg(feature = "node")]
pub mod metrics;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "node")]
pub mod observe;
#[cfg(feature = "node")]
pub mod plugin;
#[cfg(feature = "node")]
pub mod project;
pub mod pubsub;
#[cfg(feature = "node")]
pub mod queue;
#[cfg(feature = "node")]
pub mod render;
#[cfg(feature = "node")]
pub mod scaffold;
#[cfg(feature = "node")]
pub mod server;
#[cfg(feature = "node")]
mod sled_db;
#[cfg(feature = "node")]
pub mod soak;
#[cfg(feature = "node")]
pub mod trace;
#[cfg(feature = "node")]
pub mod typed;
