//! The data plane: forwards every request that is not ringlb's own to the replica the ring picks.
//!
//! The rules every forwarding path shares live here: the key (`key.rs`), the header rules
//! (`headers.rs`), which replica to try next, when a retry is safe, and the JSON errors. Per
//! request the proxy loads the routing [`Snapshot`] once (lock-free) and walks the ring's
//! candidates in order of preference, skipping ejected replicas:
//! - a refused or timed-out connection ejects that replica at once (passive health, lifted by its
//!   next good heartbeat), wakes the controller, and moves on to the next candidate; the request
//!   body was not read, so any method is safe to send again;
//! - any other failure before the response head (a reset, a close) is retried, for idempotent
//!   methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose body was not read: first on the same
//!   replica over a new connection (most such failures are a pooled connection the replica closed
//!   while idle, and a replica that is really gone refuses the new connection, which moves the
//!   request on to the next candidate), then, if that fails too, once on the next candidate;
//! - no candidate at all: 503; no answer within `proxy.timeout`: 504; all attempts failed: 502;
//! - with `hashing.balance_factor`, candidates over the bounded-load capacity (`balance.rs`) are
//!   passed over for the next one, unless all are over it;
//! - a cluster scaled to zero holds the request (bounded queue, bounded wait) while the controller
//!   starts a replica; over either bound: 503 with `Retry-After`.
//!
//! Bodies stream both ways; the proxy never holds a whole body. `upstream.rs` is the hyper path's
//! client side (PERF.md: the reference implementation a faster path will be tested against).

pub mod balance;
pub mod fast;
pub mod headers;
pub mod key;
pub mod upstream;

use crate::json;
use crate::manifest::UnknownPath;
use crate::snapshot::{Backend, Hold, Snapshot, Snapshots};
use crate::telemetry;
use crate::trigger::Trigger;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Method, Request, StatusCode, Uri, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use upstream::{Replayable, ResponseBody, UpstreamClient};

/// The response header naming the replica that answered.
pub const X_RINGLB_REPLICA: &str = "x-ringlb-replica";

/// The forwarding proxy. Cheap to share; one per load balancer.
pub struct Proxy {
    snapshots: Arc<Snapshots>,
    /// Woken when a replica is ejected, so the controller can look at once.
    trigger: Trigger,
    /// The client and the connect timeout it was built with (rebuilt if the manifest changes it).
    client: ArcSwap<(Duration, UpstreamClient)>,
    /// Requests waiting for a first replica (scale to zero).
    held: AtomicU32,
    /// The fast path's idle replica connections.
    pool: fast::pool::Pool,
}

impl Proxy {
    /// A proxy that routes by the snapshots in `snapshots` and fires `trigger` on ejections.
    pub fn new(snapshots: Arc<Snapshots>, trigger: Trigger) -> Proxy {
        let timeout = snapshots.load().routing.connect_timeout;
        Proxy {
            snapshots,
            trigger,
            client: ArcSwap::from_pointee((timeout, upstream::client(timeout))),
            held: AtomicU32::new(0),
            pool: fast::pool::Pool::default(),
        }
    }

    fn client(&self, connect_timeout: Duration) -> UpstreamClient {
        let current = self.client.load();
        if current.0 == connect_timeout {
            return current.1.clone();
        }
        let client = upstream::client(connect_timeout);
        self.client.store(Arc::new((connect_timeout, client.clone())));
        client
    }

    /// Holds a request while a cluster scaled to zero (or a load balancer just started) waits for a
    /// first replica: asks the controller for one and waits (bounded) for it to join the ring. Over
    /// the queue or the wait: the message of a 503 with `Retry-After`, for the caller to send.
    pub async fn hold(&self, hold: Hold) -> Result<Arc<Snapshot>, String> {
        if self.held.fetch_add(1, Ordering::Relaxed) >= hold.queue {
            self.held.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(telemetry::UNROUTED, "reason" => "hold_queue_full").increment(1);
            return Err(format!(
                "{} requests are already waiting for a replica to start; try again shortly",
                hold.queue
            ));
        }
        let _held = HeldGuard(&self.held);
        self.snapshots.signal_demand();
        self.trigger.fire();
        let started = tokio::time::Instant::now();
        match self.snapshots.wait_for_members(hold.timeout).await {
            Some(ready) => {
                tracing::debug!(waited_ms = started.elapsed().as_millis() as u64, "held request released");
                Ok(ready)
            }
            None => Err(format!("no replica started within {:?}; try again shortly", hold.timeout)),
        }
    }

