//! Malformed frames, wrong argument types, oversized frames: each gets a clear error (or, with no
//! `u` to answer, a log line), and the connection and the node keep serving.

use anyhow::Result;
use mpreg_tests::{TestNode, error_of, ok_reply, rpc_frame, test_config};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn malformed_frames_get_errors_or_are_dropped_and_the_connection_stays() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    // Not JSON at all, and JSON without a string `u`: nobody to answer, dropped.
    ws.send_raw("{not json").await?;
    ws.send_raw("[1, 2, 3]").await?;
    ws.send_raw(r#"{"role": "rpc", "u": 17, "cmds": []}"#)
        .await?;
    ws.silent_for(Duration::from_millis(200)).await?;
    // JSON with a `u` but not a valid request: 1005 naming the problem.
    for (frame, needle) in [
        (json!({"role": "rpc", "u": "m1"}), "missing field `cmds`"),
        (
            json!({"role": "rpc", "u": "m2", "cmds": "echo"}),
            "invalid type",
        ),
        (
            json!({"role": "rpc", "u": "m3", "cmds": [{"name": "x"}]}),
            "missing field `fun`",
        ),
        (
            json!({"role": "rpc", "u": "m4", "cmds": [{"name": "x", "fun": "echo", "args": {"a": 1}}]}),
            "invalid type",
        ),
    ] {
        let reply = ws.roundtrip(&frame).await?;
        assert_eq!(reply["u"], frame["u"]);
        let (code, details) = error_of(&reply)?;
        assert_eq!(code, 1005, "{reply}");
        assert!(
            details.contains(needle),
            "{details} should mention {needle}"
        );
    }
    // A key given twice still leaves a string `u` to answer: 1005, not silence.
    ws.send_raw(r#"{"role": "rpc", "u": "dup", "u": "dup", "cmds": []}"#)
        .await?;
    let reply = ws.recv().await?;
    assert_eq!(reply["u"], "dup");
    let (code, details) = error_of(&reply)?;
    assert_eq!(code, 1005, "{reply}");
    assert!(details.contains("duplicate field"), "{details}");
    // Nulls where the Python client may send them are fine.
    let frame = json!({"role": "rpc", "u": "n", "cmds": [{"name": "e", "fun": "echo", "args": [1], "kwargs": null, "locs": null}]});
    assert_eq!(ws.roundtrip(&frame).await?, ok_reply("n", json!({"e": 1})));
    Ok(())
}

#[tokio::test]
async fn wrong_arguments_name_the_parameter_and_type() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let cases = [
        (
            json!({"fun": "add", "args": [1, "two"]}),
            "argument 'b': expected s32, got string \"two\"",
        ),
        (
            json!({"fun": "add", "args": [1, 2, 3]}),
            "takes 2 argument(s) func(a: s32, b: s32) -> s32, got 3",
        ),
        (
            json!({"fun": "add", "args": [1]}),
            "missing argument 'b' (s32)",
        ),
        (
            json!({"fun": "add", "args": [1], "kwargs": {"c": 2}}),
            "no parameter named 'c'",
        ),
        (
            json!({"fun": "add", "args": [1, 2], "kwargs": {"a": 2}}),
            "'a' given both by position and by name",
        ),
        (
            json!({"fun": "add", "args": [1, 4294967296u64]}),
            "expected s32, got number 4294967296",
        ),
        (
            json!({"fun": "centroid", "args": [[{"x": 1}]]}),
            "argument 'points'[0].y: expected f64, got nothing (missing field)",
        ),
        (
            json!({"fun": "centroid", "args": [[{"x": 1, "y": 2, "z": 3}]]}),
            "unknown field(s) z",
        ),
        (
            json!({"fun": "area", "args": [{"square": 2}]}),
            "argument 's': expected variant",
        ),
        (json!({"fun": "classify", "args": ["big"]}), "expected s64"),
        (
            json!({"fun": "grant", "args": [["fly"], true]}),
            "expected flags { read, write, exec }",
        ),
        (
            json!({"fun": "nth_char", "args": [[], 1]}),
            "argument 's': expected string, got array",
        ),
        (
            json!({"fun": "echo", "args": [1, 2]}),
            "echo takes exactly 1 argument, got 2",
        ),
    ];
    for (i, (cmd, needle)) in cases.into_iter().enumerate() {
        let mut cmd = cmd;
        cmd["name"] = json!("c");
        let reply = ws
            .roundtrip(&rpc_frame(&format!("w{i}"), json!([cmd])))
            .await?;
        let (code, details) = error_of(&reply)?;
        assert_eq!(code, 1003, "{reply}");
        assert!(
            details.contains(needle),
            "case {i}: {details:?} should contain {needle:?}"
        );
        // The caller's mistake, told apart from a plugin's failure (the built-in echo's own
        // check is not a plugin's).
        if cmd["fun"] != "echo" {
            assert!(details.contains("bad arguments: "), "case {i}: {details:?}");
        }
    }
    // Every WIT type family converts both ways.
    let ok = [
        (json!({"fun": "area", "args": ["dot"]}), json!(0.0)),
        (
            json!({"fun": "area", "args": [{"rect": [2, 3.5]}]}),
            json!(7.0),
        ),
        (json!({"fun": "classify", "args": [-4]}), json!("negative")),
        (
            json!({"fun": "grant", "args": [["read", "exec"], true]}),
            json!(["read", "write", "exec"]),
        ),
        (json!({"fun": "safe_div", "args": [1, 0]}), json!(null)),
        (json!({"fun": "divmod", "args": [7, 2]}), json!([3, 1])),
        (
            json!({"fun": "is_even", "args": [18446744073709551615u64]}),
            json!(false),
        ),
        (json!({"fun": "nth_char", "args": ["héllo", 1]}), json!("é")),
        (
            json!({"fun": "split_once", "args": ["a=b", "="]}),
            json!(["a", "b"]),
        ),
        (json!({"fun": "fib", "args": [10.0]}), json!(55)),
        (
            json!({"fun": "stats", "args": [[1, 2, 3]]}),
            json!({"count": 3, "mean": 2.0, "min": 1.0, "max": 3.0}),
        ),
    ];
    for (i, (cmd, want)) in ok.into_iter().enumerate() {
        let mut cmd = cmd;
        cmd["name"] = json!("c");
        let reply = ws
            .roundtrip(&rpc_frame(&format!("ok{i}"), json!([cmd])))
            .await?;
        assert_eq!(reply["r"]["c"], want, "case {i}: {reply}");
    }
    Ok(())
}

