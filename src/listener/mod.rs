//! The load balancer's front door: accepts connections on `listen` (plain HTTP) and, with a `tls:`
//! section, on `tls.listen` (TLS, `tls.rs`, with the certificates of `certs.rs`), and hands each to
//! an engine of the proxy, with ringlb's own routes (the paths [`crate::reserved`] names, answered
//! by the admin router).
//!
//! Each connection is served by the fast engine or by hyper (`proxy.engine`, read when it is
//! accepted); the fast engine hands hyper the connections it does not serve itself, and a TLS
//! client that chose HTTP/2 by ALPN goes to hyper at once. Over `proxy.max_connections` open
//! connections (both listeners together), a new one gets a 503 and is closed. Connection errors
//! stay in the connection's task. When the [`Drain`] begins the listener stops accepting, lets
//! every connection finish the request it is serving with an answer that closes it ([`Drain`]),
//! and returns once they are closed or the drain time is over.

pub mod certs;
pub mod tls;
pub mod x509;

use crate::manifest::ProxyEngine;
use crate::proxy::fast::{self, Ended};
use crate::proxy::headers::Scheme;
use crate::proxy::{Drain, Local, Proxy, hyper as hyper_engine};
use crate::telemetry;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// The TLS listener: its socket and its acceptor.
pub struct TlsListener {
    /// Bound on `tls.listen`.
    pub socket: TcpListener,
    /// Handshakes with the certificates in use.
    pub acceptor: TlsAcceptor,
}

/// What every connection of both listeners shares.
struct Front {
    proxy: Arc<Proxy>,
    local: Local,
    fast: Arc<fast::Engine>,
    hyper: Arc<hyper_engine::Engine>,
    connections: TaskTracker,
    open: Arc<AtomicUsize>,
    drain: Arc<Drain>,
}

/// How long connections still open when the drain time is over get after their idle ones were
/// told to close.
const LAST_GRACE: Duration = Duration::from_secs(1);

/// Serves `listener` (and `tls`, if any) until `drain` begins, then lets connections finish for at
/// most `drain_time`; at its end idle connections are closed (if they were not already).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsListener>,
    proxy: Arc<Proxy>,
    admin: Router,
    drain: Arc<Drain>,
    drain_time: Duration,
) {
    let https_port = tls.as_ref().and_then(|t| t.socket.local_addr().ok()).map(|a| a.port());
    let front = Arc::new(Front {
        local: Local { is_reserved: crate::reserved::is_reserved, router: admin },
        fast: Arc::new(fast::Engine::new(Arc::clone(&proxy))),
        hyper: Arc::new(hyper_engine::Engine::new(Arc::clone(&proxy), https_port)),
        proxy,
        connections: TaskTracker::new(),
        open: Arc::new(AtomicUsize::new(0)),
        drain,
    });
    let plain = accept_loop(Arc::clone(&front), listener, None);
    match tls {
        Some(tls) => {
            tokio::join!(plain, accept_loop(Arc::clone(&front), tls.socket, Some(tls.acceptor)));
        }
        None => plain.await,
    }
    front.connections.close();
    if tokio::time::timeout(drain_time, front.connections.wait()).await.is_ok() {
        return;
    }
    front.drain.close_idle();
    if tokio::time::timeout(LAST_GRACE, front.connections.wait()).await.is_err() {
        tracing::warn!(
            open = front.open.load(Ordering::Relaxed),
            "connections still busy after the drain time ({drain_time:?}); closing them"
        );
    }
}

/// Accepts on `listener` until shutdown; with `acceptor`, each connection is TLS.
async fn accept_loop(front: Arc<Front>, listener: TcpListener, acceptor: Option<TlsAcceptor>) {
    let mut accept_failures = 0u32;
    loop {
        let (stream, peer) = tokio::select! {
            () = front.drain.began() => break,
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
        let (engine, max_connections, handshake_within) = {
            let snapshot = front.proxy.snapshots().load();
            let routing = &snapshot.routing;
            (routing.engine, routing.max_connections as usize, routing.client_timeout)
        };
        if front.open.load(Ordering::Relaxed) >= max_connections {
            front.connections.spawn(refuse(stream, max_connections));
            continue;
        }
        let counted = OpenConnection::new(&front.open);
        let task_front = Arc::clone(&front);
        let acceptor = acceptor.clone();
        front.connections.spawn(async move {
            let _counted = counted;
            let Some(acceptor) = acceptor else {
                return serve_one(&task_front, stream, peer, Scheme::Http, engine).await;
            };
            match tls::handshake(&acceptor, stream, handshake_within).await {
                Ok(done) if done.h2 => {
                    serve_one(&task_front, done.stream, peer, Scheme::Https, ProxyEngine::Hyper).await
                }
                Ok(done) => serve_one(&task_front, done.stream, peer, Scheme::Https, engine).await,
                Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            }
        });
    }
}

/// Serves one client connection with `engine` (the fast one hands over what it does not serve).
async fn serve_one<S>(front: &Front, stream: S, peer: SocketAddr, scheme: Scheme, engine: ProxyEngine)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hyper = Arc::clone(&front.hyper);
    match engine {
        ProxyEngine::Fast => {
            match fast::serve(stream, peer, scheme, &front.fast, &front.local, &front.drain).await {
                Ended::Closed => {}
                Ended::Handover(rest) => {
                    hyper_engine::serve_connection(
                        rest,
                        peer,
                        scheme,
                        hyper,
                        front.local.clone(),
                        &front.drain,
                    )
                    .await;
                }
            }
        }
        ProxyEngine::Hyper => {
            hyper_engine::serve_connection(stream, peer, scheme, hyper, front.local.clone(), &front.drain)
                .await;
        }
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
