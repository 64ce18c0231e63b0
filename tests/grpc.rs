//! gRPC through ringlb with a server and client this project did not write (Python's `grpcio` and
//! `grpcio-health-checking`, `tests/clients/grpc_echo.py` and `grpc_client.py`): unary calls with
//! initial and trailing metadata, a replica's error status passed through, `grpc-timeout` reaching
//! the replica, streaming in each direction and both at once, over h2c and over TLS; an HTTP/1.1
//! client reaching an h2c replica; `health.kind: grpc` taking a `NOT_SERVING` replica out of the
//! ring and back; ringlb's own errors (no replica, `proxy.timeout`) as gRPC statuses.

mod common;

use common::certs::make_certificate;
use common::{JsonLines, Lb, client_script, test_python, until};
use serde_json::Value;
use std::time::Duration;

/// A cluster of `replicas` gRPC echo servers on the process runtime, spoken to over h2c and
/// checked with the gRPC health check; `extra` is appended (top-level keys).
fn grpc_manifest(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "name: {name}\nreplicas: {replicas}\nlisten: 127.0.0.1:0\nreplica:\n  runtime: process\n  protocol: h2c\n  \
         command: ['{}', '{}', --port, '{{port}}', --name, '{{name}}']\n  start_timeout: 20s\n  \
         drain_timeout: 2s\n  stop_timeout: 2s\nhealth:\n  kind: grpc\n  interval: 200ms\n  timeout: 1s\n{extra}",
        test_python().display(),
        client_script("grpc_echo.py").display()
    )
}

/// Runs `grpc_client.py target args...` to its end: its one JSON line.
async fn grpc_client(target: &str, args: &[&str]) -> Value {
    let script = client_script("grpc_client.py");
    let mut all = vec![script.to_str().expect("utf-8 path"), target];
    all.extend_from_slice(args);
    let mut client = JsonLines::spawn(&test_python(), &all);
    let line = client.next(Duration::from_secs(60)).await;
    assert!(client.wait(Duration::from_secs(10)).await.success(), "grpc_client {args:?}: {:?}", client.seen);
    line
}

