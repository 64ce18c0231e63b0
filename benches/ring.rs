//! One lookup on each ring at N = 3, 10, 100 (`cargo bench --bench ring`).
//! Target from the core issue: a Maglev lookup (first candidate) under 50 ns.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringlb::ring::{Algorithm, HashFunction, Member, Ring, RingConfig, Selector};
use std::hint::black_box;

fn members(n: usize) -> Vec<Member> {
    (1..=n).map(|i| Member { name: format!("server{i}"), id: i as u32 }).collect()
}

fn configs() -> Vec<(&'static str, RingConfig)> {
    let ring = RingConfig { algorithm: Algorithm::Ring, ..RingConfig::default() };
    vec![
        ("maglev", RingConfig::default()),
        // 100 members x 9 virtual nodes need more than the exercise's 512 slots.
        ("ring-xxh3", RingConfig { slots: 4096, ..ring }),
        ("ring-assignment", RingConfig { slots: 4096, function: HashFunction::Assignment, ..ring }),
    ]
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("first_candidate");
    for (name, config) in configs() {
        for n in [3usize, 10, 100] {
            let ring = Ring::build(&config, &members(n)).expect("valid ring");
            let mut key = 100_000u64;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    key = key.wrapping_add(7919);
                    black_box(ring.candidates(black_box(key)).next())
                })
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("three_candidates");
    for (name, config) in configs() {
        let ring = Ring::build(&config, &members(10)).expect("valid ring");
        let mut key = 100_000u64;
        group.bench_function(BenchmarkId::new(name, 10), |b| {
            b.iter(|| {
                key = key.wrapping_add(7919);
                black_box(ring.candidates(black_box(key)).take(3).sum::<usize>())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
