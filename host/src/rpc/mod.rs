//! The RPC engine: plan a request (pure), substitute results into arguments (pure), match
//! version constraints (pure), then execute and route (node feature).

pub mod budget;
#[cfg(feature = "node")]
pub mod directory;
pub mod plan;
pub mod port;
pub mod route;
pub mod signature;
pub mod substitute;
#[cfg(feature = "node")]
pub mod suggest;
pub mod version;

#[cfg(feature = "node")]
pub mod builtins;
#[cfg(feature = "node")]
pub mod dispatch;
pub mod execute;
