//! One client connection served by hyper's HTTP/1.1 server: ringlb's own paths go to the local
//! router, every other request to [`Engine::forward`]. On shutdown the request in progress
//! finishes and the connection closes.

use super::Engine;
use crate::proxy::Local;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `io` (a client connection from `peer`, or what the fast path handed over) with `http`
/// until it closes, or until `shutdown` and the request in progress is done.
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    engine: Arc<Engine>,
    local: Local,
    http: hyper::server::conn::http1::Builder,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| dispatch(request, peer, Arc::clone(&engine), local.clone()));
    let connection = http.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

async fn dispatch(
    request: http::Request<Incoming>,
    peer: SocketAddr,
    engine: Arc<Engine>,
    local: Local,
) -> Result<axum::response::Response, Infallible> {
    if (local.is_reserved)(request.uri().path()) {
        return local.router.oneshot(request.map(Body::new)).await;
    }
    Ok(engine.forward(request, peer).await)
}
