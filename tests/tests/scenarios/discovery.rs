//! The discovery built-ins as MPREG's clients drive them (`mpreg/client/client_api.py`): the
//! exact request frame (the request object as the one argument, or no argument at all) and
//! the exact reply shapes their dataclasses parse (`rpc_discovery.py`, `cluster_map.py`,
//! `discovery_summary.py`), on one node and across three.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use mpreg_tests::{RawWs, TestCluster, TestNode, cluster_config, rpc_frame};
use serde_json::{Value, json};

/// The frame `MPREGClientAPI.call(fun, payload)` sends, and the result it unwraps.
async fn api(ws: &mut RawWs, fun: &str, payload: Option<Value>) -> Result<Value> {
    let args = payload.map_or_else(|| json!([]), |p| json!([p]));
    let reply = ws
        .roundtrip(&rpc_frame(
            "q",
            json!([{"name": fun, "fun": fun, "args": args, "locs": []}]),
        ))
        .await?;
    if !reply["error"].is_null() {
        bail!("{fun} failed: {reply}");
    }
    Ok(reply["r"][fun].clone())
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// What `FunctionIdentity.from_dict` and `SemanticVersion.parse` need.
fn identity_ok(id: &Value) -> bool {
    let version = id["version"].as_str().unwrap_or("x");
    id["name"].is_string()
        && id["function_id"].is_string()
        && version.split('.').count() == 3
        && version.split('.').all(|p| p.parse::<u64>().is_ok())
}

fn names_of(items: &Value) -> Vec<String> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            i["identity"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_discovery_builtin_answers_in_the_shape_mpregs_client_parses() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;

    // rpc_list: RpcListResponse of RpcListItem.
    let list = api(&mut ws, "rpc_list", None).await?;
    ensure!(keys(&list) == set(&["generated_at", "items"]), "{list}");
    let items = list["items"].as_array().expect("items");
    for item in items {
        for k in [
            "identity",
            "namespace",
            "node_id",
            "cluster_id",
            "resources",
            "tags",
            "scope",
            "summary",
            "spec_digest",
        ] {
            ensure!(item.get(k).is_some(), "rpc_list item lacks {k}: {item}");
        }
        ensure!(identity_ok(&item["identity"]), "{item}");
        ensure!(identity_ok(&item["summary"]["identity"]), "{item}");
        ensure!(
            item["summary"]["return_type"]["display"].is_string(),
            "{item}"
        );
    }
    let greets = names_of(&list["items"])
        .iter()
        .filter(|n| *n == "greet")
        .count();
    ensure!(greets == 2, "both versions side by side");
    // Filters, as keyword fields of the request object.
    let math = api(&mut ws, "rpc_list", Some(json!({"query": "add"}))).await?;
    ensure!(
        names_of(&math["items"]).contains(&"add".to_owned()),
        "{math}"
    );
    let v1 = api(
        &mut ws,
        "rpc_list",
        Some(json!({"function_name": "greet", "version_constraint": "<2.0.0"})),
    )
    .await?;
    ensure!(v1["items"].as_array().map(Vec::len) == Some(1), "{v1}");
    ensure!(v1["items"][0]["identity"]["version"] == "1.0.0", "{v1}");
    let queues = api(&mut ws, "rpc_list", Some(json!({"namespace": "queue"}))).await?;
    ensure!(
        names_of(&queues["items"])
            .iter()
            .all(|n| n.starts_with("queue."))
            && !names_of(&queues["items"]).is_empty(),
        "{queues}"
    );
    let none = api(&mut ws, "rpc_list", Some(json!({"cluster_id": "nope"}))).await?;
    ensure!(none["items"] == json!([]), "{none}");
    // Paging: limit, then the token for the next page, until there is none.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"limit": 5});
        if let Some(t) = &token {
            req["page_token"] = json!(t);
        }
        let page = api(&mut ws, "rpc_list", Some(req)).await?;
        seen.extend(names_of(&page["items"]));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
        ensure!(seen.len() < 1000, "paging never ends");
    }
    ensure!(
        seen == names_of(&list["items"]),
        "pages add up to the whole list"
    );

    // rpc_describe: RpcDescribeResponse with specs and our WIT signature.
    let d = api(
        &mut ws,
        "rpc_describe",
        Some(json!({"function_names": ["add", "centroid"]})),
    )
    .await?;
    ensure!(keys(&d) == set(&["generated_at", "items", "errors"]), "{d}");
    let add = d["items"]
        .as_array()
        .and_then(|i| i.iter().find(|x| x["identity"]["name"] == "add"))
        .expect("add");
    ensure!(
        add["spec"]["signature"] == "func(a: s32, b: s32) -> s32",
        "{add}"
    );
    ensure!(add["signature"] == "func(a: s32, b: s32) -> s32", "{add}");
    let params = add["spec"]["parameters"].as_array().expect("parameters");
    ensure!(
        params.len() == 2
            && params[0]["name"] == "a"
            && params[0]["kind"] == "positional_or_keyword",
        "{add}"
    );
    ensure!(
        params[0]["type_spec"]["display"] == "s32" && params[0]["default"]["encoding"] == "none",
        "{add}"
    );
    ensure!(
        add["spec"]["return_spec"]["type_spec"]["display"] == "s32",
        "{add}"
    );
    ensure!(add["spec"]["spec_digest"] == add["spec_digest"], "{add}");
    let brief = api(
        &mut ws,
        "rpc_describe",
        Some(json!({"function_name": "add", "detail_level": "summary"})),
    )
    .await?;
    ensure!(brief["items"][0].get("spec").is_none(), "{brief}");
    let local = api(
        &mut ws,
        "rpc_describe_local",
        Some(json!({"function_name": "add"})),
    )
    .await?;
    ensure!(
        local["items"].as_array().map(Vec::len) == Some(1),
        "{local}"
    );
    let bad = ws
        .roundtrip(&rpc_frame(
            "b",
            json!([{"name": "x", "fun": "rpc_describe", "args": [{"mode": "psychic"}]}]),
        ))
        .await?;
    ensure!(bad["error"]["code"] == 1003, "{bad}");
    ensure!(
        bad["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("mode"),
        "{bad}"
    );

    // rpc_report: RpcReportResponse.
    let r = api(&mut ws, "rpc_report", None).await?;
    ensure!(
        keys(&r)
            == set(&[
                "generated_at",
                "total_functions",
                "namespace_counts",
                "cluster_counts",
                "tag_counts"
            ]),
        "{r}"
    );
    ensure!(r["total_functions"] == json!(items.len()), "{r}");
    ensure!(
        r["namespace_counts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x["key"] == "queue")),
        "{r}"
    );

    // catalog_query: CatalogQueryResponse, one entry type at a time.
    for t in ["functions", "nodes", "queues", "topics", "caches"] {
        let c = api(&mut ws, "catalog_query", Some(json!({"entry_type": t}))).await?;
        ensure!(
            keys(&c) == set(&["entry_type", "generated_at", "items"]),
            "{t}: {c}"
        );
        ensure!(c["entry_type"] == t, "{c}");
    }
    let nodes = api(
        &mut ws,
        "catalog_query",
        Some(json!({"entry_type": "nodes"})),
    )
    .await?;
    ensure!(nodes["items"][0]["node_id"] == "test-node", "{nodes}");
    ensure!(
        nodes["items"][0]["transport_endpoints"][0]["port"].is_u64(),
        "{nodes}"
    );
    let bad = ws
        .roundtrip(&rpc_frame(
            "c",
            json!([{"name": "c", "fun": "catalog_query", "args": [{"entry_type": "bananas"}]}]),
        ))
        .await?;
    ensure!(bad["error"]["code"] == 1003, "{bad}");

    // The watches name their topics; summaries and the v2 map have their shapes.
    let w = api(&mut ws, "catalog_watch", Some(json!({"namespace": "math"}))).await?;
    ensure!(
        w["topic"] == "mpreg.discovery.delta.math" && w["cluster_id"] == "default",
        "{w}"
    );
    let w = api(&mut ws, "summary_watch", Some(json!({"scope": "zone"}))).await?;
    ensure!(
        w["topic"] == "mpreg.discovery.summary.zone" && w["scope"] == "zone",
        "{w}"
    );
    let s = api(
        &mut ws,
        "summary_query",
        Some(json!({"service_id": "add", "include_ingress": true})),
    )
    .await?;
    ensure!(
        keys(&s) == set(&["generated_at", "items", "ingress"]),
        "{s}"
    );
    let add = &s["items"][0];
    for k in [
        "namespace",
        "service_id",
        "regions",
        "endpoint_count",
        "health_band",
        "latency_band_ms",
        "ttl_seconds",
        "generated_at",
    ] {
        ensure!(add.get(k).is_some(), "summary lacks {k}: {add}");
    }
    ensure!(s["ingress"]["default"][0] == json!(node.url), "{s}");
    let m = api(&mut ws, "cluster_map_v2", None).await?;
    ensure!(
        keys(&m) == set(&["cluster_id", "generated_at", "nodes"]),
        "{m}"
    );
    ensure!(
        m["nodes"][0]["advertised_urls"][0] == json!(node.url),
        "{m}"
    );
    ensure!(m["nodes"][0]["load"]["load_score"].is_number(), "{m}");
    ensure!(
        api(&mut ws, "list_peers", None).await? == json!([]),
        "alone"
    );
    let bad = ws
        .roundtrip(&rpc_frame(
            "s",
            json!([{"name": "s", "fun": "list_peers", "args": [{"scope": "galaxy"}]}]),
        ))
        .await?;
    ensure!(bad["error"]["code"] == 1003, "{bad}");
    Ok(())
}

fn three() -> Vec<mpreg::config::NodeConfig> {
    vec![
        cluster_config("dn-0", &["cpu"], &["math"], &[]),
        cluster_config("dn-1", &["gpu"], &["text"], &[]),
        cluster_config("dn-2", &[], &[], &[]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_three_nodes_filters_see_the_whole_cluster_at_once() -> Result<()> {
    let cluster = TestCluster::start(three()).await?;
    let mut ws = cluster.node(2).raw().await?;

    // Functions of every node, filtered by node, resources and cluster.
    let on1 = api(&mut ws, "rpc_list", Some(json!({"node_id": "dn-1"}))).await?;
    ensure!(!on1["items"].as_array().expect("items").is_empty(), "{on1}");
    ensure!(
        on1["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["node_id"] == "dn-1"),
        "{on1}"
    );
    let gpu = api(&mut ws, "rpc_list", Some(json!({"resources": ["gpu"]}))).await?;
    ensure!(
        gpu["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["node_id"] == "dn-1"),
        "{gpu}"
    );
    let local = api(&mut ws, "rpc_list", Some(json!({"scope": "local"}))).await?;
    ensure!(
        local["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["node_id"] == "dn-2"),
        "{local}"
    );
    let add = api(
        &mut ws,
        "rpc_describe",
        Some(json!({"function_name": "add"})),
    )
    .await?;
    ensure!(add["items"][0]["node_id"] == "dn-0", "{add}");
    ensure!(
        add["items"][0]["spec"]["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("func(")),
        "{add}"
    );
    let report = api(&mut ws, "rpc_report", None).await?;
    let total = report["total_functions"].as_u64().unwrap_or(0);
    let all = api(&mut ws, "rpc_list", Some(json!({"limit": 2000}))).await?;
    ensure!(
        all["items"].as_array().map(Vec::len) == Some(total as usize),
        "{report}"
    );

    // Peers and maps with their filters.
    let peers = api(&mut ws, "list_peers", None).await?;
    let ids: Vec<&str> = peers
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["node_id"].as_str())
        .collect();
    ensure!(
        ids.len() == 2 && ids.contains(&"dn-0") && ids.contains(&"dn-1"),
        "{peers}"
    );
    ensure!(api(&mut ws, "list_peers", Some(json!({"cluster_id": "nope"}))).await? == json!([]));
    ensure!(api(&mut ws, "list_peers", Some(json!({"scope": "local"}))).await? == json!([]));
    ensure!(
        api(
            &mut ws,
            "list_peers",
            Some(json!({"cluster_id": "default"}))
        )
        .await?
        .as_array()
        .map(Vec::len)
            == Some(2)
    );
    let page = api(&mut ws, "cluster_map_v2", Some(json!({"limit": 2}))).await?;
    ensure!(
        page["nodes"].as_array().map(Vec::len) == Some(2) && page["next_page_token"] == "2:2",
        "{page}"
    );
    let rest = api(
        &mut ws,
        "cluster_map_v2",
        Some(json!({"page_token": "2:2"})),
    )
    .await?;
    ensure!(
        rest["nodes"].as_array().map(Vec::len) == Some(1) && rest.get("next_page_token").is_none(),
        "{rest}"
    );
    let gpu_nodes = api(
        &mut ws,
        "cluster_map_v2",
        Some(json!({"resources": ["gpu"]})),
    )
    .await?;
    ensure!(
        gpu_nodes["nodes"][0]["node_id"] == "dn-1"
            && gpu_nodes["nodes"].as_array().map(Vec::len) == Some(1),
        "{gpu_nodes}"
    );
    let summary = api(&mut ws, "summary_query", Some(json!({"service_id": "add"}))).await?;
    ensure!(
        summary["items"][0]["endpoint_count"] == 1
            && summary["items"][0]["source_cluster"] == "default",
        "{summary}"
    );

    // A queue made and a subscription taken on other nodes are in the catalog at once.
    let mut a = cluster.node(0).raw().await?;
    let made = a
        .roundtrip(&rpc_frame(
            "c",
            json!([{"name": "c", "fun": "queue.create", "args": ["orders"]}]),
        ))
        .await?;
    ensure!(made["r"]["c"]["created"] == true, "{made}");
    let q = api(
        &mut ws,
        "catalog_query",
        Some(json!({"entry_type": "queues", "queue_name": "orders"})),
    )
    .await?;
    ensure!(
        q["items"][0]["node_id"] == "dn-0" && q["items"][0]["queue_name"] == "orders",
        "{q}"
    );
    let mut b = cluster.node(1).raw().await?;
    let sub = json!({"role": "pubsub-subscribe", "u": "s", "subscription": {
        "subscription_id": "s1", "patterns": [{"pattern": "orders.#", "exact_match": false}],
        "subscriber": "t", "created_at": 1.0, "get_backlog": false, "backlog_seconds": 0}});
    ensure!(b.roundtrip(&sub).await?["success"] == true);
    let t = api(
        &mut ws,
        "catalog_query",
        Some(json!({"entry_type": "topics", "topic": "orders.new"})),
    )
    .await?;
    // Every node's cache also subscribes to `cache.invalidation.#` (docs/cache.md, "Events").
    ensure!(
        t["items"][0]["node_id"] == "dn-1"
            && t["items"][0]["patterns"] == json!(["cache.invalidation.#", "orders.#"]),
        "{t}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_watch_delivers_changes_on_its_topic() -> Result<()> {
    let cluster = TestCluster::start(three()).await?;
    let mut ws = cluster.node(2).raw().await?;
    let w = api(&mut ws, "catalog_watch", None).await?;
    let topic = w["topic"].as_str().expect("topic").to_owned();
    let sub = json!({"role": "pubsub-subscribe", "u": "w", "subscription": {
        "subscription_id": "watch", "patterns": [{"pattern": topic, "exact_match": true}],
        "subscriber": "t", "created_at": 1.0, "get_backlog": false, "backlog_seconds": 0}});
    ensure!(ws.roundtrip(&sub).await?["success"] == true);
    // Let the feed take its baseline, then change the cluster from another node.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut a = cluster.node(0).raw().await?;
    a.roundtrip(&rpc_frame(
        "c",
        json!([{"name": "c", "fun": "queue.create", "args": ["watched"]}]),
    ))
    .await?;
    let n = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await??;
    ensure!(
        n["role"] == "pubsub-notification" && n["subscription_id"] == "watch",
        "{n}"
    );
    let body = &n["message"]["payload"];
    // The queue and its dead-letter queue.
    ensure!(body["counts"]["queues_added"] == 2, "{body}");
    ensure!(
        body["delta"]["queues"][0]["queue_name"] == "watched"
            && body["delta"]["queues"][1]["queue_name"] == "watched.dlq",
        "{body}"
    );
    ensure!(
        body["source_node"] == "dn-2",
        "each node feeds its own watchers: {body}"
    );
    // Only that one change: no repeat while nothing changes.
    ws.silent_for(Duration::from_millis(600)).await?;
    Ok(())
}
