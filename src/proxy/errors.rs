//! The answers the proxy gives itself when a request cannot be forwarded, the same on both engines
//! (`tests/fast_path.rs` compares them byte for byte): the exercise's failure envelope
//! (`crate::json`) with these messages, and `Retry-After: 1` on every 503.

use http::StatusCode;

/// The message of the 503 for "nothing to route to".
pub const NO_REPLICA: &str = "no replica is ready to serve the request";

/// The 405's message for `CONNECT`: ringlb forwards to its replicas, never to a place a client
/// names.
pub const CONNECT_REFUSED: &str =
    "CONNECT is not supported: ringlb is a reverse proxy for its replicas, not a forward proxy";

/// The 502's message when every attempt failed; `why` is the last failure.
pub fn all_failed_message(why: &str) -> String {
    format!("no replica could answer: {why}")
}

/// The exercise's 400 for a path no replica serves.
pub fn unknown_path_message(path: &str) -> String {
    format!("'{path}' endpoint does not exist in server replicas")
}

/// True if an error answer with `status` tells the client to come back in a second: a 503 is
/// always a passing state (no replica yet, a full hold queue, the connection limit).
pub fn asks_to_retry(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE
}