/// Asserts every field of `grpc_client.py calls` over `how`; `ring` holds the replicas' names.
fn assert_calls(how: &str, calls: &Value, ring: &[String]) {
    let say = &calls["say"];
    let replica = say["initial"].as_str().unwrap_or_else(|| panic!("{how}: no x-replica: {calls}"));
    assert!(ring.iter().any(|r| r == replica), "{how}: answered by {replica}, not one of {ring:?}");
    assert_eq!(say["answer"], format!("{replica}:hello"), "{how}: {calls}");
    assert_eq!(say["trailing"], format!("end-of-{replica}"), "{how}: the trailers were lost: {calls}");
    assert_eq!(say["code"], "OK", "{how}: {calls}");
    // The replica's own error status and message, untouched.
    assert_eq!(calls["fail"]["code"], "NOT_FOUND", "{how}: {calls}");
    assert_eq!(calls["fail"]["details"], "no such thing: cake", "{how}: {calls}");
    // The client's 5 s deadline reached the replica as grpc-timeout.
    let deadline = calls["deadline_ms"].as_i64().unwrap_or(-1);
    assert!((3000..=5100).contains(&deadline), "{how}: the replica saw a deadline of {deadline} ms: {calls}");
    assert_eq!(calls["slow"]["code"], "DEADLINE_EXCEEDED", "{how}: {calls}");
    let count: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(calls["count"], serde_json::json!(count), "{how}: server streaming: {calls}");
    assert_eq!(calls["sum"], 210, "{how}: client streaming: {calls}");
    let chat = calls["chat"].as_array().unwrap_or_else(|| panic!("{how}: {calls}"));
    assert_eq!(chat.len(), 20, "{how}: bidi streaming in lockstep: {calls}");
    let chatter = chat[0].as_str().and_then(|m| m.split_once(':')).map(|(r, _)| r.to_owned());
    for (i, message) in chat.iter().enumerate() {
        assert_eq!(
            message.as_str(),
            chatter.as_ref().map(|r| format!("{r}:m{i}")).as_deref(),
            "{how}: {calls}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_and_error_calls_cross_ringlb_over_h2c_and_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    make_certificate(dir, "a");
    let tls_port = common::free_port();
    let d = dir.display();
    let lb = Lb::start(&grpc_manifest(
        "grpc",
        2,
        &format!("tls:\n  listen: 127.0.0.1:{tls_port}\n  certificates:\n    - {{cert: {d}/a.pem, key: {d}/a.key}}\n"),
    ))
    .await;
    let ring = lb.ring().await;
    assert_eq!(ring.len(), 2, "{}", lb.status().await);
    let plain = lb.addr.to_string();
    let tls = format!("127.0.0.1:{tls_port}");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");

    assert_calls("h2c", &grpc_client(&plain, &["calls"]).await, &ring);
    assert_calls("TLS", &grpc_client(&tls, &["calls", "--tls", ca]).await, &ring);

    // An HTTP/1.1 client reaches the h2c replica (which speaks nothing but HTTP/2).
    let http1 = grpc_client(&plain, &["http1"]).await;
    assert_eq!(http1["status"], 200, "{http1}");
    assert_eq!(http1["grpc-status"], "0", "the trailers did not reach the HTTP/1.1 client: {http1}");
    let body = http1["body"].as_str().unwrap_or_default();
    assert!(ring.iter().any(|r| body == format!("{r}:over http/1.1")), "{http1}");

    // Under load from 4 threads, over both listeners: nothing fails and both replicas answer.
    for (how, args) in [("h2c", vec!["load", "400"]), ("TLS", vec!["load", "400", "--tls", ca])] {
        let target = if how == "h2c" { &plain } else { &tls };
        let load = grpc_client(target, &args).await;
        assert_eq!(load["ok"], 400, "{how}: {load}");
        assert_eq!(load["failed"], serde_json::json!([]), "{how}: {load}");
        let replicas = load["replicas"].as_object().unwrap_or_else(|| panic!("{how}: {load}"));
        assert_eq!(replicas.len(), 2, "{how}: the calls were not spread over both replicas: {load}");
    }
}

/// The address the status JSON gives for replica `name`.
async fn address_of(lb: &Lb, name: &str) -> String {
    let status = lb.status().await;
    status["replicas"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == name))
        .and_then(|r| r["address"].as_str())
        .unwrap_or_else(|| panic!("no address for {name}: {status}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_grpc_health_check_answers_not_serving_leaves_the_ring_and_comes_back() {
    // Replacement only after a long time, so the replica stays to report SERVING again.
    let lb = Lb::start(
        &grpc_manifest("health", 2, "")
            .replace("  timeout: 1s\n", "  timeout: 1s\n  replace_after: 100000\n"),
    )
    .await;
    let ring = lb.ring().await;
    assert_eq!(ring, ["health-1", "health-2"], "{}", lb.status().await);
    let sick = address_of(&lb, "health-2").await;

    assert_eq!(grpc_client(&sick, &["set-health", "NOT_SERVING"]).await["set"], "NOT_SERVING");
    until!(
        Duration::from_secs(10),
        || async { lb.ring().await == ["health-1"] },
        "a NOT_SERVING replica stayed in the ring: {}",
        lb.status().await
    );
    let status = lb.status().await.to_string();
    assert!(status.contains("NOT_SERVING"), "the heartbeat's reason is not shown: {status}");
    // Every call now goes to the healthy replica.
    let load = grpc_client(&lb.addr.to_string(), &["load", "100"]).await;
    assert_eq!(load["ok"], 100, "{load}");
    assert_eq!(load["replicas"], serde_json::json!({"health-1": 100}), "{load}");

    assert_eq!(grpc_client(&sick, &["set-health", "SERVING"]).await["set"], "SERVING");
    until!(
        Duration::from_secs(10),
        || async { lb.ring().await == ["health-1", "health-2"] },
        "a SERVING replica did not return to the ring: {}",
        lb.status().await
    );
    // The same instance came back: it was never replaced.
    assert_eq!(address_of(&lb, "health-2").await, sick);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringlbs_own_errors_reach_a_grpc_client_as_grpc_statuses() {
    // proxy.timeout below the call's own deadline: ringlb gives up first, as DEADLINE_EXCEEDED.
    let lb = Lb::start(&grpc_manifest("own", 1, "proxy:\n  timeout: 1s\n")).await;
    let slow = grpc_client(&lb.addr.to_string(), &["slow", "4000"]).await;
    assert_eq!(slow["code"], "DEADLINE_EXCEEDED", "{slow}");
    // ringlb's message, not the client's own "Deadline Exceeded" (its deadline is 10 s away).
    let details = slow["details"].as_str().unwrap_or_default();
    assert!(details.contains("did not answer within 1s"), "not ringlb's answer: {slow}");
    let quick = grpc_client(&lb.addr.to_string(), &["slow", "10"]).await;
    assert_eq!(quick, serde_json::json!({"code": "OK", "answer": "slept"}));
    drop(lb);

    // A static replica that never answers: no replica to send the call to, UNAVAILABLE.
    let closed = common::free_port();
    // (A request is held for the replica's first heartbeat no longer than its 1 s start_timeout.)
    let lb = Lb::start_unready(&format!(
        "name: none\nreplicas: 1\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  protocol: h2c\n  \
         endpoints: ['127.0.0.1:{closed}']\n  start_timeout: 1s\nhealth:\n  kind: grpc\n  interval: 200ms\n  timeout: 200ms\n"
    ))
    .await;
    let none = grpc_client(&lb.addr.to_string(), &["say"]).await;
    assert_eq!(none["code"], "UNAVAILABLE", "{none}");
    // ringlb's message ("no replica ..."), not grpcio's own for a target it cannot reach.
    assert!(none["details"].as_str().is_some_and(|d| d.contains("replica")), "not ringlb's answer: {none}");
}
