//! Exact protocol.md frames in, exact replies out.

use std::time::{Duration, Instant};

use anyhow::Result;
use mpreg_tests::{RawWs, TestNode, error_of, ok_reply, rpc_frame, test_config};
use serde_json::{Value, json};

#[tokio::test]
async fn python_client_frame_binary_and_text() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    // Exactly §2.1's frame.
    let frame = json!({"role":"rpc",
        "cmds":[{"name":"echo","fun":"echo","args":["hi"],"kwargs":{},"locs":[],
                 "function_id":null,"version_constraint":null,
                 "target_cluster":null,"routing_topic":null}],
        "u":"01M8100JSE7VCJ6657M588FE1H",
        "return_intermediate_results":false,
        "intermediate_result_callback_topic":null,
        "include_execution_summary":false,
        "debug_mode":false});
    let reply = ws.roundtrip(&frame).await?;
    assert_eq!(
        reply,
        ok_reply("01M8100JSE7VCJ6657M588FE1H", json!({"echo": "hi"}))
    );
    ws.send_text(&frame).await?;
    assert_eq!(
        ws.recv().await?,
        ok_reply("01M8100JSE7VCJ6657M588FE1H", json!({"echo": "hi"}))
    );
    Ok(())
}

#[tokio::test]
async fn worked_examples_of_section_2_3() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let frame = rpc_frame(
        "w1",
        json!([
            {"name": "first", "fun": "echo", "args": ["hello"]},
            {"name": "second", "fun": "echos", "args": ["first", "lit"]},
            {"name": "third", "fun": "echos", "args": ["second", {"k": "first"}]},
        ]),
    );
    assert_eq!(
        ws.roundtrip(&frame).await?,
        ok_reply("w1", json!({"third": [["hello", "lit"], {"k": "hello"}]}))
    );
    // mkdict is a plugin function (math): {"inner":{"value":5},"list":[1,2,3]}.
    let frame = rpc_frame(
        "w2",
        json!([
            {"name": "e", "fun": "echos", "args": ["d.inner.value", "d.list", "d.missing", "d.inner"]},
            {"name": "d", "fun": "mkdict", "args": [5]},
        ]),
    );
    assert_eq!(
        ws.roundtrip(&frame).await?,
        ok_reply(
            "w2",
            json!({"e": [5, [1, 2, 3], "d.missing", {"value": 5}]})
        )
    );
    Ok(())
}

#[tokio::test]
async fn last_level_rule_nesting_and_non_references() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let frame = rpc_frame(
        "l",
        json!([
            {"name": "a", "fun": "echo", "args": [1]},
            {"name": "b", "fun": "echos", "args": ["a"]},
            {"name": "lone", "fun": "echo", "args": ["x"]},
        ]),
    );
    assert_eq!(
        ws.roundtrip(&frame).await?,
        ok_reply("l", json!({"b": [1]}))
    );
    // One level: every command is in the reply.
    let frame = rpc_frame(
        "one",
        json!([
            {"name": "x", "fun": "echo", "args": [1]}, {"name": "y", "fun": "add", "args": [2, 3]},
        ]),
    );
    assert_eq!(
        ws.roundtrip(&frame).await?,
        ok_reply("one", json!({"x": 1, "y": 5}))
    );
    // References nested in lists and object values; keys, substrings and prefixes are literal.
    let frame = rpc_frame(
        "n",
        json!([
            {"name": "p", "fun": "centroid", "args": [[{"x": 0, "y": 0}, {"x": 2, "y": 4}]]},
            {"name": "q", "fun": "echos", "args": [[["p.x"]], {"p": {"deep": ["p.y", "p"]}}, "xp", "p_", "|p"]},
        ]),
    );
    let expect =
        json!({"q": [[[1.0]], {"p": {"deep": [2.0, {"x": 1.0, "y": 2.0}]}}, "xp", "p_", "|p"]});
    assert_eq!(ws.roundtrip(&frame).await?, ok_reply("n", expect));
    Ok(())
}