#[tokio::test]
async fn oversized_frame_closes_that_connection_with_1009_only() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_message_bytes = 64 * 1024;
    let node = TestNode::with_config(cfg).await?;
    let mut other = node.raw().await?;
    let mut ws = node.raw().await?;
    let big = "x".repeat(100 * 1024);
    let _ = ws
        .send_binary(&rpc_frame(
            "big",
            json!([{"name": "e", "fun": "echo", "args": [big]}]),
        ))
        .await;
    let close = ws.closed().await?;
    if let Some(frame) = close {
        assert_eq!(u16::from(frame.code), 1009);
    }
    // A request just under the limit on another connection is served.
    let fits = "y".repeat(60 * 1024);
    let reply = other
        .roundtrip(&rpc_frame(
            "fits",
            json!([{"name": "e", "fun": "echo", "args": [fits.clone()]}]),
        ))
        .await?;
    assert_eq!(reply["r"]["e"], json!(fits));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amplifying_request_fails_at_its_byte_budget_and_others_are_served() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_request_bytes = 4 << 20;
    let node = TestNode::with_config(cfg).await?;
    // 24 levels of `echos(prev, prev)` from a 1 KiB string: 16 GiB if nothing stopped it.
    let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["x".repeat(1024)]})];
    for k in 1..24 {
        let prev = format!("c{}", k - 1);
        cmds.push(json!({"name": format!("c{k}"), "fun": "echos", "args": [prev, prev]}));
    }
    let mut ws = node.raw().await?;
    let started = std::time::Instant::now();
    let reply = ws.roundtrip(&rpc_frame("amp", Value::Array(cmds))).await?;
    let (code, details) = error_of(&reply)?;
    assert_eq!(code, 1008, "{reply}");
    assert!(details.contains("budget of 4194304 bytes"), "{details}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    node.serves_echo().await?;
    Ok(())
}

/// Integers pass through exactly across the 64-bit range; a larger one (JSON has no limit, and
/// MPREG's Python client sends Python's unbounded ints) is refused with 1005 naming it, never
/// rounded.
#[tokio::test]
async fn integers_pass_through_exactly_or_are_refused_never_rounded() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    for (i, n) in [
        "9007199254740993",
        "18446744073709551615",
        "-9223372036854775808",
    ]
    .into_iter()
    .enumerate()
    {
        let u = format!("big{i}");
        ws.send_raw(&format!(
            r#"{{"role":"rpc","u":"{u}","cmds":[{{"name":"e","fun":"echo","args":[{n}]}}]}}"#
        ))
        .await?;
        let text = ws.recv_text().await?;
        assert!(text.contains(&format!(r#""e":{n}"#)), "{n}: {text}");
    }
    for n in ["123456789012345678901234567890", "-18446744073709551616"] {
        let frame = format!(
            r#"{{"role":"rpc","u":"over","cmds":[{{"name":"e","fun":"echo","args":[{{"x":[{n}]}}]}}]}}"#
        );
        ws.send_raw(&frame).await?;
        let reply = ws.recv().await?;
        let (code, details) = error_of(&reply)?;
        assert_eq!(code, 1005, "{reply}");
        assert!(
            details.contains(&format!("integer {n} does not fit in 64 bits")),
            "{details}"
        );
    }
    Ok(())
}
