//! Crash safety of the manifest: `ringlb run` is SIGKILLed at a random moment of a stream of
//! `POST /add` and `DELETE /rm` calls, several rounds in a row. After every kill the file on disk
//! must be a complete, valid manifest (`ringlb check` passes) that says exactly what the last
//! acknowledged call said, or what the call in flight at the kill would have made it; never
//! anything else. After a restart on that file, `/rep` and the running replicas equal it.
//!
//! `RINGLB_CRASH_ROUNDS` sets the number of rounds (default 8); `RINGLB_TEST_SEED` replays a run
//! (the seed is printed).

mod common;

use bytes::Bytes;
use common::{Lb, TestRng, check_manifest, manifest, scale_of};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Replica count bounds of the stream (small: every /add starts a process).
const MIN_REPLICAS: usize = 1;
const MAX_REPLICAS: usize = 5;

/// What the stream of admin calls saw when the load balancer died.
#[derive(Debug, Default)]
struct Stream {
    /// Names after the last call answered 200 (in `/rep` order).
    acked: Vec<String>,
    /// Names the call in flight at the kill would have produced, if one was in flight.
    in_flight: Option<(String, Vec<String>)>,
    /// Calls answered 200.
    answered: usize,
    /// Answers other than 200 (none are expected: every call is valid).
    refused: Vec<String>,
}

/// Sends one admin call and returns (status, body), or an error once the load balancer is gone.
async fn call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: String,
) -> Result<(u16, String), String> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn replicas_of(body: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["message"]["replicas"].as_array()?.iter().map(|v| v.as_str().map(String::from)).collect()
}

/// Adds and removes named replicas one call after the other until a call fails (the kill).
async fn stream(addr: SocketAddr, start: Vec<String>, round: usize, seed: u64) -> Stream {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut rng = TestRng(seed);
    let mut state = Stream { acked: start, ..Stream::default() };
    for i in 0.. {
        let names = &state.acked;
        let grow = names.len() <= MIN_REPLICAS || (names.len() < MAX_REPLICAS && rng.below(2) == 0);
        let (method, path, body, next, what) = if grow {
            let name = format!("r{round}n{i}");
            let mut next = names.clone();
            next.push(name.clone());
            ("POST", "/add", format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#), next, format!("add {name}"))
        } else {
            let name = names[rng.below(names.len() as u64) as usize].clone();
            let next: Vec<String> = names.iter().filter(|n| **n != name).cloned().collect();
            ("DELETE", "/rm", format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#), next, format!("rm {name}"))
        };
        state.in_flight = Some((what.clone(), next.clone()));
        match call(&client, addr, method, path, body).await {
            Ok((200, body)) => {
                let answered = replicas_of(&body);
                if answered.as_ref() != Some(&next) {
                    state.refused.push(format!("{what}: answered {body}, expected replicas {next:?}"));
                }
                state.acked = next;
                state.in_flight = None;
                state.answered += 1;
            }
            Ok((status, body)) => {
                // Unexpected; the edit may or may not have been written, so keep it "in flight".
                state.refused.push(format!("{what}: {status} {body}"));
                return state;
            }
            Err(_) => return state,
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_admin_calls_leaves_the_last_acknowledged_manifest() {
    let rounds: usize = std::env::var("RINGLB_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let mut rng = TestRng::from_env_or_clock();
    println!("manifest crash test: {rounds} rounds, seed {:#x} (RINGLB_TEST_SEED replays it)", rng.0);
    let text = manifest("crash", 2, "hostnames: [c0, c1]   # start\n# kept comment\n");
    let mut lb = Lb::start(&text).await;
    let mut names = vec!["c0".to_string(), "c1".to_string()];
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        let addr = lb.addr;
        let task = tokio::spawn(stream(addr, names.clone(), round, rng.next_u64()));
        // The kill moment is what is random here; nothing waits on it.
        let delay = Duration::from_millis(20 + rng.below(1200));
        tokio::time::sleep(delay).await;
        common::signal(lb.pid(), Signal::SIGKILL);
        let killed_at = Instant::now();
        let seen = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the stream of calls did not end after the kill")
            .expect("stream task");
        lb.kill(); // reap
        assert!(seen.refused.is_empty(), "round {round}: unexpected answers: {:?}", seen.refused);

        // The file on disk: complete, valid, and one of the two allowed states.
        let on_disk = lb.read_manifest();
        if let Err(e) = check_manifest(&lb.manifest) {
            panic!("round {round}: ringlb check fails after the kill: {e}\n--- file ---\n{on_disk}");
        }
        let (replicas, hostnames) =
            scale_of(&on_disk).unwrap_or_else(|| panic!("round {round}: no replicas/hostnames:\n{on_disk}"));
        assert_eq!(replicas as usize, hostnames.len(), "round {round}: replicas vs hostnames:\n{on_disk}");
        assert!(
            on_disk.contains("# kept comment") && on_disk.contains("# start"),
            "comments lost:\n{on_disk}"
        );
        let which = if hostnames == seen.acked {
            "the last acknowledged call"
        } else if seen.in_flight.as_ref().is_some_and(|(_, next)| *next == hostnames) {
            "the call in flight"
        } else {
            panic!(
                "round {round}: the file says {hostnames:?}; the last acknowledged state was {:?}, the call in \
                 flight {:?}\n--- file ---\n{on_disk}",
                seen.acked, seen.in_flight
            );
        };
        let leftovers: Vec<String> = std::fs::read_dir(lb.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        outcomes.push(format!(
            "round {round}: killed after {delay:?} and {} answered calls, in flight: {}; the file has {} \
             replicas = {which}{}",
            seen.answered,
            seen.in_flight.as_ref().map_or("nothing", |(what, _)| what.as_str()),
            hostnames.len(),
            if leftovers.is_empty() {
                String::new()
            } else {
                format!(" (temporary files left: {leftovers:?})")
            }
        ));

        // Back up on that file: /rep and the processes equal it.
        lb.start_again(Duration::from_secs(30)).await;
        let rep = lb.get("/rep").await;
        assert_eq!(replicas_of(&rep.body).as_ref(), Some(&hostnames), "round {round}: /rep after restart");
        let mut running: Vec<String> = lb.replica_pids().into_iter().map(|(_, id)| id).collect();
        running.sort();
        let mut expected = hostnames.clone();
        expected.sort();
        assert_eq!(running, expected, "round {round}: replica processes after restart");
        println!("{} (restarted in {:?})", outcomes.last().unwrap(), killed_at.elapsed());
        names = hostnames;
    }
}