#[tokio::test]
async fn plugin_chain_and_fan_out_fan_in() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let frame = rpc_frame(
        "c",
        json!([
            {"name": "raw", "fun": "ingest", "args": ["1, 2, x, 3, 4"]},
            {"name": "clean", "fun": "clean", "args": ["raw"]},
            {"name": "stats", "fun": "analyze", "args": ["clean"]},
        ]),
    );
    let reply = ws.roundtrip(&frame).await?;
    assert_eq!(reply["r"]["stats"]["count"], json!(4));
    assert_eq!(reply["r"]["stats"]["mean"], json!(2.5));
    let mut cmds = vec![json!({"name": "data", "fun": "clean", "args": [[1.0, null, 2.0]]})];
    for i in 1..=3 {
        cmds.push(json!({"name": format!("s{i}"), "fun": "scale", "args": ["data", i]}));
    }
    cmds.push(json!({"name": "merged", "fun": "merge", "args": [["s1", "s2", "s3"]]}));
    cmds.push(json!({"name": "sum", "fun": "total", "args": ["merged"]}));
    let reply = ws.roundtrip(&rpc_frame("f", Value::Array(cmds))).await?;
    assert_eq!(reply, ok_reply("f", json!({"sum": 18.0})));
    Ok(())
}

#[tokio::test]
async fn cycles_duplicates_and_empty_requests_are_1003() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let cases = [
        (
            json!([{"name": "a", "fun": "echo", "args": ["b"]}, {"name": "b", "fun": "echo", "args": ["a"]}]),
            "dependency cycle",
        ),
        (
            json!([{"name": "a", "fun": "echo", "args": [{"x": [[{"y": "a.z"}]]}]}]),
            "dependency cycle: a -> a",
        ),
        (
            json!([{"name": "a", "fun": "echo", "args": [1]}, {"name": "a", "fun": "echo", "args": [2]}]),
            "duplicate command name 'a'",
        ),
        (json!([]), "no commands"),
    ];
    for (i, (cmds, needle)) in cases.into_iter().enumerate() {
        let u = format!("bad{i}");
        let reply = ws.roundtrip(&rpc_frame(&u, cmds)).await?;
        assert_eq!(reply["u"], json!(u));
        assert_eq!(reply["r"], Value::Null);
        let (code, details) = error_of(&reply)?;
        assert_eq!(code, 1003, "{reply}");
        assert!(
            details.contains(needle),
            "{details} should contain {needle}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn unknown_function_is_1001_with_mpreg_shape() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let reply = ws
        .roundtrip(&rpc_frame(
            "nf",
            json!([{"name": "nope", "fun": "nope", "args": []}]),
        ))
        .await?;
    assert_eq!(
        reply,
        json!({"role": "rpc-response", "u": "nf", "r": null,
        "error": {"code": 1001, "message": "Command not found", "details": "Command not found: nope"}})
    );
    Ok(())
}

#[tokio::test]
async fn version_constraints_in_both_syntaxes() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let cases = [
        (None, "2.0.0"),
        (Some(">=1.0, <2"), "1.0.0"),
        (Some("(version >= 1.0.0)"), "2.0.0"),
        (Some("1.0"), "1.0.0"),
        (Some("==v2"), "2.0.0"),
        (Some("^1"), "1.0.0"),
        (Some("~2.0"), "2.0.0"),
        (Some("*"), "2.0.0"),
    ];
    for (vc, want) in cases {
        let frame = rpc_frame(
            "v",
            json!([{"name": "g", "fun": "greet", "args": ["ann"],
            "function_id": "greeter.greet", "version_constraint": vc}]),
        );
        let reply = ws.roundtrip(&frame).await?;
        assert_eq!(
            reply["r"]["g"],
            json!(format!("hello ann from greeter {want}")),
            "{vc:?}: {reply}"
        );
    }
    let frame = rpc_frame(
        "v",
        json!([{"name": "g", "fun": "greet", "args": ["ann"], "version_constraint": ">=3"}]),
    );
    assert_eq!(error_of(&ws.roundtrip(&frame).await?)?.0, 1001);
    let frame = rpc_frame(
        "v",
        json!([{"name": "g", "fun": "greet", "args": ["ann"], "function_id": "other"}]),
    );
    assert_eq!(error_of(&ws.roundtrip(&frame).await?)?.0, 1001);
    let frame = rpc_frame(
        "v",
        json!([{"name": "g", "fun": "greet", "args": ["ann"], "version_constraint": ">=one"}]),
    );
    let (code, details) = error_of(&ws.roundtrip(&frame).await?)?;
    assert_eq!(code, 1003);
    assert!(details.contains("invalid version constraint"), "{details}");
    Ok(())
}

