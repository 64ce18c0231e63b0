//! The process runtime running a server that is not ringlb (`replica.command`): Python's
//! `http.server` behind ringlb, a crash of one under load and its replacement, and the answers to bad commands (one
//! that exits at once, one that never listens) while the replicas already running keep serving.

mod common;

use common::{Lb, Load, until};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A manifest of `replicas` replicas running `command` (a YAML flow list), heartbeat on `/`.
fn manifest(name: &str, replicas: u32, command: &str) -> String {
    format!(
        "name: {name}\nreplicas: {replicas}\nlisten: 127.0.0.1:0\nreplica:\n  runtime: process\n  \
         command: {command}\n  env: {{GREETING: 'hello from {{name}}'}}\n  start_timeout: 3s\n  \
         drain_timeout: 5s\n  stop_timeout: 2s\nhealth:\n  path: /\n  interval: 200ms\n  timeout: 500ms\n"
    )
}

const PYTHON: &str = "[python3, -m, http.server, '{port}', --bind, 127.0.0.1]";

/// The problems `/_ringlb/status` reports, as text.
async fn problems(lb: &Lb) -> String {
    lb.status().await["problems"].as_array().map(|p| Value::from(p.clone()).to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_http_server_is_balanced_and_a_crashed_one_replaced() {
    let lb = Arc::new(Lb::start(&manifest("py", 2, PYTHON)).await);
    let answer = lb.get("/").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("Directory listing"), "python's http.server answered: {}", answer.body);
    let pids = lb.child_commands();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.iter().all(|(_, cmd)| cmd.contains("http.server")), "{pids:?}");
    let load = Load::start(&lb, 2, "/");
    load.after_more(50).await;
    common::signal(pids[0].0, nix::sys::signal::Signal::SIGKILL);
    until!(
        Duration::from_secs(20),
        || async {
            lb.child_commands().len() == 2 && !lb.child_commands().iter().any(|(p, _)| *p == pids[0].0)
        },
        "no replacement: {:?}",
        lb.child_commands()
    );
    lb.wait_ready(Duration::from_secs(20)).await;
    // Every request from now on is answered: the crashed replica is out, its successor in.
    let (sent, crash_failures) = load.finish().await;
    let load = Load::start(&lb, 2, "/");
    load.after_more(100).await;
    let (after, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {after} requests failed after the replacement: {failed:?}",
        failed.len()
    );
    // http.server writes its head and its body apart: a SIGKILL between the two cuts the
    // answers in flight on that replica (one per client at most), which no proxy can retry.
    assert!(
        crash_failures.len() <= 2,
        "{} of {sent} requests failed around the crash, more than were in flight: {crash_failures:?}",
        crash_failures.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_at_once_is_reported_with_its_status_and_output() {
    let text = manifest("crashy", 1, PYTHON);
    let lb = Lb::start(&text).await;
    let before = lb.child_commands();
    lb.write_manifest(&text.replace(PYTHON, "[sh, -c, 'echo cannot bind port {port} >&2; exit 3']"));
    until!(
        Duration::from_secs(15),
        || async {
            let p = problems(&lb).await;
            p.contains("exit code 3") && p.contains("cannot bind port")
        },
        "no problem reported: {}",
        lb.status().await
    );
    // Backed off, and the replica that ran before keeps serving.
    assert_eq!(lb.get("/").await.status, 200);
    assert_eq!(lb.child_commands(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_never_listens_is_reported_after_the_start_timeout() {
    let text = manifest("deaf", 1, PYTHON);
    let lb = Lb::start(&text).await;
    lb.write_manifest(&text.replace(PYTHON, "[sh, -c, 'exec sleep 600 # {port}']"));
    until!(
        Duration::from_secs(20),
        || async { problems(&lb).await.contains("no good heartbeat") },
        "no problem reported: {}",
        lb.status().await
    );
    let reported = problems(&lb).await;
    assert!(reported.contains("replica.start_timeout (3s)"), "{reported}");
    assert_eq!(lb.get("/").await.status, 200, "the replica of the last good spec keeps serving");
}
