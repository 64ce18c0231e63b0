//! The admin token: with `RINGLB_ADMIN_TOKEN` set, `/add` and `/rm` need
//! `Authorization: Bearer <token>`, compared in constant time.

use super::AdminState;
use crate::json;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "RINGLB_ADMIN_TOKEN";

/// Checks the bearer token in constant time; `Some` is the 401 to send.
pub(super) fn refuse_unauthorized(state: &AdminState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.token else {
        return None;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    let mut response =
        json::failure(StatusCode::UNAUTHORIZED, "a valid 'Authorization: Bearer <token>' header is required");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}
