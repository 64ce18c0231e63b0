//! The static runtime: ringlb in front of servers it does not run. They are balanced, health
//! checked and listed like any replica; `/add` and `/rm` refuse; a dead one leaves the ring and comes
//! back when it answers again, and ringlb never starts or stops anything.

mod common;

use common::{Lb, Load, eventually, until};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A `ringlb server` run by the test itself, on `port` (0: any).
fn backend(id: &str, port: u16) -> (Child, String) {
    let mut child = Command::new(common::bin())
        .args(["--log-level", "warn", "server", "--host", "127.0.0.1", "--announce", "--id", id, "--port"])
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a backend");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("announce");
    let addr = line.trim().strip_prefix(ringlb::replica::ANNOUNCE_PREFIX).expect("announce line").to_string();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_endpoints_are_balanced_checked_and_never_managed() {
    let (mut a, addr_a) = backend("alpha", 0);
    let (mut b, addr_b) = backend("beta", 0);
    let text = format!(
        "name: front\nreplicas: 2\nhostnames: [alpha, beta]\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  \
         endpoints: [\"{addr_a}\", \"{addr_b}\"]\nhealth:\n  interval: 200ms\n  timeout: 150ms\n"
    );
    let lb = Lb::start(&text).await;
    assert_eq!(
        lb.get("/rep").await.body,
        r#"{"message": {"N": 2, "replicas": ["alpha", "beta"]}, "status": "successful"}"#
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(lb.get("/home").await.replica());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["alpha", "beta"]);
    for (method, path) in [("POST", "/add"), ("DELETE", "/rm")] {
        let answer = lb.request(method, path, r#"{"n": 1}"#, &[]).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert!(answer.body.contains("replica.endpoints"), "{}", answer.body);
    }

    // beta dies: out of the ring, every request still answered by alpha; nothing is restarted.
    let _ = b.kill();
    let _ = b.wait();
    until!(
        Duration::from_secs(5),
        || async { lb.ring().await == ["alpha"] },
        "beta stayed in the ring: {}",
        lb.status().await
    );
    for _ in 0..20 {
        assert_eq!(lb.get("/home").await.replica(), "alpha");
    }
    // beta comes back on its address: back in the ring.
    let port: u16 = addr_b.rsplit(':').next().unwrap().parse().unwrap();
    let (mut b2, _) = backend("beta", port);
    let back = eventually(Duration::from_secs(10), || async { lb.ring().await == ["alpha", "beta"] }).await;
    let _ = (a.kill(), b2.kill(), a.wait(), b2.wait());
    assert!(back, "beta did not come back: {}", lb.status().await);
}

#[test]
fn a_static_manifest_must_list_its_endpoints_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    for (text, field) in [
        ("name: s\nreplicas: 2\nreplica: {runtime: static, endpoints: ['127.0.0.1:1']}\n", "replicas"),
        (
            "name: s\nreplicas: 1\nreplica: {runtime: static, endpoints: ['local_host:1']}\n",
            "replica.endpoints[0]",
        ),
        ("name: s\nreplicas: 0\nreplica: {runtime: static}\n", "replica.endpoints"),
        (
            "name: s\nreplicas: 1\nreplica: {runtime: process, endpoints: ['127.0.0.1:1']}\n",
            "replica.endpoints",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(common::bin()).args(["check", "--manifest"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!(": {field}: ")), "{text}: {err}");
    }
}

/// The manifest of a static cluster over `endpoints`, without `replicas:` (it is their count).
fn endpoints_manifest(endpoints: &[&str]) -> String {
    let list = endpoints.iter().map(|e| format!("'{e}'")).collect::<Vec<_>>().join(", ");
    format!(
        "name: follow\nhostnames: [alpha, beta]\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  \
         endpoints: [{list}]\n  drain_timeout: 5s\nhealth:\n  interval: 200ms\n  timeout: 150ms\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_endpoints_follow_the_file_one_two_one_under_load_by_host_name() {
    let (mut a, addr_a) = backend("alpha", 0);
    let (mut b, addr_b) = backend("beta", 0);
    // beta by host name: localhost resolves to 127.0.0.1, where the backend listens.
    let port_b = addr_b.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port_b}");
    let one = endpoints_manifest(&[&addr_a]);
    let lb = Arc::new(Lb::start(&one).await);
    assert_eq!(lb.get("/rep").await.json()["message"]["N"], 1, "replicas: left out is the endpoint count");
    let load = Load::start(&lb, 4, "/home");
    load.after_more(100).await;

    // 1 -> 2: beta joins at its first good heartbeat, and serves.
    lb.write_manifest(&endpoints_manifest(&[&addr_a, &by_name]));
    until!(
        Duration::from_secs(10),
        || async { lb.ring().await == ["alpha", "beta"] },
        "beta did not join: {}",
        lb.status().await
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(lb.get("/home").await.replica());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["alpha", "beta"], "the added endpoint serves");
    assert_eq!(lb.get("/rep").await.json()["message"]["N"], 2);
    load.after_more(100).await;

    // 2 -> 1: beta drains and leaves; nothing fails.
    lb.write_manifest(&one);
    until!(
        Duration::from_secs(10),
        || async {
            lb.ring().await == ["alpha"]
                && lb.status().await["replicas"].as_array().is_some_and(|r| r.len() == 1)
        },
        "beta did not leave: {}",
        lb.status().await
    );
    load.after_more(100).await;
    let (sent, failed) = load.finish().await;
    let _ = (a.kill(), b.kill(), a.wait(), b.wait());
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(lb.status().await["problems"].as_array().is_some_and(Vec::is_empty), "{}", lb.status().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_name_does_not_resolve_is_reported() {
    let (mut a, addr_a) = backend("alpha", 0);
    let lb = Lb::start(&endpoints_manifest(&[&addr_a])).await;
    lb.write_manifest(&endpoints_manifest(&[&addr_a, "no-such-host.invalid:80"]));
    until!(
        Duration::from_secs(15),
        || async {
            lb.status().await["problems"].as_array().is_some_and(|p| {
                p.iter().any(|x| {
                    x["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("no-such-host.invalid:80 does not resolve"))
                })
            })
        },
        "no problem reported: {}",
        lb.status().await
    );
    assert_eq!(lb.get("/home").await.replica(), "alpha", "the resolved endpoint keeps serving");
    let _ = (a.kill(), a.wait());
}
