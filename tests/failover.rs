//! Failure handling on the process runtime: a replica killed mid-stream costs no request and is
//! replaced; a killed load balancer leaves no replica behind; SIGTERM stops everything cleanly.

mod common;

use common::{Lb, eventually, manifest};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_costs_no_request_and_is_replaced() {
    let text = manifest("failover", 3, "hostnames: [server1, server2, server3]\n");
    let lb = Arc::new(Lb::start(&text).await);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (lb, stop, sent) = (Arc::clone(&lb), Arc::clone(&stop), Arc::clone(&sent));
        clients.spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match lb.try_request("GET", "/home", "", &[]).await {
                    Ok(answer) if answer.status == 200 => {}
                    other => failures.push(format!("{other:?}")),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            failures
        });
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            sent.load(Ordering::Relaxed) > 200
        })
        .await
    );

    let (victim, _) = lb
        .replica_pids()
        .into_iter()
        .find(|(_, id)| id == "server2")
        .expect("server2 runs");
    let killed_at = Instant::now();
    common::signal(victim, Signal::SIGKILL);

    // Watch the ring: server2 leaves (if a poll catches it) and comes back as a new process.
    let mut left_after = None;
    let mut back_after = None;
    let deadline = killed_at + Duration::from_secs(10);
    while back_after.is_none() && Instant::now() < deadline {
        let ring = lb.ring().await;
        if left_after.is_none() && !ring.contains(&"server2".to_string()) {
            left_after = Some(killed_at.elapsed());
        }
        let replaced = lb
            .replica_pids()
            .iter()
            .any(|(pid, id)| id == "server2" && *pid != victim);
        if replaced && ring.len() == 3 {
            back_after = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = sent.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), || async {
            sent.load(Ordering::Relaxed) > before + 200
        })
        .await
    );
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    while let Some(done) = clients.join_next().await {
        failures.extend(done.unwrap());
    }
    println!(
        "killed server2: seen out of the ring after {left_after:?} (None: the replacement beat the 5 ms poll), \
         replaced and back in the ring after {back_after:?}; {} requests, {} failed",
        sent.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        back_after.is_some(),
        "server2 was not replaced: {}",
        lb.status().await
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

#[tokio::test]
async fn a_sigkilled_load_balancer_leaves_no_replica_behind() {
    let mut lb = Lb::start(&manifest("orphans", 3, "")).await;
    let parent = lb.pid();
    let replicas = common::replicas_started_by(parent);
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    lb.kill();
    let gone = eventually(Duration::from_secs(10), || async {
        replicas.iter().all(|pid| !common::alive(*pid))
    })
    .await;
    assert!(
        gone,
        "replicas outlived the load balancer: {:?}",
        common::replicas_started_by(parent)
    );
}

#[tokio::test]
async fn sigterm_stops_the_load_balancer_and_its_replicas_cleanly() {
    let mut lb = Lb::start(&manifest("sigterm", 2, "")).await;
    let replicas = common::replicas_started_by(lb.pid());
    assert_eq!(replicas.len(), 2);
    let status = lb.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        replicas.iter().all(|pid| !common::alive(*pid)),
        "replicas left after SIGTERM"
    );
}
