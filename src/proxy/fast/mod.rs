//! The fast path (`proxy.engine: fast`, the default): ringlb's own HTTP/1.1 framing on `httparse`
//! for the requests a load balancer sees most, with the forwarding rules of [`crate::proxy`].
//!
//! One task per client connection reads request heads into a reused buffer, writes the replica's
//! head for each (`request.rs`), sends it with its body on a pooled replica connection
//! (`pool.rs`), and writes the answer's head (`response.rs`) and body back as they arrive. Nothing
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
//! send each piece of the answer. The timers are re-armed coarsely (`Deadline`), not per read.

pub mod chunked;
pub mod handover;
pub mod local;
pub mod pool;
pub mod request;
pub mod response;

use super::{NO_REPLICA, Proxy, all_failed_message, choices, is_idempotent, unknown_path_message};
use crate::manifest::UnknownPath;
use crate::snapshot::{Backend, Snapshot};
use crate::telemetry;
use axum::Router;
use chunked::ChunkedScanner;
use handover::Prefixed;
use http::StatusCode;
use pool::Upstream;
use request::{LocalRequest, Parsed, RequestHead};
use response::{Framing, ResponseHead};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// The client buffer's first size; it grows up to the largest head accepted. Small, because
/// every open connection has one.
const CLIENT_BUFFER: usize = 4 * 1024;
/// The least room for the pieces of a body that spans several reads (either way).
const BODY_CHUNK: usize = 32 * 1024;
/// The most room for the pieces of a long answer: the buffer doubles up to this while reads fill
/// it (fewer, larger reads and writes for big bodies).
const MAX_BODY_CHUNK: usize = 256 * 1024;

/// How a client connection served by the fast path ended.
pub enum Ended {
    /// Closed (by either side, or after an answer that closes it).
    Closed,
    /// A request the fast path does not serve: the connection, from that request on, is the hyper
    /// path's.
    Handover(Prefixed),
}

