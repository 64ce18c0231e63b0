//! A plain GET to the Docker engine's API, for what bollard's types leave out: bollard 0.21's
//! `Task` has no `NetworksAttachments` (the API schema it is generated from omits the field), and
//! the Swarm runtime needs a task's overlay address from it.
//!
//! It speaks to the same engine as the bollard client (`DOCKER_HOST`: `unix://...`, or `tcp://` /
//! `http://` for a socket proxy; `/var/run/docker.sock` without it) at the API version that
//! client negotiated, one connection per call, bounded in time and in answer size.

use bollard::Docker;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// `DOCKER_HOST` names an engine this client cannot reach.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A `tcp://` or `http://` value without a host.
    #[error("DOCKER_HOST={host} names no host")]
    NoHost {
        /// The value of `DOCKER_HOST`.
        host: String,
    },
    /// A scheme other than `unix://`, `tcp://` and `http://` (such as `ssh://`).
    #[error("DOCKER_HOST={host}: only unix://, tcp:// and http:// engines are supported")]
    Unsupported {
        /// The value of `DOCKER_HOST`.
        host: String,
    },
}

/// Why a GET to the engine's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The engine's socket or port cannot be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The socket's path or `host:port`.
        endpoint: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection does not speak HTTP/1.
    #[error("cannot talk HTTP to the engine: {source}")]
    Handshake {
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The request cannot be built (a path that is no URI).
    #[error(transparent)]
    Request(#[from] http::Error),
    /// The request could not be sent, or no answer came back.
    #[error("GET {target}: {source}")]
    Send {
        /// The request's target.
        target: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The answer broke off, or is larger than the answer limit.
    #[error("GET {target}: reading the answer: {source}")]
    Read {
        /// The request's target.
        target: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The engine answered with an error status.
    #[error("{message} ({status})")]
    Answered {
        /// The HTTP status.
        status: u16,
        /// The engine's message (or its whole answer when it has none).
        message: String,
    },
    /// No answer within the call's time limit.
    #[error("GET {path}: no answer within {timeout:?}")]
    Timeout {
        /// The path asked for.
        path: String,
        /// How long the call waited.
        timeout: Duration,
    },
    /// The answer is not the JSON expected.
    #[error("GET {path}: unexpected answer: {source}")]
    Decode {
        /// The path asked for.
        path: String,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
}

impl ApiError {
    /// The HTTP status the engine answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Answered { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a task list of a big swarm is a few MiB).
const ANSWER_LIMIT: usize = 64 << 20;

/// Where the engine listens.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

/// GETs JSON from the engine's API.
#[derive(Clone, Debug)]
pub(crate) struct EngineApi {
    endpoint: Endpoint,
    /// `1.41`: the version the bollard client negotiated.
    version: String,
}

impl EngineApi {
    /// The engine `docker` talks to, at the version it negotiated.
    ///
    /// # Errors
    /// [`HostError`] naming a `DOCKER_HOST` this client cannot use.
    pub(crate) fn like(docker: &Docker) -> Result<EngineApi, HostError> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        Ok(EngineApi { endpoint: endpoint_of(&host)?, version: docker.client_version().to_string() })
    }

    /// `GET /v<version><path>` with the query `filters=<filters as JSON>`, decoded as `T`.
    ///
    /// # Errors
    /// [`ApiError`]: the engine could not be reached, answered an error (its message), took
    /// longer than [`CALL_TIMEOUT`], or sent something that is not the JSON expected.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        filters: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let target = format!("/v{}{path}?filters={}", self.version, percent_encode(&filters.to_string()));
        let call = async {
            match &self.endpoint {
                Endpoint::Unix(socket) => {
                    let stream = UnixStream::connect(socket).await.map_err(|source| ApiError::Connect {
                        endpoint: socket.display().to_string(),
                        source,
                    })?;
                    send(stream, &target).await
                }
                Endpoint::Tcp(addr) => {
                    let stream = TcpStream::connect(addr)
                        .await
                        .map_err(|source| ApiError::Connect { endpoint: addr.clone(), source })?;
                    send(stream, &target).await
                }
            }
        };
        let body = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| ApiError::Timeout { path: path.to_owned(), timeout: CALL_TIMEOUT })??;
        serde_json::from_slice(&body).map_err(|source| ApiError::Decode { path: path.to_owned(), source })
    }
}

/// One request over `stream`; the answer's body when its status is 2xx.
async fn send<S>(stream: S, target: &str) -> Result<Bytes, ApiError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ApiError::Handshake { source })?;
    // Aborted when this call ends or is dropped (a timeout): a hung engine leaves no task behind.
    let _driver = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(connection));
    let request =
        http::Request::get(target).header(http::header::HOST, "docker").body(Empty::<Bytes>::new())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|source| ApiError::Send { target: target.to_owned(), source })?;
    let status = answer.status();
    let body = Limited::new(answer.into_body(), ANSWER_LIMIT)
        .collect()
        .await
        .map_err(|source| ApiError::Read { target: target.to_owned(), source })?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(ApiError::Answered { status: status.as_u16(), message });
    }
    Ok(body)
}

