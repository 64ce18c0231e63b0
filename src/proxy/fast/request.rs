//! The client's request head on the fast path: parsed strictly with `httparse`, checked against
//! request smuggling, and written out again for the replica with the proxy's header rules
//! (hop-by-hop headers out, `X-Forwarded-*` and a generated `X-Request-Id` in).
//!
//! Requests for ringlb's own routes are recognised here and answered by the admin router. An
//! upgrade request (`Connection: upgrade` with `Upgrade`, and no body) is forwarded with both
//! headers, for the replica to switch protocols (then the tunnel, `proxy/tunnel.rs`). What the fast
//! path does not handle itself it hands, with the rest of the connection, to the hyper path:
//! HTTP/2 (its connection preface), HTTP/1.0, `Transfer-Encoding` (chunked uploads), an upgrade
//! with a body, `Expect`, `CONNECT`, and targets that are not origin-form.

use super::wire::{has_bare_lf, parse_length, push_decimal, push_field, trim};
use crate::manifest::KeySource;
use crate::proxy::headers::{
    Scheme, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, is_hop_by_hop, is_protected,
};
use crate::proxy::key::{self, RequestKey};
use http::{Method, StatusCode};
use std::net::IpAddr;
use std::ops::Range;

/// The largest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted (431 beyond).
pub const MAX_HEADERS: usize = 100;
/// The most header names a `Connection` header may list (more goes to the hyper path).
const MAX_CONNECTION_OPTIONS: usize = 8;
/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What to do with the bytes at the front of the client's buffer.
#[derive(Debug)]
pub enum Parsed {
    /// No complete head yet.
    Partial,
    /// A request to forward; its head for the replica has been written to the output buffer.
    Forward(RequestHead),
    /// Not for the fast path: serve this request and the rest of the connection with hyper; the
    /// reason, for the metrics.
    Handover(&'static str),
    /// A request for ringlb itself (`/rep`, `/add`, `/_ringlb/...`): for the admin router.
    Local(LocalRequest),
    /// A bad request: answer with this status and message, then close the connection.
    Reject(Reject),
}

/// Why a request is refused before forwarding.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject {
    /// 400 or 431.
    pub status: StatusCode,
    /// What was wrong, for the client.
    pub message: &'static str,
}

/// A request the fast path forwards.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head in the client's buffer (the body follows).
    pub head_len: usize,
    /// Bytes of the body (`Content-Length`, or 0).
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The method, for metrics and the retry rules.
    pub method: Method,
    /// True for `HEAD`: the answer has no body whatever its headers say.
    pub is_head: bool,
    /// Where the target's path is in the head (for the exercise's 404 message).
    pub path: Range<usize>,
    /// The ring key.
    pub key: u64,
    /// An upgrade request: a `101` answer turns the connection into a tunnel.
    pub upgrade: bool,
}

/// A request for one of ringlb's own routes.
#[derive(Debug, PartialEq, Eq)]
pub struct LocalRequest {
    /// Bytes of the head in the client's buffer (the body follows).
    pub head_len: usize,
    /// Bytes of the body (`Content-Length`, or 0).
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// What the head rules depend on besides the bytes.
pub struct Context<'a> {
    /// What is hashed.
    pub key: &'a KeySource,
    /// How the client reached ringlb (`X-Forwarded-Proto`).
    pub scheme: Scheme,
    /// The client's address.
    pub client: IpAddr,
    /// The client's address as `X-Forwarded-For` names it (IPv4-mapped addresses as IPv4),
    /// written once per connection.
    pub client_text: &'a [u8],
    /// True for paths that ringlb answers itself.
    pub is_reserved: fn(&str) -> bool,
}

fn reject(status: StatusCode, message: &'static str) -> Parsed {
    Parsed::Reject(Reject { status, message })
}

