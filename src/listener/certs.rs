//! The certificates the TLS listener serves: read from the manifest's PEM files, checked (a chain,
//! a key that matches its leaf, valid now), chosen per handshake by the name the client asks for
//! (SNI), and replaced while ringlb runs when the files change. `ringlb check` runs the same checks.
//!
//! A replacement is all or nothing: every certificate of the manifest must load, or the ones in use
//! keep serving and the log says which file is wrong and why.

use super::x509::{self, CertificateFacts};
use crate::manifest::CertificateFiles;
use arc_swap::ArcSwap;
use rustls::InconsistentKeys;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Why a certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error("{} holds no usable PEM certificate{}", path.display(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said, if it said anything.
        detail: Option<String>,
    },
    /// The key file holds no PEM private key, or one rustls cannot sign with.
    #[error("{} holds no usable PEM private key ({detail})", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The key is not the leaf certificate's.
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate is not valid now.
    #[error("the certificate in {} is {when}", path.display())]
    NotValidNow {
        /// The file.
        path: PathBuf,
        /// `expired since ...` or `not valid before ...`.
        when: String,
    },
}

/// A certificate ready to serve.
pub struct Certificate {
    /// Where it was read from.
    pub files: CertificateFiles,
    /// The chain and its signing key, for rustls.
    pub key: Arc<CertifiedKey>,
    /// Its serial and validity.
    pub facts: CertificateFacts,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("files", &self.files).field("facts", &self.facts).finish()
    }
}

/// The PEM bytes of one certificate's two files.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// The private key.
    pub key: Vec<u8>,
}

impl PemFiles {
    /// Reads both files.
    ///
    /// # Errors
    /// [`CertificateError::Read`] naming the file.
    pub fn read(files: &CertificateFiles) -> Result<PemFiles, CertificateError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertificateError::Read { path: path.to_owned(), source })
        };
        Ok(PemFiles { cert: read(&files.cert)?, key: read(&files.key)? })
    }
}

/// The crypto provider of every TLS connection: *ring*, which builds into the static binary with
/// nothing but a C compiler (see the dependency notes in the README).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks and loads the certificate in `pem` (read from `files`), as of `now`.
///
/// # Errors
/// What is wrong with it, naming the file.
pub fn load(
    files: &CertificateFiles,
    pem: &PemFiles,
    now: SystemTime,
) -> Result<Certificate, CertificateError> {
    let no_certificate =
        |detail: Option<String>| CertificateError::NoCertificate { path: files.cert.clone(), detail };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| no_certificate(Some(e.to_string())))?;
    let leaf = chain.first().ok_or_else(|| no_certificate(None))?;
    let facts = x509::facts(leaf).ok_or_else(|| no_certificate(Some("not an X.509 certificate".into())))?;
    let no_key = |detail: String| CertificateError::NoKey { path: files.key.clone(), detail };
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| no_key(e.to_string()))?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| no_key(e.to_string()))?;
    let key = CertifiedKey::new(chain, signing);
    // As rustls' own `from_der`: a key whose public half cannot be known is not a mismatch.
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(CertificateError::Mismatch { cert: files.cert.clone(), key: files.key.clone() });
        }
        // The leaf did not parse as a certificate webpki accepts (an X.509 v1 one, say).
        Err(other) => return Err(no_certificate(Some(other.to_string()))),
    }
    let date = x509::utc;
    if now > facts.not_after {
        return Err(CertificateError::NotValidNow {
            path: files.cert.clone(),
            when: format!("expired since {}", date(facts.not_after)),
        });
    }
    if now < facts.not_before {
        return Err(CertificateError::NotValidNow {
            path: files.cert.clone(),
            when: format!("not valid before {}", date(facts.not_before)),
        });
    }
    Ok(Certificate { files: files.clone(), key: Arc::new(key), facts })
}

/// Reads and loads every certificate of `list`, relative paths joined to `dir`.
///
/// # Errors
/// The first certificate that cannot be served.
pub fn load_all(
    list: &[CertificateFiles],
    dir: &Path,
    now: SystemTime,
) -> Result<Vec<Certificate>, CertificateError> {
    list.iter().map(|files| read_and_load(&files.resolved(dir), now)).collect()
}

/// Reads `files` (already resolved) and loads the certificate as of `now`.
fn read_and_load(files: &CertificateFiles, now: SystemTime) -> Result<Certificate, CertificateError> {
    load(files, &PemFiles::read(files)?, now)
}

impl CertificateError {
    /// Which of the two files of `files` the error is about: `"cert"` or `"key"`.
    pub fn file_key(&self, files: &CertificateFiles) -> &'static str {
        match self {
            CertificateError::Read { path, .. } if *path == files.key => "key",
            CertificateError::NoKey { .. } | CertificateError::Mismatch { .. } => "key",
            _ => "cert",
        }
    }
}

/// What `ringlb check` reports about one entry of `tls.certificates`: its manifest field
/// (`tls.certificates[0].cert`, or `tls.certificates[0]` when it loads) and what the same checks as
/// at load time found, with relative paths joined to `dir`.
pub fn check_each(
    list: &[CertificateFiles],
    dir: &Path,
    now: SystemTime,
) -> Vec<(String, Result<CertificateFacts, CertificateError>)> {
    list.iter()
        .enumerate()
        .map(|(i, files)| {
            let files = files.resolved(dir);
            match read_and_load(&files, now) {
                Ok(certificate) => (format!("tls.certificates[{i}]"), Ok(certificate.facts)),
                Err(error) => (format!("tls.certificates[{i}].{}", error.file_key(&files)), Err(error)),
            }
        })
        .collect()
}

/// Picks the certificate for each handshake from the ones in use, which the watcher replaces.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<Vec<Certificate>>,
}

impl Certificates {
    /// Serves `certificates` (at least one) until [`Certificates::replace`].
    pub fn new(certificates: Vec<Certificate>) -> Certificates {
        Certificates { current: ArcSwap::from_pointee(certificates) }
    }

    /// New handshakes get `certificates` from now on.
    pub fn replace(&self, certificates: Vec<Certificate>) {
        self.current.store(Arc::new(certificates));
    }

    /// The certificates in use.
    pub fn current(&self) -> Arc<Vec<Certificate>> {
        self.current.load_full()
    }

    /// The certificate for a client asking for `name`: the first one valid for it, else the first.
    pub fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.load();
        let wanted = name.and_then(|n| DnsName::try_from(n.to_owned()).ok()).map(ServerName::DnsName);
        let valid_for = |certificate: &&Certificate| {
            let (Some(wanted), Some(leaf)) = (&wanted, certificate.key.end_entity_cert().ok()) else {
                return false;
            };
            webpki::EndEntityCert::try_from(leaf)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(wanted).is_ok())
        };
        current.iter().find(valid_for).or_else(|| current.first()).map(|c| Arc::clone(&c.key))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}
