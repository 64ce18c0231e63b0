//! Load spreading through the real load balancer: 10,000 requests at N = 3 with the default
//! (maglev) hashing, every one answered 200, each replica within 10% of the mean.

mod common;

use common::{Lb, manifest};
use std::collections::BTreeMap;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_spread_evenly_over_three_replicas() {
    let lb = Arc::new(Lb::start(&manifest("spread", 3, "")).await);
    let total = 10_000;
    let concurrency = 32;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let lb = Arc::clone(&lb);
        tasks.spawn(async move {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let mut failures = Vec::new();
            for _ in (worker..total).step_by(concurrency) {
                match lb.try_request("GET", "/home", "", &[]).await {
                    Ok(answer) if answer.status == 200 => *counts.entry(answer.replica()).or_default() += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            (counts, failures)
        });
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (c, f) = done.unwrap();
        for (name, n) in c {
            *counts.entry(name).or_default() += n;
        }
        failures.extend(f);
    }
    let elapsed = started.elapsed();
    assert!(failures.is_empty(), "{} failed, first: {:?}", failures.len(), failures.first());
    let mean = total as f64 / 3.0;
    println!("{total} requests in {elapsed:?} ({:.0}/s); per replica:", total as f64 / elapsed.as_secs_f64());
    for (name, n) in &counts {
        println!("  {name}: {n} ({:+.1}% of the mean)", (*n as f64 / mean - 1.0) * 100.0);
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), total);
    for (name, n) in &counts {
        assert!((*n as f64 - mean).abs() <= 0.10 * mean, "{name} got {n}, mean {mean:.0}: {counts:?}");
    }
}