/// Parses the request head at the front of `buf` and, for a request to forward, writes the head
/// the replica gets into `out` (cleared first).
pub fn parse(buf: &[u8], context: &Context<'_>, out: &mut Vec<u8>) -> Parsed {
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return Parsed::Partial;
    }
    if buf.starts_with(H2_PREFACE) {
        return Parsed::Handover("http/2");
    }
    // Left uninitialized: httparse writes the fields it finds (zeroing 100 of them per request
    // cost more than parsing a small head).
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large");
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields");
        }
        Err(_) => return reject(StatusCode::BAD_REQUEST, "malformed request head"),
    };
    if has_bare_lf(&buf[..head_len]) {
        return reject(StatusCode::BAD_REQUEST, "a line of the request head ends without CR");
    }
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return reject(StatusCode::BAD_REQUEST, "malformed request line");
    };
    if version != 1 {
        return Parsed::Handover("http/1.0");
    }
    if method == "CONNECT" || !target.starts_with('/') {
        return Parsed::Handover("target form");
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let headers = request.headers;

    // First pass: framing, connection options, what the forwarded headers need.
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    let mut host: &[u8] = &[];
    let mut close = false;
    let mut upgrade_option = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut options: [&[u8]; MAX_CONNECTION_OPTIONS] = [&[]; MAX_CONNECTION_OPTIONS];
    let mut option_count = 0;
    let mut forwarded_for: Option<&[u8]> = None;
    let (mut has_proto, mut has_forwarded_host) = (false, false);
    for field in headers.iter() {
        let name = field.name.as_bytes();
        let value = trim(field.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return reject(StatusCode::BAD_REQUEST, "more than one Content-Length header");
            }
            match parse_length(value) {
                Some(length) => content_length = Some(length),
                None => return reject(StatusCode::BAD_REQUEST, "invalid Content-Length"),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = value;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|b| *b == b',').map(trim).filter(|o| !o.is_empty()) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_option = true;
                } else if !option.eq_ignore_ascii_case(b"keep-alive") {
                    if option_count == MAX_CONNECTION_OPTIONS {
                        return Parsed::Handover("connection options");
                    }
                    options[option_count] = option;
                    option_count += 1;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            if upgrade.is_some() {
                return Parsed::Handover("upgrade");
            }
            upgrade = Some(value);
        } else if name.eq_ignore_ascii_case(b"expect") {
            return Parsed::Handover("expect");
        } else if name.eq_ignore_ascii_case(X_FORWARDED_FOR.as_str().as_bytes()) {
            // Like the hyper path: the first value, if it is visible ASCII, is kept.
            if forwarded_for.is_none() {
                forwarded_for =
                    Some(value).filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)));
            }
        } else if name.eq_ignore_ascii_case(X_FORWARDED_PROTO.as_str().as_bytes()) {
            has_proto = true;
        } else if name.eq_ignore_ascii_case(X_FORWARDED_HOST.as_str().as_bytes()) {
            has_forwarded_host = true;
        }
    }
    if transfer_encoding {
        if content_length.is_some() {
            return reject(StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding");
        }
        return Parsed::Handover("transfer-encoding");
    }
    if hosts != 1 {
        return reject(StatusCode::BAD_REQUEST, "a request needs exactly one Host header");
    }
    // Without its `Connection` option, an `Upgrade` header is only dropped (it is hop-by-hop).
    let upgrade = upgrade.filter(|protocols| upgrade_option && !protocols.is_empty());
    if upgrade.is_some() && content_length.is_some_and(|length| length > 0) {
        return Parsed::Handover("upgrade with a body");
    }
    if (context.is_reserved)(path) {
        let body_len = content_length.unwrap_or(0);
        return Parsed::Local(LocalRequest { head_len, body_len, close });
    }

    let RequestKey { key, generated_id } = key::key_of(
        context.key,
        |wanted| headers.iter().find(|f| f.name.eq_ignore_ascii_case(wanted)).map(|f| trim(f.value)),
        path.as_bytes(),
        context.client,
    );

    // Second pass: the head for the replica.
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = &options[..option_count];
    for field in headers.iter() {
        let name = field.name.as_bytes();
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(X_FORWARDED_FOR.as_str().as_bytes())
            || (named.iter().any(|n| n.eq_ignore_ascii_case(name)) && !is_protected(name))
        {
            continue;
        }
        push_field(out, name, trim(field.value));
    }
    out.extend_from_slice(X_FORWARDED_FOR.as_str().as_bytes());
    out.extend_from_slice(b": ");
    if let Some(earlier) = forwarded_for {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(context.client_text);
    out.extend_from_slice(b"\r\n");
    if !has_proto {
        push_field(out, X_FORWARDED_PROTO.as_str().as_bytes(), context.scheme.as_str().as_bytes());
    }
    if !has_forwarded_host {
        push_field(out, X_FORWARDED_HOST.as_str().as_bytes(), host);
    }
    if let Some(id) = generated_id {
        out.extend_from_slice(b"x-request-id: ");
        push_decimal(out, u64::from(id));
        out.extend_from_slice(b"\r\n");
    }
    if let Some(protocols) = upgrade {
        push_field(out, b"connection", b"upgrade");
        push_field(out, b"upgrade", protocols);
    }
    out.extend_from_slice(b"\r\n");

    let path_start = offset_in(buf, target.as_bytes());
    let method = match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "HEAD" => Method::HEAD,
        other => match Method::from_bytes(other.as_bytes()) {
            Ok(method) => method,
            Err(_) => return reject(StatusCode::BAD_REQUEST, "invalid method"),
        },
    };
    Parsed::Forward(RequestHead {
        head_len,
        body_len: content_length.unwrap_or(0),
        close,
        is_head: method == Method::HEAD,
        method,
        path: path_start.map_or(0..0, |start| start..start + path.len()),
        key,
        upgrade: upgrade.is_some(),
    })
}

