//! The load balancer's front door: accepts connections on `listen` and hands each to an engine of
//! the proxy, with ringlb's own routes (the paths [`crate::reserved`] names, answered by the admin
//! router).
//!
//! Each connection is served by the fast engine or by hyper (`proxy.engine`, read when it is
//! accepted); the fast engine hands hyper the connections it does not serve itself. Over
//! `proxy.max_connections` open connections, a new one gets a 503 and is closed. Connection errors
//! stay in the connection's task. On shutdown the listener stops accepting, lets
//! every connection finish the request it is serving (bounded by `drain`), and returns.

use crate::manifest::ProxyEngine;
use crate::proxy::fast::{self, Ended};
use crate::proxy::{Local, Proxy, hyper as hyper_engine};
use crate::telemetry;
use axum::Router;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `listener` until `shutdown`, then drains connections for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    admin: Router,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let local = Local { is_reserved: crate::reserved::is_reserved, router: admin };
    let fast_engine = Arc::new(fast::Engine::new(Arc::clone(&proxy)));
    let hyper_engine = Arc::new(hyper_engine::Engine::new(Arc::clone(&proxy)));
    let connections = TaskTracker::new();
    let open = Arc::new(AtomicUsize::new(0));
    let mut accept_failures = 0u32;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => { accept_failures = 0; accepted }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    accept_failures = accept_failures.saturating_add(1);
                    let pause = Duration::from_millis(10u64 << accept_failures.min(6));
                    tracing::warn!(%error, "accept failed; pausing {pause:?}");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (engine, max_connections) = {
            let snapshot = proxy.snapshots().load();
            (snapshot.routing.engine, snapshot.routing.max_connections as usize)
        };
        if open.load(Ordering::Relaxed) >= max_connections {
            connections.spawn(refuse(stream, max_connections));
            continue;
        }
        let counted = OpenConnection::new(&open);
        let (fast_engine, hyper_engine, local) =
            (Arc::clone(&fast_engine), Arc::clone(&hyper_engine), local.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _counted = counted;
            match engine {
                ProxyEngine::Fast => match fast::serve(stream, peer, &fast_engine, &local, &shutdown).await {
                    Ended::Closed => {}
                    Ended::Handover(rest) => {
                        hyper_engine::serve_connection(rest, peer, hyper_engine, local, &shutdown).await;
                    }
                },
                ProxyEngine::Hyper => {
                    hyper_engine::serve_connection(stream, peer, hyper_engine, local, &shutdown).await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(drain, connections.wait()).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// Answers a connection over `proxy.max_connections` with a 503 and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    metrics::counter!(telemetry::UNROUTED, "reason" => "connection_limit").increment(1);
    tracing::debug!("{max} client connections are open; refusing one more");
    let mut answer = Vec::new();
    let message = format!(
        "{max} client connections are open, the most proxy.max_connections allows; try again shortly"
    );
    fast::response::error(&mut answer, http::StatusCode::SERVICE_UNAVAILABLE, &message, true);
    // Bounded: a client that does not read its answer does not keep the socket.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// Counts an open client connection while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
