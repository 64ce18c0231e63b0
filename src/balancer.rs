//! A running load balancer: the controller, the manifest watcher, the proxy and the admin API on one
//! listener, started together and stopped together.
//!
//! `ringlb run` is this plus signal handling; `ringlb analyze` starts one in-process to measure it;
//! nothing here knows which runtime runs the replicas.
//!
//! It stops in one of two ways: [`Balancer::stop`] (shutdown: nobody takes over, so idle
//! connections close at once) or [`Balancer::hand_over`] (an upgrade: a new process serves the
//! same listening sockets, which it got with [`Options::inherited`], and runs the controller; this
//! one stops its controller at once and lets its connections end with their next answer).

use crate::admin::{self, AdminState};
use crate::controller::Controller;
use crate::listener::{self, Listening, certs, tls};
use crate::manifest::source::ManifestSource;
use crate::manifest::watch;
use crate::proxy::{Drain, Proxy};
use crate::runtime::{NameCheck, Runtime};
use crate::snapshot::Snapshots;
use crate::trigger::Trigger;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the first reconcile pass may take before the listener opens anyway.
const FIRST_PASS: Duration = Duration::from_secs(30);

/// What can be set when starting a load balancer.
#[derive(Debug)]
pub struct Options {
    /// `/add` and `/rm` need this bearer token when set.
    pub admin_token: Option<String>,
    /// How long in-flight requests may take to finish on stop.
    pub drain: Duration,
    /// Renders `/_ringlb/metrics` (absent: no metrics are recorded in this process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Listening sockets passed on by the process this one replaces.
    pub inherited: Inherited,
    /// Serve only once the ring holds this many replicas (or every desired one, when fewer are
    /// desired), waiting at most 30 s: a process taking over from another starts with
    /// the ring the other one had.
    pub ring_before_serving: Option<usize>,
    /// Threads that serve connections, each with a single-threaded runtime of its own (thread
    /// per core); 1 serves them on the runtime that starts the load balancer.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admin_token: None,
            drain: Duration::from_secs(10),
            metrics: None,
            inherited: Inherited::default(),
            ring_before_serving: None,
            workers: 1,
        }
    }
}

