//! The byte tunnel a connection becomes once its replica answered an upgrade (`101 Switching
//! Protocols`: WebSocket, or any other protocol): bytes are copied both ways as they come, for
//! both engines (the fast path hands it its sockets, the hyper path hyper's upgraded connections).
//!
//! A tunnel counts as one request in flight to its replica for as long as it is open, so bounded
//! loads, the autoscaler and a drain see it. It ends when both ends have closed their side, when
//! either fails, when nothing moved either way for `proxy.tunnel_idle_timeout`, or when its
//! replica's drain is over ([`Backend::close_tunnels`]). Each end is then shut down, so the client
//! sees its connection close, not a reset.

use crate::snapshot::{Backend, InflightGuard};
use crate::telemetry;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// Bytes read at once from either end.
const PIPE_BUFFER: usize = 16 * 1024;
/// The most time the shutdown of either end may take once the tunnel ended.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both ends closed their side.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// Its replica's drain was over.
    Drained,
    /// Reading or writing one end failed.
    Failed(io::Error),
}

impl End {
    /// The `reason` label of [`telemetry::TUNNELS_CLOSED`].
    fn label(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::Drained => "drained",
            End::Failed(_) => "error",
        }
    }
}

/// What a tunnel starts with: bytes one end sent before the tunnel began, for the other end.
#[derive(Default)]
pub struct Early {
    /// Read from the client after its upgrade request, for the replica.
    pub to_replica: Vec<u8>,
    /// Read from the replica after its `101` head, for the client.
    pub to_client: Vec<u8>,
}

/// Copies bytes between `client` and `replica` (a connection to `backend`) until the tunnel ends
/// (see the module), then shuts both down. `inflight` keeps the tunnel counted against its
/// replica until then.
pub async fn run<C, R>(
    mut client: C,
    mut replica: R,
    early: Early,
    backend: &Arc<Backend>,
    inflight: InflightGuard,
    idle_timeout: Duration,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let open = metrics::gauge!(telemetry::TUNNELS_OPEN);
    open.increment(1.0);
    let mut up = Pipe::new(early.to_replica);
    let mut down = Pipe::new(early.to_client);
    let end = Copy {
        client: &mut client,
        replica: &mut replica,
        up: &mut up,
        down: &mut down,
        idle_timeout,
        last_moved: Instant::now(),
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        draining: Box::pin(backend.tunnels_closing()),
    }
    .await;
    // Counted before either end sees the close, so whoever saw it reads the metrics that say so.
    open.decrement(1.0);
    metrics::counter!(telemetry::TUNNELS_CLOSED, "reason" => end.label()).increment(1);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = client.shutdown().await;
        let _ = replica.shutdown().await;
    })
    .await;
    drop(inflight);
    match &end {
        End::Closed => tracing::debug!(replica = %backend.name, "tunnel to replica {} closed", backend.name),
        End::Idle => tracing::debug!(replica = %backend.name,
            "tunnel to replica {} silent for {idle_timeout:?} (proxy.tunnel_idle_timeout); closed", backend.name),
        End::Drained => tracing::info!(event = "tunnel_drained", replica = %backend.name,
            "replica {} drained with a tunnel still open; tunnel closed", backend.name),
        End::Failed(error) => tracing::debug!(replica = %backend.name, %error,
            "tunnel to replica {} failed", backend.name),
    }
    end
}

/// One direction of the tunnel: what was read from one end and not yet written to the other.
struct Pipe {
    buf: Vec<u8>,
    /// `buf[start..end]` is still to be written.
    start: usize,
    end: usize,
    /// The reading end closed its side.
    eof: bool,
    /// Done: the writing end was shut down after the reading end's close.
    done: bool,
}

impl Pipe {
    /// A pipe whose first bytes to write are `early`.
    fn new(early: Vec<u8>) -> Pipe {
        let end = early.len();
        let mut buf = early;
        buf.resize(end.max(PIPE_BUFFER), 0);
        Pipe { buf, start: 0, end, eof: false, done: false }
    }

    /// Moves bytes from `from` to `to` until either would block (`Pending`), or the direction is
    /// done: `from` closed and `to` was shut down. Sets `moved` when a byte moved.
    fn poll_copy<F, T>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut F,
        to: &mut T,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        F: AsyncRead + Unpin,
        T: AsyncWrite + Unpin,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.start < self.end {
                let written = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.start..self.end]))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += written;
                *moved = true;
                continue;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Pending => {
                    // Nothing more to write for now: what was written goes out.
                    ready!(Pin::new(&mut *to).poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(result) => result?,
            }
            match read.filled().len() {
                0 => self.eof = true,
                n => {
                    (self.start, self.end) = (0, n);
                    *moved = true;
                }
            }
        }
    }
}

