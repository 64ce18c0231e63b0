//! Upgrades and tunnels through both engines, with a WebSocket client and server this project did
//! not write (Python's `websockets`, `tests/clients/`): messages both ways, a tunnel silent for 60 s
//! under the idle timeout and closed after it, a replica drained with a tunnel open, a refused
//! upgrade passed through, and `CONNECT` refused.

mod common;

use common::{JsonLines, Lb, client_script, test_python, until};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ENGINES: [&str; 2] = ["fast", "hyper"];

/// A cluster of `replicas` WebSocket echo servers (`ws_echo.py`) on the process runtime, served by
/// `engine`, with `extra_proxy` under `proxy:`.
fn websocket_manifest(name: &str, replicas: u32, engine: &str, extra_proxy: &str) -> String {
    let python = test_python();
    let script = client_script("ws_echo.py");
    format!(
        "name: {name}\nreplicas: {replicas}\nlisten: 127.0.0.1:0\nreplica:\n  runtime: process\n  \
         command: ['{}', '{}', --port, '{{port}}', --name, '{{name}}']\n  start_timeout: 10s\n  \
         drain_timeout: 3s\n  stop_timeout: 2s\nhealth:\n  kind: tcp\n  interval: 200ms\n  timeout: 500ms\n\
         proxy:\n  engine: {engine}\n{extra_proxy}",
        python.display(),
        script.display()
    )
}

/// Starts `ws_client.py` against `lb` with `scenario` and `amount`.
fn ws_client(lb: &Lb, scenario: &str, amount: &str) -> JsonLines {
    let url = format!("ws://{}/chat", lb.addr);
    JsonLines::spawn(
        &test_python(),
        &[client_script("ws_client.py").to_str().expect("utf-8 path"), &url, scenario, amount],
    )
}

/// The replica a WebSocket client reported talking to (its first line).
async fn replica_of(client: &mut JsonLines) -> String {
    let line = client.next_with("replica", Duration::from_secs(20)).await;
    line["replica"].as_str().expect("a name").to_owned()
}

