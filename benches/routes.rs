//! The cost of finding a request's service (`cargo bench --bench routes`): one service that takes
//! every request (today's single cluster), and 10 and 50 services routed by host, for the first,
//! the last and an unknown host, with the `:port` a browser sends. The routing cost `make bench`
//! measures end to end is this, once per request.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringlb::routes::{Match, RouteTable};
use std::hint::black_box;

/// `n` services, `service-<k>.example` each.
fn by_host(n: usize) -> RouteTable {
    let routes = (0..n).map(|k| Match::new(Some(&format!("service-{k}.example")), None).expect("a host"));
    RouteTable::new(routes).expect("distinct hosts")
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let single = RouteTable::new([Match::default()]).expect("one route");
    group.bench_function("one-service", |b| {
        b.iter(|| black_box(&single).route(black_box(Some(b"shop.example:5000")), black_box(b"/home")))
    });
    for n in [10usize, 50] {
        let table = by_host(n);
        let first = "service-0.example:5000".to_owned();
        let last = format!("Service-{}.example:5000", n - 1);
        for (what, host) in
            [("first", first.as_str()), ("last", last.as_str()), ("unknown", "other.test:5000")]
        {
            group.bench_function(BenchmarkId::new(format!("by-host-{what}"), n), |b| {
                b.iter(|| black_box(&table).route(black_box(Some(host.as_bytes())), black_box(b"/home")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
