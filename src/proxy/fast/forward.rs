//! One request on the fast path, from its head to the replica's answer head: a replica connection
//! from the pool or a new one, the head and body sent, the answer's head read (interim answers
//! skipped), and after a failure what [`crate::proxy::retry`] decides.

use super::deadline::before;
use super::pool::Upstream;
use super::request::RequestHead;
use super::response::{self, Framing, ResponseHead};
use super::{BODY_CHUNK, Client, Engine, Next};
use crate::proxy::Route;
use crate::proxy::candidates::choices;
use crate::proxy::retry::{Outcome, is_idempotent};
use crate::proxy::tunnel::{self, Early};
use crate::snapshot::{Backend, InflightGuard, Snapshot};
use http::StatusCode;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The largest answer (head and body) read whole from the replica before it goes to the client
/// ([`Client::read_small_body`]).
const SMALL_ANSWER: usize = 16 * 1024;

/// Why a request could not be answered by a replica.
pub(super) enum Failure {
    /// Failed after connecting and before any byte of an answer (the request may have been seen).
    BeforeAnswer(io::Error),
    /// The replica sent something that is not a valid answer, or part of one and then failed.
    BadAnswer(String),
    /// No answer within `proxy.timeout`.
    Timeout,
    /// The client went away or stalled while sending its body: nothing to answer.
    Client(io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Forwards one request and its answer; see [`crate::proxy::retry`] for what follows a failed
    /// attempt.
    pub(super) async fn forward(
        &mut self,
        engine: &Engine,
        snapshot: &Snapshot,
        head: &RequestHead,
    ) -> io::Result<Next> {
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
        // A request that may not be sent twice gets a pooled connection only after the kernel says
        // it is still open (`pool.rs`).
        let verify_pooled = !is_idempotent(&head.method);
        let mut body_sent = replayable;
        let mut route = Route::new(choices(snapshot, head.key), &head.method);
        while let Some((backend, fresh)) = route.target() {
            let pooled = if fresh { None } else { engine.pool.take(backend.addr, verify_pooled) };
            let connected = match pooled {
                Some(upstream) => Ok(upstream),
                None => Upstream::connect(backend.addr, routing.connect_timeout).await,
            };
            let sent = std::time::Instant::now();
            let (outcome, why) = match connected {
                Err(error) => (Outcome::Refused, error.to_string()),
                Ok(mut upstream) => {
                    let inflight = backend.begin_request();
                    let failed = Outcome::Failed { pooled: upstream.reused };
                    match self.exchange(&mut upstream, head, &mut body_sent, backend, deadline).await {
                        Ok(answer) => {
                            engine.proxy.answered(backend, &head.method, answer.status, sent);
                            if answer.status == StatusCode::SWITCHING_PROTOCOLS {
                                return self
                                    .tunnel(snapshot, head, backend, upstream, answer, inflight)
                                    .await;
                            }
                            let next = self.relay(engine, snapshot, head, backend, upstream, answer).await;
                            drop(inflight);
                            return next;
                        }
                        Err(Failure::Client(error)) => return Err(error),
                        Err(Failure::BeforeAnswer(error)) => (failed, error.to_string()),
                        Err(Failure::BadAnswer(why)) => (failed, why),
                        Err(Failure::Timeout) => (Outcome::TimedOut, String::new()),
                    }
                }
            };
            if let Err((status, message)) = route.failed(&engine.proxy, outcome, replayable, &why, sent) {
                return self.answer_error(status, &message, head, body_sent).await;
            }
        }
        let (status, message) = route.exhausted();
        self.answer_error(status, &message, head, body_sent).await
    }

    /// The replica switched protocols: its `101` goes to the client, and both connections become
    /// a tunnel (with the bytes either side sent early) until it ends; then the client connection
    /// closes.
    async fn tunnel(
        &mut self,
        snapshot: &Snapshot,
        head: &RequestHead,
        backend: &Arc<Backend>,
        mut upstream: Upstream,
        answer: ResponseHead,
        inflight: InflightGuard,
    ) -> io::Result<Next> {
        self.stream.write_all(&self.to_client).await?;
        let early = Early {
            to_replica: self.buf[self.pos + head.head_len..self.filled].to_vec(),
            to_client: upstream.buf[answer.head_len..upstream.filled].to_vec(),
        };
        let idle = snapshot.routing.tunnel_idle_timeout;
        tunnel::run(&mut self.stream, &mut upstream.stream, early, backend, inflight, idle).await;
        Ok(Next::Close)
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
        let mut context = response::Context {
            is_head: head.is_head,
            close: head.close,
            replica: backend.name_header.as_bytes(),
            upgrade: head.upgrade,
        };
        let mut answered = false;
        loop {
            if upstream.filled > 0 {
                // A drain that began while the replica worked still makes this answer the last.
                context.close = head.close || self.drain.is_closing();
                match response::parse(&upstream.buf[..upstream.filled], &context, &mut self.to_client) {
                    Ok(Some(answer))
                        if answer.status.is_informational()
                            && answer.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        upstream.buf.copy_within(answer.head_len..upstream.filled, 0);
                        upstream.filled -= answer.head_len;
                        continue;
                    }
                    Ok(Some(answer)) => {
                        self.read_small_body(upstream, &answer, deadline).await?;
                        return Ok(answer);
                    }
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

    /// Reads the rest of a small answer (head and `Content-Length` body within
    /// [`SMALL_ANSWER`]) before anything of it goes to the client. A replica that dies between its
    /// head and its body then fails only this attempt, which an idempotent request retries as
    /// one cut inside its head, instead of a client's answer cut short. Larger bodies stream.
    async fn read_small_body(
        &mut self,
        upstream: &mut Upstream,
        answer: &ResponseHead,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let Framing::Length(length) = answer.framing else { return Ok(()) };
        let whole = usize::try_from(length).ok().and_then(|length| length.checked_add(answer.head_len));
        let Some(whole) = whole.filter(|whole| *whole <= SMALL_ANSWER) else { return Ok(()) };
        if upstream.buf.len() < whole {
            upstream.buf.resize(whole, 0);
        }
        while upstream.filled < whole {
            let read = before(
                &mut self.replica_deadline,
                deadline,
                upstream.stream.read(&mut upstream.buf[upstream.filled..]),
            );
            match read.await {
                None => return Err(Failure::Timeout),
                Some(Ok(0)) => {
                    return Err(Failure::BadAnswer("connection closed inside a small answer's body".into()));
                }
                Some(Ok(n)) => upstream.filled += n,
                Some(Err(error)) => return Err(Failure::BadAnswer(error.to_string())),
            }
        }
        Ok(())
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
}