/// Serves one client connection until it closes or is handed over; ringlb's own routes go to
/// `admin`. Stops between requests once `shutdown` is cancelled.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: &Proxy,
    admin: &Router,
    shutdown: &CancellationToken,
) -> Ended {
    let mut client = Client {
        stream,
        peer,
        buf: vec![0; CLIENT_BUFFER],
        pos: 0,
        filled: 0,
        to_replica: Vec::new(),
        to_client: Vec::new(),
        client_timeout: proxy.snapshots().load().routing.client_timeout,
        client_deadline: Deadline::default(),
        replica_deadline: Deadline::default(),
    };
    match client.run(proxy, admin, shutdown).await {
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
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
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
}

/// Why a request could not be answered by a replica.
enum Failure {
    /// Connecting failed: nothing was sent.
    Connect(io::Error),
    /// Failed after connecting and before any byte of an answer (the request may have been seen).
    BeforeAnswer(io::Error),
    /// The replica sent something that is not a valid answer, or part of one and then failed.
    BadAnswer(String),
    /// No answer within `proxy.timeout`.
    Timeout,
    /// The client went away or stalled while sending its body: nothing to answer.
    Client(io::Error),
}

impl Client {
    async fn run(&mut self, proxy: &Proxy, admin: &Router, shutdown: &CancellationToken) -> io::Result<Next> {
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            // The snapshot is loaded once the head is here: an idle connection must not keep an
            // old one.
            let (snapshot, head) = match self.read_head(proxy, cancelled.as_mut()).await? {
                Ok((snapshot, Head::Forward(head))) => (snapshot, head),
                Ok((_, Head::Local(local))) => {
                    if self.serve_local(admin, &local).await? == Next::Close {
                        return Ok(Next::Close);
                    }
                    continue;
                }
                Err(next) => return Ok(next),
            };
            if snapshot.routing.access_log {
                // The access log is the hyper path's.
                metrics::counter!(telemetry::HANDOVERS, "reason" => "access log").increment(1);
                return Ok(Next::Handover);
            }
            let snapshot = match snapshot.routing.hold.filter(|_| snapshot.members.is_empty()) {
                None => snapshot,
                Some(hold) => match proxy.hold(hold).await {
                    Ok(ready) => ready,
                    Err(why) => {
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
            let next = self.forward(proxy, &snapshot, &head).await?;
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
        proxy: &Proxy,
        mut cancelled: Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    ) -> io::Result<Result<(Arc<Snapshot>, Head), Next>> {
        let mut deadline = None;
        loop {
            if self.filled > self.pos {
                let snapshot = proxy.snapshots().load();
                let context = request::Context {
                    key: &snapshot.routing.key,
                    client: self.peer.ip(),
                    is_reserved: crate::reserved::is_reserved,
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

    /// Answers a request for one of ringlb's own routes with the admin router.
    async fn serve_local(&mut self, admin: &Router, local: &LocalRequest) -> io::Result<Next> {
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
            Ok(request) => local::answer(admin, request, local.close, &mut self.to_client).await,
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

    /// Forwards one request and its answer.
    async fn forward(&mut self, proxy: &Proxy, snapshot: &Snapshot, head: &RequestHead) -> io::Result<Next> {
        let body_start = self.pos + head.head_len;
        let buffered = (self.filled - body_start).min(usize::try_from(head.body_len).unwrap_or(usize::MAX));
        // A body that is all here goes with the head, and can be sent again on a retry. From here
        // on, the next request starts at `body_start` whatever happens to the body.
        let replayable = buffered as u64 == head.body_len;
        if replayable {
            self.to_replica.extend_from_slice(&self.buf[body_start..body_start + buffered]);
            self.buf.copy_within(body_start + buffered..self.filled, body_start);
            self.filled -= buffered;
        }
        let routing = &snapshot.routing;
        let deadline = Instant::now() + routing.timeout;
        let idempotent = is_idempotent(&head.method);
        let mut last_failure: Option<String> = None;
        let mut moved_on = false;
        let mut body_sent = replayable;
        for backend in choices(snapshot, head.key) {
            // A failure before any answer is tried once more on a new connection to the same
            // replica (see `crate::proxy`); a replica that is gone then refuses the connection.
            let mut fresh = false;
            let failure = loop {
                let pooled = if fresh { None } else { proxy.pool().take(backend.addr) };
                let mut upstream = match pooled {
                    Some(upstream) => upstream,
                    None => match Upstream::connect(backend.addr, routing.connect_timeout).await {
                        Ok(upstream) => upstream,
                        Err(error) => break Failure::Connect(error),
                    },
                };
                let inflight = backend.begin_request();
                let sent = std::time::Instant::now();
                let answer = match self.exchange(&mut upstream, head, &mut body_sent, backend, deadline).await
                {
                    Ok(answer) => answer,
                    Err(Failure::BeforeAnswer(error))
                        if !fresh
                            && replayable
                            && (idempotent || (upstream.reused && was_unread(&error))) =>
                    {
                        backend.record_error();
                        proxy.retrying(backend, &error.to_string());
                        fresh = true;
                        continue;
                    }
                    Err(Failure::Timeout) => {
                        let message = proxy.timed_out(backend, &head.method, sent, routing.timeout);
                        return self
                            .answer_error(StatusCode::GATEWAY_TIMEOUT, &message, head, body_sent)
                            .await;
                    }
                    Err(failure) => break failure,
                };
                backend.metrics.record(&head.method, answer.status, sent.elapsed());
                proxy.snapshots().record_answer(backend.id);
                let next = self.relay(proxy, snapshot, head, backend, upstream, answer).await;
                drop(inflight);
                return next;
            };
            let why = match failure {
                Failure::Connect(error) => {
                    let why = error.to_string();
                    proxy.connect_failed(backend, &why);
                    last_failure = Some(format!("replica {}: {why}", backend.name));
                    continue;
                }
                Failure::Client(error) => return Err(error),
                Failure::BeforeAnswer(error) => error.to_string(),
                Failure::BadAnswer(why) => why,
                Failure::Timeout => "no answer in time".to_owned(),
            };
            backend.record_error();
            last_failure = Some(format!("replica {}: {why}", backend.name));
            // Failed here twice (or could not be retried here): once more, on the next candidate.
            if !(idempotent && replayable) || moved_on {
                break;
            }
            proxy.retrying(backend, &why);
            moved_on = true;
        }
        let (status, message) = match last_failure {
            None => {
                metrics::counter!(telemetry::UNROUTED, "reason" => "no_replica").increment(1);
                (StatusCode::SERVICE_UNAVAILABLE, NO_REPLICA.to_owned())
            }
            Some(why) => {
                metrics::counter!(telemetry::UNROUTED, "reason" => "all_failed").increment(1);
                (StatusCode::BAD_GATEWAY, all_failed_message(&why))
            }
        };
        self.answer_error(status, &message, head, body_sent).await
    }

    /// Sends the request to the replica (head, then the body that was not buffered, read from the
    /// client as it comes) and reads the answer's head, skipping interim (1xx) answers.
    async fn exchange(
        &mut self,
        upstream: &mut Upstream,
        head: &RequestHead,
        body_sent: &mut bool,
        backend: &Backend,
        deadline: Instant,
    ) -> Result<ResponseHead, Failure> {
        match before(&mut self.replica_deadline, deadline, upstream.stream.write_all(&self.to_replica)).await
        {
            Some(Ok(())) => {}
            Some(Err(error)) => return Err(Failure::BeforeAnswer(error)),
            None => return Err(Failure::Timeout),
        }
        if !*body_sent {
            self.stream_body(upstream, head, deadline).await?;
            *body_sent = true;
        }
        let context = response::Context {
            is_head: head.is_head,
            close: head.close,
            replica: backend.name_header.as_bytes(),
        };
        let mut answered = false;
        loop {
            if upstream.filled > 0 {
                match response::parse(&upstream.buf[..upstream.filled], &context, &mut self.to_client) {
                    Ok(Some(answer)) if answer.status.is_informational() => {
                        upstream.buf.copy_within(answer.head_len..upstream.filled, 0);
                        upstream.filled -= answer.head_len;
                        continue;
                    }
                    Ok(Some(answer)) => return Ok(answer),
                    Ok(None) => {}
                    Err(bad) => return Err(Failure::BadAnswer(bad.to_string())),
                }
            }
            if upstream.filled == upstream.buf.len() {
                let grown = upstream.buf.len() * 2;
                upstream.buf.resize(grown, 0);
            }
            let read = before(
                &mut self.replica_deadline,
                deadline,
                upstream.stream.read(&mut upstream.buf[upstream.filled..]),
            );
            match read.await {
                None => return Err(Failure::Timeout),
                Some(Ok(0)) if !answered => {
                    return Err(Failure::BeforeAnswer(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before an answer",
                    )));
                }
                Some(Ok(0)) => {
                    return Err(Failure::BadAnswer("connection closed inside the answer's head".into()));
                }
                Some(Ok(n)) => {
                    upstream.filled += n;
                    answered = true;
                }
                Some(Err(error)) if !answered => return Err(Failure::BeforeAnswer(error)),
                Some(Err(error)) => return Err(Failure::BadAnswer(error.to_string())),
            }
        }
    }

    /// Sends the part of the request body that was not buffered with the head: what is in the
    /// buffer, then what the client sends, up to `Content-Length`. Bytes after the body (the next
    /// request) stay at the body's start in the buffer.
    async fn stream_body(
        &mut self,
        upstream: &mut Upstream,
        head: &RequestHead,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let body_start = self.pos + head.head_len;
        let to_replica = |result: Option<io::Result<()>>| match result {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(Failure::BadAnswer(format!("sending the request body failed: {error}"))),
            None => Err(Failure::Timeout),
        };
        let buffered = self.filled - body_start;
        let sending = upstream.stream.write_all(&self.buf[body_start..self.filled]);
        to_replica(before(&mut self.replica_deadline, deadline, sending).await)?;
        let mut left = head.body_len - buffered as u64;
        self.filled = body_start;
        if self.buf.len() - body_start < BODY_CHUNK {
            self.buf.resize(body_start + BODY_CHUNK, 0);
        }
        while left > 0 {
            let reading = self.stream.read(&mut self.buf[body_start..]);
            let read = match before(&mut self.client_deadline, Instant::now() + self.client_timeout, reading)
                .await
            {
                Some(Ok(0)) => return Err(Failure::Client(io::ErrorKind::UnexpectedEof.into())),
                Some(Ok(n)) => n,
                Some(Err(error)) => return Err(Failure::Client(error)),
                None => {
                    return Err(Failure::Client(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body stalled",
                    )));
                }
            };
            let take = read.min(usize::try_from(left).unwrap_or(usize::MAX));
            let sending = upstream.stream.write_all(&self.buf[body_start..body_start + take]);
            to_replica(before(&mut self.replica_deadline, deadline, sending).await)?;
            left -= take as u64;
            if read > take {
                self.buf.copy_within(body_start + take..body_start + read, body_start);
                self.filled = body_start + read - take;
            }
        }
        Ok(())
    }

    /// Writes the answer to the client: its head, then its body as it arrives from the replica.
    /// The replica connection goes back to the pool if the answer ended cleanly.
    async fn relay(
        &mut self,
        proxy: &Proxy,
        snapshot: &Snapshot,
        head: &RequestHead,
        backend: &Backend,
        mut upstream: Upstream,
        answer: ResponseHead,
    ) -> io::Result<Next> {
        let close = head.close || answer.framing == Framing::UntilClose;
        if answer.status == StatusCode::NOT_FOUND && snapshot.routing.unknown_path == UnknownPath::Exercise {
            let path = &self.buf[self.pos + head.path.start..self.pos + head.path.end];
            let message = unknown_path_message(&String::from_utf8_lossy(path));
            response::error(&mut self.to_client, StatusCode::BAD_REQUEST, &message, head.close);
            self.stream.write_all(&self.to_client).await?;
            self.pos += head.head_len;
            return Ok(if head.close { Next::Close } else { Next::Continue });
        }
        let timeout = snapshot.routing.timeout;
        let body = answer.head_len..upstream.filled;
        let mut clean = answer.reusable;
        match answer.framing {
            Framing::Empty => {
                clean &= body.is_empty();
                self.stream.write_all(&self.to_client).await?;
            }
            Framing::Length(length) => {
                let take = body.len().min(usize::try_from(length).unwrap_or(usize::MAX));
                self.to_client.extend_from_slice(&upstream.buf[body.start..body.start + take]);
                clean &= take == body.len();
                self.stream.write_all(&self.to_client).await?;
                let mut left = length - take as u64;
                while left > 0 {
                    let Some(read) = self.read_upstream(&mut upstream, timeout).await else {
                        return Ok(self.truncated(backend, "the replica stopped in the middle of the body"));
                    };
                    let take = read.min(usize::try_from(left).unwrap_or(usize::MAX));
                    clean &= take == read;
                    self.stream.write_all(&upstream.buf[..take]).await?;
                    left -= take as u64;
                }
            }
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                let Ok(used) = scanner.advance(&upstream.buf[body.clone()]) else {
                    return Ok(self.truncated(backend, "invalid chunked body"));
                };
                self.to_client.extend_from_slice(&upstream.buf[body.start..body.start + used]);
                clean &= used == body.len();
                self.stream.write_all(&self.to_client).await?;
                while !scanner.is_done() {
                    let Some(read) = self.read_upstream(&mut upstream, timeout).await else {
                        return Ok(self.truncated(backend, "the replica stopped in the middle of the body"));
                    };
                    let Ok(used) = scanner.advance(&upstream.buf[..read]) else {
                        return Ok(self.truncated(backend, "invalid chunked body"));
                    };
                    clean &= used == read;
                    self.stream.write_all(&upstream.buf[..used]).await?;
                }
            }
            Framing::UntilClose => {
                self.to_client.extend_from_slice(&upstream.buf[body]);
                self.stream.write_all(&self.to_client).await?;
                while let Some(read) = self.read_upstream(&mut upstream, timeout).await {
                    self.stream.write_all(&upstream.buf[..read]).await?;
                }
            }
        }
        if clean {
            upstream.filled = 0;
            proxy.pool().put(backend.addr, upstream);
        }
        self.pos += head.head_len;
        Ok(if close { Next::Close } else { Next::Continue })
    }

    /// Reads the next piece of an answer's body into the start of the replica's buffer. `None`:
    /// the replica closed, failed or stalled for `timeout`.
    async fn read_upstream(&mut self, upstream: &mut Upstream, timeout: Duration) -> Option<usize> {
        let grow = if upstream.filled == upstream.buf.len() { upstream.buf.len() * 2 } else { BODY_CHUNK };
        if upstream.buf.len() < grow.min(MAX_BODY_CHUNK) {
            upstream.buf.resize(grow.min(MAX_BODY_CHUNK), 0);
        }
        upstream.filled = 0;
        match before(
            &mut self.replica_deadline,
            Instant::now() + timeout,
            upstream.stream.read(&mut upstream.buf),
        )
        .await
        {
            Some(Ok(0)) | Some(Err(_)) | None => None,
            Some(Ok(n)) => {
                // Remembered for the next read: a full buffer asks for a larger one.
                upstream.filled = n;
                Some(n)
            }
        }
    }

    /// An answer that broke off after its head was sent: the client connection closes so that the
    /// client sees it was cut short.
    fn truncated(&self, backend: &Backend, why: &str) -> Next {
        backend.record_error();
        tracing::warn!(replica = %backend.name, "answer from replica {} cut short: {why}", backend.name);
        Next::Close
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

/// True if a failure on a reused replica connection proves that the replica never read the request:
/// a reset before any answer means the replica's socket was closed with bytes still unread in it
/// (a server that had read the request and then closed would have sent a plain close). Such a
/// request may be sent again whatever its method; after a plain close it may not (RFC 9110
/// section 9.2.2).
fn was_unread(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::ConnectionReset
}

/// Runs `work` until `deadline` on `timer`; `None` if the deadline came first.
async fn before<T>(timer: &mut Deadline, deadline: Instant, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        out = work => Some(out),
        () = timer.until(deadline) => None,
    }
}

/// Re-arms one timer coarsely: waiting for a later deadline than the armed one does not touch
/// the timer; when it fires early, it is re-armed once. So a connection costs about one timer
/// operation per timeout period, not one per request.
struct Deadline {
    sleep: Pin<Box<Sleep>>,
}

/// How much later than asked a [`Deadline`] may be re-armed without resetting it.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

impl Default for Deadline {
    fn default() -> Self {
        // Far off until first used.
        Deadline { sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))) }
    }
}

impl Deadline {
    /// Completes at `deadline` (or up to [`DEADLINE_SLACK`] after it).
    async fn until(&mut self, deadline: Instant) {
        if self.sleep.deadline() > deadline + DEADLINE_SLACK {
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}
