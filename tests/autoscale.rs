//! Autoscaling end to end on the process runtime: a load ramp grows the cluster, stopping it
//! shrinks the cluster back to `min` after the scale-down window, with no failed request; an idle
//! cluster scales to zero, and the next request is held through the cold start and answered.

mod common;

use common::{Lb, Load, eventually, manifest, until};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_ramp_grows_the_cluster_and_it_shrinks_back_without_a_failed_request() {
    let text = manifest(
        "scale",
        1,
        "autoscale:\n  min: 1\n  max: 4\n  target_inflight: 3\n  scale_up_window: 1s\n  scale_down_window: 3s\n  interval: 500ms\n",
    );
    let lb = Arc::new(Lb::start(&text).await);
    // 12 clients each keeping one 100 ms request in flight: about 12 in flight, 4 replicas' worth.
    let load = Load::start(&lb, 12, "/work?ms=100");
    let started = Instant::now();
    let grew = eventually(Duration::from_secs(20), || async { lb.ring().await.len() == 4 }).await;
    let grew_after = started.elapsed();
    let (sent, failures) = load.finish().await;
    assert!(grew, "did not grow to 4: {}", lb.status().await);
    let stopped = Instant::now();
    let shrank = eventually(Duration::from_secs(20), || async {
        lb.ring().await.len() == 1 && lb.status().await["replicas"].as_array().is_some_and(|r| r.len() == 1)
    })
    .await;
    println!(
        "grew 1 -> 4 in {grew_after:?}; back to 1 {:?} after the load stopped; {} requests, {} failed",
        stopped.elapsed(),
        sent,
        failures.len()
    );
    assert!(shrank, "did not shrink back to 1: {}", lb.status().await);
    // The scale-down window (3 s) counts from the last high recommendation, and one is made per
    // decision (every 500 ms): the last one before the load stopped may be up to 500 ms old, so
    // the shrink comes 2.5 s after the load stopped at the earliest. (Asserting 3 s failed in 2
    // of 5 runs on a loaded machine, at 2.82 s and 2.91 s.)
    assert!(stopped.elapsed() >= Duration::from_millis(2500), "shrank before the 3 s window");
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_scales_to_zero_and_the_next_request_waits_for_a_cold_start() {
    let text = manifest(
        "zero",
        1,
        "autoscale:\n  min: 0\n  max: 2\n  scale_down_window: 1s\n  interval: 200ms\n  hold_timeout: 20s\n",
    );
    let lb = Lb::start(&text).await;
    until!(
        Duration::from_secs(15),
        || async {
            lb.status().await["replicas"].as_array().is_some_and(|r| r.is_empty())
                && lb.replica_pids().is_empty()
        },
        "did not scale to zero: {}",
        lb.status().await
    );
    assert_eq!(lb.get("/rep").await.json()["message"]["N"], 0);

    let cold = Instant::now();
    let answer = lb.get("/home").await;
    let cold_start = cold.elapsed();
    println!("cold start from zero replicas: first answer after {cold_start:?}");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("Hello from Server: zero-1"), "{}", answer.body);
    assert_eq!(lb.ring().await, ["zero-1"]);
    // A process replica starts in milliseconds and is probed every 50 ms until it answers; the
    // held request goes to it at once (measured about 30 ms). 5 s leaves a loaded machine ample
    // room and stays well under the 20 s `hold_timeout`, after which the request would be a 503.
    assert!(cold_start < Duration::from_secs(5), "the cold start took {cold_start:?}");
}
