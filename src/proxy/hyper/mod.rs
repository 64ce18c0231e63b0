//! The hyper engine (`proxy.engine: hyper`): requests parsed by hyper's HTTP/1.1 and HTTP/2
//! servers and sent on with hyper-util's client, under the forwarding rules of [`crate::proxy`].
//! It is the reference the fast path is tested against (`tests/fast_path.rs`), and it serves what
//! the fast path hands over (HTTP/2, HTTP/1.0, chunked uploads, `Expect`, other target forms, the
//! access log).
//!
//! `server.rs` serves a client connection (`resets.rs` guards HTTP/2 ones against rapid resets);
//! this file forwards one request; `upstream.rs` holds the clients and the body wrappers that make
//! retries safe.

mod resets;
mod server;
mod upstream;

pub use server::serve_connection;

use super::errors::{asks_to_retry, unknown_path_message};
use super::headers::{self, Scheme, X_RINGLB_REPLICA};
use super::retry::Outcome;
use super::tunnel::{self, Early};
use super::{Proxy, Route, candidates, errors, grpc, key, redirect};
use crate::json;
use crate::manifest::{ReplicaProtocol, UnknownPath};
use crate::snapshot::{Backend, InflightGuard, Snapshot};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Method, Request, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use upstream::{Clients, Replayable, ResponseBody};

/// The hyper engine. Cheap to share; one per load balancer.
pub struct Engine {
    proxy: Arc<Proxy>,
    /// The TLS listener's port, where `tls.redirect_http` sends plain-HTTP requests.
    https_port: Option<u16>,
    /// The clients and the connect timeout they were built with (rebuilt when the manifest
    /// changes it).
    clients: ArcSwap<(Duration, Clients)>,
}

impl Engine {
    /// An engine over `proxy`'s routing state; `https_port`: the TLS listener's, if there is one.
    pub fn new(proxy: Arc<Proxy>, https_port: Option<u16>) -> Engine {
        let timeout = proxy.snapshots().load().routing.connect_timeout;
        Engine { proxy, https_port, clients: ArcSwap::from_pointee((timeout, Clients::new(timeout))) }
    }

    fn clients(&self, connect_timeout: Duration) -> Clients {
        let current = self.clients.load();
        if current.0 == connect_timeout {
            return current.1.clone();
        }
        let clients = Clients::new(connect_timeout);
        self.clients.store(Arc::new((connect_timeout, clients.clone())));
        clients
    }

    /// Forwards `request` from `client` (which came over `scheme`) and returns the replica's
    /// response or a JSON error; with `tls.redirect_http`, a plain-HTTP request gets its 308.
    pub async fn forward(&self, request: Request<Incoming>, client: SocketAddr, scheme: Scheme) -> Response {
        // The one snapshot load of this request.
        let snapshot = self.proxy.snapshots().load();
        if scheme == Scheme::Http
            && snapshot.routing.redirect_http
            && let Some(port) = self.https_port
        {
            return redirect::to_https(&request, port);
        }
        let grpc = grpc::is_grpc(request.headers());
        if !snapshot.routing.access_log {
            let response = self.route(snapshot, request, client, scheme).await;
            return if grpc { for_grpc(response) } else { response };
        }
        let started = Instant::now();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let response = self.route(snapshot, request, client, scheme).await;
        let replica = response.headers().get(X_RINGLB_REPLICA).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info!(target: "ringlb::access", %client, %method, path, status = response.status().as_u16(), replica,
            ms = started.elapsed().as_secs_f64() * 1000.0, "{client} {method} {path} {} {replica}", response.status().as_u16());
        if grpc { for_grpc(response) } else { response }
    }

