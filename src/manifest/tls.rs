//! The `tls:` section: a second listener that terminates TLS, the certificates it serves (chosen by
//! the name the client asks for), and whether plain-HTTP requests are sent there.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// TLS termination (absent: none).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Where TLS connections are accepted.
    pub listen: SocketAddr,
    /// The certificates, chosen by the client's server name (SNI); the first one serves a client
    /// that sends no name or a name none of them is for.
    pub certificates: Vec<CertificateFiles>,
    /// True: a plain-HTTP request on `listen` gets a 308 to the same URL over https (but the
    /// exercise's `/rep`, `/add`, `/rm` and ringlb's own `/_ringlb/` paths).
    #[serde(default)]
    pub redirect_http: bool,
}

/// One certificate: its PEM chain and its PEM private key. Relative paths are relative to the
/// manifest's directory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertificateFiles {
    /// Both paths, relative ones joined to `dir` (the manifest's directory).
    pub fn resolved(&self, dir: &Path) -> CertificateFiles {
        CertificateFiles { cert: dir.join(&self.cert), key: dir.join(&self.key) }
    }
}
