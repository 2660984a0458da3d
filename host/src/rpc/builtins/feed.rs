//! Feeds the topics `catalog_watch` and `summary_watch` name: every [`EVERY`], while a
//! subscription on this node could match them, the directory is gathered again and what
//! changed is published to this node's own subscribers (never forwarded: every node feeds
//! its own, so a watcher gets each change once).
//!
//! - `mpreg.discovery.delta` and `mpreg.discovery.delta.<namespace>`: the original's
//!   `DiscoveryDeltaMessage` (`delta`, `counts`, `namespaces`, `source_node`, …).
//! - `mpreg.discovery.summary`, `.zone`, `.<namespace>` and `.zone.<namespace>`: the
//!   original's `DiscoverySummaryMessage` (`summaries`, `namespaces`, …) when a summary changed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::protocol::catalog::{DELTA_TOPIC, SUMMARY_TOPIC};
use crate::pubsub::exchange::Exchange;
use crate::rpc::directory::{Directory, Query, delta};

/// How often the watched directory is compared.
pub const EVERY: Duration = Duration::from_millis(250);

/// Whether a subscription pattern could match a discovery topic.
fn watches(pattern: &str) -> bool {
    let first = pattern.split('.').next().unwrap_or("");
    pattern.starts_with("mpreg.discovery")
        || matches!(first, "#" | "*")
        || pattern.starts_with("mpreg.#")
        || pattern.starts_with("mpreg.*")
}

/// Runs until `stop`: compares `gather()` with the last directory and publishes the changes.
pub async fn run(
    gather: impl Fn() -> Directory + Send + 'static,
    exchange: Arc<Exchange>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(Directory, Value)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !exchange.any_pattern(watches) {
            // Nobody watches: the next watcher starts from the directory as it is then.
            last = None;
            continue;
        }
        let now = gather();
        let summaries = summaries(&now);
        if let Some((before, before_summaries)) = &last {
            if let Some(change) = delta(before, &now) {
                let mut topics = vec![DELTA_TOPIC.to_owned()];
                topics.extend(namespaces(&change).map(|ns| format!("{DELTA_TOPIC}.{ns}")));
                publish(&exchange, &now, &topics, &change);
            }
            if summaries != *before_summaries {
                let namespaces = summary_namespaces(&summaries);
                let message = json!({
                    "summaries": summaries, "namespaces": namespaces,
                    "source_node": now.local_node, "source_cluster": now.cluster_id,
                    "published_at": now.generated_at,
                });
                let mut topics = vec![SUMMARY_TOPIC.to_owned(), format!("{SUMMARY_TOPIC}.zone")];
                for ns in &namespaces {
                    topics.push(format!("{SUMMARY_TOPIC}.{ns}"));
                    topics.push(format!("{SUMMARY_TOPIC}.zone.{ns}"));
                }
                publish(&exchange, &now, &topics, &message);
            }
        }
        last = Some((now, summaries));
    }
}

/// The summaries without their timestamps (so an unchanged cluster compares equal).
fn summaries(d: &Directory) -> Value {
    let mut v = serde_json::to_value(d.summary_query(&Query::default()).items).unwrap_or_default();
    if let Value::Array(items) = &mut v {
        for s in items {
            s["generated_at"] = json!(0.0);
        }
    }
    v
}

fn summary_namespaces(summaries: &Value) -> Vec<String> {
    let mut v: Vec<String> = summaries
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["namespace"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn namespaces(change: &Value) -> impl Iterator<Item = &str> {
    change["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Delivers `payload` on each of `topics` to this node's subscribers only.
fn publish(exchange: &Arc<Exchange>, d: &Directory, topics: &[String], payload: &Value) {
    for topic in topics {
        let message = json!({
            "topic": topic, "payload": payload, "timestamp": unix_now(),
            "message_id": format!("{}-{}-{topic}", d.local_node, d.generated_at),
            "publisher": d.local_node, "headers": {}, "routing_path": null, "current_hop": null,
        });
        match exchange.receive(&message.to_string()) {
            Ok(routed) => exchange.deliver(routed.others),
            Err(e) => tracing::warn!(%topic, error = %e, "cannot publish a discovery change"),
        }
    }
}
