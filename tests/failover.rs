//! Failure handling on the process runtime: a replica killed mid-stream costs no request and is
//! replaced; a killed load balancer leaves no replica behind; SIGTERM stops everything cleanly.

mod common;

use common::{Lb, Load, eventually, manifest, until};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_costs_no_request_and_is_replaced() {
    let text = manifest("failover", 3, "hostnames: [server1, server2, server3]\n");
    let lb = Arc::new(Lb::start(&text).await);
    let load = Load::start(&lb, 4, "/home");
    load.after_more(200).await;

    let (victim, _) = lb.replica_pids().into_iter().find(|(_, id)| id == "server2").expect("server2 runs");
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
        let replaced = lb.replica_pids().iter().any(|(pid, id)| id == "server2" && *pid != victim);
        if replaced && ring.len() == 3 {
            back_after = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    load.after_more(200).await;
    let (sent, failures) = load.finish().await;
    println!(
        "killed server2: seen out of the ring after {left_after:?} (None: the replacement beat the 5 ms poll), \
         replaced and back in the ring after {back_after:?}; {} requests, {} failed",
        sent,
        failures.len()
    );
    assert!(back_after.is_some(), "server2 was not replaced: {}", lb.status().await);
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
}

#[tokio::test]
async fn a_sigkilled_load_balancer_leaves_no_replica_behind() {
    let mut lb = Lb::start(&manifest("orphans", 3, "")).await;
    let parent = lb.pid();
    let replicas = common::replicas_started_by(parent);
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    lb.kill();
    until!(
        Duration::from_secs(10),
        || async { replicas.iter().all(|pid| !common::alive(*pid)) },
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
    assert!(replicas.iter().all(|pid| !common::alive(*pid)), "replicas left after SIGTERM");
}

/// The replica a request id is routed to.
async fn replica_for(lb: &Lb, request_id: &str) -> String {
    lb.request("GET", "/home", "", &[("x-request-id", request_id)]).await.replica()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_finishes_its_requests_before_it_is_stopped() {
    let lb = Arc::new(Lb::start(&manifest("drain", 2, "hostnames: [server1, server2]\n")).await);
    let mut id = 100_000;
    while replica_for(&lb, &id.to_string()).await != "server2" {
        id += 1;
    }
    let (victim, _) = lb.replica_pids().into_iter().find(|(_, n)| n == "server2").expect("server2 runs");
    let slow = {
        let (lb, id) = (Arc::clone(&lb), id.to_string());
        tokio::spawn(async move { lb.request("GET", "/work?ms=1500", "", &[("x-request-id", &id)]).await })
    };
    until!(
        Duration::from_secs(5),
        || async {
            lb.status().await["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "server2" && m["inflight"] == 1)
        },
        "the slow request never reached server2: {}",
        lb.status().await
    );

    let removed = lb.request("DELETE", "/rm", r#"{"n": 1, "hostnames": ["server2"]}"#, &[]).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(lb.ring().await, ["server1"], "out of the ring at once");
    assert!(common::alive(victim), "stopped with a request in flight");

    let answer = slow.await.unwrap();
    assert_eq!((answer.status, answer.replica().as_str()), (200, "server2"), "{}", answer.body);
    until!(
        Duration::from_secs(10),
        || async { !common::alive(victim) },
        "server2 still runs after its last request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_leaves_the_ring_within_a_heartbeat_and_is_replaced() {
    // Heartbeats every 200 ms with a 150 ms timeout; replaced after 3 failures in a row.
    let lb = Lb::start(&manifest("hung", 2, "hostnames: [server1, server2]\n")).await;
    let (victim, _) = lb.replica_pids().into_iter().find(|(_, n)| n == "server1").expect("server1 runs");
    // A request id the ring gives to server1.
    let mut pinned = String::new();
    for id in 100_000..100_100 {
        let answer = lb.request("GET", "/home", "", &[("x-request-id", &id.to_string())]).await;
        if answer.replica() == "server1" {
            pinned = id.to_string();
            break;
        }
    }
    assert!(!pinned.is_empty(), "no request id among 100 went to server1");
    let lb = std::sync::Arc::new(lb);
    let hung_at = Instant::now();
    common::signal(victim, Signal::SIGSTOP);
    // Requests sent to server1 while it hangs: they wait, and when it is killed they must be
    // answered elsewhere, not fail.
    let stuck: Vec<_> = (0..3)
        .map(|_| {
            let (lb, pinned) = (std::sync::Arc::clone(&lb), pinned.clone());
            tokio::spawn(async move { lb.request("GET", "/home", "", &[("x-request-id", &pinned)]).await })
        })
        .collect();
    until!(
        Duration::from_secs(5),
        || async { lb.ring().await == ["server2"] },
        "a hung server1 stayed in the ring: {}",
        lb.status().await
    );
    let out_after = hung_at.elapsed();
    let replaced = eventually(Duration::from_secs(10), || async {
        lb.ring().await.len() == 2
            && lb.replica_pids().iter().any(|(pid, n)| n == "server1" && *pid != victim)
    })
    .await;
    let replaced_after = hung_at.elapsed();
    println!("hung server1: out of the ring after {out_after:?}, replaced and back after {replaced_after:?}");
    assert!(replaced, "server1 was not replaced: {}", lb.status().await);
    // The hung process is killed (SIGTERM cannot reach a stopped process; SIGKILL follows).
    let gone = eventually(Duration::from_secs(10), || async { !common::alive(victim) }).await;
    common::signal(victim, Signal::SIGCONT);
    assert!(gone, "the hung process was left behind");
    assert!(out_after < Duration::from_millis(200 + 150 + 300), "detection took {out_after:?}");
    for request in stuck {
        let answer = request.await.expect("the request task");
        assert_eq!(answer.status, 200, "a request caught by the hung replica failed: {}", answer.body);
    }
}
