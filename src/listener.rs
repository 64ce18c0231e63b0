//! The load balancer's front door: accepts connections on `listen`, serves HTTP/1.1 on them, and
//! sends each request either to the admin router (reserved paths) or to the proxy.
//!
//! Connection errors stay in the connection's task. On shutdown the listener stops accepting, lets
//! every connection finish the request it is serving (bounded by `drain`), and returns.

use crate::admin;
use crate::proxy::Proxy;
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown`, then drains connections for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    admin: Router,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
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
        let proxy = Arc::clone(&proxy);
        let admin = admin.clone();
        let service = service_fn(move |request| dispatch(request, peer, Arc::clone(&proxy), admin.clone()));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

async fn dispatch(
    request: http::Request<Incoming>,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    admin: Router,
) -> Result<axum::response::Response, Infallible> {
    if admin::is_reserved(request.uri().path()) {
        return admin.oneshot(request.map(Body::new)).await;
    }
    Ok(proxy.forward(request, peer).await)
}