/// Both directions, the idle timer and the drain signal, polled together in one task.
struct Copy<'a, C, R> {
    client: &'a mut C,
    replica: &'a mut R,
    /// Client to replica.
    up: &'a mut Pipe,
    /// Replica to client.
    down: &'a mut Pipe,
    idle_timeout: Duration,
    /// When a byte last moved either way.
    last_moved: Instant,
    /// Fires `idle_timeout` after a moment when nothing may have moved since; re-armed from
    /// `last_moved` when it fires early (so the timer is not reset per read).
    idle: Pin<Box<tokio::time::Sleep>>,
    draining: Pin<Box<tokio_util::sync::WaitForCancellationFuture<'a>>>,
}

impl<C, R> Future for Copy<'_, C, R>
where
    C: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    type Output = End;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = &mut *self;
        if this.draining.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Drained);
        }
        let mut moved = false;
        let up = this.up.poll_copy(cx, this.client, this.replica, &mut moved);
        let down = this.down.poll_copy(cx, this.replica, this.client, &mut moved);
        match (up, down) {
            (Poll::Ready(Err(error)), _) | (_, Poll::Ready(Err(error))) => {
                return Poll::Ready(End::Failed(error));
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(End::Closed),
            _ => {}
        }
        if moved {
            this.last_moved = Instant::now();
        }
        loop {
            if this.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The clock is read per move and when the timer fires, not per poll.
            let silent_until = this.last_moved + this.idle_timeout;
            if silent_until <= Instant::now() {
                return Poll::Ready(End::Idle);
            }
            this.idle.as_mut().reset(silent_until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

    fn backend() -> Arc<Backend> {
        Arc::new(Backend::new("t", "t-1", 1, "127.0.0.1:1".parse().unwrap()))
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_early_bytes_first_and_close_ends_it() {
        let backend = backend();
        let (client, mut client_peer) = duplex(64);
        let (replica, mut replica_peer) = duplex(64);
        let early = Early { to_replica: b"early-up ".to_vec(), to_client: b"early-down ".to_vec() };
        let tunnel = tokio::spawn({
            let backend = Arc::clone(&backend);
            async move {
                let guard = backend.begin_request();
                run(client, replica, early, &backend, guard, Duration::from_secs(60)).await
            }
        });
        client_peer.write_all(b"hello").await.unwrap();
        replica_peer.write_all(b"world").await.unwrap();
        let mut up = [0u8; 14];
        replica_peer.read_exact(&mut up).await.unwrap();
        assert_eq!(&up, b"early-up hello");
        let mut down = [0u8; 16];
        client_peer.read_exact(&mut down).await.unwrap();
        assert_eq!(&down, b"early-down world");
        assert_eq!(backend.inflight(), 1, "an open tunnel is a request in flight");
        client_peer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        replica_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the client's close reaches the replica");
        replica_peer.shutdown().await.unwrap();
        assert!(matches!(tunnel.await.unwrap(), End::Closed));
        assert_eq!(backend.inflight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_for_the_idle_timeout_closes_it_and_traffic_keeps_it_open() {
        let backend = backend();
        let (client, mut client_peer) = duplex(64);
        let (replica, mut replica_peer) = duplex(64);
        let started = Instant::now();
        let tunnel = tokio::spawn({
            let backend = Arc::clone(&backend);
            async move {
                let guard = backend.begin_request();
                run(client, replica, Early::default(), &backend, guard, Duration::from_secs(10)).await
            }
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        client_peer.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        replica_peer.read_exact(&mut ping).await.unwrap();
        // 8 s after the start and 8 s of silence again: 16 s in all, past one idle timeout.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!tunnel.is_finished(), "traffic 8 s in kept the tunnel open");
        assert!(matches!(tunnel.await.unwrap(), End::Idle));
        let closed_after = started.elapsed();
        assert!(closed_after >= Duration::from_secs(18), "closed after {closed_after:?}");
        assert!(closed_after < Duration::from_secs(19), "closed after {closed_after:?}");
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(backend.inflight(), 0);
    }

    #[tokio::test]
    async fn the_end_of_its_replicas_drain_closes_it() {
        let backend = backend();
        let (client, mut client_peer) = duplex(64);
        let (replica, _replica_peer) = duplex(64);
        let tunnel = tokio::spawn({
            let backend = Arc::clone(&backend);
            async move {
                let guard = backend.begin_request();
                run(client, replica, Early::default(), &backend, guard, Duration::from_secs(60)).await
            }
        });
        backend.close_tunnels();
        assert!(matches!(tunnel.await.unwrap(), End::Drained));
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(backend.inflight(), 0);
    }
}
