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
//! and returns once they are closed or the drain time is over. With several workers, each serves
//! its share of the connections on a thread of its own (`workers.rs`), from sockets of its own
//! where the address allows (`bind.rs`).

pub mod bind;
pub mod certs;
pub mod tls;
mod workers;
pub mod x509;

pub use workers::{Prepared, prepare};

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

/// The listening sockets to serve (non-blocking, not yet registered with a runtime): `plain` on
/// `listen`, and with a `tls:` section, `tls` on `tls.listen` with the acceptor that handshakes
/// with the certificates in use. Each list holds one socket, or one per worker ([`bind`]).
pub struct Listening {
    /// On `listen`.
    pub plain: Vec<std::net::TcpListener>,
    /// On `tls.listen`, with its acceptor.
    pub tls: Option<(Vec<std::net::TcpListener>, TlsAcceptor)>,
}

/// One socket to accept on, registered with the runtime that serves it: TLS with an acceptor.
struct Accepting {
    socket: TcpListener,
    acceptor: Option<TlsAcceptor>,
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

/// What every worker of the listener shares: the routing state, the admin router, the drain, and
/// the count of open client connections that `proxy.max_connections` bounds.
#[derive(Clone)]
struct Shared {
    proxy: Arc<Proxy>,
    admin: Router,
    drain: Arc<Drain>,
    open: Arc<AtomicUsize>,
    https_port: Option<u16>,
    drain_time: Duration,
}

impl Front {
    /// A worker's front: engines of its own (so its own idle replica connections and its own
    /// tasks), with everything else shared.
    fn new(shared: &Shared) -> Front {
        Front {
            local: Local { is_reserved: crate::reserved::is_reserved, router: shared.admin.clone() },
            fast: Arc::new(fast::Engine::new(Arc::clone(&shared.proxy))),
            hyper: Arc::new(hyper_engine::Engine::new(Arc::clone(&shared.proxy), shared.https_port)),
            proxy: Arc::clone(&shared.proxy),
            connections: TaskTracker::new(),
            open: Arc::clone(&shared.open),
            drain: Arc::clone(&shared.drain),
        }
    }
}

/// Serves the `prepared` sockets ([`prepare`]: on the calling runtime, or with more than one
/// worker on threads of their own, one single-threaded runtime each) until `drain` begins, then
/// lets connections finish for at most `drain_time`; at its end idle connections are closed (if
/// they were not already). `https_port` is the TLS listener's, for `redirect_http`.
pub async fn serve(
    prepared: Prepared,
    https_port: Option<u16>,
    proxy: Arc<Proxy>,
    admin: Router,
    drain: Arc<Drain>,
    drain_time: Duration,
) {
    let shared = Shared { proxy, admin, drain, open: Arc::new(AtomicUsize::new(0)), https_port, drain_time };
    prepared.serve(shared).await;
}

/// Serves `sockets` (registered with the calling runtime) until the drain begins, then waits for
/// the connections (bounded by the drain time).
async fn serve_here(shared: Shared, sockets: Vec<Accepting>) {
    let front = Arc::new(Front::new(&shared));
    let mut accepting = tokio::task::JoinSet::new();
    for socket in sockets {
        accepting.spawn(accept_loop(Arc::clone(&front), socket));
    }
    while accepting.join_next().await.is_some() {}
    front.connections.close();
    let drain_time = shared.drain_time;
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

/// Accepts on `listener` until the drain begins; with an acceptor, each connection is TLS.
async fn accept_loop(front: Arc<Front>, listener: Accepting) {
    let Accepting { socket: listener, acceptor } = listener;
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
        // The task lives as long as the connection: the TLS handshake and the TLS stream (tens
        // of KiB) are boxed, so that a plain connection's task holds only what it uses.
        front.connections.spawn(async move {
            let _counted = counted;
            match acceptor {
                None => serve_one(&task_front, stream, peer, Scheme::Http, engine).await,
                Some(acceptor) => {
                    Box::pin(serve_tls(&task_front, &acceptor, stream, peer, engine, handshake_within)).await
                }
            }
        });
    }
}

/// Handshakes with a TLS client (within `handshake_within`) and serves it: with hyper when it
/// chose HTTP/2, else with `engine`.
async fn serve_tls(
    front: &Front,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    engine: ProxyEngine,
    handshake_within: Duration,
) {
    match tls::handshake(acceptor, stream, handshake_within).await {
        Ok(done) if done.h2 => serve_one(front, done.stream, peer, Scheme::Https, ProxyEngine::Hyper).await,
        Ok(done) => serve_one(front, done.stream, peer, Scheme::Https, engine).await,
        Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
    }
}

/// Serves one client connection with `engine` (the fast one hands over what it does not serve;
/// hyper's connection state is boxed, as the fast engine serves most connections to the end).
async fn serve_one<S>(front: &Front, stream: S, peer: SocketAddr, scheme: Scheme, engine: ProxyEngine)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match engine {
        ProxyEngine::Fast => {
            match fast::serve(stream, peer, scheme, &front.fast, &front.local, &front.drain).await {
                Ended::Closed => {}
                Ended::Handover(rest) => serve_with_hyper(front, rest, peer, scheme).await,
            }
        }
        ProxyEngine::Hyper => serve_with_hyper(front, stream, peer, scheme).await,
    }
}

/// Serves a connection with hyper, its state boxed.
async fn serve_with_hyper<S>(front: &Front, stream: S, peer: SocketAddr, scheme: Scheme)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hyper = Arc::clone(&front.hyper);
    Box::pin(hyper_engine::serve_connection(stream, peer, scheme, hyper, front.local.clone(), &front.drain))
        .await;
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
