//! How `ringlb run` uses its threads, seen from outside the process: `--threads N` (here through
//! `RINGLB_THREADS`) runs N proxy threads that each serve a share of the connections (thread per
//! core), `--scheduler shared` runs tokio's work-stealing scheduler instead, and `--threads 1`
//! serves on the thread that runs the controller. Threads are read from `/proc/<pid>/task`.

mod common;

use bytes::Bytes;
use common::Lb;
use http_body_util::{BodyExt, Empty};

/// The names of `pid`'s threads, with the CPU time each has had (nanoseconds, from schedstat).
fn threads_of(pid: u32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the load balancer's threads");
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(name), Ok(schedstat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("schedstat")))
        else {
            continue; // a thread that ended meanwhile
        };
        let ran = schedstat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        threads.push((name.trim().to_owned(), ran));
    }
    threads
}

/// The proxy threads of `pid` (`ringlb-proxy-<k>`) with their CPU time, by name.
fn proxy_threads(pid: u32) -> std::collections::BTreeMap<String, u64> {
    threads_of(pid).into_iter().filter(|(name, _)| name.starts_with("ringlb-proxy-")).collect()
}

/// `connections` clients on a connection each, every one sending `requests` GETs one after the
/// other; panics on any failed request.
async fn keepalive_load(lb: &Lb, connections: usize, requests: usize) {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let addr = lb.addr;
        clients.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            for _ in 0..requests {
                let request = http::Request::get("/home")
                    .header("host", "lb")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let answer = sender.send_request(request).await.expect("an answer on the same connection");
                assert_eq!(answer.status(), 200);
                answer.into_body().collect().await.expect("the body");
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("a client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_threads_run_three_proxy_threads_that_each_serve_a_share_of_the_connections() {
    let lb = Lb::start_with_env(&common::manifest("threads", 2, ""), &[("RINGLB_THREADS", "3")]).await;
    let before = proxy_threads(lb.pid());
    assert_eq!(
        before.keys().cloned().collect::<Vec<_>>(),
        ["ringlb-proxy-0", "ringlb-proxy-1", "ringlb-proxy-2"],
        "threads: {:?}",
        threads_of(lb.pid())
    );
    keepalive_load(&lb, 30, 150).await;
    let after = proxy_threads(lb.pid());
    let served: Vec<(String, u64)> = after
        .iter()
        .map(|(name, ran)| (name.clone(), ran - before.get(name).copied().unwrap_or(0)))
        .collect();
    let total: u64 = served.iter().map(|(_, ran)| ran).sum();
    // Each thread serves the connections it accepted; one that accepted none would only have woken
    // for the accepts it lost, a sliver of the CPU time of serving 4,500 requests.
    for (name, ran) in &served {
        assert!(
            *ran * 20 >= total,
            "{name} served too little of the load to hold any connection: {served:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shared_scheduler_serves_on_tokio_workers_with_no_proxy_threads() {
    let lb = Lb::start_with_env(
        &common::manifest("shared", 2, ""),
        &[("RINGLB_THREADS", "2"), ("RINGLB_SCHEDULER", "shared")],
    )
    .await;
    keepalive_load(&lb, 8, 50).await;
    let threads = threads_of(lb.pid());
    assert!(proxy_threads(lb.pid()).is_empty(), "threads: {threads:?}");
    // tokio names its workers and its blocking threads alike; the two workers are among them.
    let tokio_threads = threads.iter().filter(|(name, _)| name.starts_with("tokio-rt-worker")).count();
    assert!(tokio_threads >= 2, "tokio's workers: {threads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_thread_serves_with_no_proxy_threads() {
    let lb = Lb::start_with_env(&common::manifest("one", 2, ""), &[("RINGLB_THREADS", "1")]).await;
    keepalive_load(&lb, 8, 50).await;
    let threads = threads_of(lb.pid());
    assert!(proxy_threads(lb.pid()).is_empty(), "threads: {threads:?}");
}
