//! Durable queues (docs/queues.md): the pure per-queue state machine ([`state`]), its sled
//! persistence with group commit ([`store`]), and the node's queue manager that the `queue.*`
//! built-ins call ([`manager`]).

pub mod api;
pub mod manager;
pub mod push;
pub mod state;
pub mod store;
