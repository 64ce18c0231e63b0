//! The fast path (`proxy.engine: fast`, the default): ringlb's own HTTP/1.1 framing on `httparse`
//! for the requests a load balancer sees most, with the forwarding rules of [`crate::proxy`].
//!
//! One task per client connection (this file) reads request heads into a reused buffer, writes the
//! replica's head for each (`request.rs`), sends it with its body on a pooled replica connection
//! (`pool.rs`, `forward.rs`), and writes the answer's head (`response.rs`) and body back as they
//! arrive (`relay.rs`). Nothing
//! is allocated per request once the buffers have grown, and each request costs one read and one
//! write on each side. Bodies stream; `Content-Length` and chunked answers are forwarded as they
//! are, their ends found without decoding them (`chunked.rs`).
//!
//! What it does not serve itself goes to the hyper path with the rest of the connection
//! (`handover.rs`): see [`request`] for the list. The hyper path is the reference: the tests in
//! `tests/fast_path.rs` send the same bytes through both and compare what the replica and the client
//! get.
//!
//! Timeouts: a client has `proxy.client_timeout` to send each request head (a slow client cannot hold a
//! connection) and to send each piece of a body; a replica has `proxy.timeout` to answer and then to
//! send each piece of the answer. The timers are re-armed coarsely (`deadline.rs`), not per read.

pub mod chunked;
mod deadline;
mod forward;
pub mod handover;
pub mod local;
pub mod pool;
mod relay;
pub mod request;
pub mod response;
pub mod wire;

use super::{Local, Proxy};
use crate::manifest::ReplicaProtocol;
use crate::proxy::Drain;
use crate::proxy::headers::Scheme;
use crate::snapshot::Snapshot;
use crate::telemetry;
use deadline::{Deadline, before};
use handover::Prefixed;
use http::StatusCode;
use request::{LocalRequest, Parsed, RequestHead};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The client buffer's first size; it grows up to the largest head accepted. Small, because
/// every open connection has one.
const CLIENT_BUFFER: usize = 4 * 1024;
/// The least room for the pieces of a body that spans several reads (either way).
const BODY_CHUNK: usize = 32 * 1024;
/// The most room for the pieces of a long answer: the buffer doubles up to this while reads fill
/// it (fewer, larger reads and writes for big bodies).
const MAX_BODY_CHUNK: usize = 256 * 1024;

/// The fast engine: the shared routing state and the idle replica connections. One per load
/// balancer.
pub struct Engine {
    proxy: Arc<Proxy>,
    /// Idle replica connections, shared by every client connection.
    pool: pool::Pool,
}

impl Engine {
    /// An engine over `proxy`'s routing state.
    pub fn new(proxy: Arc<Proxy>) -> Engine {
        Engine { proxy, pool: pool::Pool::default() }
    }
}

/// How a client connection served by the fast path ended.
pub enum Ended<S> {
    /// Closed (by either side, or after an answer that closes it).
    Closed,
    /// A request the fast path does not serve: the connection, from that request on, is the hyper
    /// path's.
    Handover(Prefixed<S>),
}

/// Serves one client connection until it closes or is handed over; ringlb's own routes go to
/// `local`. Once `drain` begins, the next answer closes the connection; an idle one closes when
/// `drain` says idle connections must.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    scheme: Scheme,
    engine: &Engine,
    local: &Local,
    drain: &Arc<Drain>,
) -> Ended<S> {
    let mut client = Client {
        stream,
        peer,
        peer_text: crate::proxy::headers::plain_ip(peer.ip()).to_string(),
        scheme,
        buf: vec![0; CLIENT_BUFFER],
        pos: 0,
        filled: 0,
        to_replica: Vec::new(),
        to_client: Vec::new(),
        client_timeout: engine.proxy.snapshots().load().routing.client_timeout,
        client_deadline: Deadline::default(),
        replica_deadline: Deadline::default(),
        drain: Arc::clone(drain),
    };
    match client.run(engine, local, drain).await {
        Ok(Next::Handover) => {
            let prefix = client.buf[client.pos..client.filled].to_vec();
            Ended::Handover(Prefixed::new(prefix, client.stream))
        }
        Ok(_) => Ended::Closed,
        Err(error) => {
            tracing::debug!(peer = %client.peer, %error, "client connection ended with an error");
            Ended::Closed
        }
    }
}