    /// Forwards one request; see [`crate::proxy::retry`] for what follows a failed attempt.
    async fn route(
        &self,
        mut snapshot: Arc<Snapshot>,
        mut request: Request<Incoming>,
        client: SocketAddr,
        scheme: Scheme,
    ) -> Response {
        if request.method() == Method::CONNECT {
            return error(StatusCode::METHOD_NOT_ALLOWED, errors::CONNECT_REFUSED);
        }
        // An upgrade request keeps its upgrade headers, and the client's side of the tunnel is
        // taken from hyper before the request is taken apart.
        let upgrade = headers::upgrade_protocols(request.headers())
            .map(|protocols| (protocols, hyper::upgrade::on(&mut request)));
        if snapshot.members.is_empty()
            && let Some(mut hold) = snapshot.routing.hold
        {
            // A gRPC call waits no longer than its own deadline.
            if let Some(deadline) = grpc::timeout(request.headers()) {
                hold.timeout = hold.timeout.min(deadline);
            }
            match self.proxy.hold(hold).await {
                Ok(ready) => snapshot = ready,
                Err(why) => return error(StatusCode::SERVICE_UNAVAILABLE, why),
            }
        }
        let (mut parts, body) = request.into_parts();
        let body = if parts.version == Version::HTTP_2 {
            // HTTP/2 names the host in `:authority`; an HTTP/1.1 replica needs it as `Host`.
            if let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(http::header::HOST, host);
            }
            match read_declared_body(&parts, body, snapshot.routing.client_timeout).await {
                Ok(body) => body,
                Err(why) => return error(StatusCode::BAD_REQUEST, why),
            }
        } else {
            Replayable::new(body)
        };
        let key = key::request_key(&snapshot.routing.key, &parts.headers, &parts.uri, client.ip());
        if let Some(id) = key.generated_id {
            parts.headers.insert(key::X_REQUEST_ID, HeaderValue::from(id));
        }
        // HTTP/2 has no `Upgrade`: an upgrade goes to the replica over HTTP/1.1 whatever
        // `replica.protocol` says.
        let protocol = if upgrade.is_some() { ReplicaProtocol::Http1 } else { snapshot.routing.upstream };
        let trailers = headers::accepts_trailers(&parts.headers);
        // A gRPC call's own deadline, when it is the shorter one.
        let timeout = grpc::timeout(&parts.headers)
            .map_or(snapshot.routing.timeout, |t| t.min(snapshot.routing.timeout));
        headers::for_upstream(&mut parts.headers, client.ip(), scheme);
        let (protocols, client_side) = upgrade.unzip();
        if let Some(protocols) = protocols {
            headers::restore_upgrade(&mut parts.headers, protocols);
        }
        parts.version = match protocol {
            ReplicaProtocol::Http1 => Version::HTTP_11,
            ReplicaProtocol::H2c => {
                headers::for_h2c(&mut parts.headers, trailers);
                Version::HTTP_2
            }
        };
        let clients = self.clients(snapshot.routing.connect_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut route = Route::new(candidates::choices(&snapshot, key.key), &parts.method);
        while let Some((backend, fresh)) = route.target() {
            let Some(attempt_body) = body.attempt() else { break };
            let Ok(uri) = upstream_uri(backend.addr, &parts.uri) else {
                return error(StatusCode::BAD_REQUEST, format!("cannot forward the URI {}", parts.uri));
            };
            let mut upstream = Request::from_parts(parts.clone(), attempt_body);
            *upstream.uri_mut() = uri;
            let inflight = backend.begin_request();
            let sent = Instant::now();
            let client = clients.pick(protocol, fresh);
            let (outcome, why) = match tokio::time::timeout_at(deadline, client.request(upstream)).await {
                Ok(Ok(response)) => {
                    self.proxy.answered(backend, &parts.method, response.status(), sent);
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        return switch(response, client_side, backend, inflight, &snapshot);
                    }
                    return respond(response, backend, inflight, &parts.uri, &snapshot, trailers);
                }
                Err(_) => (Outcome::TimedOut, String::new()),
                Ok(Err(failure)) if failure.is_connect() => (Outcome::Refused, crate::error_chain(&failure)),
                // The pooled client may have used an idle connection: it cannot tell.
                Ok(Err(failure)) => (Outcome::Failed { pooled: !fresh }, crate::error_chain(&failure)),
            };
            if let Err((status, message)) =
                route.failed(&self.proxy, outcome, body.is_untouched(), &why, sent)
            {
                return error(status, message);
            }
        }
        let (status, message) = route.exhausted();
        error(status, message)
    }
}

/// The largest HTTP/2 request body that is read whole before it is forwarded (when it declares its
/// `content-length`).
const MAX_CHECKED_BODY: u64 = 64 * 1024;

/// An HTTP/2 request's body, for the replica. A body that declares its `content-length` (up to
/// [`MAX_CHECKED_BODY`]) is read whole first: h2 checks that the `DATA` frames add up to it (RFC
/// 9113 section 8.1.1), so a request whose length lies never reaches a replica, where an
/// HTTP/1.1 replica would read the rest as another request. A longer body streams; a lie found
/// on the way cuts the request short (the replica never gets a whole request).
async fn read_declared_body(
    parts: &http::request::Parts,
    body: Incoming,
    within: Duration,
) -> Result<Replayable, &'static str> {
    use http_body_util::BodyExt;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length <= MAX_CHECKED_BODY => {
            match tokio::time::timeout(within, body.collect()).await {
                Ok(Ok(collected)) => Ok(Replayable::whole(collected.to_bytes())),
                Ok(Err(_)) => Err("the request body does not match its content-length"),
                Err(_) => Err("the request body did not arrive in time"),
            }
        }
        _ => Ok(Replayable::new(body)),
    }
}

/// Marks an answer as ringlb's own error, with its message.
#[derive(Clone)]
struct OwnError(String);

/// A JSON error answer; a 503 tells the client to retry in a second.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let message = message.to_string();
    let mut response = json::failure(status, &message);
    if asks_to_retry(status) {
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response.extensions_mut().insert(OwnError(message));
    response
}

