//! Topic matching rate: `cargo bench -p mpreg-tests --bench pubsub`.
//!
//! 1k and 10k wildcard subscriptions shaped like a multi-tenant system (`tenant.*.event`,
//! `tenant.#`, `*.region.#`, literal topics); each iteration matches one published topic against
//! all of them, reusing the output and scratch buffers as the node does. Target (issue 5):
//! ≥ 5M matches/s with 10k subscriptions on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpreg::pubsub::topic::{MatchScratch, Pattern, TopicTrie};
use std::hint::black_box;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn subscriptions(n: usize) -> TopicTrie<u32> {
    let mut trie = TopicTrie::new();
    for i in 0..n {
        let text = match i % 4 {
            0 => format!("tenant{}.*.event{}", i % 997, i % 13),
            1 => format!("tenant{}.orders.#", i % 991),
            2 => format!("*.region{}.#", i % 89),
            _ => format!("tenant{}.users.{}.login", i % 983, i),
        };
        let pattern = Pattern::parse(&text, false).expect("pattern");
        trie.insert(&pattern, i as u32);
    }
    trie
}

fn topics() -> Vec<String> {
    (0..256)
        .map(|i| match i % 4 {
            0 => format!("tenant{}.eu.event{}", i * 7 % 997, i % 13),
            1 => format!("tenant{}.orders.created.v2", i * 3 % 991),
            2 => format!("edge.region{}.cpu.load", i % 89),
            _ => format!("tenant{}.users.{}.login", i * 5 % 983, i * 11),
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let topics = topics();
    for n in [1_000, 10_000] {
        let trie = subscriptions(n);
        let mut scratch = MatchScratch::default();
        let mut out = Vec::new();
        let mut found = 0usize;
        let mut group = c.benchmark_group(format!("match/{n}_subscriptions"));
        group.throughput(Throughput::Elements(topics.len() as u64));
        group.bench_function("256 topics", |b| {
            b.iter(|| {
                for t in &topics {
                    out.clear();
                    trie.matches_into(black_box(t), &mut scratch, &mut out);
                    found += out.len();
                }
            })
        });
        group.finish();
        black_box(found);
    }
}

criterion_group!(benches, matching);
criterion_main!(benches);
