//! HTTP/2 from clients with prior knowledge (`h2c`), on both engines (the fast path hands an
//! HTTP/2 connection to hyper at its preface), with clients this project did not write: curl,
//! h2load (nghttp2) and Python's `h2` (`tests/clients/h2_client.py`). The exercise's API over h2,
//! each stream routed on its own, the rapid-reset and CONTINUATION-flood protections beside a
//! normal client, and the RFC 9113 section 8.2 shapes refused before they reach a replica.

mod common;

use common::{JsonLines, Lb, client_script, test_python};
use serde_json::Value;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ENGINES: [&str; 2] = ["fast", "hyper"];

fn h2_manifest(name: &str, replicas: u32, engine: &str) -> String {
    common::manifest(name, replicas, &format!("proxy:\n  engine: {engine}\n"))
}

/// `curl --http2-prior-knowledge` with `args`: the HTTP version it used, the status and the body.
fn curl_h2(lb: &Lb, method: &str, path: &str, body: Option<&str>) -> (String, u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--http2-prior-knowledge", "--max-time", "10", "-X", method]);
    command.args(["-w", "\n%{http_version} %{http_code}"]);
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "--data-binary", body]);
    }
    command.arg(format!("http://{}{path}", lb.addr));
    let out = command.output().expect("curl runs");
    assert!(out.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').expect("curl's -w line");
    let (version, status) = last.split_once(' ').expect("version and status");
    (version.to_owned(), status.parse().expect("a status"), body.to_owned())
}