#[tokio::test]
async fn locs_pick_the_node_and_function_resources() -> Result<()> {
    let mut cfg = test_config();
    cfg.node.resources = vec!["dc-1".into()];
    cfg.node.cluster_id = "alpha".into();
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    let call = |locs: Value, fun: &str, args: Value| {
        rpc_frame(
            "r",
            json!([{"name": "x", "fun": fun, "args": args, "locs": locs}]),
        )
    };
    // greeter 2.0.0 has "gpu"; 1.0.0 does not; the node adds "dc-1" to everything.
    let r = ws
        .roundtrip(&call(json!(["gpu"]), "greet", json!(["bo"])))
        .await?;
    assert_eq!(r["r"]["x"], json!("hello bo from greeter 2.0.0"));
    let r = ws
        .roundtrip(&call(json!(["dc-1", "cpu"]), "add", json!([1, 2])))
        .await?;
    assert_eq!(r["r"]["x"], json!(3));
    let r = ws
        .roundtrip(&call(json!(["dc-1"]), "echo", json!([1])))
        .await?;
    assert_eq!(r["r"]["x"], json!(1));
    let r = ws
        .roundtrip(&call(json!(["gpu"]), "add", json!([1, 2])))
        .await?;
    assert_eq!(error_of(&r)?.0, 1001);
    let r = ws
        .roundtrip(&call(json!(["tpu"]), "echo", json!([1])))
        .await?;
    assert_eq!(error_of(&r)?.0, 1001);
    let frame = rpc_frame(
        "t",
        json!([{"name": "x", "fun": "echo", "args": [1], "target_cluster": "beta"}]),
    );
    assert_eq!(error_of(&ws.roundtrip(&frame).await?)?.0, 1001);
    let frame = rpc_frame(
        "t",
        json!([{"name": "x", "fun": "echo", "args": [1], "target_cluster": "alpha"}]),
    );
    assert_eq!(ws.roundtrip(&frame).await?["r"]["x"], json!(1));
    Ok(())
}

#[tokio::test]
async fn unknown_and_missing_role_are_1004() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let r = ws
        .roundtrip(&json!({"role": "teleport", "u": "r1"}))
        .await?;
    assert_eq!(r["u"], json!("r1"));
    assert_eq!(error_of(&r)?.0, 1004);
    let r = ws.roundtrip(&json!({"u": "r2", "cmds": []})).await?;
    assert_eq!(error_of(&r)?.0, 1004);
    Ok(())
}

#[tokio::test]
async fn deadline_is_1004_and_timeout_ms_sets_it() -> Result<()> {
    let mut cfg = test_config();
    cfg.runtime.call_timeout_ms = 5_000;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    let mut frame = rpc_frame("d", json!([{"name": "b", "fun": "busy", "args": [3000]}]));
    frame["timeout_ms"] = json!(200);
    let t = Instant::now();
    let reply = ws.roundtrip(&frame).await?;
    let (code, details) = error_of(&reply)?;
    assert_eq!(code, 1004);
    assert!(details.contains("deadline of 200 ms"), "{details}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t.elapsed()
    );
    // The default deadline applies without timeout_ms.
    let mut cfg = test_config();
    cfg.server.request_timeout_ms = 150;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    let reply = ws
        .roundtrip(&rpc_frame(
            "d2",
            json!([{"name": "b", "fun": "busy", "args": [900]}]),
        ))
        .await?;
    assert_eq!(error_of(&reply)?.0, 1004);
    Ok(())
}

