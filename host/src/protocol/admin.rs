//! The admin API's wire vocabulary (docs/plugins.md, "Publishing"): the headers a publish
//! carries, shared by the node's handlers and the admin client.

/// Header carrying the sandbox of a publish, as JSON (same fields as the config's `sandbox`).
pub const SANDBOX_HEADER: &str = "x-mpreg-sandbox";
/// Header carrying the placement of a publish: comma-separated resource tags a node must have
/// to host the version (absent: every node of the cluster).
pub const PLACEMENT_HEADER: &str = "x-mpreg-placement";
