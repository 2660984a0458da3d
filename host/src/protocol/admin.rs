//! The admin API's wire vocabulary (docs/plugins.md, "Publishing"): the headers a publish
//! carries and the replies, typed once for the node's handlers, the admin client and the CLI.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Header carrying the sandbox of a publish, as JSON (same fields as the config's `sandbox`).
pub const SANDBOX_HEADER: &str = "x-mpreg-sandbox";
/// Header carrying the placement of a publish: comma-separated resource tags a node must have
/// to host the version (absent: every node of the cluster).
pub const PLACEMENT_HEADER: &str = "x-mpreg-placement";

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishOutcome {
    /// A new version, now callable.
    Published,
    /// These bytes were already active: nothing changed.
    Unchanged,
    /// A retired version came back.
    Reactivated,
    /// Same version, new bytes or sandbox, swapped in with no failed call.
    Updated,
    /// Kept for the cluster, but this node does not host it (its placement names other tags).
    Stored,
}

/// Where a published version's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeSource {
    /// Compiled now.
    Compiled,
    /// From the node's compile cache.
    Cache,
    /// Already running.
    Loaded,
}

impl PublishOutcome {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishOutcome::Published => "published",
            PublishOutcome::Unchanged => "unchanged",
            PublishOutcome::Reactivated => "reactivated",
            PublishOutcome::Updated => "updated",
            PublishOutcome::Stored => "stored",
        }
    }
}

impl CodeSource {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeSource::Compiled => "compiled",
            CodeSource::Cache => "cache",
            CodeSource::Loaded => "loaded",
        }
    }
}

impl fmt::Display for PublishOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CodeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reply of `POST /admin/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Plugin name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of the bytes.
    pub sha256: String,
    /// What the publish did.
    pub outcome: PublishOutcome,
    /// Where the machine code came from.
    pub code: CodeSource,
    /// Time from receiving the bytes to callable, in ms.
    pub ready_ms: f64,
    /// Commands it provides.
    pub functions: Vec<String>,
}

/// The reply of `DELETE /admin/plugins/{name}/{version}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retired {
    /// Plugin name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether every call running on it finished before the reply.
    pub drained: bool,
    /// Calls still running when the drain wait gave up.
    pub still_running: u64,
}

/// One version in `GET /admin/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSummary {
    /// Plugin name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size of its bytes.
    pub size: u64,
    /// Whether it is loaded and callable.
    pub active: bool,
    /// `published` (over the admin API or from the cluster) or `config` (the node's config).
    pub source: String,
    /// Its commands (loaded versions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    /// Calls so far (loaded versions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
}

/// The reply of `GET /admin/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginList {
    /// Every version, loaded ones first.
    pub plugins: Vec<PluginSummary>,
}

/// An admin error reply: `{"error": {"kind", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminErrorReply {
    /// The error.
    pub error: AdminErrorBody,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminErrorBody {
    /// Machine-readable kind (`unauthorized`, `conflict`, `wrong_world`, …).
    pub kind: String,
    /// The node's explanation.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_sources_are_the_wire_words() {
        for o in [
            PublishOutcome::Published,
            PublishOutcome::Unchanged,
            PublishOutcome::Reactivated,
            PublishOutcome::Updated,
            PublishOutcome::Stored,
        ] {
            assert_eq!(serde_json::to_value(o).expect("json"), o.as_str());
        }
        for c in [CodeSource::Compiled, CodeSource::Cache, CodeSource::Loaded] {
            assert_eq!(serde_json::to_value(c).expect("json"), c.as_str());
        }
    }

    #[test]
    fn a_retired_version_lists_without_functions_or_calls() {
        let s = PluginSummary {
            name: "p".into(),
            version: "1.0.0".into(),
            sha256: "ab".into(),
            size: 3,
            active: false,
            source: "published".into(),
            functions: None,
            calls: None,
        };
        let v = serde_json::to_value(&s).expect("json");
        assert!(
            v.get("functions").is_none() && v.get("calls").is_none(),
            "{v}"
        );
        assert_eq!(serde_json::from_value::<PluginSummary>(v).expect("back"), s);
    }
}
