//! The replica's answer on its way to the client on the fast path: its head, then its body as it
//! arrives (`Content-Length`, chunked, or until the replica closes), and the replica connection
//! back to the pool when the answer ended cleanly. The exercise's 404 rewrite happens here.

use super::chunked::ChunkedScanner;
use super::deadline::before;
use super::pool::Upstream;
use super::request::RequestHead;
use super::response::{self, Framing, ResponseHead};
use super::{BODY_CHUNK, Client, Engine, MAX_BODY_CHUNK, Next};
use crate::manifest::UnknownPath;
use crate::proxy::errors::unknown_path_message;
use crate::snapshot::{Backend, Snapshot};
use http::StatusCode;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Writes the answer to the client: its head, then its body as it arrives from the replica.
    /// The replica connection goes back to the pool if the answer ended cleanly.
    pub(super) async fn relay(
        &mut self,
        engine: &Engine,
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
            engine.pool.put(backend.addr, upstream);
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
}
