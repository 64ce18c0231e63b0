//! The hyper engine's upstream side: hyper-util clients for each `replica.protocol` (a pooled one,
//! and one that opens a new connection per request for a retry over a new connection), and the two body
//! wrappers that make retries safe and in-flight counts exact.
//!
//! [`RequestBody`] hands the client's request body to one attempt at a time and can tell afterwards
//! whether that attempt read any of it: a body never read (the connection was refused) can go to the
//! next replica; one that was read cannot be replayed. [`ResponseBody`] keeps the replica's
//! in-flight count up until the response body has been streamed to the client.

use crate::manifest::ReplicaProtocol;
use crate::snapshot::InflightGuard;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

/// The client the proxy forwards with.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Idle keep-alive connections kept per replica.
const POOL_IDLE_PER_REPLICA: usize = 256;
/// How long an idle upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an HTTP/2 connection to a replica is pinged.
const H2C_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping's answer may take before the connection is closed.
const H2C_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The clients of one connect timeout.
#[derive(Clone)]
pub struct Clients {
    /// HTTP/1.1: reuses idle keep-alive connections.
    pooled: UpstreamClient,
    /// HTTP/1.1: opens a new connection for each request and closes it after the answer.
    fresh: UpstreamClient,
    /// HTTP/2 with prior knowledge (`replica.protocol: h2c`): one connection per replica, shared
    /// by the requests in flight.
    h2c_pooled: UpstreamClient,
    /// HTTP/2 with prior knowledge over a new connection, for a retry.
    h2c_fresh: UpstreamClient,
}

impl Clients {
    /// Clients that connect with `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let pooled = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_REPLICA)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector.clone());
        let h2c = |idle_per_replica| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_max_idle_per_host(idle_per_replica)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                // A replica that stops answering on a shared connection is found out by a ping,
                // not only by the requests that then wait on it.
                .http2_keep_alive_interval(H2C_PING_INTERVAL)
                .http2_keep_alive_timeout(H2C_PING_TIMEOUT)
                .build(connector.clone())
        };
        Clients { pooled, fresh, h2c_pooled: h2c(POOL_IDLE_PER_REPLICA), h2c_fresh: h2c(0) }
    }

    /// The client for `protocol`; `fresh`: over a new connection.
    pub fn pick(&self, protocol: ReplicaProtocol, fresh: bool) -> &UpstreamClient {
        match (protocol, fresh) {
            (ReplicaProtocol::Http1, false) => &self.pooled,
            (ReplicaProtocol::Http1, true) => &self.fresh,
            (ReplicaProtocol::H2c, false) => &self.h2c_pooled,
            (ReplicaProtocol::H2c, true) => &self.h2c_fresh,
        }
    }
}

/// The client's request body, shared between attempts.
pub struct Replayable {
    /// `None` for a request without a body: every attempt gets an empty one.
    slot: Option<Arc<Mutex<Option<Incoming>>>>,
    /// A body read whole before the first attempt: every attempt gets it again.
    whole: Option<Bytes>,
    size_hint: SizeHint,
}

impl Replayable {
    /// Wraps the body of a client's request.
    pub fn new(body: Incoming) -> Replayable {
        let size_hint = body.size_hint();
        let slot = if body.is_end_stream() { None } else { Some(Arc::new(Mutex::new(Some(body)))) };
        Replayable { slot, whole: None, size_hint }
    }

    /// A body already read whole.
    pub fn whole(body: Bytes) -> Replayable {
        let size_hint = SizeHint::with_exact(body.len() as u64);
        Replayable { slot: None, whole: Some(body).filter(|b| !b.is_empty()), size_hint }
    }

    /// The body for the next attempt, or `None` if an earlier attempt already read it.
    pub fn attempt(&self) -> Option<RequestBody> {
        let empty = SizeHint::with_exact(0);
        match (&self.slot, &self.whole) {
            (_, Some(whole)) => Some(RequestBody {
                source: None,
                taken: None,
                whole: Some(whole.clone()),
                size_hint: self.size_hint,
            }),
            (None, None) => Some(RequestBody { source: None, taken: None, whole: None, size_hint: empty }),
            (Some(slot), None) if self.is_untouched() => Some(RequestBody {
                source: Some(Arc::clone(slot)),
                taken: None,
                whole: None,
                size_hint: self.size_hint,
            }),
            (Some(_), None) => None,
        }
    }

    /// True if no attempt read from the body (or there is none, or it was read whole), so it can
    /// still be sent.
    pub fn is_untouched(&self) -> bool {
        self.slot.as_ref().is_none_or(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).is_some())
    }
}

/// The body of one attempt: takes the client's body on its first read.
pub struct RequestBody {
    source: Option<Arc<Mutex<Option<Incoming>>>>,
    taken: Option<Incoming>,
    /// A body read whole, sent as one frame.
    whole: Option<Bytes>,
    size_hint: SizeHint,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(whole) = this.whole.take() {
            this.size_hint = SizeHint::with_exact(0);
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        if this.taken.is_none() {
            match &this.source {
                None => return Poll::Ready(None),
                Some(slot) => this.taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take(),
            }
        }
        match &mut this.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.whole.is_none()
            && (self.source.is_none() || self.taken.as_ref().is_some_and(Body::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

/// A replica's response body that keeps the request counted in flight until it is done.
pub struct ResponseBody {
    inner: Incoming,
    _inflight: InflightGuard,
}

impl ResponseBody {
    /// Wraps `inner`; `inflight` is released when the body ends or is dropped.
    pub fn new(inner: Incoming, inflight: InflightGuard) -> ResponseBody {
        ResponseBody { inner, _inflight: inflight }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
