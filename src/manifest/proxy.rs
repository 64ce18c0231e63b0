//! The `proxy:` section: how requests are forwarded to the replicas.

use super::duration::HumanDuration;
use serde::Deserialize;

/// What a replica's 404 becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownPath {
    /// The replica's answer reaches the client unchanged.
    #[default]
    Pass,
    /// The exercise's 400: `'/<path>' endpoint does not exist in server replicas`.
    Exercise,
}

/// Which implementation of HTTP/1.1 forwards the requests (both follow the same rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyEngine {
    /// ringlb's own HTTP/1.1 framing on `httparse`: the fast path. Requests it does not handle
    /// itself (upgrades, `Expect`, chunked uploads, HTTP/1.0, ringlb's own routes) are passed, with
    /// the rest of their connection, to the hyper path.
    #[default]
    Fast,
    /// hyper on both sides: the reference implementation.
    Hyper,
}

/// How requests are forwarded (defaults in `defaults.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// How long a replica may take to answer (response head) before the client gets a 504.
    pub timeout: HumanDuration,
    /// How long connecting to a replica may take before the next replica is tried.
    pub connect_timeout: HumanDuration,
    /// What a replica's 404 becomes.
    pub unknown_path: UnknownPath,
    /// One log line per request (method, path, status, replica, time), target `ringlb::access`.
    pub access_log: bool,
    /// The HTTP/1.1 implementation of client connections (applies to new connections).
    pub engine: ProxyEngine,
    /// How long a client may take to send a request head (or, on the fast path, the next piece
    /// of a body); then 408 and the connection closes. Applies to new connections.
    pub client_timeout: HumanDuration,
    /// The most client connections open at once; one more gets a 503 and is closed.
    pub max_connections: u32,
    /// How long a tunnel (an upgraded connection, such as a WebSocket) may stay silent both ways
    /// before it is closed.
    pub tunnel_idle_timeout: HumanDuration,
    /// Limits of HTTP/2 client connections.
    pub http2: Http2Limits,
}

/// `proxy.http2`: what one HTTP/2 client connection may use (defaults in `defaults.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Limits {
    /// Streams (requests) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// The largest header list of a request (decoded, as RFC 9113 counts it); a larger one, or a
    /// flood of CONTINUATION frames, ends the connection.
    pub max_header_bytes: u32,
    /// The flow-control window of each stream: request body bytes a client may send ahead.
    pub stream_window_bytes: u32,
    /// The flow-control window of the whole connection.
    pub connection_window_bytes: u32,
}