/// The value of the metric line that starts with `series` (name and labels), 0 if absent.
async fn metric(lb: &Lb, series: &str) -> f64 {
    let text = lb.get("/_ringlb/metrics").await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A replica's in-flight count in the status JSON.
async fn inflight_of(lb: &Lb, replica: &str) -> u64 {
    let status = lb.status().await;
    status["replicas"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == replica))
        .and_then(|r| r["inflight"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_cross_both_engines_and_the_tunnel_counts_in_flight() {
    for engine in ENGINES {
        let lb = Lb::start(&websocket_manifest("ws", 2, engine, "")).await;
        let mut client = ws_client(&lb, "echo", "300");
        let replica = replica_of(&mut client).await;
        assert!(lb.ring().await.contains(&replica), "{engine}: answered by {replica}, not in the ring");
        let done = client.next_with("echoed", Duration::from_secs(30)).await;
        assert_eq!(done["echoed"], 300, "{engine}: {:?}", client.seen);
        assert!(client.wait(Duration::from_secs(10)).await.success(), "{engine}: {:?}", client.seen);
        until!(
            Duration::from_secs(5),
            || async { metric(&lb, "ringlb_tunnels_closed_total{reason=\"closed\"}").await == 1.0 },
            "{engine}: the closed tunnel was not counted: {}",
            lb.get("/_ringlb/metrics").await.body
        );
        assert_eq!(metric(&lb, "ringlb_tunnels_open").await, 0.0, "{engine}");

        // While a tunnel is open it is a request in flight to its replica.
        let mut client = ws_client(&lb, "chatter", "100");
        let replica = replica_of(&mut client).await;
        client.next_with("echoed", Duration::from_secs(10)).await;
        assert_eq!(inflight_of(&lb, &replica).await, 1, "{engine}: {}", lb.status().await);
        assert_eq!(metric(&lb, "ringlb_tunnels_open").await, 1.0, "{engine}");
        drop(client);
        until!(
            Duration::from_secs(5),
            || async { inflight_of(&lb, &replica).await == 0 },
            "{engine}: the closed tunnel is still in flight: {}",
            lb.status().await
        );
    }
}

/// A tunnel silent for 60 s under a 62 s idle timeout still carries messages; after one, 62 s of
/// silence close it.
async fn survives_60_s_of_silence_and_closes_after_the_idle_timeout(engine: &str) {
    let lb = Lb::start(&websocket_manifest("idle", 1, engine, "  tunnel_idle_timeout: 62s\n")).await;
    let mut client = ws_client(&lb, "silence", "60");
    client.next_with("replica", Duration::from_secs(20)).await;
    let after = client.next_with("after_silence", Duration::from_secs(75)).await;
    assert_eq!(after["after_silence"], "ok", "{engine}: {:?}", client.seen);
    let closed = client.next_with("closed_after", Duration::from_secs(75)).await;
    let closed_after = closed["closed_after"].as_f64().expect("seconds");
    assert!(
        (61.5..66.0).contains(&closed_after),
        "{engine}: the idle tunnel closed {closed_after:.1} s after its last message, not after 62 s"
    );
    assert_eq!(metric(&lb, "ringlb_tunnels_closed_total{reason=\"idle\"}").await, 1.0, "{engine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_fast_path_a_tunnel_survives_60_s_of_silence_and_closes_after_the_idle_timeout() {
    survives_60_s_of_silence_and_closes_after_the_idle_timeout("fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_hyper_path_a_tunnel_survives_60_s_of_silence_and_closes_after_the_idle_timeout() {
    survives_60_s_of_silence_and_closes_after_the_idle_timeout("hyper").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_drained_with_an_open_tunnel_keeps_it_for_its_drain_timeout_then_closes_it() {
    for engine in ENGINES {
        let lb = Lb::start(&websocket_manifest("drain", 2, engine, "")).await;
        let mut client = ws_client(&lb, "chatter", "50");
        let replica = replica_of(&mut client).await;
        client.next_with("echoed", Duration::from_secs(10)).await;
        let body = format!(r#"{{"n": 1, "hostnames": ["{replica}"]}}"#);
        let removed = lb.request("DELETE", "/rm", &body, &[("content-type", "application/json")]).await;
        assert_eq!(removed.status, 200, "{engine}: {removed:?}");
        let drain_began = Instant::now();
        // The tunnel keeps carrying messages while its replica drains...
        let before = client.next_with("echoed", Duration::from_secs(5)).await["echoed"].as_u64();
        let later = client.next_with("echoed", Duration::from_secs(5)).await["echoed"].as_u64();
        assert!(later > before, "{engine}: {:?}", client.seen);
        // ...and is closed when the drain timeout (3 s) is over.
        let closed = client.next_with("closed", Duration::from_secs(10)).await;
        let after = drain_began.elapsed();
        assert!(
            after >= Duration::from_millis(2500) && after < Duration::from_secs(6),
            "{engine}: the tunnel closed {after:?} after the drain began, not after drain_timeout 3s: {closed}"
        );
        until!(
            Duration::from_secs(10),
            || async { lb.child_commands().len() == 1 },
            "{engine}: the drained replica still runs: {:?}",
            lb.child_commands()
        );
        assert_eq!(metric(&lb, "ringlb_tunnels_closed_total{reason=\"drained\"}").await, 1.0, "{engine}");
        // A new tunnel goes to the replica that is left.
        let mut next = ws_client(&lb, "echo", "5");
        let other = next.next_with("replica", Duration::from_secs(20)).await;
        assert_ne!(other["replica"].as_str(), Some(replica.as_str()), "{engine}");
        next.next_with("echoed", Duration::from_secs(10)).await;
    }
}

/// Sends `raw` on `stream` and reads one answer of `Content-Length` framing: its head and body.
async fn exchange(stream: &mut TcpStream, raw: &str) -> (String, String) {
    stream.write_all(raw.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    let deadline = Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed before a whole answer: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return (head.to_owned(), body.to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_passes_the_answer_through_and_connect_is_a_405() {
    for engine in ENGINES {
        // ringlb's own replica server answers an upgrade request as a plain GET.
        let lb = Lb::start(&common::manifest("refuse", 1, &format!("proxy:\n  engine: {engine}\n"))).await;
        let mut stream = TcpStream::connect(lb.addr).await.expect("connect");
        let (head, body) = exchange(
            &mut stream,
            "GET /home HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{engine}: {head}");
        let body: Value = serde_json::from_str(&body).expect("the replica's JSON");
        assert_eq!(body["status"], "successful", "{engine}: {body}");
        // Not a tunnel: the same connection serves the next request.
        let (head, _) = exchange(&mut stream, "GET /home HTTP/1.1\r\nHost: lb\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{engine}: {head}");

        let mut stream = TcpStream::connect(lb.addr).await.expect("connect");
        let (head, body) =
            exchange(&mut stream, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 405 "), "{engine}: {head}");
        let body: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(body["status"], "failure", "{engine}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("CONNECT")), "{engine}: {body}");
    }
}
