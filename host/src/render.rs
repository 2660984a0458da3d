//! What the CLI prints: the admin API's and `cluster_map`'s typed replies as lines and tables
//! for a terminal. Pure functions of the replies, so the shapes are tested without a node.

use std::fmt::Write;

use crate::protocol::admin::{PluginList, Published, Retired};
use crate::protocol::discovery::ClusterMap;

/// One line about a publish.
pub fn published(p: &Published) -> String {
    format!(
        "{} {} {}: {:?} (code {}, callable after {:.1} ms)",
        p.outcome, p.name, p.version, p.functions, p.code, p.ready_ms
    )
}

/// One line about a retire.
pub fn retired(r: &Retired) -> String {
    format!("retired {} {} (drained: {})", r.name, r.version, r.drained)
}

/// The table of `mpreg plugin list`.
pub fn plugin_table(list: &PluginList) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:<8} {:<10} {:>8}  sha256\n",
        "name", "version", "active", "source", "calls"
    );
    for p in &list.plugins {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<8} {:<10} {:>8}  {}",
            p.name,
            p.version,
            p.active,
            p.source,
            p.calls.map(|c| c.to_string()).unwrap_or_default(),
            &p.sha256[..p.sha256.len().min(16)],
        );
    }
    out
}

/// The table of `mpreg cluster status`.
pub fn cluster_table(map: &ClusterMap) -> String {
    let mut out = format!(
        "cluster {}: {} node(s)\n\n{:<20} {:<26} {:<10} {:<14} {:>6} {:>8}  functions\n",
        map.cluster_id,
        map.nodes.len(),
        "node",
        "url",
        "region",
        "resources",
        "load",
        "clients"
    );
    for n in &map.nodes {
        let functions = if n.functions.is_empty() {
            "-".to_owned()
        } else {
            n.functions.join(",")
        };
        let _ = writeln!(
            out,
            "{:<20} {:<26} {:<10} {:<14} {:>6} {:>8}  {}",
            n.node_id,
            n.advertised_urls.first().map_or("", String::as_str),
            n.region,
            n.resources.join(","),
            n.load.load_score,
            n.load.active_clients,
            functions,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::admin::{CodeSource, PluginSummary, PublishOutcome};
    use crate::protocol::discovery::{ClusterNode, NodeLoad};

    #[test]
    fn a_publish_and_a_retire_read_as_one_line() {
        let p = Published {
            name: "math".into(),
            version: "1.2.0".into(),
            sha256: "ab".into(),
            outcome: PublishOutcome::Updated,
            code: CodeSource::Cache,
            ready_ms: 3.25,
            functions: vec!["add".into()],
        };
        assert_eq!(
            published(&p),
            r#"updated math 1.2.0: ["add"] (code cache, callable after 3.2 ms)"#
        );
        let r = Retired {
            name: "math".into(),
            version: "1.2.0".into(),
            drained: true,
            still_running: 0,
        };
        assert_eq!(retired(&r), "retired math 1.2.0 (drained: true)");
    }

    #[test]
    fn tables_have_a_row_per_entry() {
        let list = PluginList {
            plugins: vec![PluginSummary {
                name: "math".into(),
                version: "1.0.0".into(),
                sha256: "0123456789abcdef0123".into(),
                size: 10,
                active: false,
                source: "published".into(),
                functions: None,
                calls: None,
            }],
        };
        let t = plugin_table(&list);
        assert_eq!(t.lines().count(), 2);
        assert!(
            t.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("0123456789abcdef"))
        );
        let map = ClusterMap {
            cluster_id: "c".into(),
            generated_at: 0.0,
            nodes: vec![ClusterNode {
                node_id: "n1".into(),
                cluster_id: "c".into(),
                advertised_urls: vec!["ws://h:1".into()],
                resources: vec!["cpu".into(), "gpu".into()],
                region: "eu".into(),
                status: "healthy".into(),
                last_seen: 0.0,
                started_at: 0.0,
                load: NodeLoad::default(),
                functions: vec![],
            }],
        };
        let t = cluster_table(&map);
        assert!(t.starts_with("cluster c: 1 node(s)"));
        let row = t.lines().last().unwrap_or_default();
        assert!(
            row.contains("ws://h:1") && row.contains("cpu,gpu") && row.ends_with('-'),
            "{row}"
        );
    }
}
