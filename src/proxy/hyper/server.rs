//! One client connection served by hyper: HTTP/1.1 (with upgrades), or HTTP/2 when the client
//! opens with the HTTP/2 preface (prior knowledge, `h2c`). ringlb's own paths go to the local
//! router, every other request (every HTTP/2 stream on its own) to [`Engine::forward`]. On
//! shutdown the requests in progress finish and the connection closes.
//!
//! HTTP/2 connections get the limits of `proxy.http2` and two protections: h2's own against a
//! CONTINUATION flood (a header block over `max_header_bytes` ends the connection) and against
//! resets of streams not yet handed over, and ringlb's rapid-reset guard (`resets.rs`) for the
//! streams reset while being forwarded.

use super::Engine;
use super::resets::{Guarded, Resets};
use crate::proxy::Local;
use crate::proxy::headers::Scheme;
use crate::snapshot::Routing;
use crate::telemetry;
use axum::body::Body;
use http::Version;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The connection settings of `routing`.
fn builder(routing: &Routing) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(routing.client_timeout);
    let limits = &routing.http2;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes);
    builder
}

/// Serves `io` (a client connection from `peer`, or what the fast path handed over), with the
/// connection settings of the routing state now, until it closes, or until `shutdown` and the
/// requests in progress are done.
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    scheme: Scheme,
    engine: Arc<Engine>,
    local: Local,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = builder(&engine.proxy.snapshots().load().routing);
    let resets = Arc::new(Resets::default());
    let service = {
        let resets = Arc::clone(&resets);
        service_fn(move |request| {
            dispatch(request, peer, scheme, Arc::clone(&engine), local.clone(), Arc::clone(&resets))
        })
    };
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = resets.tripped() => {
            let (opened, early) = resets.counts();
            metrics::counter!(telemetry::CONNECTIONS_CUT, "reason" => "rapid_reset").increment(1);
            tracing::warn!(event = "client_cut_off", %peer, opened, early,
                "HTTP/2 client {peer} reset {early} of its {opened} streams before their answers ended; connection closed");
            return;
        }
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
    scheme: Scheme,
    engine: Arc<Engine>,
    local: Local,
    resets: Arc<Resets>,
) -> Result<axum::response::Response, Infallible> {
    let guard = (request.version() == Version::HTTP_2).then(|| resets.open());
    let response = if (local.is_reserved)(request.uri().path()) {
        match local.router.oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    } else {
        engine.forward(request, peer, scheme).await
    };
    Ok(match guard {
        Some(guard) => response.map(|body| Body::new(Guarded::new(body, guard))),
        None => response,
    })
}
