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

/// The tables of `mpreg cache stats`: one row per node (`(node id, its cache.stats)`, or the
/// error that node answered), then each namespace summed over the nodes.
pub fn cache_table(nodes: &[(String, Result<serde_json::Value, String>)]) -> String {
    use std::collections::BTreeMap;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut out = format!(
        "{:<20} {:>9} {:>12} {:>12} {:>9} {:>12}\n",
        "node", "entries", "bytes", "max_bytes", "L2", "L2 on disk"
    );
    // namespace → (entries, bytes, hits, misses, evictions, expirations)
    let mut spaces: BTreeMap<String, [u64; 6]> = BTreeMap::new();
    for (node, stats) in nodes {
        let stats = match stats {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(out, "{node:<20} unreachable: {e}");
                continue;
            }
        };
        let l2 = &stats["l2"];
        let (l2_entries, l2_bytes) = if l2.is_null() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                n(&l2["entries"]).to_string(),
                n(&l2["bytes_on_disk"]).to_string(),
            )
        };
        let _ = writeln!(
            out,
            "{node:<20} {:>9} {:>12} {:>12} {l2_entries:>9} {l2_bytes:>12}",
            n(&stats["l1"]["entries"]),
            n(&stats["l1"]["bytes"]),
            n(&stats["l1"]["max_bytes"]),
        );
        for ns in stats["namespaces"].as_array().into_iter().flatten() {
            let name = ns["namespace"].as_str().unwrap_or("?").to_owned();
            let row = spaces.entry(name).or_default();
            for (i, f) in [
                "entries",
                "bytes",
                "hits",
                "misses",
                "evictions",
                "expirations",
            ]
            .iter()
            .enumerate()
            {
                row[i] += n(&ns[*f]);
            }
        }
    }
    if spaces.is_empty() {
        out.push_str("\nno namespaces in use\n");
        return out;
    }
    let _ = write!(
        out,
        "\n{:<24} {:>9} {:>12} {:>10} {:>10} {:>7} {:>10} {:>10}\n",
        "namespace", "entries", "bytes", "hits", "misses", "hit %", "evictions", "expired"
    );
    for (name, [entries, bytes, hits, misses, evictions, expired]) in spaces {
        let ratio = if hits + misses == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", 100.0 * hits as f64 / (hits + misses) as f64)
        };
        let _ = writeln!(
            out,
            "{name:<24} {entries:>9} {bytes:>12} {hits:>10} {misses:>10} {ratio:>7} {evictions:>10} {expired:>10}"
        );
    }
    out
}

/// One frame of `mpreg top`, from a node's `/monitor/live`.
pub fn top(live: &serde_json::Value) -> String {
    use serde_json::Value;
    let f = |v: &Value| match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".to_owned(),
    };
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let node = &live["node"];
    let rates = &live["rates"];
    let rss = node["process"]["rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64;
    let mut out = format!(
        "MPREG {} · cluster {} · v{} · up {} s · rss {rss:.0} MiB · cpu {} s · {} client(s)\n",
        s(&node["node_id"]),
        s(&node["cluster_id"]),
        s(&node["version"]),
        f(&Value::from(
            node["uptime_s"].as_f64().unwrap_or(0.0).round()
        )),
        f(&node["process"]["cpu_seconds"]),
        f(&node["connections"]["clients"]),
    );
    let _ = writeln!(
        out,
        "requests/s {}  errors/s {}  refused/s {}  calls/s {}  p50 {} ms  p90 {} ms  p99 {} ms  \
         published/s {}  notifications/s {}  forwarded/s {}\n",
        f(&rates["requests_per_s"]),
        f(&rates["errors_per_s"]),
        f(&rates["refused_per_s"]),
        f(&rates["calls_per_s"]),
        f(&rates["p50_ms"]),
        f(&rates["p90_ms"]),
        f(&rates["p99_ms"]),
        f(&rates["published_per_s"]),
        f(&rates["notifications_per_s"]),
        f(&rates["forwarded_per_s"]),
    );
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<16} {:>6} {:>8} {:<6} functions",
        "NODE", "REGION", "RESOURCES", "LOAD", "CLIENTS", "LINK"
    );
    for n in live["cluster"]["nodes"].as_array().into_iter().flatten() {
        let link = if n["self"] == Value::Bool(true) {
            "self"
        } else if n["link"]["up"] == Value::Bool(true) {
            "up"
        } else {
            "down"
        };
        let resources: Vec<String> = n["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let functions = n["functions"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<16} {:>6} {:>8} {:<6} {functions}",
            s(&n["node_id"]),
            s(&n["region"]),
            resources.join(","),
            f(&n["load"]["load_score"]),
            f(&n["load"]["active_clients"]),
            link,
        );
    }
    let _ = writeln!(
        out,
        "\n{:<32} {:>9} {:>8} {:>9} {:>9} {:>10} {:>8}",
        "FUNCTION", "CALLS/S", "ERR/S", "P50 MS", "P99 MS", "CALLS", "ERRORS"
    );
    for r in rates["functions"].as_array().into_iter().flatten().take(20) {
        let _ = writeln!(
            out,
            "{:<32} {:>9} {:>8} {:>9} {:>9} {:>10} {:>8}",
            s(&r["function"]),
            f(&r["calls_per_s"]),
            f(&r["errors_per_s"]),
            f(&r["p50_ms"]),
            f(&r["p99_ms"]),
            f(&r["total_calls"]),
            f(&r["total_errors"]),
        );
    }
    let queues = live["queues"].as_array().map_or(&[][..], Vec::as_slice);
    if !queues.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<32} {:>9} {:>10} {:>14}",
            "QUEUE", "DEPTH", "IN FLIGHT", "DEAD-LETTERED"
        );
        for q in queues.iter().take(10) {
            let _ = writeln!(
                out,
                "{:<32} {:>9} {:>10} {:>14}",
                s(&q["name"]),
                f(&q["depth"]),
                f(&q["in_flight"]),
                f(&q["dead_lettered"]),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_stats_read_per_node_then_per_namespace_summed() {
        let stats = |entries: u64, hits: u64| {
            serde_json::json!({
                "l1": {"entries": entries, "bytes": 100 * entries, "max_bytes": 1000},
                "l2": null,
                "namespaces": [{"namespace": "ml", "entries": entries, "bytes": 100 * entries,
                    "hits": hits, "misses": 1, "evictions": 0, "expirations": 0}],
            })
        };
        let table = cache_table(&[
            ("a".into(), Ok(stats(2, 3))),
            ("b".into(), Ok(stats(1, 0))),
            ("c".into(), Err("no answer in time".into())),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("a ") && lines[1].contains(" 200 "),
            "{table}"
        );
        assert!(
            lines[3].contains("unreachable: no answer in time"),
            "{table}"
        );
        let ml = lines.iter().find(|l| l.starts_with("ml ")).expect("ml row");
        // 3 entries, 3 hits of 5 lookups.
        let cols: Vec<&str> = ml.split_whitespace().collect();
        assert_eq!(
            cols,
            ["ml", "3", "300", "3", "2", "60.0", "0", "0"],
            "{table}"
        );
        assert!(cache_table(&[]).contains("no namespaces in use"));
    }
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
