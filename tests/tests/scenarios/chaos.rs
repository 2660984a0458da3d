//! Misbehaving plugins fail their own call with a clear error; everything else keeps working.

use std::time::{Duration, Instant};

use anyhow::Result;
use mpreg_tests::{TestNode, error_of, eventually, rpc_frame, test_config};
use serde_json::json;

fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1 << 20))
}

// A node runs on the multi-threaded runtime (as `mpreg server start` does), so a runaway guest
// occupies at most one worker and yields at every epoch tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chaos_behaviour_gets_a_clear_error_while_others_are_served() -> Result<()> {
    let mut cfg = test_config();
    cfg.runtime.call_timeout_ms = 300;
    cfg.server.max_reply_bytes = 1 << 20;
    let node = TestNode::with_config(cfg).await?;

    // A second connection keeps calling a healthy function the whole time.
    let client = node.client().await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut served = 0u32;
            let mut slowest = Duration::ZERO;
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
            {
                let t = Instant::now();
                let v = client.call("add", vec![json!(served), json!(1)]).await?;
                slowest = slowest.max(t.elapsed());
                assert_eq!(v, json!(served + 1));
                served += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok((served, slowest))
        })
    };

    let mut ws = node.raw().await?;
    let cases = [
        (
            "spin",
            json!([]),
            1008,
            "exceeded its execution limit of 300 ms",
        ),
        (
            "hog",
            json!([512]),
            1008,
            "exceeded its memory limit of 64 MiB",
        ),
        ("boom", json!(["kaboom"]), 1003, "kaboom"),
        ("trap", json!([]), 1003, "plugin trapped"),
        (
            "huge",
            json!([4]),
            1008,
            "exceeds the limit of 1048576 bytes",
        ),
        (
            "recurse",
            json!([100_000_000u64]),
            1008,
            "exceeded its stack limit (stack overflow)",
        ),
        (
            "fail",
            json!(["nope"]),
            1003,
            "function returned an error: \"nope\"",
        ),
    ];
    for (fun, args, want_code, needle) in cases {
        let t = Instant::now();
        let reply = ws
            .roundtrip(&rpc_frame(
                fun,
                json!([{"name": fun, "fun": fun, "args": args}]),
            ))
            .await?;
        let (code, details) = error_of(&reply)?;
        assert_eq!(code, want_code, "{fun}: {reply}");
        assert!(
            details.contains(needle),
            "{fun}: {details:?} should contain {needle:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{fun} took {:?}",
            t.elapsed()
        );
        // The same connection serves the next call right away.
        let ok = ws
            .roundtrip(&rpc_frame(
                "after",
                json!([{"name": "a", "fun": "add", "args": [2, 2]}]),
            ))
            .await?;
        assert_eq!(ok["r"]["a"], json!(4), "after {fun}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, slowest) = bystander.await??;
    assert!(
        served > 10,
        "the bystander was served throughout ({served} calls)"
    );
    assert!(
        slowest < Duration::from_millis(250),
        "a bystander call waited {slowest:?} behind a bad guest"
    );
    Ok(())
}

#[tokio::test]
async fn memory_stays_bounded_across_repeated_memory_bombs_and_traps() -> Result<()> {
    let node = TestNode::with_config(test_config()).await?;
    let mut ws = node.raw().await?;
    let run = |i: usize| {
        let fun = ["hog", "boom", "trap"][i % 3];
        let args = [json!([512]), json!(["x"]), json!([])][i % 3].clone();
        rpc_frame(
            &format!("b{i}"),
            json!([{"name": "c", "fun": fun, "args": args}]),
        )
    };
    for i in 0..6 {
        ws.roundtrip(&run(i)).await?;
    }
    let before = resident_mib().unwrap_or(0);
    for i in 0..60 {
        let reply = ws.roundtrip(&run(i)).await?;
        assert!(reply["error"].is_object());
    }
    let after = resident_mib().unwrap_or(0);
    // 20 memory bombs of 64 MiB each would be 1.2 GiB if instances leaked.
    assert!(
        after < before + 256,
        "resident memory grew from {before} MiB to {after} MiB"
    );
    Ok(())
}

/// Each call is capped by its plugin's limit, and all of them together by the node's guest
/// memory budget: before, a hundred concurrent `hog(60)` calls took 5.3 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_guest_memory_budget_bounds_concurrent_calls() -> Result<()> {
    let mut cfg = test_config();
    cfg.runtime.memory_limit_mib = 100;
    cfg.runtime.max_guest_memory_mib = 150;
    cfg.runtime.call_timeout_ms = 5_000;
    let node = TestNode::with_config(cfg).await?;
    let budget = 150usize << 20;
    assert_eq!(node.handle.guest_memory().limit(), budget);
    // One call first, so the node knows what a fresh instance of the plugin holds.
    let mut ws = node.raw().await?;
    let one = ws
        .roundtrip(&rpc_frame(
            "one",
            json!([{"name": "c", "fun": "hog", "args": [1]}]),
        ))
        .await?;
    assert_eq!(one["r"]["c"], json!(1), "{one}");
    let calls = 8;
    ws.pipeline("hog", json!([60]), calls).await?;
    let mut peak = 0usize;
    let mut done = 0;
    let mut refused = Vec::new();
    while done < calls {
        peak = peak.max(node.handle.guest_memory().used());
        let reply = ws.recv().await?;
        done += 1;
        if reply["error"].is_null() {
            assert_eq!(reply["r"]["c"], json!(60), "{reply}");
        } else {
            let (code, details) = error_of(&reply)?;
            assert!(
                (code == 1007 && details.contains("guest memory budget (150 MiB) is in use"))
                    || (code == 1008 && details.contains("guest memory budget (150 MiB) ran out")),
                "{reply}"
            );
            refused.push(code);
        }
    }
    assert!(peak <= budget, "{peak} bytes in use, budget {budget}");
    assert!(
        !refused.is_empty(),
        "eight 60 MiB calls cannot all fit in 150 MiB at once"
    );
    assert!(refused.len() < calls, "some ran");
    // Everything comes back once the calls are over.
    eventually(
        Duration::from_secs(5),
        "the budget is free again",
        || async { node.handle.guest_memory().used() == 0 },
    )
    .await?;
    let again = ws
        .roundtrip(&rpc_frame(
            "again",
            json!([{"name": "c", "fun": "hog", "args": [60]}]),
        ))
        .await?;
    assert_eq!(again["r"]["c"], json!(60), "{again}");
    Ok(())
}
