//! The command line: `check` like `nginx -t`, and complete `--help` with defaults.

mod common;

use std::process::Command;

fn ringlb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::bin()).args(args).output().expect("run ringlb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_manifests() {
    for name in ["cluster", "local", "assignment"] {
        let path = format!("{}/manifests/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let (ok, out, err) = ringlb(&["check", "--manifest", &path]);
        assert!(ok, "{name}: {err}");
        assert!(out.contains(": ok: cluster "), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

#[test]
fn check_reports_an_error_with_line_and_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: demo\nreplicas: three\n").unwrap();
    let out = Command::new(common::bin()).args(["check", "--manifest"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2:11: replicas: "), "{err}");
    assert!(err.contains("replicas: three") && err.contains('^'), "the snippet points at it: {err}");

    std::fs::write(&path, "name: demo\nhostnames: [ok, 'not ok']\n").unwrap();
    let out = Command::new(common::bin()).args(["check", "--manifest"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2:17: hostnames[1]: \"not ok\" is not a valid hostname"), "{err}");
}

#[test]
fn help_is_complete_and_shows_defaults() {
    let (ok, out, _) = ringlb(&["--help"]);
    assert!(ok);
    for command in ["run", "server", "check"] {
        assert!(out.contains(command), "{out}");
    }
    let (_, run, _) = ringlb(&["run", "--help"]);
    assert!(run.contains("[default: manifests/cluster.yaml]"), "{run}");
    assert!(run.contains("--log-format"), "{run}");
    let (_, server, _) = ringlb(&["server", "--help"]);
    assert!(server.contains("[default: 5000]") && server.contains("SERVER_ID"), "{server}");
    let (_, check, _) = ringlb(&["check", "--help"]);
    assert!(check.contains("[default: manifests/cluster.yaml]"), "{check}");
}

#[test]
fn run_refuses_an_invalid_manifest_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: demo\nreplicas: -1\n").unwrap();
    let out = Command::new(common::bin()).args(["run", "--manifest"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two services, one by host and one by path prefix, on the process runtime.
const SERVICES: &str = "\
name: shop
listen: 127.0.0.1:0
services:
  - name: web
    match: {host: web.example}
    replicas: 2
    replica: {runtime: process, command: [ringlb, server, --port, '{port}']}
  - name: api
    match: {path_prefix: /api}
    replica: {runtime: process, command: [ringlb, server, --port, '{port}']}
";

#[test]
fn check_validates_services_with_a_line_for_each_and_names_a_collision_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, SERVICES).unwrap();
    let (ok, out, err) = ringlb(&["check", "--manifest", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let lines: Vec<_> = out.lines().collect();
    assert!(lines[0].ends_with(": ok: cluster shop: 2 services, listening on 127.0.0.1:0"), "{out}");
    assert!(
        lines[1].starts_with("  service web (host web.example): 2 replicas on the process runtime"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("  service api (path prefix /api): 3 replicas on the process runtime"),
        "{out}"
    );

    std::fs::write(&path, SERVICES.replace("match: {host: web.example}", "match: {path_prefix: /api}"))
        .unwrap();
    let (ok, _, err) = ringlb(&["check", "--manifest", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("services.yaml:9:12: services[1].match: matches the same requests as service web"),
        "{err}"
    );
}

#[test]
fn run_refuses_services_it_does_not_serve_yet_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, SERVICES).unwrap();
    let out = Command::new(common::bin()).args(["run", "--manifest"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("services: (several services behind one listener) is not served by this version yet"),
        "{err}"
    );
    assert!(!err.contains("started replica"), "{err}");
}
