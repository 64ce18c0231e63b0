//! The admin token: with `RINGLB_ADMIN_TOKEN` (or a file named by `RINGLB_ADMIN_TOKEN_FILE`, as
//! Docker secrets are) set, `/add` and `/rm` need `Authorization: Bearer <token>`, compared in
//! constant time; without one they are open, and the start says so when that reaches beyond this
//! host.

use super::AdminState;
use crate::json;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "RINGLB_ADMIN_TOKEN";

/// The environment variable naming a file that holds the admin token.
pub const TOKEN_FILE_ENV: &str = "RINGLB_ADMIN_TOKEN_FILE";

/// Why no admin token could be settled on: `ringlb run` refuses to start rather than serve `/add`
/// and `/rm` with a guard other than the one asked for.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Both variables are set: which one is meant is not ours to guess.
    #[error("both {TOKEN_ENV} and {TOKEN_FILE_ENV} are set: set one of them")]
    Both,
    /// The file cannot be read.
    #[error("{TOKEN_FILE_ENV}={}: cannot read the admin token: {source}", path.display())]
    Unreadable {
        /// The file named.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing but white space.
    #[error("{TOKEN_FILE_ENV}={}: the file is empty; it must hold the admin token", path.display())]
    Empty {
        /// The file named.
        path: PathBuf,
    },
}

/// The admin token from the values of [`TOKEN_ENV`] and [`TOKEN_FILE_ENV`] (an empty value counts
/// as unset). A file's token is its content without the surrounding white space (a secret file
/// usually ends with a newline).
pub fn admin_token(value: Option<String>, file: Option<String>) -> Result<Option<String>, TokenError> {
    let value = value.filter(|v| !v.is_empty());
    let file = file.filter(|f| !f.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(TokenError::Both),
        (Some(token), None) => Ok(Some(token)),
        (None, None) => Ok(None),
        (None, Some(file)) => {
            let path = PathBuf::from(file);
            let content = std::fs::read_to_string(&path)
                .map_err(|source| TokenError::Unreadable { path: path.clone(), source })?;
            match content.trim() {
                "" => Err(TokenError::Empty { path }),
                token => Ok(Some(token.to_string())),
            }
        }
    }
}

/// The warning to log at start when `/add` and `/rm` answer anyone who can reach `listen`
/// (no token, an address beyond loopback); `None` when there is nothing to say.
pub fn open_admin_warning(token: Option<&str>, listen: SocketAddr) -> Option<String> {
    if token.is_some() || listen.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "/add and /rm are open to anyone who reaches {listen}: set {TOKEN_ENV} (or {TOKEN_FILE_ENV}, a file \
         holding it) to require 'Authorization: Bearer <token>'"
    ))
}

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

    #[test]
    fn the_token_comes_from_the_variable_or_the_file_never_both() {
        assert_eq!(admin_token(None, None).ok(), Some(None));
        assert_eq!(admin_token(Some(String::new()), Some(String::new())).ok(), Some(None));
        assert_eq!(admin_token(Some("s3cret".into()), None).ok(), Some(Some("s3cret".into())));
        assert!(matches!(admin_token(Some("a".into()), Some("/x".into())), Err(TokenError::Both)));

        let dir = tempfile::tempdir().expect("a temporary directory");
        let secret = dir.path().join("token");
        std::fs::write(&secret, "from-a-secret\n").expect("write the token file");
        let named = Some(secret.display().to_string());
        assert_eq!(admin_token(None, named).ok(), Some(Some("from-a-secret".into())));

        let blank = dir.path().join("blank");
        std::fs::write(&blank, " \n").expect("write the blank file");
        let error = admin_token(None, Some(blank.display().to_string())).expect_err("an empty file");
        assert!(matches!(error, TokenError::Empty { .. }), "{error}");

        let missing = dir.path().join("missing");
        let error = admin_token(None, Some(missing.display().to_string())).expect_err("a missing file");
        assert!(matches!(error, TokenError::Unreadable { .. }), "{error}");
        assert!(error.to_string().contains("RINGLB_ADMIN_TOKEN_FILE="), "{error}");
    }

    #[test]
    fn only_an_open_admin_api_beyond_loopback_is_warned_about() {
        let public: SocketAddr = "0.0.0.0:5000".parse().expect("an address");
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("an address");
        let warning = open_admin_warning(None, public).expect("a warning");
        assert!(warning.contains("RINGLB_ADMIN_TOKEN"), "{warning}");
        assert_eq!(open_admin_warning(Some("t"), public), None);
        assert_eq!(open_admin_warning(None, local), None);
        assert_eq!(open_admin_warning(None, "[::1]:5000".parse().expect("an address")), None);
    }
}
