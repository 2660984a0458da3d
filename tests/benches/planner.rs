//! Planner and substitution cost: `cargo bench -p mpreg-tests --bench planner`.

use criterion::{Criterion, criterion_group, criterion_main};
use mpreg::protocol::RpcCommand;
use mpreg::rpc::plan::plan;
use mpreg::rpc::substitute::substitute;
use serde_json::{Map, Value, json};
use std::hint::black_box;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn chain(n: usize) -> Vec<RpcCommand> {
    (0..n)
        .map(|i| {
            let args = if i == 0 {
                vec![json!("x")]
            } else {
                vec![json!(format!("c{}", i - 1))]
            };
            RpcCommand::new(format!("c{i}"), "identity", args)
        })
        .collect()
}

fn fan_out(n: usize) -> Vec<RpcCommand> {
    let mut cmds: Vec<RpcCommand> = (0..n)
        .map(|i| RpcCommand::new(format!("p{i}"), "identity", vec![json!(format!("part{i}"))]))
        .collect();
    let refs: Vec<Value> = (0..n).map(|i| json!(format!("p{i}"))).collect();
    cmds.push(RpcCommand::new(
        "all",
        "join",
        vec![Value::Array(refs), json!(",")],
    ));
    cmds
}

/// 100 commands, each depending on up to three earlier ones (deterministic pseudo-random).
fn dag(n: usize) -> Vec<RpcCommand> {
    let mut s: u64 = 42;
    (0..n)
        .map(|i| {
            let mut args = Vec::new();
            for _ in 0..3 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i > 0 {
                    args.push(json!({"dep": format!("n{}.field", (s >> 33) as usize % i)}));
                }
            }
            RpcCommand::new(format!("n{i}"), "f", args)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    for (name, cmds) in [
        ("plan 1 command", chain(1)),
        ("plan 3-step chain", chain(3)),
        ("plan 10-way fan-out", fan_out(10)),
        ("plan 100-command DAG", dag(100)),
    ] {
        c.bench_function(name, |b| b.iter(|| plan(black_box(&cmds)).expect("plans")));
    }
    let Value::Object(results) =
        json!({"d": {"inner": {"value": 5}, "list": [1, 2, 3]}, "first": "hello"})
    else {
        unreachable!()
    };
    let results: Map<String, Value> = results;
    let args = json!(["d.inner.value", "d.list", "d.missing", "d.inner", {"k": "first"}]);
    c.bench_function("substitute worked example 2", |b| {
        b.iter(|| {
            let mut a = args.clone();
            substitute(&mut a, &results);
            a
        })
    });
}

criterion_group!(planner, benches);
criterion_main!(planner);