/// Where `part` (a slice of `buf`) starts in `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> Option<usize> {
    (part.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .filter(|start| start + part.len() <= buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(key: &KeySource) -> Context<'_> {
        Context {
            key,
            scheme: Scheme::Http,
            client: "10.0.0.7".parse().unwrap(),
            client_text: b"10.0.0.7",
            is_reserved: crate::reserved::is_reserved,
        }
    }

    fn forward(raw: &str) -> (RequestHead, String) {
        let mut out = Vec::new();
        match parse(raw.as_bytes(), &context(&KeySource::RequestId), &mut out) {
            Parsed::Forward(head) => (head, String::from_utf8(out).unwrap()),
            other => panic!("{raw:?} was not forwarded: {other:?}"),
        }
    }

    fn rejected(raw: &[u8]) -> Reject {
        match parse(raw, &context(&KeySource::RequestId), &mut Vec::new()) {
            Parsed::Reject(reject) => reject,
            other => panic!("{:?} was not rejected: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn handed_over(raw: &str) -> bool {
        matches!(parse(raw.as_bytes(), &context(&KeySource::RequestId), &mut Vec::new()), Parsed::Handover(_))
    }

    #[test]
    fn a_plain_get_is_forwarded_with_the_proxy_headers() {
        let raw =
            "GET /home?x=1 HTTP/1.1\r\nHost: lb:5000\r\nX-Request-Id: 123456\r\nAccept: */*\r\n\r\nNEXT";
        let (head, out) = forward(raw);
        assert_eq!(head.head_len, raw.len() - 4);
        assert_eq!((head.body_len, head.close, head.key), (0, false, 123_456));
        assert_eq!(&raw[head.path.clone()], "/home");
        assert_eq!(
            out,
            "GET /home?x=1 HTTP/1.1\r\nHost: lb:5000\r\nX-Request-Id: 123456\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: lb:5000\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_headers_go_and_earlier_proxies_are_kept() {
        let raw = "POST /echo HTTP/1.1\r\nhost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\
                   TE: trailers\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\
                   Content-Length: 3\r\n\r\nabc";
        let (head, out) = forward(raw);
        assert!(head.close);
        assert_eq!(head.body_len, 3);
        assert!(head.key >= 100_000 && head.key <= 999_999);
        let expected = format!(
            "POST /echo HTTP/1.1\r\nhost: a\r\nX-Forwarded-Proto: https\r\nContent-Length: 3\r\n\
             x-forwarded-for: 1.1.1.1, 10.0.0.7\r\nx-forwarded-host: a\r\nx-request-id: {}\r\n\r\n",
            head.key
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn connection_options_cannot_remove_the_host_or_the_framing() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nConnection: l,,,Host, content-length, X-A\r\nX-A: 1\r\n\
                   Content-Length: 2\r\n\r\nhi";
        let (_, out) = forward(raw);
        assert!(out.contains("Host: a\r\n") && out.contains("Content-Length: 2\r\n"), "{out}");
        assert!(!out.contains("X-A"), "{out}");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (raw, status) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                400,
            ),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ] {
            assert_eq!(rejected(raw).status.as_u16(), status, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn heads_too_large_are_431() {
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(rejected(big.as_bytes()).status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let partial = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD));
        assert_eq!(rejected(partial.as_bytes()).status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(rejected(many.as_bytes()).status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn what_the_fast_path_does_not_do_goes_to_hyper() {
        assert!(handed_over("GET / HTTP/1.0\r\n\r\n"));
        assert!(handed_over("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(handed_over(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(handed_over("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        for cut in 1..H2_PREFACE.len() {
            assert!(matches!(
                parse(&H2_PREFACE[..cut], &context(&KeySource::RequestId), &mut Vec::new()),
                Parsed::Partial
            ));
        }
        assert!(handed_over(
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(handed_over("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"));
        assert!(handed_over("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(handed_over("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn an_upgrade_is_forwarded_with_its_headers_and_a_lone_upgrade_header_dropped() {
        let (head, out) = forward(
            "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        );
        assert!(head.upgrade);
        assert!(out.contains("\r\nSec-WebSocket-Key: k\r\n"), "{out}");
        assert!(out.ends_with("\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"), "{out}");
        assert_eq!(out.matches("pgrade").count(), 2, "{out}");
        let (head, out) = forward("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(!head.upgrade);
        assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
        let (head, out) = forward("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n");
        assert!(!head.upgrade);
        assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
    }

    #[test]
    fn ringlbs_own_routes_are_local() {
        for (raw, body_len, close) in [
            ("GET /rep HTTP/1.1\r\nHost: a\r\n\r\n", 0, false),
            ("GET /_ringlb/status?x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0, true),
            ("POST /add HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n{\"n\": 1}", 8, false),
        ] {
            let head_len = raw.find("\r\n\r\n").unwrap() + 4;
            match parse(raw.as_bytes(), &context(&KeySource::RequestId), &mut Vec::new()) {
                Parsed::Local(local) => assert_eq!(local, LocalRequest { head_len, body_len, close }),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        assert!(handed_over("POST /add HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..raw.len() {
            assert!(matches!(
                parse(&raw[..cut], &context(&KeySource::RequestId), &mut Vec::new()),
                Parsed::Partial
            ));
        }
    }

    #[test]
    fn keys_follow_the_manifest_source() {
        let path = KeySource::Path;
        let raw = b"GET /a/b?q HTTP/1.1\r\nHost: a\r\n\r\n";
        let Parsed::Forward(head) = parse(raw, &context(&path), &mut Vec::new()) else { panic!() };
        assert_eq!(head.key, crate::ring::hash::key_hash(b"/a/b"));
        let header = KeySource::Header(http::HeaderName::from_static("x-user"));
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-User:  ann \r\n\r\n";
        let Parsed::Forward(head) = parse(raw, &context(&header), &mut Vec::new()) else { panic!() };
        assert_eq!(head.key, crate::ring::hash::key_hash(b"ann"));
    }
}
