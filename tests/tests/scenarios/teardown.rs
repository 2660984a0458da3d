//! Finished plugin stores are torn down after the caller has its result, on the thread that ran
//! the call, and never pile up: the per-thread list is capped, so a pool with only one slot more
//! than that cap keeps serving calls that nobody drains.

use std::sync::Arc;

use anyhow::{Context, Result};
use mpreg::runtime::teardown::{self, MAX_PARKED};
use mpreg::runtime::{CallContext, InvokeError, LoadedPlugin, Runtime, RuntimeConfig};
use serde_json::{Map, Value, json};

fn load(rt: &tokio::runtime::Runtime, runtime: &Runtime, name: &str) -> Result<Arc<LoadedPlugin>> {
    let bytes = std::fs::read(mpreg_tests::plugin(name))?;
    Ok(Arc::new(rt.block_on(runtime.load(bytes, name))?))
}

fn call(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    fun: &str,
    args: Vec<Value>,
) -> Result<Result<Value, InvokeError>> {
    let func = plugin
        .functions
        .iter()
        .find(|f| f.name == fun)
        .with_context(|| format!("no function {fun}"))?;
    Ok(rt.block_on(runtime.invoke(
        plugin,
        func,
        &args,
        &Map::new(),
        CallContext::isolated("teardown-test".into()),
    )))
}

/// A runtime whose pool has `slots` instances (which sets how many stores it may park).
fn with_slots(slots: u32) -> Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        max_instances: slots,
        ..RuntimeConfig::default()
    })?)
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn stores_wait_for_teardown_capped_per_thread_and_free_their_slots() -> Result<()> {
    let rt = current_thread()?;
    // The smallest pool that parks at all (an eighth of 16 = 2 stores).
    let runtime = with_slots(16)?;
    let text = load(&rt, &runtime, "text")?;
    let chaos = load(&rt, &runtime, "chaos")?;
    teardown::run_deferred();
    assert_eq!(teardown::parked(), 0);

    let out = call(&rt, &runtime, &text, "upper", vec![json!("abc")])?;
    assert_eq!(out.ok(), Some(json!("ABC")));
    assert_eq!(
        teardown::parked(),
        1,
        "the finished store waits for teardown"
    );
    teardown::run_deferred();
    assert_eq!(teardown::parked(), 0, "run_deferred tears it down");

    // Nobody drains: the list stays at its cap, and 40 calls through a 16-slot pool all get a
    // slot, so the stores past the cap were torn down.
    for i in 0..40 {
        let out = call(
            &rt,
            &runtime,
            &text,
            "reverse",
            vec![json!(format!("ab{i}"))],
        )?;
        let reversed: String = format!("ab{i}").chars().rev().collect();
        assert_eq!(out.ok(), Some(json!(reversed)), "call {i}");
        assert!(teardown::parked() <= MAX_PARKED);
    }
    assert_eq!(teardown::parked(), MAX_PARKED);

    // A trapped call's store goes the same way; the next call is unaffected.
    let trapped = call(&rt, &runtime, &chaos, "trap", vec![])?;
    assert!(
        matches!(trapped, Err(InvokeError::Trapped(_))),
        "{trapped:?}"
    );
    assert!(teardown::parked() <= MAX_PARKED);
    let out = call(&rt, &runtime, &text, "length", vec![json!("four")])?;
    assert_eq!(out.ok(), Some(json!(4)));

    teardown::run_deferred();
    assert_eq!(teardown::parked(), 0);
    Ok(())
}

#[test]
fn a_small_pool_never_parks() -> Result<()> {
    let rt = current_thread()?;
    let runtime = with_slots(3)?;
    let text = load(&rt, &runtime, "text")?;
    for _ in 0..10 {
        let out = call(&rt, &runtime, &text, "upper", vec![json!("x")])?;
        assert_eq!(out.ok(), Some(json!("X")));
        assert_eq!(teardown::parked(), 0);
    }
    Ok(())
}

#[test]
fn a_thread_that_exits_tears_down_and_settles_what_it_parked() -> Result<()> {
    let rt = current_thread()?;
    // Budget: 2 parked stores in all for this runtime.
    let runtime = Arc::new(with_slots(16)?);
    let text = load(&rt, &runtime, "text")?;
    let (r, t) = (runtime.clone(), text.clone());
    let parked_there = std::thread::spawn(move || -> Result<usize> {
        let rt = current_thread()?;
        let out = call(&rt, &r, &t, "upper", vec![json!("x")])?;
        assert_eq!(out.ok(), Some(json!("X")));
        Ok(teardown::parked())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread panicked"))??;
    assert_eq!(parked_there, 1);
    // Had the exited thread not given its share of the budget back, only one more store could
    // be parked here.
    for _ in 0..3 {
        let out = call(&rt, &runtime, &text, "upper", vec![json!("y")])?;
        assert_eq!(out.ok(), Some(json!("Y")));
    }
    assert_eq!(teardown::parked(), MAX_PARKED);
    teardown::run_deferred();
    Ok(())
}
