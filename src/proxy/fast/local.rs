//! ringlb's own routes (`/rep`, `/add`, `/rm`, `/_ringlb/...`) on a fast-path connection: the
//! request is handed to the admin router as an ordinary `http::Request` and its answer written
//! back, so the connection stays on the fast path. These are rare and small; they may allocate.

use axum::Router;
use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use std::io::Write;
use tower::ServiceExt;

/// The largest body ringlb's own routes accept (413 beyond).
pub const MAX_BODY: u64 = 1024 * 1024;
/// The largest answer of ringlb's own routes that is sent (the metrics page is the longest).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Builds the admin router's request from a head (already checked by `request::parse`) and body.
pub fn request(head: &[u8], body: &[u8]) -> Result<Request<Body>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; super::request::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return Err("malformed request head");
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err("malformed request line");
    };
    let mut request = Request::builder().method(method).uri(target).version(http::Version::HTTP_11);
    let Some(headers) = request.headers_mut() else { return Err("invalid method or target") };
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "invalid header name")?;
        let value =
            HeaderValue::from_bytes(super::wire::trim(field.value)).map_err(|_| "invalid header value")?;
        headers.append(name, value);
    }
    request.body(Body::from(body.to_vec())).map_err(|_| "invalid method or target")
}

/// Asks `admin` and writes its whole answer into `out` (cleared first), with `Connection: close`
/// if `close`.
pub async fn answer(admin: &Router, request: Request<Body>, close: bool, out: &mut Vec<u8>) {
    // The router's error type is Infallible.
    let Ok(response) = admin.clone().oneshot(request).await;
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%error, "cannot read an answer of the admin router");
            super::response::error(out, StatusCode::INTERNAL_SERVER_ERROR, "internal error", close);
            return;
        }
    };
    write_response(out, &Response::from_parts(parts, ()), &body, close);
}

/// Writes a whole answer: status line, its headers but framing and connection, then
/// `Content-Length` and the body.
fn write_response(out: &mut Vec<u8>, response: &Response<()>, body: &[u8], close: bool) {
    out.clear();
    let status = response.status();
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    for (name, value) in response.headers() {
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        super::wire::push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let _ = write!(out, "content-length: {}\r\n", body.len());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    #[tokio::test]
    async fn the_router_gets_the_request_and_its_answer_is_framed() {
        let router = Router::new().route(
            "/add",
            post(|request: Request<Body>| async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 100).await.unwrap();
                format!(
                    "{} {} {}",
                    parts.headers["x-a"].to_str().unwrap(),
                    parts.uri,
                    String::from_utf8_lossy(&body)
                )
            }),
        );
        let head = b"POST /add?x=1 HTTP/1.1\r\nHost: a\r\nX-A:  v \r\nContent-Length: 2\r\n\r\n";
        let request = request(head, b"hi").unwrap();
        let mut out = Vec::new();
        answer(&router, request, true, &mut out).await;
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 13\r\nconnection: close\r\n\r\nv /add?x=1 hi"), "{text}");
    }
}