    /// Forwards `request` from `client` and returns the replica's response or a JSON error.
    pub async fn forward(&self, request: Request<Incoming>, client: SocketAddr) -> Response {
        // The one snapshot load of this request.
        let snapshot = self.snapshots.load();
        if !snapshot.routing.access_log {
            return self.route(snapshot, request, client).await;
        }
        let started = std::time::Instant::now();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let response = self.route(snapshot, request, client).await;
        let replica = response.headers().get(X_RINGLB_REPLICA).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info!(target: "ringlb::access", %client, %method, path, status = response.status().as_u16(), replica,
            ms = started.elapsed().as_secs_f64() * 1000.0, "{client} {method} {path} {} {replica}", response.status().as_u16());
        response
    }

    /// Forwards one request; see the module docs for the rules.
    async fn route(
        &self,
        mut snapshot: Arc<Snapshot>,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response {
        if snapshot.members.is_empty()
            && let Some(hold) = snapshot.routing.hold
        {
            match self.hold(hold).await {
                Ok(ready) => snapshot = ready,
                Err(why) => return unavailable(why),
            }
        }
        let (mut parts, body) = request.into_parts();
        let key = key::request_key(&snapshot.routing.key, &parts.headers, &parts.uri, client.ip());
        if let Some(id) = key.generated_id {
            parts.headers.insert(key::X_REQUEST_ID, HeaderValue::from(id));
        }
        headers::for_upstream(&mut parts.headers, client.ip());
        parts.version = Version::HTTP_11;
        let body = Replayable::new(body);
        let http = self.client(snapshot.routing.connect_timeout);
        let deadline = tokio::time::Instant::now() + snapshot.routing.timeout;
        let idempotent = is_idempotent(&parts.method);
        let (mut retried_here, mut moved_on) = (false, false);
        let mut last_failure: Option<String> = None;
        let mut candidates = choices(&snapshot, key.key);
        let mut next = candidates.next();
        while let Some(backend) = next {
            let Some(attempt_body) = body.attempt() else { break };
            let Ok(uri) = upstream_uri(backend.addr, &parts.uri) else {
                return json::failure(
                    StatusCode::BAD_REQUEST,
                    format!("cannot forward the URI {}", parts.uri),
                );
            };
            let mut upstream = Request::from_parts(parts.clone(), attempt_body);
            *upstream.uri_mut() = uri;
            let inflight = backend.begin_request();
            let sent = std::time::Instant::now();
            let outcome = tokio::time::timeout_at(deadline, http.request(upstream)).await;
            let error = match outcome {
                Ok(Ok(response)) => {
                    backend.metrics.record(&parts.method, response.status(), sent.elapsed());
                    self.snapshots.record_answer(backend.id);
                    return respond(response, backend, inflight, &parts.uri, &snapshot);
                }
                Err(_) => {
                    let message = self.timed_out(backend, &parts.method, sent, snapshot.routing.timeout);
                    return json::failure(StatusCode::GATEWAY_TIMEOUT, message);
                }
                Ok(Err(error)) => error,
            };
            let why = crate::error_chain(&error);
            last_failure = Some(format!("replica {}: {why}", backend.name));
            if error.is_connect() {
                self.connect_failed(backend, &why);
                next = candidates.next();
                continue;
            }
            backend.record_error();
            if !(idempotent && body.is_untouched()) || moved_on {
                break;
            }
            self.retrying(backend, &why);
            if retried_here {
                // It failed twice here (a hung replica that was then killed, say): once more, on
                // the next candidate.
                moved_on = true;
                next = candidates.next();
            } else {
                // The same replica again: most such failures are a pooled connection that the
                // replica closed while it was idle. A replica that is gone now refuses the
                // connection, and the next candidate is tried.
                retried_here = true;
            }
        }
        match last_failure {
            None => {
                metrics::counter!(telemetry::UNROUTED, "reason" => "no_replica").increment(1);
                no_replica()
            }
            Some(why) => {
                metrics::counter!(telemetry::UNROUTED, "reason" => "all_failed").increment(1);
                json::failure(StatusCode::BAD_GATEWAY, all_failed_message(&why))
            }
        }
    }

    /// The fast path's idle replica connections.
    pub fn pool(&self) -> &fast::pool::Pool {
        &self.pool
    }

    /// The routing state: what every forwarding path reads once per request.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// A connection to `backend` failed (refused, unreachable, timed out): nothing was sent, so the
    /// request goes to the next candidate; the replica is ejected until its next good heartbeat,
    /// and the controller is woken to look at it.
    pub fn connect_failed(&self, backend: &Backend, why: &str) {
        backend.record_error();
        if backend.eject() {
            metrics::counter!(telemetry::EJECTIONS, "replica" => backend.name.clone()).increment(1);
            tracing::warn!(event = "replica_ejected", replica = %backend.name, reason = %why,
                "cannot connect to replica {}: {why}; ejected until its next good heartbeat", backend.name);
            self.trigger.fire();
        }
    }

    /// An idempotent request failed on `backend` before any answer and is sent again.
    pub fn retrying(&self, backend: &Backend, why: &str) {
        tracing::info!(event = "request_retried", replica = %backend.name, reason = %why,
            "request to replica {} failed before an answer ({why}); sending it again", backend.name);
        metrics::counter!(telemetry::RETRIES).increment(1);
    }

    /// `backend` did not answer within `timeout`: counts and logs it, and returns the 504's message.
    pub fn timed_out(
        &self,
        backend: &Backend,
        method: &Method,
        sent: std::time::Instant,
        timeout: Duration,
    ) -> String {
        backend.record_error();
        backend.metrics.record(method, StatusCode::GATEWAY_TIMEOUT, sent.elapsed());
        tracing::warn!(event = "upstream_timeout", replica = %backend.name,
            "replica {} did not answer within {timeout:?}", backend.name);
        format!("replica {} did not answer within {timeout:?}", backend.name)
    }
}

/// The replicas to try for `key`, best first: the ring's candidates that are not ejected and, with
/// bounded loads, under the bound; if every one is over the bound, all of them in ring order.
pub fn choices(snapshot: &Snapshot, key: u64) -> impl Iterator<Item = &Arc<Backend>> + '_ {
    let bound = snapshot.routing.balance_factor.map(|factor| {
        let total: u64 = snapshot.members.iter().map(|b| b.inflight()).sum();
        balance::capacity(factor, total, snapshot.members.len())
    });
    let mut under =
        snapshot.candidates(key).filter(move |b| bound.is_none_or(|cap| b.inflight() < cap)).peekable();
    let all_over = bound.is_some() && under.peek().is_none();
    under.chain(all_over.then(|| snapshot.candidates(key)).into_iter().flatten())
}