/// Listening sockets a previous process passed on: they serve their key (`listen`, `tls.listen`)
/// when they are bound to the address the manifest names there (any port, for port 0); otherwise
/// the address is bound anew and they are closed.
#[derive(Debug, Default)]
pub struct Inherited {
    /// For `listen`: one socket, or a group of one per worker.
    pub listen: Vec<std::net::TcpListener>,
    /// For `tls.listen`.
    pub tls: Vec<std::net::TcpListener>,
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
    /// The listening sockets cannot be registered for serving (the system is out of resources).
    #[error("cannot serve the listening sockets: {0}")]
    Serve(#[source] std::io::Error),
    /// rustls refused the TLS settings.
    #[error("the TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// Binds `addr` (the manifest's `key`) for `workers`, or takes `inherited` when it listens there.
fn bind(
    addr: SocketAddr,
    key: &'static str,
    workers: usize,
    inherited: Vec<std::net::TcpListener>,
) -> Result<listener::bind::Bound, StartError> {
    listener::bind::bind(addr, key, workers, inherited).map_err(|source| StartError::Bind {
        addr,
        key,
        source,
    })
}

/// Second descriptors of `bound`'s sockets, kept to pass them on in an upgrade.
fn keep(bound: &listener::bind::Bound, key: &'static str) -> Vec<(&'static str, OwnedFd)> {
    let mut kept = Vec::new();
    for socket in &bound.sockets {
        match socket.as_fd().try_clone_to_owned() {
            Ok(fd) => kept.push((key, fd)),
            Err(error) => {
                tracing::warn!(%error, "cannot keep `{key}`'s socket; an upgrade will bind it anew")
            }
        }
    }
    kept
}

/// A load balancer serving on [`Balancer::addr`] until [`Balancer::stop`].
pub struct Balancer {
    /// Where it listens (the real port when the manifest asked for port 0).
    pub addr: SocketAddr,
    /// Where it listens for TLS, with a `tls:` section.
    pub tls_addr: Option<SocketAddr>,
    /// Its routing snapshots, for in-process observers.
    pub snapshots: Arc<Snapshots>,
    /// The listening sockets by manifest key, to pass on in an upgrade.
    sockets: Vec<(&'static str, OwnedFd)>,
    /// Stops the controller, the watchers.
    shutdown: CancellationToken,
    /// Ends the connections.
    drain: Arc<Drain>,
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
        let Options { admin_token, drain: drain_time, metrics, inherited, ring_before_serving, workers } =
            options;
        let plain = bind(manifest.listen, "listen", workers, inherited.listen)?;
        let addr = plain.addr;
        let mut sockets = keep(&plain, "listen");
        let (tls_sockets, tls) = match &manifest.tls {
            None => (None, None),
            Some(settings) => {
                let dir = source.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
                let loaded = certs::load_all(&settings.certificates, &dir, std::time::SystemTime::now())?;
                let certificates = Arc::new(certs::Certificates::new(loaded));
                let acceptor = tls::acceptor(Arc::clone(&certificates))?;
                let bound = bind(settings.listen, "tls.listen", workers, inherited.tls)?;
                sockets.extend(keep(&bound, "tls.listen"));
                tls::log_serving(&certificates, "TLS");
                (Some((bound.sockets, acceptor)), Some((bound.addr, certificates)))
            }
        };
        // Every socket registered with the runtime that will accept on it, before anything else
        // starts: a socket that cannot be served fails the start (and an upgrade with it).
        let prepared = listener::prepare(Listening { plain: plain.sockets, tls: tls_sockets }, workers)
            .map_err(StartError::Serve)?;
        let snapshots = Arc::new(Snapshots::default());
        let shutdown = CancellationToken::new();

        // One service for now (`ringlb run` refuses several): the cluster.
        let desired = source.service(0).expect("every manifest has at least one service");
        let controller =
            Controller::new(Arc::clone(&runtime), desired, Arc::clone(&snapshots), trigger.clone());
        let controller = tokio::spawn(controller.run(shutdown.child_token()));
        let watcher = tokio::spawn(watch::run(Arc::clone(&source), shutdown.child_token()));
        let tls_addr = match tls {
            None => None,
            Some((tls_addr, certificates)) => {
                tokio::spawn(tls::watch(certificates, Arc::clone(&source), shutdown.child_token()));
                Some(tls_addr)
            }
        };
        if snapshots.wait_for_version(1, FIRST_PASS).await.is_none() {
            tracing::warn!("the first reconcile pass is slow; serving anyway");
        }
        if let Some(wanted) = ring_before_serving
            && snapshots.wait_for_ring(wanted, FIRST_PASS).await.is_none()
        {
            let held = snapshots.load().members.len();
            tracing::warn!(
                "the ring holds {held} replicas, not the {wanted} the previous process had; serving anyway"
            );
        }

        for listen in std::iter::once(addr).chain(tls_addr) {
            if let Some(warning) = admin::open_admin_warning(admin_token.as_deref(), listen) {
                tracing::warn!(event = "admin_open", address = %listen, "{warning}");
            }
        }
        if let Some(handle) = &metrics {
            tokio::spawn(crate::telemetry::keep_up(handle.clone(), shutdown.child_token()));
        }
        let admin_state = Arc::new(AdminState {
            source,
            snapshots: Arc::clone(&snapshots),
            edits: tokio::sync::Mutex::new(()),
            token: admin_token,
            names: runtime as Arc<dyn NameCheck>,
            metrics,
        });
        let proxy = Arc::new(Proxy::new(Arc::clone(&snapshots), trigger));
        let drain = Arc::new(Drain::default());
        let front = tokio::spawn(listener::serve(
            prepared,
            tls_addr.map(|a| a.port()),
            proxy,
            admin::router(admin_state),
            Arc::clone(&drain),
            drain_time,
        ));
        tracing::info!(event = "listening", address = %addr, "load balancer listening on http://{addr}");
        if let Some(tls_addr) = tls_addr {
            tracing::info!(event = "listening_tls", address = %tls_addr, "load balancer listening on https://{tls_addr}");
        }
        Ok(Balancer { addr, tls_addr, snapshots, sockets, shutdown, drain, front, controller, watcher })
    }

    /// The listening sockets, by the manifest key they serve (`listen`, `tls.listen`).
    pub fn sockets(&self) -> impl Iterator<Item = (&'static str, BorrowedFd<'_>)> {
        self.sockets.iter().map(|(key, fd)| (*key, fd.as_fd()))
    }

    /// Stops accepting, closes idle connections, lets requests in flight finish (bounded by the
    /// drain time), and stops the controller and the watcher. Replicas are the runtime's business
    /// (`Runtime::shutdown`).
    pub async fn stop(mut self) {
        // Nobody takes over: the kept descriptors go first, so that the listening sockets close
        // as soon as the workers stop accepting, and a client connecting meanwhile is refused at
        // once (and may retry elsewhere) instead of waiting in the backlog to be reset at exit.
        self.sockets.clear();
        self.drain.close_idle();
        self.shutdown.cancel();
        let _ = self.front.await;
        let _ = self.controller.await;
        let _ = self.watcher.await;
    }

    /// Another process serves the same sockets now: stops the controller and the watchers at
    /// once (the new process reconciles), stops accepting, and lets every connection end with its
    /// next answer; connections still idle at the end of the drain time are closed.
    pub async fn hand_over(self) {
        self.shutdown.cancel();
        let _ = self.controller.await;
        let _ = self.watcher.await;
        self.drain.begin();
        let _ = self.front.await;
    }
}
