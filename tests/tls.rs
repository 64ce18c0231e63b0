//! TLS termination with clients this project did not write: curl over HTTP/1.1 and h2 (ALPN),
//! `openssl s_client` reading the served certificate's serial, SNI choosing between two
//! certificates, `X-Forwarded-Proto: https`, and a broken replacement that leaves the old
//! certificate serving. Certificates are made by the `openssl` command in a temporary directory.

mod common;

use common::Lb;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `openssl` with `args` in `dir`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA (`ca.pem`) and a certificate `<name>.pem`/`<name>.key` it signed for `<name>.test` and
/// `localhost`; returns the certificate's serial as openssl prints it.
fn make_certificate(dir: &Path, name: &str) -> String {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=test ca",
            ],
        );
    }
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("subjectAltName=DNS:{name}.test,DNS:localhost\n")).expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key.new"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}.test"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem.new"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    // Moved into place, so the load balancer never reads a half-written pair.
    std::fs::rename(dir.join(format!("{name}.key.new")), dir.join(format!("{name}.key"))).expect("key");
    std::fs::rename(dir.join(format!("{name}.pem.new")), dir.join(format!("{name}.pem"))).expect("cert");
    openssl(dir, &["x509", "-in", &format!("{name}.pem"), "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// The serial of the certificate the TLS listener at `port` serves for `name`.
fn served_serial(dir: &Path, port: u16, name: &str) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let pem = String::from_utf8_lossy(&std::mem::take(&mut s_client.stdout)).into_owned();
    let path = dir.join("served.pem");
    std::fs::write(&path, pem).expect("write");
    openssl(dir, &["x509", "-in", "served.pem", "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// curl over TLS to `path` with `extra` args: the HTTP version, the status and the body.
fn curl(dir: &Path, port: u16, path: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", "ca.pem", "-w", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(format!("https://localhost:{port}{path}"))
        .current_dir(dir)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').expect("the -w line");
    (last.to_owned(), body.to_owned())
}

/// Certificate replacements the load balancer refused.
async fn refused(lb: &Lb) -> f64 {
    let text = lb.get("/_ringlb/metrics").await.body;
    text.lines()
        .find_map(|l| l.strip_prefix("ringlb_tls_certificate_reloads_total{result=\"refused\"}"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h1_and_h2_picks_by_sni_and_keeps_the_old_certificate_over_a_broken_one() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    let serial_a = make_certificate(dir, "a");
    let serial_b = make_certificate(dir, "b");
    let port = common::free_port();
    let d = dir.display();
    let lb = Lb::start(&common::manifest(
        "tls",
        2,
        &format!(
            "tls:\n  listen: 127.0.0.1:{port}\n  certificates:\n    - {{cert: {d}/a.pem, key: {d}/a.key}}\n    \
             - {{cert: {d}/b.pem, key: {d}/b.key}}\n"
        ),
    ))
    .await;
    let (version, body) = curl(dir, port, "/rep", &["--http1.1"]);
    assert_eq!(version, "1.1 200", "{body}");
    assert_eq!(body, r#"{"message": {"N": 2, "replicas": ["tls-1", "tls-2"]}, "status": "successful"}"#);
    let (version, body) = curl(dir, port, "/echo", &["--http2", "--data-binary", "over h2"]);
    assert_eq!((version.as_str(), body.as_str()), ("2 200", "over h2"));
    let (version, headers) = curl(dir, port, "/echo", &["--http1.1", "-D", "-", "-o", "/dev/null"]);
    assert_eq!(version, "1.1 200");
    assert!(headers.to_ascii_lowercase().contains("x-ringlb-replica: tls-"), "{headers}");
    // SNI: the first certificate without a matching name, the second for its own.
    assert_eq!(served_serial(dir, port, "a.test"), serial_a);
    assert_eq!(served_serial(dir, port, "b.test"), serial_b);
    assert_eq!(served_serial(dir, port, "other.test"), serial_a);
    // A broken replacement is refused; the old certificate keeps serving.
    std::fs::write(dir.join("a.pem"), "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        .expect("write");
    common::until!(
        Duration::from_secs(10),
        || async { refused(&lb).await == 1.0 },
        "the broken certificate file was not refused: {}",
        lb.get("/_ringlb/metrics").await.body
    );
    assert_eq!(served_serial(dir, port, "a.test"), serial_a, "the broken file replaced the certificate");
    let (version, _) = curl(dir, port, "/home", &["--http1.1"]);
    assert_eq!(version, "1.1 200");
    // A good replacement is served to new connections within seconds.
    let serial_new = make_certificate(dir, "a");
    assert_ne!(serial_new, serial_a);
    common::until!(
        Duration::from_secs(10),
        || async { served_serial(dir, port, "a.test") == serial_new },
        "the new certificate was not served"
    );
}