#[tokio::test]
async fn enhanced_replies() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let mut frame = rpc_frame(
        "e",
        json!([
            {"name": "a", "fun": "add", "args": [1, 2]},
            {"name": "b", "fun": "add", "args": ["a", 10]},
        ]),
    );
    frame["return_intermediate_results"] = json!(true);
    frame["include_execution_summary"] = json!(true);
    let reply = ws.roundtrip(&frame).await?;
    assert_eq!(reply["r"], json!({"b": 13}));
    let ir = reply["intermediate_results"].as_array().expect("array");
    assert_eq!(ir.len(), 2);
    for (i, level) in ir.iter().enumerate() {
        for key in [
            "request_id",
            "level_index",
            "level_results",
            "accumulated_results",
            "total_levels",
            "completed_levels",
            "timestamp",
            "execution_time_ms",
        ] {
            assert!(level.get(key).is_some(), "missing {key} in {level}");
        }
        assert_eq!(level["level_index"], json!(i));
        assert_eq!(level["total_levels"], json!(2));
        assert_eq!(level["completed_levels"], json!(i + 1));
        assert_eq!(level["request_id"], json!("e"));
    }
    assert_eq!(ir[0]["level_results"], json!({"a": 3}));
    assert_eq!(ir[1]["accumulated_results"], json!({"a": 3, "b": 13}));
    let s = &reply["execution_summary"];
    for key in [
        "request_id",
        "total_execution_time_ms",
        "total_levels",
        "level_execution_times",
        "bottleneck_level_index",
        "average_level_time_ms",
        "parallel_commands_executed",
        "cross_cluster_hops",
    ] {
        assert!(s.get(key).is_some(), "missing {key} in {s}");
    }
    assert_eq!(s["total_levels"], json!(2));
    assert_eq!(s["level_execution_times"].as_array().map(Vec::len), Some(2));
    // Without the flags, neither key appears.
    let reply = ws
        .roundtrip(&rpc_frame(
            "p",
            json!([{"name": "a", "fun": "add", "args": [1, 2]}]),
        ))
        .await?;
    assert!(
        reply.get("intermediate_results").is_none() && reply.get("execution_summary").is_none()
    );
    Ok(())
}

#[tokio::test]
async fn streamed_intermediate_results_arrive_before_the_reply() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let mut frame = rpc_frame(
        "s",
        json!([
            {"name": "a", "fun": "add", "args": [1, 2]},
            {"name": "b", "fun": "add", "args": ["a", 1]},
        ]),
    );
    frame["stream_intermediate_results"] = json!(true);
    ws.send_binary(&frame).await?;
    for level in 0..2 {
        let m = ws.recv().await?;
        assert_eq!(m["role"], json!("rpc-intermediate"));
        assert_eq!(m["u"], json!("s"));
        assert_eq!(m["result"]["level_index"], json!(level));
    }
    assert_eq!(ws.recv().await?, ok_reply("s", json!({"b": 4})));
    Ok(())
}

#[tokio::test]
async fn kwargs_bind_by_name_and_follow_the_level_rule() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let frame = rpc_frame(
        "k",
        json!([{"name": "x", "fun": "add", "args": [], "kwargs": {"a": 2, "b": 5}}]),
    );
    assert_eq!(ws.roundtrip(&frame).await?, ok_reply("k", json!({"x": 7})));
    // `b` references `a` (earlier level via args) in kwargs: substituted. `c` references `lone`
    // (same level) in kwargs: stays literal.
    let frame = rpc_frame(
        "k2",
        json!([
            {"name": "a", "fun": "add", "args": [1, 1]},
            {"name": "b", "fun": "echos", "args": ["a"], "kwargs": {"again": "a"}},
            {"name": "lone", "fun": "echo", "args": ["z"]},
            {"name": "c", "fun": "join", "args": [["q"]], "kwargs": {"sep": "lone"}},
        ]),
    );
    let reply = ws.roundtrip(&frame).await?;
    assert_eq!(reply, ok_reply("k2", json!({"b": [2]})));
    let frame = rpc_frame(
        "k3",
        json!([
            {"name": "lone", "fun": "echo", "args": ["z"]},
            {"name": "c", "fun": "join", "args": [["q", "r"]], "kwargs": {"sep": "lone"}},
        ]),
    );
    assert_eq!(
        ws.roundtrip(&frame).await?,
        ok_reply("k3", json!({"lone": "z", "c": "qloner"}))
    );
    Ok(())
}

