//! A running load balancer: the controller, the manifest watcher, the proxy and the admin API on one
//! listener, started together and stopped together.
//!
//! `ringlb run` is this plus signal handling; `ringlb analyze` starts one in-process to measure it;
//! nothing here knows which runtime runs the replicas.

use crate::admin::{self, AdminState};
use crate::controller::Controller;
use crate::listener;
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

/// The listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (the manifest's `listen`): {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A load balancer serving on [`Balancer::addr`] until [`Balancer::stop`].
pub struct Balancer {
    /// Where it listens (the real port when the manifest asked for port 0).
    pub addr: SocketAddr,
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
    /// The listen address cannot be bound.
    pub async fn start<R: Runtime>(
        runtime: Arc<R>,
        source: Arc<ManifestSource>,
        trigger: Trigger,
        options: Options,
    ) -> Result<Balancer, BindError> {
        let listen = source.current().manifest.listen;
        let socket = TcpListener::bind(listen).await.map_err(|source| BindError { addr: listen, source })?;
        let addr = socket.local_addr().map_err(|source| BindError { addr: listen, source })?;
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
        if snapshots.wait_for_version(1, FIRST_PASS).await.is_none() {
            tracing::warn!("the first reconcile pass is slow; serving anyway");
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
            proxy,
            admin::router(admin_state),
            shutdown.child_token(),
            options.drain,
        ));
        tracing::info!(event = "listening", address = %addr, "load balancer listening on http://{addr}");
        Ok(Balancer { addr, snapshots, shutdown, front, controller, watcher })
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
