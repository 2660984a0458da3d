//! Pub/sub (protocol.md §3). So far the pure core: topic patterns and the matching trie
//! ([`topic`]); sessions, backlog and cluster forwarding build on it.

pub mod topic;
