//! Criterion benchmarks: names placed per second for each hash and router, replication 1 and 2.
//! `scripts/bench-hashring.sh` compares the same work with carbon's Python router.

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use hashring::{Hash, Node, Ring, Router};
use std::hint::black_box;

fn names(count: usize) -> Vec<String> {
    // Deterministic, realistic-looking dotted names (~45 bytes).
    let words = ["servers", "web", "db", "cpu", "load", "requests", "latency", "p99", "eth0", "disk", "count"];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let r = next();
            format!(
                "{}.{}-{:03}.{}.{}.{}",
                words[(r % 11) as usize],
                words[((r >> 8) % 11) as usize],
                (r >> 16) % 1000,
                words[((r >> 32) % 11) as usize],
                words[((r >> 40) % 11) as usize],
                (r >> 48) % 100
            )
        })
        .collect()
}

fn ring(hash: Hash, router: Router, replicas: usize) -> Ring {
    let nodes: Vec<Node> = (1..=12)
        .map(|i| Node::new(format!("10.0.0.{}", (i + 1) / 2), Some(2003 + (i % 2) as u16), Some(&format!("{i}"))))
        .collect();
    Ring::new(nodes, hash, Some(router), replicas, false).expect("bench ring")
}

fn placement(c: &mut Criterion) {
    let names = names(10_000);
    let mut group = c.benchmark_group("place");
    group.throughput(Throughput::Elements(names.len() as u64));
    let cases = [
        (Hash::CarbonCh, Router::Carbon),
        (Hash::CarbonCh, Router::Relay),
        (Hash::Fnv1aCh, Router::Carbon),
        (Hash::Fnv1aCh, Router::Relay),
        (Hash::JumpFnv1aCh, Router::Relay),
    ];
    for (hash, router) in cases {
        for replicas in [1, 2] {
            let ring = ring(hash, router, replicas);
            let id = BenchmarkId::new(format!("{hash}/{router}"), format!("rf{replicas}"));
            group.bench_with_input(id, &names, |b, names| {
                b.iter(|| {
                    for name in names {
                        for node in ring.nodes_for(black_box(name)) {
                            black_box(node);
                        }
                    }
                })
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    for (hash, router) in [(Hash::CarbonCh, Router::Carbon), (Hash::CarbonCh, Router::Relay)] {
        group.bench_function(format!("{hash}/{router}/12-nodes"), |b| b.iter(|| ring(hash, router, 1)));
    }
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::{build, placement};
    criterion::criterion_group!(benches, placement, build);
}
criterion_main!(group::benches);
