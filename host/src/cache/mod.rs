//! The multi-tier cache (docs/cache.md, issue 15). Built in steps: first the eviction
//! policies of the memory tier ([`policy`]), pure and property-tested; the tiers, the wire
//! forms and memoized functions follow.

pub mod policy;
