//! `ringlb probe`: one heartbeat from inside a replica's container, for the container engine's
//! health check (the image is `FROM scratch`: there is no curl or shell to run one).
//!
//! The Swarm runtime gives each replica service a health check that runs this, so that Swarm's
//! start-first update keeps a replica's old task until the new one answers. It is plain blocking
//! code on purpose: it runs once and exits, and must cost as little as possible.

use crate::manifest::StatusSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest answer head read: a heartbeat's status line comes first, the rest is not needed.
const HEAD_LIMIT: usize = 1024;

/// Why a heartbeat from inside the container failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing accepted the connection in time.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The replica.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be sent.
    #[error("cannot send the heartbeat to {addr}: {source}")]
    Send {
        /// The replica.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No status line within the timeout.
    #[error("{addr} did not answer within {timeout:?}")]
    TimedOut {
        /// The replica.
        addr: SocketAddr,
        /// The whole heartbeat's time.
        timeout: Duration,
    },
    /// The answer could not be read.
    #[error("cannot read the answer of {addr}: {source}")]
    Read {
        /// The replica.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection closed before a status line.
    #[error("{addr} closed the connection without an answer")]
    Closed {
        /// The replica.
        addr: SocketAddr,
    },
    /// No line ended within the first 1 KiB of the answer.
    #[error("{addr} answered no HTTP status line")]
    NoStatusLine {
        /// The replica.
        addr: SocketAddr,
    },
    /// What came back is not an HTTP/1 status line.
    #[error("{addr} answered {line:?}, not HTTP")]
    NotHttp {
        /// The replica.
        addr: SocketAddr,
        /// The first line it sent.
        line: String,
    },
    /// The gRPC health check failed.
    #[error("{addr}: {source}")]
    Grpc {
        /// The replica.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: crate::grpc_health::GrpcHealthError,
    },
    /// A status outside `health.status`.
    #[error("{addr} answered {path} with status {status}")]
    Status {
        /// The replica.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// The status it answered.
        status: u16,
    },
}

/// One gRPC health check of `addr` within `timeout` (`health.kind: grpc`), the one the controller
/// sends (`grpc_health.rs`), on a small runtime of its own.
///
/// # Errors
/// [`ProbeError::Grpc`] with the reason, or [`ProbeError::TimedOut`].
pub fn grpc(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ProbeError::Send { addr, source })?;
    runtime.block_on(async {
        match tokio::time::timeout(timeout, crate::grpc_health::check(addr)).await {
            Err(_) => Err(ProbeError::TimedOut { addr, timeout }),
            Ok(result) => result.map_err(|source| ProbeError::Grpc { addr, source }),
        }
    })
}

/// Connects to `addr` within `timeout` (`health.kind: tcp`).
///
/// # Errors
/// [`ProbeError::Connect`] when nothing accepted the connection in time.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|source| ProbeError::Connect { addr, source })
}

/// Sends `GET path` to `addr` and waits at most `timeout` in all for its status line.
///
/// # Errors
/// Why the replica is not healthy: it refused, it was too slow, or it answered with a status
/// that `healthy` does not hold.
pub fn heartbeat(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    healthy: &StatusSet,
) -> Result<u16, ProbeError> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut stream =
        TcpStream::connect_timeout(&addr, left()).map_err(|source| ProbeError::Connect { addr, source })?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: ringlb-probe\r\n\r\n"
    );
    let send = |source| ProbeError::Send { addr, source };
    stream.set_write_timeout(Some(left())).map_err(send)?;
    stream.write_all(request.as_bytes()).map_err(send)?;
    let mut head = Vec::with_capacity(128);
    let mut buffer = [0u8; 256];
    let line_end = loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if head.len() >= HEAD_LIMIT {
            return Err(ProbeError::NoStatusLine { addr });
        }
        stream.set_read_timeout(Some(left())).map_err(|source| ProbeError::Read { addr, source })?;
        match stream.read(&mut buffer) {
            Ok(0) => return Err(ProbeError::Closed { addr }),
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(ProbeError::TimedOut { addr, timeout });
            }
            Err(source) => return Err(ProbeError::Read { addr, source }),
        }
    };
    let line = String::from_utf8_lossy(&head[..line_end]);
    let status = parse_status(&line).ok_or_else(|| ProbeError::NotHttp { addr, line: line.to_string() })?;
    if healthy.contains(status) {
        Ok(status)
    } else {
        Err(ProbeError::Status { addr, path: path.to_owned(), status })
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server on 127.0.0.1 that answers the first request with `answer`.
    fn answering(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn a_2xx_answer_is_healthy() {
        let addr = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            heartbeat(addr, "/heartbeat", Duration::from_secs(2), &StatusSet::default()).unwrap(),
            200
        );
    }

    #[test]
    fn a_redirect_is_healthy_by_default_and_the_set_decides() {
        let addr = answering(b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n");
        assert_eq!(heartbeat(addr, "/", Duration::from_secs(2), &StatusSet::default()).unwrap(), 302);
        let addr = answering(b"HTTP/1.1 302 Found\r\n\r\n");
        let only_200 = StatusSet::parse("200").unwrap();
        assert!(heartbeat(addr, "/", Duration::from_secs(2), &only_200).is_err());
    }

    #[test]
    fn a_connect_is_a_tcp_heartbeat() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(connect(addr, Duration::from_secs(1)).is_ok());
        drop(listener);
        assert!(connect(addr, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn another_status_is_not() {
        let addr = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let error = heartbeat(addr, "/heartbeat", Duration::from_secs(2), &StatusSet::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("status 503"), "{error}");
    }

    #[test]
    fn nothing_listening_or_no_answer_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepted by the kernel, never answered: the timeout decides.
        let started = Instant::now();
        let error = heartbeat(addr, "/heartbeat", Duration::from_millis(200), &StatusSet::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("did not answer"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
        let error = heartbeat(addr, "/heartbeat", Duration::from_millis(200), &StatusSet::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot connect"), "{error}");
        let garbage = answering(b"SSH-2.0-OpenSSH\r\n");
        assert!(
            heartbeat(garbage, "/", Duration::from_secs(2), &StatusSet::default())
                .unwrap_err()
                .to_string()
                .contains("not HTTP")
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status("HTTP/1.0 200"), Some(200));
        assert_eq!(parse_status("HTTP/2 200"), None);
        assert_eq!(parse_status("HTTP/1.1 20"), None);
    }
}
