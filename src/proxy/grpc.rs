//! gRPC on the data path: how a gRPC request is recognised, the deadline its `grpc-timeout` sets,
//! and ringlb's own errors in the shape a gRPC client reads (a trailers-only answer with a
//! `grpc-status`). A replica's answers, its gRPC status included, pass through untouched: only
//! what ringlb itself answers (no replica, every attempt failed, no answer in time) is shaped here.

use http::{HeaderMap, HeaderValue, StatusCode};
use std::time::Duration;

/// The gRPC status codes ringlb answers with (the gRPC core's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// An error that fits no other code.
    Unknown = 2,
    /// The deadline passed before the replica answered.
    DeadlineExceeded = 4,
    /// Refused for lack of permission.
    PermissionDenied = 7,
    /// The method is not served.
    Unimplemented = 12,
    /// The request was malformed.
    Internal = 13,
    /// No replica could take the call now; a retry may succeed.
    Unavailable = 14,
    /// Refused for lack of credentials.
    Unauthenticated = 16,
}

/// True for a gRPC request: its `content-type` is `application/grpc` or `application/grpc+<codec>`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let v = v.trim();
        v.get(..16).is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
            && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
    })
}

/// The deadline a request's `grpc-timeout` names: digits (at most 8) and a unit, `H` `M` `S`
/// `m` `u` `n`. `None` when there is none or it is malformed (the replica then judges it).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The gRPC code of one of ringlb's own HTTP errors: gRPC's mapping of HTTP statuses, except that
/// ringlb's 504 (no answer within the deadline) is `DEADLINE_EXCEEDED`, which is what happened.
pub fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        504 => Code::DeadlineExceeded,
        429 | 502 | 503 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The headers of a trailers-only gRPC answer of `code` with `message`: HTTP status 200,
/// `content-type: application/grpc`, `grpc-status` and the percent-encoded `grpc-message`.
pub fn trailers_only(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(code as u8)));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    headers
}

/// `grpc-message`'s encoding: printable ASCII but `%` as is, every other byte as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        for grpc in ["application/grpc", "application/grpc+proto", "Application/GRPC", "application/grpc;x=1"]
        {
            assert!(is_grpc(&headers(&[("content-type", grpc)])), "{grpc}");
        }
        for other in ["application/grpc-web", "application/json", "text/plain"] {
            assert!(!is_grpc(&headers(&[("content-type", other)])), "{other}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts_read_every_unit_and_refuse_malformed_ones() {
        let t = |v: &'static str| timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "100", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn ringlbs_own_errors_become_trailers_only_answers() {
        assert_eq!(code_of(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(code_of(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(code_of(StatusCode::GATEWAY_TIMEOUT), Code::DeadlineExceeded);
        assert_eq!(code_of(StatusCode::BAD_REQUEST), Code::Internal);
        assert_eq!(code_of(StatusCode::METHOD_NOT_ALLOWED), Code::Unknown);
        let answer = trailers_only(Code::Unavailable, "no replica: 100% down\n");
        assert_eq!(answer["grpc-status"], "14");
        assert_eq!(answer["content-type"], "application/grpc");
        assert_eq!(answer["grpc-message"], "no replica: 100%25 down%0A");
    }
}
