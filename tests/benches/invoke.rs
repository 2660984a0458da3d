//! One plugin invocation (fresh instance + call, JSON in and out) against the same logic as a
//! native Rust function: `cargo bench -p mpreg-tests --bench invoke`.
//!
//! Each plugin function is measured twice: "to result" is what the caller waits for (the node
//! resets the instance's slot after the reply is sent, see `runtime::teardown`); "+ teardown"
//! adds that reset, i.e. the CPU a call costs in all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mpreg::runtime::{CallContext, LoadedPlugin, PluginFunction, Runtime, RuntimeConfig, teardown};
use serde_json::{Map, Value, json};
use std::hint::black_box;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `text.identity` does, natively, including the JSON conversion the host does around it.
fn native_identity(args: &[Value]) -> Value {
    let s: String = args
        .first()
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_default();
    Value::String(black_box(s))
}

/// What `math.add` does, natively.
fn native_add(args: &[Value]) -> Value {
    let a = args[0].as_i64().unwrap_or(0) as i32;
    let b = args[1].as_i64().unwrap_or(0) as i32;
    json!(black_box(a).wrapping_add(b))
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let load = |name: &str| {
        let bytes =
            std::fs::read(mpreg_tests::plugin(name)).expect("plugin built by the build script");
        Arc::new(rt.block_on(runtime.load(bytes, name)).expect("loads"))
    };
    let text = load("text");
    let math = load("math");

    let identity = text
        .functions
        .iter()
        .find(|f| f.name == "identity")
        .expect("identity");
    let args = vec![json!("hello")];
    c.bench_function("native identity (json in/out)", |b| {
        b.iter(|| native_identity(black_box(&args)))
    });
    plugin_benches(c, &rt, &runtime, "identity", &text, identity, &args);

    let add = math
        .functions
        .iter()
        .find(|f| f.name == "add")
        .expect("add");
    let args = vec![json!(2), json!(3)];
    c.bench_function("native add (json in/out)", |b| {
        b.iter(|| native_add(black_box(&args)))
    });
    plugin_benches(c, &rt, &runtime, "add", &math, add, &args);
}

/// The two measurements of one plugin function (see the module docs).
fn plugin_benches(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    label: &str,
    plugin: &LoadedPlugin,
    func: &PluginFunction,
    args: &[Value],
) {
    let kwargs = Map::new();
    let request: Arc<str> = "bench".into();
    let call = || {
        rt.block_on(runtime.invoke(
            plugin,
            func,
            args,
            &kwargs,
            CallContext::isolated(request.clone()),
        ))
        .expect("call")
    };
    c.bench_function(
        &format!("plugin {label}: fresh instance + call, to result"),
        |b| {
            b.iter_custom(|iters| {
                let mut waited = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let out = call();
                    waited += started.elapsed();
                    black_box(out);
                    teardown::run_deferred();
                }
                waited
            })
        },
    );
    c.bench_function(
        &format!("plugin {label}: fresh instance + call + teardown"),
        |b| {
            b.iter(|| {
                let out = call();
                teardown::run_deferred();
                out
            })
        },
    );
}

criterion_group!(invoke, benches);
criterion_main!(invoke);
