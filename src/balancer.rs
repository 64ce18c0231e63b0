//! A running load balancer: the controller, the manifest watcher, the proxy and the admin API on one
//! listener, started together and stopped together.
//!
//! `ringlb run` is this plus signal handling; `ringlb analyze` starts one in-process to measure it;
//! nothing here knows which runtime runs the replicas.

use crate::admin::{self, AdminState};
use crate::controller::Controller;
use crate::listener::{self, TlsListener, certs, tls};
use crate::manifest::source::ManifestSource;
use crate::manifest::watch;
use crate::proxy::Proxy;
use crate::runtime::{NameCheck, Runtime};
use crate::snapshot::Snapshots;
use crate::trigger::Trigger;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the first reconcile pass may take before the listener opens anyway.
const FIRST_PASS: Duration = Duration::from_secs(30);

/// What can be set when starting a load balancer.
#[derive(Clone, Debug)]
pub struct Options {
    /// `/add` and `/rm` need this bearer token when set.
    pub admin_token: Option<String>,
    /// How long in-flight requests may take to finish on stop.
    pub drain: Duration,
    /// Renders `/_ringlb/metrics` (absent: no metrics are recorded in this process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Default for Options {
    fn default() -> Self {
        Options { admin_token: None, drain: Duration::from_secs(10), metrics: None }
    }
}

/// Why a load balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be opened.
    #[error("cannot listen on {addr} (the manifest's `{key}`): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// `listen` or `tls.listen`.
        key: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate of `tls.certificates` cannot be served.
    #[error("tls.certificates: {0}")]
    Certificate(#[from] crate::listener::certs::CertificateError),
    /// rustls refused the TLS settings.
    #[error("the TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// Binds `addr` (the manifest's `key`), with the address it got.
async fn bind(addr: SocketAddr, key: &'static str) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Bind { addr, key, source };
    let socket = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = socket.local_addr().map_err(failed)?;
    Ok((socket, bound))
}

/// A load balancer serving on [`Balancer::addr`] until [`Balancer::stop`].
pub struct Balancer {
    /// Where it listens (the real port when the manifest asked for port 0).
    pub addr: SocketAddr,
    /// Where it listens for TLS, with a `tls:` section.
    pub tls_addr: Option<SocketAddr>,
    /// Its routing snapshots, for in-process observers.
    pub snapshots: Arc<Snapshots>,
    shutdown: CancellationToken,
    front: JoinHandle<()>,
    controller: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl Balancer {
    /// Binds the manifest's `listen` address, starts the controller and the watcher, waits for the
    /// first reconcile pass (bounded), and starts serving.
    ///
    /// # Errors
    /// A listen address cannot be bound; a certificate cannot be served.
    pub async fn start<R: Runtime>(
        runtime: Arc<R>,
        source: Arc<ManifestSource>,
        trigger: Trigger,
        options: Options,
    ) -> Result<Balancer, StartError> {
        let manifest = source.current().manifest;
        let (socket, addr) = bind(manifest.listen, "listen").await?;
        let tls = match &manifest.tls {
            None => None,
            Some(settings) => {
                let dir = source.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
                let loaded = certs::load_all(&settings.certificates, &dir, std::time::SystemTime::now())?;
                let certificates = Arc::new(certs::Certificates::new(loaded));
                let acceptor = tls::acceptor(Arc::clone(&certificates))?;
                let (socket, tls_addr) = bind(settings.listen, "tls.listen").await?;
                tls::log_serving(&certificates, "TLS");
                Some((TlsListener { socket, acceptor }, tls_addr, certificates))
            }
        };
        let snapshots = Arc::new(Snapshots::default());
        let shutdown = CancellationToken::new();

        let controller = Controller::new(
            Arc::clone(&runtime),
            Arc::clone(&source),
            Arc::clone(&snapshots),
            trigger.clone(),
        );
        let controller = tokio::spawn(controller.run(shutdown.child_token()));
        let watcher = tokio::spawn(watch::run(Arc::clone(&source), shutdown.child_token()));
        let (tls, tls_addr) = match tls {
            None => (None, None),
            Some((listener, tls_addr, certificates)) => {
                tokio::spawn(tls::watch(certificates, Arc::clone(&source), shutdown.child_token()));
                (Some(listener), Some(tls_addr))
            }
        };
        if snapshots.wait_for_version(1, FIRST_PASS).await.is_none() {
            tracing::warn!("the first reconcile pass is slow; serving anyway");
        }

        for listen in std::iter::once(addr).chain(tls_addr) {
            if let Some(warning) = admin::open_admin_warning(options.admin_token.as_deref(), listen) {
                tracing::warn!(event = "admin_open", address = %listen, "{warning}");
            }
        }
        let admin_state = Arc::new(AdminState {
            source,
            snapshots: Arc::clone(&snapshots),
            edits: tokio::sync::Mutex::new(()),
            token: options.admin_token,
            names: runtime as Arc<dyn NameCheck>,
            metrics: options.metrics,
        });
        let proxy = Arc::new(Proxy::new(Arc::clone(&snapshots), trigger));
        let front = tokio::spawn(listener::serve(
            socket,
            tls,
            proxy,
            admin::router(admin_state),
            shutdown.child_token(),
            options.drain,
        ));
        tracing::info!(event = "listening", address = %addr, "load balancer listening on http://{addr}");
        if let Some(tls_addr) = tls_addr {
            tracing::info!(event = "listening_tls", address = %tls_addr, "load balancer listening on https://{tls_addr}");
        }
        Ok(Balancer { addr, tls_addr, snapshots, shutdown, front, controller, watcher })
    }

    /// Stops accepting, lets requests in flight finish (bounded by the drain time), and stops the
    /// controller and the watcher. Replicas are the runtime's business (`Runtime::shutdown`).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.front.await;
        let _ = self.controller.await;
        let _ = self.watcher.await;
    }
}
