//! Idle connections to replicas, shared by every client connection of the fast path.
//!
//! A connection is taken out for one request and put back when its response has been read to the
//! end, so the number open follows the requests in flight, not the clients. Before one is reused
//! it is checked for a close or stray bytes from the replica, which costs no system call when the
//! runtime has seen nothing on it. A request that must not be sent twice (not idempotent: see
//! `proxy/retry.rs`) gets a connection checked with a system call too (a peek at the socket), so
//! that a close the runtime has not yet noticed does not cost it its only attempt. Connections idle
//! longer than [`IDLE_TIMEOUT`] are closed, and an idle connection's buffer is no larger than a new
//! one's (a long answer's growth is given back when it is put back).

use socket2::SockRef;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long a connection may stay idle in the pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most idle connections kept per replica.
const MAX_IDLE_PER_REPLICA: usize = 1024;
/// How often the pool looks for connections idle too long.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// The buffer a replica connection starts with (it grows for long heads and long bodies).
const BUFFER: usize = 8 * 1024;

/// A connection to a replica and its read buffer.
pub struct Upstream {
    /// The socket.
    pub stream: TcpStream,
    /// Read buffer; `buf[..filled]` holds bytes not consumed yet.
    pub buf: Vec<u8>,
    /// Bytes in `buf` not consumed yet.
    pub filled: usize,
    /// True if it served a request before (a failure on it may be a close while idle).
    pub reused: bool,
}

impl Upstream {
    /// Connects to `addr` within `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Upstream> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(connected) => connected?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                ));
            }
        };
        stream.set_nodelay(true)?;
        Ok(Upstream { stream, buf: vec![0; BUFFER], filled: 0, reused: false })
    }

    /// True if the replica closed it or sent something while it was idle, as far as the runtime
    /// has seen (no system call when it has seen nothing).
    fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// True if the socket has a close or bytes waiting right now: asks the kernel (one `recv` with
    /// `MSG_PEEK`), whatever the runtime has seen so far.
    fn is_stale_now(&self) -> bool {
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        !matches!(SockRef::from(&self.stream).peek(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }
}

struct Idle {
    upstream: Upstream,
    since: Instant,
}

/// Hashes a replica address for the pool's map, twice per request. The addresses are few and come
/// from the controller, not from clients, so a multiply-and-rotate hash (FxHash's) is enough:
/// SipHash's defence against keys chosen to collide buys nothing here and cost more than a
/// tenth of the fast path's own instructions.
#[derive(Default)]
struct AddrHasher(u64);

impl AddrHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

/// The idle connections, per replica address.
pub struct Pool {
    idle: Mutex<State>,
}

struct State {
    by_addr: HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>,
    pruned: Instant,
}

impl Default for Pool {
    fn default() -> Self {
        Pool { idle: Mutex::new(State { by_addr: HashMap::default(), pruned: Instant::now() }) }
    }
}

impl Pool {
    /// An idle connection to `addr` that is still good, if there is one; with `verify`, checked
    /// with the kernel too (a peek at the socket).
    pub fn take(&self, addr: SocketAddr, verify: bool) -> Option<Upstream> {
        loop {
            let idle = {
                let mut state = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                state.by_addr.get_mut(&addr)?.pop()?
            };
            let upstream = &idle.upstream;
            if !upstream.is_stale()
                && idle.since.elapsed() < IDLE_TIMEOUT
                && !(verify && upstream.is_stale_now())
            {
                return Some(idle.upstream);
            }
        }
    }

    /// Keeps `upstream` for the next request to `addr`. Only a connection whose last response was
    /// read to its end, with nothing after it, may be put back.
    pub fn put(&self, addr: SocketAddr, mut upstream: Upstream) {
        if upstream.filled != 0 {
            return;
        }
        upstream.reused = true;
        if upstream.buf.len() > BUFFER {
            // A long answer grew it; an idle connection holds no more than a new one would.
            upstream.buf.truncate(BUFFER);
            upstream.buf.shrink_to_fit();
        }
        let now = Instant::now();
        let mut state = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(state.pruned) >= PRUNE_EVERY {
            state.pruned = now;
            state.by_addr.retain(|_, idle| {
                idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                !idle.is_empty()
            });
        }
        let idle = state.by_addr.entry(addr).or_default();
        if idle.len() < MAX_IDLE_PER_REPLICA {
            idle.push(Idle { upstream, since: now });
        }
    }

    /// Idle connections in the pool.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).by_addr.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn connections_come_back_and_closed_ones_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        assert!(pool.take(addr, false).is_none());

        let first = Upstream::connect(addr, Duration::from_secs(1)).await.unwrap();
        let (mut server_side, _) = listener.accept().await.unwrap();
        pool.put(addr, first);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(addr, true).expect("the idle connection");
        assert!(again.reused);
        pool.put(addr, again);

        // The replica closes it while idle: the pool notices and does not hand it out.
        server_side.shutdown().await.unwrap();
        drop(server_side);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Let the runtime see the close.
            tokio::task::yield_now().await;
            match pool.take(addr, false) {
                None => break,
                Some(still) => pool.put(addr, still),
            }
            assert!(Instant::now() < deadline, "the closed connection was never dropped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_verified_take_sees_a_close_the_runtime_has_not_seen() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let upstream = Upstream::connect(addr, Duration::from_secs(1)).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        pool.put(addr, upstream);
        // Closed by the replica and taken at once, before this task yields to the runtime: the
        // runtime cannot have seen the close, the kernel has.
        drop(server_side);
        std::thread::sleep(Duration::from_millis(20));
        let unverified = pool.take(addr, false).expect("the runtime has not seen the close yet");
        pool.put(addr, unverified);
        assert!(pool.take(addr, true).is_none(), "a verified take handed out a closed connection");
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_with_unread_bytes_is_not_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let mut upstream = Upstream::connect(addr, Duration::from_secs(1)).await.unwrap();
        upstream.filled = 3;
        pool.put(addr, upstream);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_buffer_grown_by_a_long_answer_is_given_back_when_the_connection_is_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let mut upstream = Upstream::connect(addr, Duration::from_secs(1)).await.unwrap();
        let _server_side = listener.accept().await.unwrap();
        upstream.buf.resize(256 * 1024, 0);
        pool.put(addr, upstream);
        let kept = pool.take(addr, false).expect("the idle connection");
        assert_eq!(kept.buf.len(), BUFFER);
        assert!(kept.buf.capacity() < 2 * BUFFER, "capacity {} kept", kept.buf.capacity());
    }
}