/// The answer to a gRPC call: a replica's as it is, ringlb's own error as a gRPC status.
fn for_grpc(response: Response) -> Response {
    let Some(OwnError(message)) = response.extensions().get::<OwnError>().cloned() else {
        return response;
    };
    let mut answer = Response::new(Body::empty());
    *answer.headers_mut() = grpc::trailers_only(grpc::code_of(response.status()), &message);
    answer
}

/// `http://<replica><path and query>`.
fn upstream_uri(addr: SocketAddr, original: &Uri) -> Result<Uri, http::Error> {
    // Only origin-form targets (`/path?query`) are forwarded as they are; `*` becomes `/`.
    let path_and_query =
        original.path_and_query().map(|pq| pq.as_str()).filter(|pq| pq.starts_with('/')).unwrap_or("/");
    Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path_and_query).build()
}

/// The replica switched protocols: its `101` goes to the client (with its upgrade headers), and
/// once hyper hands over both connections they become a tunnel in a task of their own.
/// `client_side`: the client's side, if it asked to upgrade; a `101` it did not ask for is a 502.
fn switch(
    mut response: http::Response<Incoming>,
    client_side: Option<hyper::upgrade::OnUpgrade>,
    backend: &Arc<Backend>,
    inflight: InflightGuard,
    snapshot: &Snapshot,
) -> Response {
    let (Some(client_side), Some(protocols)) =
        (client_side, response.headers().get(http::header::UPGRADE).cloned())
    else {
        backend.record_error();
        return error(
            StatusCode::BAD_GATEWAY,
            format!("replica {} switched protocols without an upgrade request", backend.name),
        );
    };
    let replica_side = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::restore_upgrade(&mut parts.headers, protocols);
    parts.headers.insert(X_RINGLB_REPLICA, backend.name_header.clone());
    let backend = Arc::clone(backend);
    let idle = snapshot.routing.tunnel_idle_timeout;
    tokio::spawn(async move {
        match tokio::try_join!(client_side, replica_side) {
            Ok((client, replica)) => {
                let (client, replica) = (TokioIo::new(client), TokioIo::new(replica));
                tunnel::run(client, replica, Early::default(), &backend, inflight, idle).await;
            }
            Err(failure) => tracing::debug!(replica = %backend.name, error = %crate::error_chain(&failure),
                "an upgraded connection was gone before its tunnel began"),
        }
    });
    Response::from_parts(parts, Body::empty())
}

/// Turns the replica's response into the client's: hop-by-hop headers out, but for a client that
/// accepts trailers the `Trailer` declaration HTTP/1.1 needs to send them
/// ([`headers::declared_trailers`]).
fn respond(
    response: http::Response<Incoming>,
    backend: &Arc<Backend>,
    inflight: InflightGuard,
    uri: &Uri,
    snapshot: &Snapshot,
    client_accepts_trailers: bool,
) -> Response {
    if response.status() == StatusCode::NOT_FOUND && snapshot.routing.unknown_path == UnknownPath::Exercise {
        return error(StatusCode::BAD_REQUEST, unknown_path_message(uri.path()));
    }
    let (mut parts, body) = response.into_parts();
    let trailers = client_accepts_trailers.then(|| headers::declared_trailers(&parts.headers)).flatten();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(trailers) = trailers {
        parts.headers.insert(http::header::TRAILER, trailers);
    }
    parts.headers.insert(X_RINGLB_REPLICA, backend.name_header.clone());
    Response::from_parts(parts, Body::new(ResponseBody::new(body, inflight)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Hold, Snapshots};
    use crate::trigger::Trigger;

    #[tokio::test]
    async fn a_full_hold_queue_and_a_long_wait_are_503s_with_retry_after() {
        let snapshots = Arc::new(Snapshots::default());
        let proxy = Arc::new(Proxy::new(Arc::clone(&snapshots), Trigger::new()));
        let hold = Hold { queue: 0, timeout: Duration::from_millis(10) };
        let refused = error(StatusCode::SERVICE_UNAVAILABLE, proxy.hold(hold).await.map(|_| ()).unwrap_err());
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        let hold = Hold { queue: 1, timeout: Duration::from_millis(10) };
        let timed_out =
            error(StatusCode::SERVICE_UNAVAILABLE, proxy.hold(hold).await.map(|_| ()).unwrap_err());
        assert_eq!(timed_out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(timed_out.headers()["retry-after"], "1");
        assert!(!error(StatusCode::BAD_GATEWAY, "x").headers().contains_key("retry-after"));
    }

    #[test]
    fn upstream_uris_keep_path_and_query() {
        let addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(
            upstream_uri(addr, &"/home?x=1".parse().unwrap()).unwrap(),
            "http://10.0.0.2:5000/home?x=1"
        );
        assert_eq!(upstream_uri(addr, &"*".parse().unwrap()).unwrap(), "http://10.0.0.2:5000/");
    }
}
