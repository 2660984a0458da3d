//! Pub/sub (protocol.md §3): topic patterns and the matching trie ([`topic`]), the backlog
//! ([`backlog`]), and the node's exchange that ties subscriptions, delivery and forwarding to
//! other nodes together ([`exchange`]).

//!
//! Topic patterns compile without the `node` feature: a permission is written in them
//! (`auth::policy`), and `auth` is part of the client library's build.

#[cfg(feature = "node")]
pub mod backlog;
#[cfg(feature = "node")]
pub mod exchange;
#[cfg(feature = "node")]
pub mod mailbox;
pub mod topic;
