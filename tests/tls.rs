//! TLS termination with clients this project did not write: curl over HTTP/1.1 and h2 (ALPN),
//! `openssl s_client` reading the served certificate's serial, SNI choosing between two
//! certificates, `X-Forwarded-Proto: https`, a broken replacement that leaves the old certificate
//! serving, a replacement under load (keep-alive and new-connection clients) that fails nothing,
//! `redirect_http`, and `ringlb check` on bad certificates. Certificates are made by the `openssl`
//! command in a temporary directory.

mod common;

use common::Lb;
use common::certs::{make_certificate, openssl};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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

/// A TLS client that trusts the test CA and offers `http/1.1`.
fn tls_connector(dir: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("read ca.pem") {
        roots.add(ca.expect("a CA certificate")).expect("a usable CA certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A full handshake every time: a resumed session would not show the certificate served now.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// One HTTP/1.1-over-TLS connection to `port`: the request sender and the leaf certificate served.
async fn tls_connection(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> Result<(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, Vec<u8>), String> {
    let tcp =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a server name");
    let tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let leaf =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(connection);
    Ok((sender, leaf))
}

/// `GET /home` on `sender`: `Ok` when a replica answered 200 with its whole body.
async fn home(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let request = hyper::Request::get("/home")
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .expect("a request");
    let answer = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = answer.status();
    let body = answer.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    if status != 200 || !body.starts_with(b"{\"message\": \"Hello from Server:") {
        return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_under_load_fails_no_request_and_drops_no_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path().to_path_buf();
    make_certificate(&dir, "a");
    let port = common::free_port();
    let d = dir.display();
    let lb = Lb::start(&common::manifest(
        "tls-load",
        2,
        &format!(
            "tls:\n  listen: 127.0.0.1:{port}\n  certificates:\n    - {{cert: {d}/a.pem, key: {d}/a.key}}\n"
        ),
    ))
    .await;
    let connector = tls_connector(&dir);
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let leaves = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    // Four keep-alive clients, each on the one connection it opened before the replacement.
    for _ in 0..4 {
        let (mut sender, _) = tls_connection(&connector, port).await.expect("a keep-alive connection");
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match home(&mut sender).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.push(format!("keep-alive: {e}"));
                        break;
                    }
                };
            }
            failures
        }));
    }
    // Two clients opening a new TLS connection for every request, noting the certificate served.
    for _ in 0..2 {
        let (connector, stop, done, leaves) =
            (connector.clone(), Arc::clone(&stop), Arc::clone(&done), Arc::clone(&leaves));
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = match tls_connection(&connector, port).await {
                    Ok((mut sender, leaf)) => {
                        leaves.lock().expect("the leaves").insert(leaf);
                        home(&mut sender).await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(format!("new connection: {e}")),
                }
            }
            failures
        }));
    }
    let served = |n: usize| {
        let done = Arc::clone(&done);
        async move { done.load(Ordering::Relaxed) >= n }
    };
    common::until!(Duration::from_secs(20), || served(200), "the clients were not served");
    let before = done.load(Ordering::Relaxed);
    make_certificate(&dir, "a");
    let new_leaf = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(dir.join("a.pem"))
            .expect("the new certificate")
            .to_vec()
    };
    common::until!(
        Duration::from_secs(15),
        || async { leaves.lock().expect("the leaves").contains(&new_leaf) },
        "no new connection was served the replaced certificate"
    );
    common::until!(Duration::from_secs(20), || served(before + 400), "the clients stopped being served");
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("a client task"));
    }
    assert_eq!(
        leaves.lock().expect("the leaves").len(),
        2,
        "only the old and the new certificate were served"
    );
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:?}",
        failures.len(),
        done.load(Ordering::Relaxed)
    );
    drop(lb);
}