/// Runs `h2_client.py` with `args` to its end: its one line.
async fn h2_client(lb: &Lb, args: &[&str]) -> Value {
    let port = lb.addr.port().to_string();
    let script = client_script("h2_client.py");
    let mut all = vec![script.to_str().expect("utf-8 path"), "127.0.0.1", &port];
    all.extend_from_slice(args);
    let mut client = JsonLines::spawn(&test_python(), &all);
    let line = client.next(Duration::from_secs(60)).await;
    assert!(client.wait(Duration::from_secs(10)).await.success(), "h2_client {args:?}: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_h2c_gets_the_replicas_and_the_exercises_rep_add_rm_exactly() {
    for engine in ENGINES {
        let lb = Lb::start(&h2_manifest("h2", 2, engine)).await;
        let (version, status, body) = curl_h2(&lb, "GET", "/home", None);
        assert_eq!((version.as_str(), status), ("2", 200), "{engine}: {body}");
        let home: Value = serde_json::from_str(&body).expect("JSON");
        assert!(
            home["message"].as_str().is_some_and(|m| m.starts_with("Hello from Server: h2-")),
            "{engine}: {body}"
        );
        let (_, status, body) = curl_h2(&lb, "GET", "/rep", None);
        assert_eq!(status, 200);
        assert_eq!(
            body, r#"{"message": {"N": 2, "replicas": ["h2-1", "h2-2"]}, "status": "successful"}"#,
            "{engine}"
        );
        let (_, status, body) = curl_h2(&lb, "POST", "/add", Some(r#"{"n": 1, "hostnames": ["extra"]}"#));
        assert_eq!(status, 200, "{engine}: {body}");
        assert_eq!(
            body, r#"{"message": {"N": 3, "replicas": ["h2-1", "h2-2", "extra"]}, "status": "successful"}"#,
            "{engine}"
        );
        let (_, status, body) = curl_h2(&lb, "DELETE", "/rm", Some(r#"{"n": 1, "hostnames": ["extra"]}"#));
        assert_eq!(status, 200, "{engine}: {body}");
        assert_eq!(
            body, r#"{"message": {"N": 2, "replicas": ["h2-1", "h2-2"]}, "status": "successful"}"#,
            "{engine}"
        );
        let (_, status, body) = curl_h2(&lb, "DELETE", "/rm", Some(r#"{"n": 1, "hostnames": ["nobody"]}"#));
        assert_eq!(status, 404, "{engine}: {body}");
        let (_, status, body) = curl_h2(&lb, "POST", "/echo?x=1", Some("payload"));
        assert_eq!((status, body.as_str()), (200, "payload"), "{engine}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_5000_requests_over_4_connections_of_10_streams_with_0_failed() {
    for engine in ENGINES {
        let lb = Lb::start(&h2_manifest("load", 2, engine)).await;
        let out = Command::new("h2load")
            .args(["-n", "5000", "-c", "4", "-m", "10", &format!("http://{}/home", lb.addr)])
            .output()
            .expect("h2load runs (Debian's nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{engine}: {text}");
        assert!(
            text.contains("5000 succeeded, 0 failed, 0 errored, 0 timeout"),
            "{engine}: h2load says: {text}"
        );
        assert!(text.contains("status codes: 5000 2xx"), "{engine}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_is_routed_by_its_own_key_as_over_http_1_1() {
    let lb = Lb::start(&h2_manifest("streams", 3, "fast")).await;
    let line = h2_client(&lb, &["streams", "40"]).await;
    let replicas: Vec<String> = serde_json::from_value(line["replicas"].clone()).expect("names");
    let statuses = line["statuses"].as_array().expect("statuses");
    assert!(statuses.iter().all(|s| s == "200"), "{line}");
    let distinct: std::collections::BTreeSet<&String> = replicas.iter().collect();
    assert_eq!(distinct.len(), 3, "40 keys on one connection reached {distinct:?}");
    // The stream with request id k went where an HTTP/1.1 request with that id goes.
    for (i, replica) in replicas.iter().enumerate() {
        let id = (100_000 + i * 7919).to_string();
        let answer = lb.request("GET", "/home", "", &[("x-request-id", &id)]).await;
        assert_eq!(&answer.replica(), replica, "request id {id}");
    }
}

/// The value of the metric line that starts with `series`, 0 if absent.
async fn metric(lb: &Lb, series: &str) -> f64 {
    let text = lb.get("/_ringlb/metrics").await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_client_is_cut_off_while_a_normal_client_beside_it_is_served() {
    let lb = Arc::new(Lb::start(&h2_manifest("reset", 2, "fast")).await);
    for pace in ["0", "2"] {
        let normal = {
            let lb = Arc::clone(&lb);
            tokio::spawn(async move { h2_client(&lb, &["streams", "20"]).await })
        };
        let line = h2_client(&lb, &["rapid-reset", "1000", pace]).await;
        assert_eq!(line["cut"], true, "resets every {pace} ms: {line}");
        let sent = line["sent"].as_u64().expect("a count");
        assert!(sent <= 200, "resets every {pace} ms: cut off only after {sent} streams");
        let normal = normal.await.expect("the normal client");
        assert!(
            normal["statuses"].as_array().is_some_and(|s| s.len() == 20 && s.iter().all(|s| s == "200")),
            "{normal}"
        );
        let after = h2_client(&lb, &["streams", "5"]).await;
        assert!(after["statuses"].as_array().is_some_and(|s| s.iter().all(|s| s == "200")), "{after}");
    }
    let cut = metric(&lb, "ringlb_client_connections_cut_total{reason=\"rapid_reset\"}").await;
    assert_eq!(cut, 2.0, "both rapid-reset clients counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_while_a_normal_client_is_served() {
    let lb = Arc::new(Lb::start(&h2_manifest("flood", 2, "fast")).await);
    let normal = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move { h2_client(&lb, &["streams", "20"]).await })
    };
    let line = h2_client(&lb, &["continuation-flood"]).await;
    assert_eq!(line["cut"], true, "{line}");
    let frames = line["frames"].as_u64().expect("a count");
    // 16 KiB each: the 64 KiB header limit ends the connection within a handful of frames.
    assert!(frames < 100, "cut off only after {frames} CONTINUATION frames");
    let normal = normal.await.expect("the normal client");
    assert!(normal["statuses"].as_array().is_some_and(|s| s.iter().all(|s| s == "200")), "{normal}");
    let (version, status, _) = curl_h2(&lb, "GET", "/home", None);
    assert_eq!((version.as_str(), status), ("2", 200));
}

/// A replica that records the request line of everything but heartbeats and answers 200.
async fn recording_replica(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            loop {
                let Ok(n) = stream.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        break;
                    }
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    if !line.contains("/heartbeat") {
                        seen.lock().expect("lock").push(head.clone());
                    }
                    buf.drain(..end + 4 + length);
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9113_section_8_2_shapes_are_refused_and_never_reach_a_replica() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(recording_replica(listener, Arc::clone(&seen)));
    for engine in ENGINES {
        let manifest = format!(
            "name: smuggle\nreplicas: 1\nhostnames: [only]\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  \
             endpoints: [\"{addr}\"]\nhealth:\n  interval: 200ms\n  timeout: 150ms\nproxy:\n  engine: {engine}\n"
        );
        let lb = Lb::start(&manifest).await;
        for case in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "newline-in-value",
            "content-length-short",
            "content-length-long",
        ] {
            let line = h2_client(&lb, &["smuggle", case]).await;
            let outcome = line["outcome"].as_str().unwrap_or_default();
            assert!(
                outcome == "reset" || outcome == "goaway" || outcome.starts_with("status 4"),
                "{engine}, {case}: {line}"
            );
            let got = seen.lock().expect("lock").clone();
            assert!(got.is_empty(), "{engine}, {case}: the replica got {got:?}");
        }
        // The same path with a well-formed request does reach the replica.
        let (_, status, body) = curl_h2(&lb, "POST", "/smuggle", Some("{}"));
        assert_eq!((status, body.as_str()), (200, "ok"), "{engine}");
        let got = std::mem::take(&mut *seen.lock().expect("lock"));
        assert_eq!(got.len(), 1, "{engine}: {got:?}");
        assert!(got[0].starts_with("POST /smuggle HTTP/1.1"), "{engine}: {got:?}");
    }
}
