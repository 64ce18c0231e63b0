//! Certificates for the TLS tests, made by the `openssl` command: a CA and certificates it signs.

use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args` in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA (`ca.pem`) and a certificate `<name>.pem`/`<name>.key` it signed for `<name>.test` and
/// `localhost`; returns the certificate's serial as openssl prints it.
pub fn make_certificate(dir: &Path, name: &str) -> String {
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