/// A complete request head.
enum Head {
    /// For a replica.
    Forward(RequestHead),
    /// For ringlb itself.
    Local(LocalRequest),
}

/// What the connection does after a request.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Reads the next request.
    Continue,
    /// Closes.
    Close,
    /// Hands the connection to the hyper path.
    Handover,
}

/// A client connection and its buffers.
struct Client<S> {
    stream: S,
    peer: SocketAddr,
    /// The client's address as `X-Forwarded-For` names it.
    peer_text: String,
    /// How the client reached ringlb (`X-Forwarded-Proto`).
    scheme: Scheme,
    /// Read buffer: `buf[pos..filled]` is read and not yet served.
    buf: Vec<u8>,
    /// Where the current request starts.
    pos: usize,
    /// Where the read bytes end.
    filled: usize,
    /// The request head (and a buffered body) for the replica.
    to_replica: Vec<u8>,
    /// The answer's head (and the first bytes of its body) for the client.
    to_client: Vec<u8>,
    /// Time the client has for a request head, or for the next piece of a body.
    client_timeout: Duration,
    /// For reads from the client.
    client_deadline: Deadline,
    /// For reads from the replica.
    replica_deadline: Deadline,
    /// Once it begins, answers close the connection.
    drain: Arc<Drain>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn run(&mut self, engine: &Engine, local: &Local, drain: &Drain) -> io::Result<Next> {
        let cancelled = drain.idle_closed();
        tokio::pin!(cancelled);
        loop {
            // The snapshot is loaded once the head is here: an idle connection must not keep an
            // old one.
            let (snapshot, mut head) = match self.read_head(engine, local, cancelled.as_mut()).await? {
                Ok((snapshot, Head::Forward(head))) => (snapshot, head),
                Ok((_, Head::Local(mut request))) => {
                    request.close |= drain.is_closing();
                    if self.serve_local(local, &request).await? == Next::Close {
                        return Ok(Next::Close);
                    }
                    continue;
                }
                Err(next) => return Ok(next),
            };
            // Draining: this answer is the connection's last.
            head.close |= drain.is_closing();
            if snapshot.routing.access_log {
                // The access log is the hyper path's.
                metrics::counter!(telemetry::HANDOVERS, "reason" => "access log").increment(1);
                return Ok(Next::Handover);
            }
            if snapshot.routing.upstream == ReplicaProtocol::H2c {
                // The fast path speaks HTTP/1.1 to replicas; HTTP/2 to them is hyper's.
                metrics::counter!(telemetry::HANDOVERS, "reason" => "h2c replicas").increment(1);
                return Ok(Next::Handover);
            }
            if snapshot.routing.redirect_http && self.scheme == Scheme::Http {
                // So is the redirect to https (`proxy/redirect.rs`).
                metrics::counter!(telemetry::HANDOVERS, "reason" => "redirect").increment(1);
                return Ok(Next::Handover);
            }
            let snapshot = match snapshot.routing.hold.filter(|_| snapshot.members.is_empty()) {
                None => snapshot,
                Some(hold) => match engine.proxy.hold(hold).await {
                    Ok(ready) => ready,
                    Err(unheld) => {
                        let why = unheld.to_string();
                        let next = self.answer_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &why,
                            &head,
                            head.body_len == 0,
                        );
                        if next.await? != Next::Continue {
                            return Ok(Next::Close);
                        }
                        continue;
                    }
                },
            };
            let next = self.forward(engine, &snapshot, &head).await?;
            if next != Next::Continue {
                return Ok(next);
            }
            if self.pos == self.filled {
                (self.pos, self.filled) = (0, 0);
            }
        }
    }

    /// Reads until a complete request head is at `pos`. `Err(next)`: there is none to forward.
    async fn read_head(
        &mut self,
        engine: &Engine,
        local: &Local,
        mut cancelled: Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    ) -> io::Result<Result<(Arc<Snapshot>, Head), Next>> {
        let mut deadline = None;
        loop {
            if self.filled > self.pos {
                let snapshot = engine.proxy.snapshots().load();
                let context = request::Context {
                    key: &snapshot.routing.key,
                    scheme: self.scheme,
                    client: self.peer.ip(),
                    client_text: self.peer_text.as_bytes(),
                    is_reserved: local.is_reserved,
                };
                match request::parse(&self.buf[self.pos..self.filled], &context, &mut self.to_replica) {
                    Parsed::Partial => {}
                    Parsed::Forward(head) => return Ok(Ok((snapshot, Head::Forward(head)))),
                    Parsed::Local(local) => return Ok(Ok((snapshot, Head::Local(local)))),
                    Parsed::Handover(reason) => {
                        metrics::counter!(telemetry::HANDOVERS, "reason" => reason).increment(1);
                        return Ok(Err(Next::Handover));
                    }
                    Parsed::Reject(reject) => {
                        metrics::counter!(telemetry::UNROUTED, "reason" => "bad_request").increment(1);
                        response::error(&mut self.to_client, reject.status, reject.message, true);
                        self.stream.write_all(&self.to_client).await?;
                        return Ok(Err(Next::Close));
                    }
                }
            }
            self.make_room();
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.client_timeout);
            let idle = self.pos == self.filled;
            let read = tokio::select! {
                biased;
                read = self.stream.read(&mut self.buf[self.filled..]) => read?,
                () = self.client_deadline.until(deadline) => {
                    if !idle {
                        response::error(&mut self.to_client, StatusCode::REQUEST_TIMEOUT,
                            "the request head did not arrive in time", true);
                        // The client may be gone; the connection closes either way.
                        let _ = self.stream.write_all(&self.to_client).await;
                    }
                    return Ok(Err(Next::Close));
                }
                () = cancelled.as_mut(), if idle => return Ok(Err(Next::Close)),
            };
            if read == 0 {
                return Ok(Err(Next::Close));
            }
            self.filled += read;
        }
    }

    /// Answers a request for one of ringlb's own routes with the local router.
    async fn serve_local(&mut self, routes: &Local, local: &LocalRequest) -> io::Result<Next> {
        if local.body_len > local::MAX_BODY {
            response::error(
                &mut self.to_client,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                true,
            );
            self.stream.write_all(&self.to_client).await?;
            return Ok(Next::Close);
        }
        let body_start = self.pos + local.head_len;
        let end = body_start + local.body_len as usize;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        while self.filled < end {
            let reading = self.stream.read(&mut self.buf[self.filled..]);
            match before(&mut self.client_deadline, Instant::now() + self.client_timeout, reading).await {
                Some(Ok(0)) | None => return Ok(Next::Close),
                Some(Ok(n)) => self.filled += n,
                Some(Err(error)) => return Err(error),
            }
        }
        match local::request(&self.buf[self.pos..body_start], &self.buf[body_start..end]) {
            Ok(request) => local::answer(&routes.router, request, local.close, &mut self.to_client).await,
            Err(why) => {
                response::error(&mut self.to_client, StatusCode::BAD_REQUEST, why, true);
                self.stream.write_all(&self.to_client).await?;
                return Ok(Next::Close);
            }
        }
        self.stream.write_all(&self.to_client).await?;
        self.pos = end;
        Ok(if local.close { Next::Close } else { Next::Continue })
    }

    /// Makes room at the end of the buffer: moves the current request to the front, or grows the
    /// buffer (up to a little over the largest head, which the parser refuses beyond).
    fn make_room(&mut self) {
        if self.filled < self.buf.len() {
            return;
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        } else {
            // The parser refuses heads of MAX_HEAD bytes, so this stops a little above that.
            self.buf.resize((self.buf.len() * 2).min(request::MAX_HEAD + CLIENT_BUFFER), 0);
        }
    }

    /// Answers the request with a JSON error. The connection closes if the client asked to, or if
    /// its request body was not read to the end.
    async fn answer_error(
        &mut self,
        status: StatusCode,
        message: &str,
        head: &RequestHead,
        body_sent: bool,
    ) -> io::Result<Next> {
        let close = head.close || !body_sent;
        response::error(&mut self.to_client, status, message, close);
        self.stream.write_all(&self.to_client).await?;
        self.pos += head.head_len;
        Ok(if close { Next::Close } else { Next::Continue })
    }
}
