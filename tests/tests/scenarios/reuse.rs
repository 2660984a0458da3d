//! Warm instances (`instance_reuse = "serial"`, docs/plugins.md "Instance reuse"): a reused
//! instance serves one call at a time, keeps what calls leave in its memory (the documented
//! isolation), is discarded on a trap, a deadline or a memory-limit hit and after
//! `max_calls_per_instance` calls, holds its memory in the node's budget until it is dropped,
//! and is what Python and JavaScript components get by default.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use mpreg::runtime::{
    CallContext, InstanceReuse, InvokeError, LoadedPlugin, Runtime, RuntimeConfig, Sandbox,
};
use serde_json::{Map, Value, json};

/// Loads example plugin `name` with `sandbox`.
async fn load(runtime: &Runtime, name: &str, sandbox: Sandbox) -> Result<Arc<LoadedPlugin>> {
    let bytes = std::fs::read(mpreg_tests::plugin(name))?;
    let (sha, size) = (mpreg::runtime::sha256_hex(&bytes), bytes.len());
    let compiled = runtime.compile(bytes.into(), name).await?;
    let plugin = runtime
        .instantiate(&compiled, name, sandbox, sha, size, Instant::now())
        .await?;
    Ok(Arc::new(plugin))
}

fn serial() -> Sandbox {
    Sandbox {
        instance_reuse: Some(InstanceReuse::Serial),
        ..Sandbox::default()
    }
}

async fn call(
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
    Ok(runtime
        .invoke(
            plugin,
            func,
            &args,
            &Map::new(),
            CallContext::isolated("reuse-test".into()),
        )
        .await)
}

/// `served` answers how many calls its instance has served.
async fn visit(runtime: &Runtime, plugin: &LoadedPlugin) -> Result<u64> {
    let v = call(runtime, plugin, "served", vec![json!(0)]).await??;
    v.as_u64().with_context(|| format!("visit returned {v}"))
}

#[tokio::test]
async fn a_serial_instance_keeps_its_state_and_a_fresh_one_does_not() -> Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    // A Rust component gets a fresh instance per call unless its sandbox says otherwise.
    let fresh = load(&runtime, "chaos", Sandbox::default()).await?;
    assert_eq!(fresh.reuse, InstanceReuse::Never);
    for _ in 0..3 {
        assert_eq!(visit(&runtime, &fresh).await?, 1);
    }
    assert_eq!(fresh.warm.idle(), 0);

    // Serial: one instance serves the calls in turn and sees what they left.
    let warm = load(&runtime, "chaos", serial()).await?;
    assert_eq!(warm.reuse, InstanceReuse::Serial);
    for n in 1..=5 {
        assert_eq!(visit(&runtime, &warm).await?, n);
    }
    assert_eq!((warm.warm.idle(), warm.warm.reused()), (1, 4));
    // Another version (here: another load of the same bytes) never shares its instances.
    let other = load(&runtime, "chaos", serial()).await?;
    assert_eq!(visit(&runtime, &other).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_never_serves_two_calls_at_once() -> Result<()> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let plugin = load(&runtime, "chaos", serial()).await?;
    let mut most = 0;
    for _round in 0..4 {
        // 16 calls at once, each 3 ms long; the guest fails if a second call enters it.
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (runtime, plugin) = (runtime.clone(), plugin.clone());
                tokio::spawn(async move { call(&runtime, &plugin, "served", vec![json!(3)]).await })
            })
            .collect();
        for c in calls {
            let served = c.await???;
            most = most.max(served.as_u64().unwrap_or(0));
        }
        ensure!(plugin.warm.idle() <= runtime.config().warm_instances);
    }
    ensure!(most > 1, "no instance was reused");
    ensure!(plugin.warm.reused() > 0);
    Ok(())
}

