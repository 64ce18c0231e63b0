//! One client connection served by hyper: HTTP/1.1 (with upgrades), or HTTP/2 when the client
//! opens with the HTTP/2 preface (prior knowledge, `h2c`). ringlb's own paths go to the local
//! router, every other request (every HTTP/2 stream on its own) to [`Engine::forward`]. When the
//! [`Drain`] begins, an HTTP/2 connection gets GOAWAY and finishes its streams; an HTTP/1.1 one
//! answers its next request with `Connection: close`, and closes at once when it sits idle and
//! the drain says idle connections must close.
//!
//! HTTP/2 connections get the limits of `proxy.http2` and two protections: h2's own against a
//! CONTINUATION flood (a header block over `max_header_bytes` ends the connection) and against
//! resets of streams not yet handed over, and ringlb's rapid-reset guard (`resets.rs`) for the
//! streams reset while being forwarded.

use super::Engine;
use super::resets::{Guarded, Resets};
use crate::proxy::headers::Scheme;
use crate::proxy::{Drain, Local};
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
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
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
/// connection settings of the routing state now, until it closes, or until `drain` ends it
/// (module docs).
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    scheme: Scheme,
    engine: Arc<Engine>,
    local: Local,
    drain: &Arc<Drain>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = builder(&engine.proxy.snapshots().load().routing);
    let resets = Arc::new(Resets::default());
    // Set by the first HTTP/2 request: such a connection is ended by GOAWAY as soon as the drain
    // begins (its client retries what was not processed on a new connection).
    let is_h2 = Arc::new(AtomicBool::new(false));
    let service = {
        let (resets, drain, is_h2) = (Arc::clone(&resets), Arc::clone(drain), Arc::clone(&is_h2));
        service_fn(move |request| {
            let connection = Connection {
                peer,
                scheme,
                resets: Arc::clone(&resets),
                drain: Arc::clone(&drain),
                is_h2: Arc::clone(&is_h2),
            };
            dispatch(request, connection, Arc::clone(&engine), local.clone())
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
        () = ended_by(drain, &is_h2) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

/// Resolves when the drain ends this connection: as soon as it begins for HTTP/2; for HTTP/1.1
/// (and a connection that sent nothing yet) only when idle connections must close, since its
/// answers close it meanwhile (see [`dispatch`]).
async fn ended_by(drain: &Drain, is_h2: &AtomicBool) {
    drain.began().await;
    if !is_h2.load(Ordering::Relaxed) {
        drain.idle_closed().await;
    }
}

/// What a request's handling needs to know of its connection.
struct Connection {
    peer: SocketAddr,
    scheme: Scheme,
    resets: Arc<Resets>,
    drain: Arc<Drain>,
    is_h2: Arc<AtomicBool>,
}

async fn dispatch(
    request: http::Request<Incoming>,
    connection: Connection,
    engine: Arc<Engine>,
    local: Local,
) -> Result<axum::response::Response, Infallible> {
    let Connection { peer, scheme, resets, drain, is_h2 } = connection;
    let h2 = request.version() == Version::HTTP_2;
    if h2 {
        is_h2.store(true, Ordering::Relaxed);
    }
    let guard = h2.then(|| resets.open());
    let response = if (local.is_reserved)(request.uri().path()) {
        match local.router.oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    } else {
        engine.forward(request, peer, scheme).await
    };
    let mut response = response;
    if !h2 && drain.is_closing() && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        // hyper closes an HTTP/1.1 connection after an answer that says so.
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    Ok(match guard {
        Some(guard) => response.map(|body| Body::new(Guarded::new(body, guard))),
        None => response,
    })
}
