//! The multi-tier cache (docs/cache.md, issue 15): keys and entries ([`key`]), the operations
//! that change one entry in place ([`ops`]), the memory tier's eviction policies ([`policy`])
//! and the memory tier itself ([`memory`]), L2 on sled ([`disk`]), both tiers behind one
//! store ([`store`]), the wire ([`api`]), memoized functions ([`memo`]) and pub/sub events
//! ([`events`]).

pub mod access;
pub mod api;
pub mod disk;
pub mod events;
pub mod key;
pub mod memo;
pub mod memory;
pub mod ops;
pub mod policy;
pub mod store;