/// The endpoint a `DOCKER_HOST` value names, as bollard reads it.
fn endpoint_of(host: &str) -> Result<Endpoint, HostError> {
    if let Some(path) = host.strip_prefix("unix://") {
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    let rest = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() {
                return Err(HostError::NoHost { host: host.to_owned() });
            }
            Ok(Endpoint::Tcp(authority.to_owned()))
        }
        None => Err(HostError::Unsupported { host: host.to_owned() }),
    }
}

/// `text` with every byte outside the URL's unreserved set percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values() {
        assert_eq!(endpoint_of("unix:///run/x.sock"), Ok(Endpoint::Unix("/run/x.sock".into())));
        assert_eq!(endpoint_of("tcp://127.0.0.1:2375"), Ok(Endpoint::Tcp("127.0.0.1:2375".into())));
        assert_eq!(endpoint_of("http://proxy:2375/"), Ok(Endpoint::Tcp("proxy:2375".into())));
        let unsupported = endpoint_of("ssh://host").unwrap_err();
        assert_eq!(
            unsupported.to_string(),
            "DOCKER_HOST=ssh://host: only unix://, tcp:// and http:// engines are supported"
        );
        assert_eq!(endpoint_of("tcp://").unwrap_err().to_string(), "DOCKER_HOST=tcp:// names no host");
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(percent_encode(r#"{"a":["b c"]}"#), "%7B%22a%22%3A%5B%22b%20c%22%5D%7D");
        assert_eq!(percent_encode("x-1_2.3~"), "x-1_2.3~");
    }

    #[tokio::test]
    async fn a_call_reads_json_and_reports_the_engines_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n[{\"a\":1}]",
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 30\r\n\r\n{\"message\":\"not a swarm node\"}",
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 4096];
                let n = stream.read(&mut request).await.unwrap();
                let head = String::from_utf8_lossy(&request[..n]).to_string();
                assert!(
                    head.starts_with(
                        "GET /v1.41/tasks?filters=%7B%22service%22%3A%5B%22s1%22%5D%7D HTTP/1.1"
                    ),
                    "{head}"
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let api = EngineApi { endpoint: Endpoint::Unix(socket), version: "1.41".into() };
        let filters = serde_json::json!({"service": ["s1"]});
        let got: serde_json::Value = api.get("/tasks", &filters).await.unwrap();
        assert_eq!(got, serde_json::json!([{"a": 1}]));
        let error = api.get::<serde_json::Value>("/tasks", &filters).await.unwrap_err();
        assert_eq!(error.to_string(), "not a swarm node (503)");
        assert_eq!(error.status(), Some(503));
    }
}
