//! The hardened edge, on both engines: a client that sends its head (or body) too slowly loses
//! its connection, connections over `proxy.max_connections` get a 503, a replica that does not
//! answer in time is a 504; and all the while other clients are served.

mod common;

use common::{Lb, until};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn manifest(engine: &str, proxy_extra: &str) -> String {
    common::manifest(&format!("edge-{engine}"), 2, "")
        + &format!("proxy:\n  engine: {engine}\n  timeout: 400ms\n{proxy_extra}")
}

/// Reads until the load balancer closes the connection; `None` if it did not within `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut all)).await {
        Ok(_) => Some(all),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_loses_its_connection_and_others_are_served() {
    for engine in ["fast", "hyper"] {
        let lb = Lb::start(&manifest(engine, "  client_timeout: 500ms\n")).await;
        let mut slow = TcpStream::connect(lb.addr).await.unwrap();
        slow.write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\nX-Slow: ").await.unwrap();
        let started = Instant::now();
        // Others are served while the slow head is pending.
        for _ in 0..5 {
            assert_eq!(lb.get("/home").await.status, 200, "{engine}");
        }
        let answer = until_closed(&mut slow, Duration::from_secs(5)).await;
        let answer = answer.unwrap_or_else(|| panic!("{engine}: the slow client kept its connection"));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(400), "{engine}: closed after {waited:?}");
        if engine == "fast" {
            assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "), "{answer:?}");
        }
        println!("{engine}: a stalled head closed after {waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_loses_its_connection_on_the_fast_path() {
    let lb = Lb::start(&manifest("fast", "  client_timeout: 500ms\n")).await;
    let mut slow = TcpStream::connect(lb.addr).await.unwrap();
    // A head that says 100 000 bytes follow, then a first piece, then nothing.
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    slow.write_all(&[b'x'; 20_000]).await.unwrap();
    let started = Instant::now();
    assert_eq!(lb.get("/home").await.status, 200);
    assert!(
        until_closed(&mut slow, Duration::from_secs(5)).await.is_some(),
        "the stalled upload kept its connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(lb.get("/home").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_a_503() {
    for engine in ["fast", "hyper"] {
        let lb = Lb::start(&manifest(engine, "  max_connections: 3\n")).await;
        // Three held open (the harness's own client may hold one more): the next is over the limit.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(lb.addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(lb.addr).await.unwrap();
        let _ = extra.write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n").await;
        let answer =
            until_closed(&mut extra, Duration::from_secs(5)).await.expect("the extra connection is closed");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503 "), "{engine}: {text}");
        assert!(text.contains("proxy.max_connections"), "{engine}: {text}");
        assert!(text.contains("retry-after: 1"), "{engine}: {text}");
        // Once they close, a new connection is served.
        drop(held);
        until!(
            Duration::from_secs(5),
            || async {
                let Ok(mut stream) = TcpStream::connect(lb.addr).await else { return false };
                let request = b"GET /home HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
                if stream.write_all(request).await.is_err() {
                    return false;
                }
                let answer = until_closed(&mut stream, Duration::from_secs(2)).await.unwrap_or_default();
                answer.starts_with(b"HTTP/1.1 200 ")
            },
            "{engine}: no connection was served after one closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_answer_in_time_is_a_504_and_others_are_served() {
    for engine in ["fast", "hyper"] {
        let lb = Lb::start(&manifest(engine, "")).await;
        let slow = lb.get("/work?ms=3000").await;
        assert_eq!(slow.status, 504, "{engine}: {}", slow.body);
        assert!(slow.body.contains("did not answer within 400ms"), "{engine}: {}", slow.body);
        assert_eq!(lb.get("/home").await.status, 200, "{engine}");
    }
}
