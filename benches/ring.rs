//! Lookup cost of every ring (`cargo bench --bench ring`): the first candidate at N = 3, 10, 100
//! for maglev, ring + xxh3 and ring + assignment, and the first three candidates at N = 10.
//! Target: a Maglev lookup (first candidate) under 50 ns.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringlb::ring::{Algorithm, HashFunction, Member, Ring, RingConfig, Selector};
use std::hint::black_box;

fn members(n: usize) -> Vec<Member> {
    (1..=n).map(|i| Member { name: format!("replica-{i}"), id: i as u32 }).collect()
}

/// The rings benchmarked, each with room for `n` members (100 x 9 virtual nodes need more than the
/// exercise's 512 slots).
fn configs(n: usize) -> [(&'static str, RingConfig); 3] {
    let slots = if n * 9 <= 512 { 512 } else { 4096 };
    let ring = RingConfig { algorithm: Algorithm::Ring, slots, ..RingConfig::default() };
    [
        ("maglev", RingConfig::default()),
        ("ring-xxh3", ring),
        ("ring-assignment", RingConfig { function: HashFunction::Assignment, ..ring }),
    ]
}

/// Keys as the proxy sees them: a new one each iteration, so the table is read at spread entries.
fn next_key(key: &mut u64) -> u64 {
    *key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    *key
}

fn first_candidate(c: &mut Criterion) {
    let mut group = c.benchmark_group("first_candidate");
    for n in [3usize, 10, 100] {
        for (name, config) in configs(n) {
            let ring = Ring::build(&config, &members(n)).expect("the configs hold n members");
            let mut key = 100_000u64;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| black_box(&ring).candidates(black_box(next_key(&mut key))).next())
            });
        }
    }
    group.finish();
}

fn three_candidates(c: &mut Criterion) {
    let mut group = c.benchmark_group("three_candidates");
    for (name, config) in configs(10) {
        let ring = Ring::build(&config, &members(10)).expect("the configs hold 10 members");
        let mut key = 100_000u64;
        group.bench_function(BenchmarkId::new(name, 10), |b| {
            b.iter(|| black_box(&ring).candidates(black_box(next_key(&mut key))).take(3).sum::<usize>())
        });
    }
    group.finish();
}

criterion_group!(benches, first_candidate, three_candidates);
criterion_main!(benches);