/// The 502's message when every attempt failed; `why` is the last failure.
pub fn all_failed_message(why: &str) -> String {
    format!("no replica could answer: {why}")
}

/// The message of the 503 for "nothing to route to".
pub const NO_REPLICA: &str = "no replica is ready to serve the request";

/// The exercise's 400 for a path no replica serves.
pub fn unknown_path_message(path: &str) -> String {
    format!("'{path}' endpoint does not exist in server replicas")
}

/// The 503 for "nothing to route to", with a hint to retry soon.
fn no_replica() -> Response {
    unavailable(NO_REPLICA)
}

/// A 503 with `Retry-After: 1`.
fn unavailable(why: impl std::fmt::Display) -> Response {
    let mut response = json::failure(StatusCode::SERVICE_UNAVAILABLE, why);
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Counts a held request until it stops waiting (answered, refused, or its client gone).
struct HeldGuard<'a>(&'a AtomicU32);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Methods that may be sent twice (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `http://<replica><path and query>`.
fn upstream_uri(addr: SocketAddr, original: &Uri) -> Result<Uri, http::Error> {
    // Only origin-form targets (`/path?query`) are forwarded as they are; `*` becomes `/`.
    let path_and_query =
        original.path_and_query().map(|pq| pq.as_str()).filter(|pq| pq.starts_with('/')).unwrap_or("/");
    Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path_and_query).build()
}

/// Turns the replica's response into the client's.
fn respond(
    response: http::Response<Incoming>,
    backend: &Arc<Backend>,
    inflight: crate::snapshot::InflightGuard,
    uri: &Uri,
    snapshot: &Snapshot,
) -> Response {
    if response.status() == StatusCode::NOT_FOUND && snapshot.routing.unknown_path == UnknownPath::Exercise {
        return json::failure(StatusCode::BAD_REQUEST, unknown_path_message(uri.path()));
    }
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    parts.headers.insert(X_RINGLB_REPLICA, backend.name_header.clone());
    Response::from_parts(parts, Body::new(ResponseBody::new(body, inflight)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_to_repeat_methods_are_idempotent() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[tokio::test]
    async fn a_full_hold_queue_and_a_long_wait_are_503s_with_retry_after() {
        let snapshots = Arc::new(Snapshots::default());
        let proxy = Arc::new(Proxy::new(Arc::clone(&snapshots), Trigger::new()));
        let hold = Hold { queue: 1, timeout: Duration::from_millis(300) };
        let waiting = {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move { proxy.hold(hold).await.map(|_| ()).map_err(unavailable) })
        };
        while proxy.held.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = unavailable(proxy.hold(hold).await.map(|_| ()).unwrap_err());
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        let timed_out = waiting.await.unwrap().unwrap_err();
        assert_eq!(timed_out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(timed_out.headers()["retry-after"], "1");
        assert!(snapshots.take_demand(), "the controller was asked for a replica");
        assert_eq!(proxy.held.load(Ordering::Relaxed), 0, "nothing is counted as waiting any more");
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
