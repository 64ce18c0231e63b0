//! The exercise's HTTP contract, byte for byte, through the real binary: `/home`, `/heartbeat`,
//! `/rep`, `/add`, `/rm`, both 400 errors, and every bad admin input (4xx, manifest unchanged).

mod common;

use common::{Lb, manifest};
use std::collections::BTreeSet;
use std::time::Duration;

const HOSTNAMES: &str = "hostnames: [server1, server2, server3]   # preferred names\n";

fn three(name: &str) -> String {
    manifest(name, 3, HOSTNAMES)
}

#[tokio::test]
async fn home_and_heartbeat_through_the_load_balancer_are_exact() {
    let lb = Lb::start(&three("contract-home")).await;
    let answer = lb.get("/home").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let who = answer.replica();
    assert!(["server1", "server2", "server3"].contains(&who.as_str()), "{who}");
    assert_eq!(answer.body, format!(r#"{{"message": "Hello from Server: {who}", "status": "successful"}}"#));
    let heartbeat = lb.get("/heartbeat").await;
    assert_eq!((heartbeat.status, heartbeat.body.as_str()), (200, ""));
}

#[tokio::test]
async fn a_replica_answers_heartbeat_and_home_directly() {
    let mut child = std::process::Command::new(common::bin())
        .args(["server", "--host", "127.0.0.1", "--port", "0", "--announce"])
        .env("SERVER_ID", "42")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    let addr = line.trim().strip_prefix(ringlb::replica::ANNOUNCE_PREFIX).unwrap().to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /home HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut stream, &mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK"), "{raw}");
    assert!(
        raw.ends_with("\r\n\r\n{\"message\": \"Hello from Server: 42\", \"status\": \"successful\"}"),
        "{raw}"
    );
    common::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success(), "a replica exits cleanly on SIGTERM");
}

#[tokio::test]
async fn rep_add_and_rm_answer_exactly_and_change_the_replicas() {
    let lb = Lb::start(&three("contract-scale")).await;
    let rep = lb.get("/rep").await;
    assert_eq!(rep.status, 200);
    assert_eq!(
        rep.body,
        r#"{"message": {"N": 3, "replicas": ["server1", "server2", "server3"]}, "status": "successful"}"#
    );

    // Add 4 with two names: the names come first, two more are generated.
    let add = lb.request("POST", "/add", r#"{"n": 4, "hostnames": ["S5", "S4"]}"#, &[]).await;
    assert_eq!(add.status, 200, "{}", add.body);
    assert_eq!(
        add.body,
        r#"{"message": {"N": 7, "replicas": ["server1", "server2", "server3", "S5", "S4", "contract-scale-1", "contract-scale-2"]}, "status": "successful"}"#
    );
    lb.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(lb.get("/rep").await.body, add.body);

    // Remove 3 naming two: S5 and S4 go, plus one chosen at random.
    let rm = lb.request("DELETE", "/rm", r#"{"n": 3, "hostnames": ["S5", "S4"]}"#, &[]).await;
    assert_eq!(rm.status, 200, "{}", rm.body);
    let body = rm.json();
    assert_eq!(body["status"], "successful");
    assert_eq!(body["message"]["N"], 4);
    let left: BTreeSet<String> = body["message"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 4);
    assert!(!left.contains("S5") && !left.contains("S4"));
    let before: BTreeSet<&str> =
        ["server1", "server2", "server3", "contract-scale-1", "contract-scale-2"].into_iter().collect();
    assert!(left.iter().all(|n| before.contains(n.as_str())));

    // POST /rm works too; the live set follows.
    let rm2 = lb.request("POST", "/rm", r#"{"n": 1}"#, &[]).await;
    assert_eq!(rm2.json()["message"]["N"], 3);
    lb.wait_ready(Duration::from_secs(20)).await;
    let mut expected: Vec<String> = rm2.json()["message"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(lb.ring().await, expected);
    let mut running: Vec<String> = lb.replica_pids().into_iter().map(|(_, id)| id).collect();
    running.sort();
    assert_eq!(running, expected, "exactly the listed replica processes run");

    // Every replica is reachable through the load balancer.
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        seen.insert(lb.get("/home").await.replica());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn the_two_exercise_errors_are_exact() {
    let lb = Lb::start(&three("contract-errors")).await;
    let add = lb.request("POST", "/add", r#"{"n": 1, "hostnames": ["a", "b"]}"#, &[]).await;
    assert_eq!(add.status, 400);
    assert_eq!(
        add.body,
        r#"{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}"#
    );
    let rm = lb.request("DELETE", "/rm", r#"{"n": 1, "hostnames": ["server1", "server2"]}"#, &[]).await;
    assert_eq!(rm.status, 400);
    assert_eq!(
        rm.body,
        r#"{"message": "<Error> Length of hostname list is more than removable instances", "status": "failure"}"#
    );
}

#[tokio::test]
async fn every_bad_admin_input_is_a_4xx_json_error_and_changes_nothing() {
    let lb = Lb::start(&three("contract-bad")).await;
    let before = lb.read_manifest();
    let big = format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, "a".repeat(70_000));
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("POST", "/add", "{not json".into(), 400),
        ("POST", "/add", "".into(), 400),
        ("POST", "/add", r#"{"hostnames": ["x"]}"#.into(), 400),
        ("POST", "/add", r#"{"n": 0}"#.into(), 400),
        ("POST", "/add", r#"{"n": -2}"#.into(), 400),
        ("POST", "/add", r#"{"n": 1.5}"#.into(), 400),
        ("POST", "/add", r#"{"n": "2"}"#.into(), 400),
        ("POST", "/add", r#"{"n": 1, "hostnames": ["bad name"]}"#.into(), 400),
        ("POST", "/add", r#"{"n": 1, "hostnames": ["-dash"]}"#.into(), 400),
        ("POST", "/add", format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, "x".repeat(64)), 400),
        ("POST", "/add", r#"{"n": 2, "hostnames": ["twin", "twin"]}"#.into(), 400),
        ("POST", "/add", r#"{"n": 1, "hostnames": ["server2"]}"#.into(), 409),
        ("POST", "/add", r#"{"n": 62}"#.into(), 400),
        ("POST", "/add", big.clone(), 413),
        ("DELETE", "/rm", r#"{"n": 4}"#.into(), 400),
        ("DELETE", "/rm", r#"{"n": 1, "hostnames": ["nobody"]}"#.into(), 404),
        ("DELETE", "/rm", r#"{"n": 0}"#.into(), 400),
        ("DELETE", "/rm", "[]".into(), 400),
        ("GET", "/add", "".into(), 405),
        ("PUT", "/rep", "".into(), 405),
    ];
    for (method, path, body, status) in cases {
        let answer = lb.request(method, path, &body, &[]).await;
        assert_eq!(answer.status, status, "{method} {path} {}: {}", &body[..body.len().min(60)], answer.body);
        let json = answer.json();
        assert_eq!(json["status"], "failure", "{}", answer.body);
        assert!(json["message"].as_str().unwrap().starts_with("<Error> "), "{}", answer.body);
        assert_eq!(lb.read_manifest(), before, "{method} {path} changed the manifest");
    }
    assert_eq!(lb.get("/rep").await.json()["message"]["N"], 3);
}

#[tokio::test]
async fn the_admin_token_guards_add_and_rm_but_not_rep() {
    let lb = Lb::start_with_env(&three("contract-token"), &[("RINGLB_ADMIN_TOKEN", "s3cret")]).await;
    let before = lb.read_manifest();
    for auth in [None, Some("Bearer wrong"), Some("s3cret"), Some("Bearer s3cre")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let answer = lb.request("POST", "/add", r#"{"n": 1}"#, &headers).await;
        assert_eq!(answer.status, 401, "{auth:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(lb.request("DELETE", "/rm", r#"{"n": 1}"#, &[]).await.status, 401);
    assert_eq!(lb.read_manifest(), before);
    assert_eq!(lb.get("/rep").await.status, 200);
    let ok = lb.request("POST", "/add", r#"{"n": 1}"#, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn the_admin_token_can_come_from_a_secret_file() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let file = secrets.path().join("admin_token");
    std::fs::write(&file, "from-a-file\n").expect("write the token file");
    let file = file.display().to_string();
    let lb = Lb::start_with_env(&three("contract-token-file"), &[("RINGLB_ADMIN_TOKEN_FILE", &file)]).await;
    let refused = lb.request("POST", "/add", r#"{"n": 1}"#, &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let wrong = lb.request("POST", "/add", r#"{"n": 1}"#, &[("authorization", "Bearer from-a-fil")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let ok = lb.request("POST", "/add", r#"{"n": 1}"#, &[("authorization", "Bearer from-a-file")]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// Runs `ringlb run` on `manifest_text` with `envs` until it exits (at most 20 s) and returns its
/// exit status and everything it logged.
fn run_until_exit(manifest_text: &str, envs: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, manifest_text).expect("write manifest");
    let mut child = std::process::Command::new(common::bin())
        .args(["run", "--manifest"])
        .arg(&path)
        .env_remove("RINGLB_ADMIN_TOKEN")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ringlb");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("poll ringlb").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ringlb run kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("ringlb's output");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn an_ambiguous_or_unreadable_admin_token_stops_the_start() {
    let text = three("contract-token-refused");
    let (status, log) =
        run_until_exit(&text, &[("RINGLB_ADMIN_TOKEN", "a"), ("RINGLB_ADMIN_TOKEN_FILE", "/x")]);
    assert!(!status.success());
    assert!(log.contains("both RINGLB_ADMIN_TOKEN and RINGLB_ADMIN_TOKEN_FILE are set"), "{log}");

    let missing = "/nonexistent/ringlb/admin_token";
    let (status, log) = run_until_exit(&text, &[("RINGLB_ADMIN_TOKEN_FILE", missing)]);
    assert!(!status.success());
    assert!(
        log.contains(&format!("RINGLB_ADMIN_TOKEN_FILE={missing}: cannot read the admin token")),
        "{log}"
    );
}

#[tokio::test]
async fn an_open_admin_api_beyond_loopback_is_warned_about_at_start() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.yaml");
    let text = three("contract-open-admin").replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:0");
    std::fs::write(&path, text).expect("write manifest");
    let mut child = std::process::Command::new(common::bin())
        .args(["--log-format", "json", "run", "--manifest"])
        .arg(&path)
        .env_remove("RINGLB_ADMIN_TOKEN")
        .env_remove("RINGLB_ADMIN_TOKEN_FILE")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ringlb");
    let stderr = child.stderr.take().expect("piped stderr");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut warning = None;
    while warning.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("admin_open") => warning = Some(line),
            Ok(line) if line.contains("\"listening\"") => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.expect("a warning about the open admin API before the listening line");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("set RINGLB_ADMIN_TOKEN"), "{warning}");
}

#[tokio::test]
async fn the_exercise_mode_turns_a_replica_404_into_its_400() {
    let text = manifest(
        "contract-exercise",
        3,
        "hashing:\n  algorithm: ring\n  function: assignment\nproxy:\n  unknown_path: exercise\n",
    );
    let lb = Lb::start(&text).await;
    let answer = lb.get("/other").await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        r#"{"message": "<Error> '/other' endpoint does not exist in server replicas", "status": "failure"}"#
    );
    // By default a replica's 404 passes through unchanged.
    let plain = Lb::start(&three("contract-pass")).await;
    let answer = plain.get("/other").await;
    assert_eq!(answer.status, 404);
    assert!(!answer.replica().is_empty());
}
