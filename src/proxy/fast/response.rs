//! The replica's response head on the fast path: parsed with `httparse`, its body framing
//! decided (RFC 9112 section 6.3), and written out again for the client with the proxy's header
//! rules (hop-by-hop headers out, `X-Ringlb-Replica` in). Also the JSON errors the fast path
//! answers itself, byte for byte what the hyper path sends.

use super::wire::{has_bare_lf, parse_length, push_field, trim};
use crate::proxy::errors::asks_to_retry;
use crate::proxy::headers::{X_RINGLB_REPLICA, is_hop_by_hop, is_protected};
use http::StatusCode;
use std::io::Write;

/// The most header fields accepted from a replica.
const MAX_HEADERS: usize = 100;

/// How the response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: forwarded as it is until its last chunk.
    Chunked,
    /// Until the replica closes the connection (the client's connection closes after it too).
    UntilClose,
}

/// A response head from a replica.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head in the replica connection's buffer.
    pub head_len: usize,
    /// The status code.
    pub status: StatusCode,
    /// How its body ends.
    pub framing: Framing,
    /// The replica keeps the connection open after this response.
    pub reusable: bool,
}

/// An answer the fast path cannot forward.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid response from the replica: {0}")]
pub struct BadResponse(pub &'static str);

/// What the client-side head depends on besides the replica's head.
pub struct Context<'a> {
    /// The request was `HEAD`.
    pub is_head: bool,
    /// The client's connection closes after this response.
    pub close: bool,
    /// The replica's name, for `X-Ringlb-Replica`.
    pub replica: &'a [u8],
    /// The request asked to upgrade: a `101` is its answer, not an interim one.
    pub upgrade: bool,
}

