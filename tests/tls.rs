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

/// A certificate `<name>.pem`/`<name>.key` that was valid for one day in 2020, signed by the CA
/// [`make_certificate`] made (call that first).
fn make_expired_certificate(dir: &Path, name: &str) {
    assert!(dir.join("ca.srl").exists(), "make_certificate makes the CA and its serial file first");
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = ca.srl\n\
         default_md = sha256\npolicy = any\nx509_extensions = v3\n[any]\ncommonName = supplied\n\
         [v3]\nsubjectAltName = DNS:localhost\n",
    )
    .expect("write ca.cnf");
    std::fs::write(dir.join("index.txt"), "").expect("write index.txt");
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    openssl(
        dir,
        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=old"],
    );
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            &csr,
            "-out",
            &pem,
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ],
    );
}

#[test]
fn ringlb_check_names_a_missing_an_unreadable_a_mismatched_and_an_expired_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    let serial = make_certificate(dir, "a");
    make_certificate(dir, "b");
    make_expired_certificate(dir, "old");
    std::fs::create_dir(dir.join("a-directory")).expect("mkdir");
    let port = common::free_port();
    let manifest = dir.join("cluster.yaml");
    let entries = [
        ("a.pem", "a.key"),
        ("missing.pem", "a.key"),
        ("a.pem", "b.key"),
        ("old.pem", "old.key"),
        ("a-directory", "a.key"),
    ];
    let list: String =
        entries.iter().map(|(cert, key)| format!("    - cert: {cert}\n      key: {key}\n")).collect();
    let text = common::manifest(
        "check-tls",
        1,
        &format!("tls:\n  listen: 127.0.0.1:{port}\n  certificates:\n{list}"),
    );
    std::fs::write(&manifest, &text).expect("write manifest");
    let errors = common::check_manifest(&manifest).expect_err("ringlb check must refuse the certificates");
    let line_of = |needle: &str, from: usize| {
        text.lines()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
            .expect("a line")
    };
    let certificates = line_of("certificates:", 0);
    let expected = [
        (
            format!("tls.certificates[1].cert: cannot read {}", dir.join("missing.pem").display()),
            line_of("missing.pem", 0),
        ),
        (
            format!(
                "tls.certificates[2].key: the key in {} does not belong to the certificate in {}",
                dir.join("b.key").display(),
                dir.join("a.pem").display()
            ),
            line_of("b.key", certificates),
        ),
        (
            format!(
                "tls.certificates[3].cert: the certificate in {} is expired since 2020-01-02",
                dir.join("old.pem").display()
            ),
            line_of("old.pem", 0),
        ),
        (
            format!("tls.certificates[4].cert: cannot read {}", dir.join("a-directory").display()),
            line_of("a-directory", 0),
        ),
    ];
    for (message, line) in &expected {
        let found = errors.lines().find(|l| l.contains(message.as_str()));
        let found = found.unwrap_or_else(|| panic!("no line with {message:?} in:\n{errors}"));
        let position = format!("{}:{line}:", manifest.display());
        assert!(found.contains(&position), "{found:?} does not name {position:?}");
    }
    assert!(!errors.contains("tls.certificates[0]"), "the good certificate was reported: {errors}");

    // The same manifest with only the good certificate passes and names what it serves.
    let good = common::manifest(
        "check-tls",
        1,
        &format!("tls:\n  listen: 127.0.0.1:{port}\n  certificates:\n    - cert: a.pem\n      key: a.key\n"),
    );
    std::fs::write(&manifest, good).expect("write manifest");
    let out = common::check_manifest(&manifest).expect("ringlb check accepts the good certificate");
    assert!(out.contains(&format!("tls.certificates[0]: serial {serial}, valid until ")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_http_sends_plain_requests_to_https_except_the_exercise_api() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    make_certificate(dir, "a");
    let port = common::free_port();
    let d = dir.display();
    let lb = Lb::start(&common::manifest(
        "tls-redirect",
        2,
        &format!(
            "tls:\n  listen: 127.0.0.1:{port}\n  redirect_http: true\n  certificates:\n    \
             - {{cert: {d}/a.pem, key: {d}/a.key}}\n"
        ),
    ))
    .await;
    let plain = |args: &[&str], path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", "ca.pem", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{redirect_url} %{url_effective}"])
            .args(args)
            .arg(format!("http://localhost:{}{path}", lb.addr.port()))
            .current_dir(dir)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        plain(&[], "/home?x=1"),
        format!("308 https://localhost:{port}/home?x=1 http://localhost:{}/home?x=1", lb.addr.port())
    );
    // A POST is redirected with its method (308), and curl following it reaches a replica over TLS.
    let followed = plain(&["-L", "--data-binary", "kept", "-X", "POST"], "/echo");
    assert_eq!(followed, format!("200  https://localhost:{port}/echo"));
    // The exercise's API and ringlb's own paths stay on plain HTTP.
    for path in ["/rep", "/_ringlb/status"] {
        assert!(plain(&[], path).starts_with("200 "), "{path}");
    }
}