#[tokio::test]
async fn requests_on_one_connection_run_concurrently_and_reply_out_of_order() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    ws.send_binary(&rpc_frame(
        "slow",
        json!([{"name": "b", "fun": "busy", "args": [400]}]),
    ))
    .await?;
    ws.send_binary(&rpc_frame(
        "fast",
        json!([{"name": "e", "fun": "add", "args": [1, 1]}]),
    ))
    .await?;
    assert_eq!(ws.recv().await?["u"], json!("fast"));
    assert_eq!(ws.recv().await?["u"], json!("slow"));
    Ok(())
}

#[tokio::test]
async fn pings_are_answered_and_idle_clients_stay() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    ws.ping().await?;
    ws.silent_for(Duration::from_millis(300)).await?;
    assert_eq!(
        ws.roundtrip(&rpc_frame(
            "i",
            json!([{"name": "e", "fun": "echo", "args": [1]}])
        ))
        .await?["r"]["e"],
        json!(1)
    );
    Ok(())
}

#[tokio::test]
async fn discovery_builtins() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws: RawWs = node.raw().await?;
    let r = ws
        .roundtrip(&rpc_frame(
            "m",
            json!([{"name": "cluster_map", "fun": "cluster_map"}]),
        ))
        .await?;
    let map = &r["r"]["cluster_map"];
    assert_eq!(map["cluster_id"], json!("default"));
    let n = &map["nodes"][0];
    assert_eq!(n["node_id"], json!("test-node"));
    assert_eq!(n["advertised_urls"], json!([node.url]));
    assert!(n["load"]["load_score"].is_number());
    let r = ws
        .roundtrip(&rpc_frame(
            "p",
            json!([{"name": "list_peers", "fun": "list_peers"}]),
        ))
        .await?;
    assert_eq!(r["r"]["list_peers"], json!([]));
    // The rest of discovery, request by request: scenarios/discovery.rs.
    let r = ws
        .roundtrip(&rpc_frame(
            "d",
            json!([{"name": "rpc_describe", "fun": "rpc_describe", "args": ["add", "centroid"]}]),
        ))
        .await?;
    let d = r["r"]["rpc_describe"]["items"].as_array().expect("items");
    assert_eq!(d.len(), 2);
    let add = d
        .iter()
        .find(|f| f["identity"]["name"] == "add")
        .expect("add");
    assert_eq!(add["signature"], json!("func(a: s32, b: s32) -> s32"));
    let centroid = d
        .iter()
        .find(|f| f["identity"]["name"] == "centroid")
        .expect("centroid");
    assert_eq!(
        centroid["signature"],
        json!("func(points: list<record { x: f64, y: f64 }>) -> record { x: f64, y: f64 }")
    );
    Ok(())
}

/// A 1001 keeps MPREG's text and adds what helps: the closest name for a typo, the versions
/// that exist for a constraint that matches none.
#[tokio::test]
async fn not_found_says_did_you_mean_and_lists_versions() -> Result<()> {
    let node = TestNode::start().await?;
    let client = node.client().await?;
    let (code, details) = mpreg_tests::rpc_error(client.call("ad", vec![json!(1), json!(2)]).await);
    assert_eq!(code, 1001);
    assert!(details.contains("Command not found: ad "), "{details}");
    assert!(details.contains("did you mean 'add'?"), "{details}");
    let mut cmd = mpreg::protocol::RpcCommand::new("g", "greet", vec![json!("x")]);
    cmd.version_constraint = Some("^9".into());
    let (code, details) = mpreg_tests::rpc_error(client.call_command(cmd).await);
    assert_eq!(code, 1001);
    assert!(
        details.contains("versions that exist: 2.0.0, 1.0.0"),
        "{details}"
    );
    Ok(())
}