/// Parses the response head at the front of `buf`. `None`: not complete yet. An interim (1xx)
/// answer is returned as it is, with `Framing::Empty`, for the caller to skip; nothing is written.
/// Otherwise the head for the client is written into `out` (cleared first). A `101` to an upgrade
/// request keeps its `Connection: upgrade` and `Upgrade` headers and is not reusable: the
/// connection is a tunnel from there on.
pub fn parse(
    buf: &[u8],
    context: &Context<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    // Left uninitialized, as for requests (`request.rs`).
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= super::request::MAX_HEAD => {
            return Err(BadResponse("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse("malformed response head")),
    };
    if has_bare_lf(&buf[..head_len]) {
        return Err(BadResponse("a line of the response head ends without CR"));
    }
    let (Some(version), Some(code)) = (response.version, response.code) else {
        return Err(BadResponse("malformed status line"));
    };
    let status = StatusCode::from_u16(code).map_err(|_| BadResponse("invalid status code"))?;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !context.upgrade {
        return Err(BadResponse("101 Switching Protocols without an upgrade request"));
    }
    if status.is_informational() && !switching {
        return Ok(Some(ResponseHead { head_len, status, framing: Framing::Empty, reusable: true }));
    }
    let headers = response.headers;
    let mut content_length: Option<u64> = None;
    let mut chunked = None;
    let mut close = version == 0;
    let mut named_options = 0usize;
    for field in headers.iter() {
        let name = field.name.as_bytes();
        let value = trim(field.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(value).ok_or(BadResponse("invalid Content-Length"))?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(BadResponse("conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding decides; a later field continues the list.
            let last = value.rsplit(|b| *b == b',').next().map(trim).unwrap_or_default();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|b| *b == b',').map(trim) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    close = close && version != 0;
                } else if !option.is_empty() {
                    named_options += 1;
                }
            }
        }
    }
    let no_body = switching
        || context.is_head
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (chunked, content_length) {
        _ if no_body => Framing::Empty,
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(length)) => Framing::Length(length),
        (None, None) => Framing::UntilClose,
    };
    // A response framed by the close of the connection closes the client's connection too.
    let close_client = !switching && (context.close || framing == Framing::UntilClose);
    let mut protocols: Option<&[u8]> = None;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = response.reason.filter(|r| !r.is_empty()).or(status.canonical_reason()).unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let connection_values: Vec<&[u8]> = if named_options == 0 {
        Vec::new()
    } else {
        headers.iter().filter(|f| f.name.eq_ignore_ascii_case("connection")).map(|f| f.value).collect()
    };
    for field in headers.iter() {
        let name = field.name.as_bytes();
        if switching && name.eq_ignore_ascii_case(b"upgrade") {
            protocols = Some(trim(field.value));
            continue;
        }
        // Chunked bodies pass through as they are, so their Transfer-Encoding stays.
        let keep_framing = name.eq_ignore_ascii_case(b"transfer-encoding");
        if (is_hop_by_hop(name) && !keep_framing)
            || (named_in(&connection_values, name) && !is_protected(name))
        {
            continue;
        }
        push_field(out, name, trim(field.value));
    }
    push_field(out, X_RINGLB_REPLICA.as_str().as_bytes(), context.replica);
    if switching {
        push_field(out, b"connection", b"upgrade");
        push_field(out, b"upgrade", protocols.ok_or(BadResponse("101 Switching Protocols without Upgrade"))?);
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let reusable = !switching && !close && framing != Framing::UntilClose;
    Ok(Some(ResponseHead { head_len, status, framing, reusable }))
}

/// True if one of the `Connection` header values lists `name`.
fn named_in(connection_values: &[&[u8]], name: &[u8]) -> bool {
    connection_values
        .iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .any(|option| trim(option).eq_ignore_ascii_case(name))
}

/// Writes a complete JSON error answer into `out` (cleared first): the exercise's failure
/// envelope, as the hyper path sends it, with `Retry-After: 1` on a 503.
pub fn error(out: &mut Vec<u8>, status: StatusCode, message: &str, close: bool) {
    let message = crate::json::failure_message(message);
    let body = crate::json::to_python_json(&crate::json::Envelope { message, status: "failure" });
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if asks_to_retry(status) {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, is_head: bool, close: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let context = Context { is_head, close, replica: b"server2", upgrade: false };
        let head = parse(raw.as_bytes(), &context, &mut out).unwrap().expect("complete");
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_plain_answer_gets_the_replica_header() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello";
        let (head, out) = head(raw, false, false);
        assert_eq!((head.head_len, head.framing, head.reusable), (raw.len() - 5, Framing::Length(5), true));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nx-ringlb-replica: server2\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |raw: &str, is_head| head(raw, is_head, false).0.framing;
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), Framing::Chunked);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false),
            Framing::Chunked
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false), Framing::UntilClose);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false),
            Framing::Chunked
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), Framing::UntilClose);
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true), Framing::Empty);
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Framing::Empty);
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false), Framing::Empty);
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false), Framing::Empty);
    }

    #[test]
    fn connections_that_end_are_not_reused_and_close_the_client() {
        let (head_, out) = head(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert!(!head_.reusable);
        assert!(!out.contains("X-Hop") && !out.to_lowercase().contains("connection"));
        let (head_, out) = head("HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert!(!head_.reusable);
        assert!(out.ends_with("connection: close\r\n\r\n"));
        let (head_, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, false);
        assert!(!head_.reusable);
        let (head_, _) =
            head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false, false);
        assert!(head_.reusable);
        let (_, out) = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true);
        assert!(out.ends_with("connection: close\r\n\r\n"));
    }

    #[test]
    fn connection_options_cannot_remove_the_framing() {
        let (_, out) = head(
            "HTTP/1.1 200 OK\r\nConnection: Content-Length, X-B\r\nX-B: 1\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        );
        assert!(out.contains("Content-Length: 2\r\n") && !out.contains("X-B"), "{out}");
    }

    #[test]
    fn interim_answers_are_returned_for_skipping() {
        let mut out = Vec::new();
        let context = Context { is_head: false, close: false, replica: b"s", upgrade: false };
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        let interim = parse(raw, &context, &mut out).unwrap().unwrap();
        assert_eq!((interim.status, interim.head_len), (StatusCode::CONTINUE, 25));
        assert!(out.is_empty());
    }

    #[test]
    fn a_101_to_an_upgrade_keeps_its_upgrade_headers_and_ends_the_framing() {
        let mut out = Vec::new();
        let context = Context { is_head: false, close: true, replica: b"s", upgrade: true };
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: a\r\n\r\nframe";
        let head = parse(raw, &context, &mut out).unwrap().unwrap();
        assert_eq!(
            (head.status, head.framing, head.reusable),
            (StatusCode::SWITCHING_PROTOCOLS, Framing::Empty, false)
        );
        assert_eq!(head.head_len, raw.len() - 5);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nx-ringlb-replica: s\r\n\
             connection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        let no_protocol = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n";
        assert!(parse(no_protocol, &context, &mut Vec::new()).is_err());
    }

    #[test]
    fn bad_answers_are_refused() {
        let context = Context { is_head: false, close: false, replica: b"s", upgrade: false };
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"NOPE\r\n\r\n",
        ] {
            assert!(parse(raw, &context, &mut Vec::new()).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n", &context, &mut Vec::new()), Ok(None));
    }

    #[tokio::test]
    async fn errors_match_the_hyper_paths_json() {
        let mut out = Vec::new();
        error(&mut out, StatusCode::SERVICE_UNAVAILABLE, "no replica", false);
        let text = String::from_utf8(out).unwrap();
        let body = r#"{"message": "<Error> no replica", "status": "failure"}"#;
        let hyper_body = crate::json::failure(StatusCode::SERVICE_UNAVAILABLE, "no replica").into_body();
        let hyper_body = axum::body::to_bytes(hyper_body, 1024).await.unwrap();
        assert_eq!(hyper_body, body.as_bytes());
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 retry-after: 1\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
