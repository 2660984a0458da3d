//! Pub/sub (protocol.md §3): topic patterns and the matching trie ([`topic`]), the backlog
//! ([`backlog`]), and the node's exchange that ties subscriptions, delivery and forwarding to
//! other nodes together ([`exchange`]).

pub mod backlog;
pub mod exchange;
pub mod mailbox;
pub mod topic;
