//! The data path through the real binary: every method, streamed bodies both ways, forwarding
//! headers, and the JSON errors (503 with no replica, 504 on a slow one).

mod common;

use common::{Lb, manifest};
use std::io::{Read, Write};
use std::net::TcpStream;

#[tokio::test]
async fn every_method_reaches_the_replica_with_its_body_and_forwarding_headers() {
    let lb = Lb::start(&manifest("methods", 2, "")).await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let answer = lb.request(method, "/echo?q=1", "body!", &[("host", "example.test")]).await;
        assert_eq!(answer.status, 200, "{method}");
        assert_eq!(answer.headers["x-echo-method"], method);
        assert_eq!(answer.headers["x-echo-uri"], "/echo?q=1");
        assert_eq!(answer.body, "body!", "{method}");
        let seen: serde_json::Value =
            serde_json::from_str(answer.headers["x-echo-headers"].to_str().unwrap()).unwrap();
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
        assert_eq!(seen["x-forwarded-proto"], "http");
        assert_eq!(seen["x-forwarded-host"], "example.test");
        assert_eq!(seen["host"], "example.test");
        assert!(seen["x-request-id"].as_str().unwrap().len() == 6, "{seen}");
        assert!(answer.replica().starts_with("methods-"));
    }
    let head = lb.request("HEAD", "/home", "", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
}

#[tokio::test]
async fn a_given_request_id_is_kept_and_pins_the_replica() {
    let lb = Lb::start(&manifest("pinned", 3, "")).await;
    let first = lb.request("GET", "/echo", "", &[("x-request-id", "123456")]).await;
    let seen: serde_json::Value =
        serde_json::from_str(first.headers["x-echo-headers"].to_str().unwrap()).unwrap();
    assert_eq!(seen["x-request-id"], "123456");
    for _ in 0..20 {
        assert_eq!(
            lb.request("GET", "/home", "", &[("x-request-id", "123456")]).await.replica(),
            first.replica()
        );
    }
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let lb = Lb::start(&manifest("hops", 1, "")).await;
    let answer = lb
        .request("GET", "/echo", "", &[("connection", "x-private"), ("x-private", "1"), ("x-public", "2")])
        .await;
    let seen: serde_json::Value =
        serde_json::from_str(answer.headers["x-echo-headers"].to_str().unwrap()).unwrap();
    assert!(seen.get("x-private").is_none(), "{seen}");
    assert_eq!(seen["x-public"], "2");
}

#[test]
fn a_large_chunked_body_streams_both_ways() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lb = runtime.block_on(Lb::start(&manifest("stream", 2, "")));
    let mut stream = TcpStream::connect(lb.addr).unwrap();
    write!(
        stream,
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..32 {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..200.min(text.len())]);
    let zs = raw.iter().filter(|b| **b == b'z').count();
    assert_eq!(zs, 32 * 64 * 1024, "the whole 2 MiB came back");
}

#[tokio::test]
async fn no_replica_is_a_503_with_retry_after() {
    let lb = Lb::start(&manifest("empty", 0, "")).await;
    let answer = lb.get("/home").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(answer.json()["status"], "failure");
    assert_eq!(lb.get("/rep").await.body, r#"{"message": {"N": 0, "replicas": []}, "status": "successful"}"#);
}

#[tokio::test]
async fn a_slow_replica_is_a_504_after_the_proxy_timeout() {
    let lb = Lb::start(&manifest("slow", 1, "proxy:\n  timeout: 300ms\n")).await;
    let started = std::time::Instant::now();
    let answer = lb.get("/work?ms=3000").await;
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(answer.json()["message"].as_str().unwrap().contains("did not answer within"));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(lb.get("/work?ms=10").await.status, 200);
}