#[tokio::test]
async fn a_trap_a_deadline_or_a_memory_limit_discards_the_instance() -> Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let sandbox = Sandbox {
        memory_limit_mib: Some(16),
        call_timeout_ms: Some(100),
        ..serial()
    };
    let plugin = load(&runtime, "chaos", sandbox).await?;
    let failures: [(&str, Vec<Value>, &str); 4] = [
        ("trap", vec![], "trap"),
        ("boom", vec![json!("on purpose")], "trap"),
        ("spin", vec![], "deadline"),
        ("hog", vec![json!(64)], "memory_limit"),
    ];
    for (fun, args, kind) in failures {
        assert_eq!(visit(&runtime, &plugin).await?, 1, "before {fun}");
        assert_eq!(visit(&runtime, &plugin).await?, 2, "before {fun}");
        // The failing call takes the warm instance; it is not given back.
        let err = call(&runtime, &plugin, fun, args)
            .await?
            .expect_err("fails");
        assert_eq!(err.kind(), kind, "{fun}: {err}");
        assert_eq!(plugin.warm.idle(), 0, "{fun} left its instance");
        assert_eq!(visit(&runtime, &plugin).await?, 1, "after {fun}");
        // Start the next round from a fresh instance again.
        plugin.warm.clear();
    }
    // A function's own `err` is an answer, not a failure of the instance: it stays.
    assert_eq!(visit(&runtime, &plugin).await?, 1);
    call(&runtime, &plugin, "fail", vec![json!("no")])
        .await?
        .expect_err("returns err");
    assert_eq!(
        visit(&runtime, &plugin).await?,
        2,
        "the same instance's second visit"
    );
    Ok(())
}

#[tokio::test]
async fn an_instance_serves_at_most_max_calls_and_holds_its_memory_until_dropped() -> Result<()> {
    let runtime = Runtime::new(RuntimeConfig {
        max_calls_per_instance: 3,
        ..RuntimeConfig::default()
    })?;
    let plugin = load(&runtime, "chaos", serial()).await?;
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(visit(&runtime, &plugin).await?);
    }
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
    // The idle instance's memory stays counted in the node's guest-memory budget...
    assert_eq!(plugin.warm.idle(), 1);
    let held = runtime.guest_memory().used();
    assert!(held > 0, "an idle instance holds no memory in the budget");
    // ...until it is dropped (a retire clears the pool).
    plugin.warm.clear();
    mpreg::runtime::teardown::run_deferred();
    assert_eq!(runtime.guest_memory().used(), 0);

    // `warm_instances = 0` turns reuse off node-wide.
    let off = Runtime::new(RuntimeConfig {
        warm_instances: 0,
        ..RuntimeConfig::default()
    })?;
    let plugin = load(&off, "chaos", serial()).await?;
    assert_eq!(visit(&off, &plugin).await?, 1);
    assert_eq!(visit(&off, &plugin).await?, 1);
    Ok(())
}

#[tokio::test]
async fn python_and_javascript_components_reuse_instances_by_default() -> Result<()> {
    // Winch compiles the 12–18 MB interpreter images about 3× faster than Cranelift, and the
    // policy does not depend on the code generator (`plugin build` reads components this way).
    let runtime = Runtime::new(RuntimeConfig {
        call_timeout_ms: 10_000,
        compiler: mpreg::config::Compiler::Winch,
        ..RuntimeConfig::default()
    })?;
    for (name, fun, arg, want) in [
        ("pystats", "py_mean", json!([1.0, 2.0, 4.5]), json!(2.5)),
        (
            "jstext",
            "js_slugify",
            json!("Hello, World!"),
            json!("hello-world"),
        ),
    ] {
        let bytes = std::fs::read(mpreg_tests::plugin(name))?;
        let (sha, size) = (mpreg::runtime::sha256_hex(&bytes), bytes.len());
        let compiled = runtime.compile(bytes.into(), name).await?;
        let instantiate = |sandbox| {
            runtime.instantiate(&compiled, name, sandbox, sha.clone(), size, Instant::now())
        };
        let plugin = instantiate(Sandbox::default()).await?;
        assert_eq!(plugin.reuse, InstanceReuse::Serial, "{name}");
        for _ in 0..3 {
            assert_eq!(
                call(&runtime, &plugin, fun, vec![arg.clone()]).await??,
                want
            );
        }
        assert_eq!(plugin.warm.reused(), 2, "{name}");
        // Opting out gives every call a fresh interpreter.
        let never = instantiate(Sandbox {
            instance_reuse: Some(InstanceReuse::Never),
            ..Sandbox::default()
        })
        .await?;
        assert_eq!(call(&runtime, &never, fun, vec![arg.clone()]).await??, want);
        assert_eq!((never.warm.reused(), never.warm.idle()), (0, 0), "{name}");
    }
    Ok(())
}
