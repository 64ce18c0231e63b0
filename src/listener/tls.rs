//! TLS termination: the rustls server settings of the TLS listener (TLS 1.2 and 1.3 only, ALPN
//! `h2` then `http/1.1`, the certificate chosen per handshake by [`Certificates`]), the bounded
//! handshake, and the watcher that replaces the certificates when their files change.

use super::certs::{self, Certificates, PemFiles};
use crate::manifest::CertificateFiles;
use crate::manifest::source::ManifestSource;
use crate::telemetry;
use rustls::ServerConfig;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are read for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The ALPN protocol id of HTTP/2.
const H2: &[u8] = b"h2";

/// The acceptor of the TLS listener, serving `certificates`.
///
/// # Errors
/// The provider does not support TLS 1.2 and 1.3 (it always does).
pub fn acceptor(certificates: Arc<Certificates>) -> Result<TlsAcceptor, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(certs::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![H2.to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client connection after its handshake, and whether it chose HTTP/2 by ALPN.
pub struct Handshaken {
    /// The decrypted stream.
    pub stream: TlsStream<TcpStream>,
    /// ALPN chose `h2`.
    pub h2: bool,
}

/// The TLS handshake of `stream`, bounded by `within`.
///
/// # Errors
/// The handshake failed or took too long.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    within: Duration,
) -> io::Result<Handshaken> {
    let stream = tokio::time::timeout(within, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long"))??;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
    Ok(Handshaken { stream, h2 })
}

/// Logs the certificates now served.
pub fn log_serving(certificates: &Certificates, why: &str) {
    for certificate in certificates.current().iter() {
        tracing::info!(event = "tls_certificate", cert = %certificate.files.cert.display(), serial = %certificate.facts.serial,
            not_after = %super::x509::utc(certificate.facts.not_after),
            "{why}: certificate {} (serial {}, valid until {})", certificate.files.cert.display(),
            certificate.facts.serial, super::x509::utc(certificate.facts.not_after));
    }
}

/// Replaces the certificates of `certificates` when the files the current manifest names (or the
/// list itself) change, until `shutdown`. A change is taken once the files read the same twice in
/// a row (a replacement written in two steps is not loaded half-done); one that does not load is
/// refused, with the reason in the log, and the certificates in use keep serving.
pub async fn watch(
    certificates: Arc<Certificates>,
    source: Arc<ManifestSource>,
    shutdown: CancellationToken,
) {
    let dir = source.path().parent().map(Path::to_path_buf).unwrap_or_default();
    let mut in_use = read_files(&source, &dir);
    let mut pending: Option<Vec<(CertificateFiles, Result<PemFiles, String>)>> = None;
    let mut refused: Option<Vec<(CertificateFiles, Result<PemFiles, String>)>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let now = read_files(&source, &dir);
        if now == in_use || refused.as_ref() == Some(&now) {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            // Changed since the last look: wait until it holds still.
            pending = Some(now);
            continue;
        }
        pending = None;
        match load(&now) {
            Ok(loaded) => {
                certificates.replace(loaded);
                metrics::counter!(telemetry::TLS_RELOADS, "result" => "loaded").increment(1);
                log_serving(&certificates, "certificate files changed; now serving");
                in_use = now;
                refused = None;
            }
            Err(why) => {
                metrics::counter!(telemetry::TLS_RELOADS, "result" => "refused").increment(1);
                tracing::error!(event = "tls_certificate_refused", error = %why,
                    "the changed certificate files cannot be served ({why}); the certificates in use keep serving");
                refused = Some(now);
            }
        }
    }
}

/// The certificate files of the current manifest (relative paths joined to `dir`) and what they
/// hold now.
fn read_files(source: &ManifestSource, dir: &Path) -> Vec<(CertificateFiles, Result<PemFiles, String>)> {
    let desired = source.current();
    let list = desired.manifest.tls.as_ref().map(|tls| tls.certificates.as_slice()).unwrap_or_default();
    list.iter()
        .map(|files| {
            let files = files.resolved(dir);
            let pem = PemFiles::read(&files).map_err(|e| e.to_string());
            (files, pem)
        })
        .collect()
}

/// Loads every certificate of `read`, all or nothing.
fn load(read: &[(CertificateFiles, Result<PemFiles, String>)]) -> Result<Vec<certs::Certificate>, String> {
    if read.is_empty() {
        return Err("the manifest names no certificate".into());
    }
    let now = SystemTime::now();
    read.iter()
        .map(|(files, pem)| {
            let pem = pem.as_ref().map_err(Clone::clone)?;
            certs::load(files, pem, now).map_err(|e| e.to_string())
        })
        .collect()
}
