//! What metrics add to one request, in isolation: `cargo bench -p mpreg-tests --bench metrics`.
//!
//! End-to-end throughput on this machine moves ±15 % between runs, more than the 2 % budget of
//! issue 16, so the instrumentation is also measured on its own: exactly the recording a
//! request of a built-in does with metrics on (two clock reads, the function's handles, the
//! request counter, the frame-size histogram) and with them off (the same calls, disabled), and
//! a plugin call's extra phase timings. docs/benchmarks.md ("Issue 16") sets these beside the
//! server CPU per request.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mpreg::metrics::{CallMetrics, Metrics, Phase};
use mpreg::server::metrics::{Outcome, ServerMetrics};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request(calls: &mpreg::metrics::FunctionCalls, server: &ServerMetrics) {
    server.frame(black_box(78));
    let started = calls.enabled().then(Instant::now);
    let took = started.map_or(Duration::ZERO, |t| t.elapsed());
    calls.finished(None, took);
    server.rpc(Outcome::Ok, None);
}

fn bench(c: &mut Criterion) {
    for on in [true, false] {
        let mut m = Metrics::new(on);
        let calls = CallMetrics::default();
        calls.set_enabled(on);
        calls.register(m.registry());
        let f = calls.builtin("echo", "0.1.0");
        let server = ServerMetrics::new(on);
        let label = if on { "on" } else { "off" };
        c.bench_function(&format!("built-in request, metrics {label}"), |b| {
            b.iter(|| request(&f, &server))
        });
        let p = calls.function("identity", "2.1.0");
        c.bench_function(&format!("plugin call phases, metrics {label}"), |b| {
            b.iter(|| {
                let mut t = p.enabled().then(Instant::now);
                for phase in [Phase::QueueWait, Phase::Instantiate, Phase::Run] {
                    if let Some(at) = t {
                        let now = Instant::now();
                        p.phase(phase, now - at);
                        t = Some(now);
                    }
                }
                p.finished(None, Duration::from_micros(30));
            })
        });
    }
    let mut m = Metrics::new(true);
    let calls = CallMetrics::default();
    calls.register(m.registry());
    for i in 0..50 {
        calls
            .function(&format!("f{i}"), "1.0.0")
            .finished(None, Duration::from_micros(40));
    }
    c.bench_function("encode /metrics (50 functions)", |b| {
        b.iter(|| black_box(m.encode(mpreg::metrics::Format::Text)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
