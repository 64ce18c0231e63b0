//! Header rules of a forwarding proxy (RFC 9110 section 7.6), for both engines: which headers stop
//! at this hop, which ones a `Connection` option may not remove, and what the replica learns about
//! the client (`X-Forwarded-For`, `-Proto`, `-Host`). The fast path applies the same lists to raw
//! header bytes, the hyper path to an `http::HeaderMap`.

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that concern one connection only (RFC 9110 section 7.6.1), never forwarded either way.
pub const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Headers a `Connection` option may not remove: the request's target host and the body's
/// framing. (Found by the `http_heads` fuzzer: `Connection: Host` dropped the Host header, and
/// `Connection: Content-Length` would have sent a body the next hop reads as a new request.)
pub const PROTECTED: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// The client's address, appended by every proxy on the way.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the client used, set by the first proxy.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `Host` the client asked for, set by the first proxy.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The answer's header naming the replica that answered.
pub const X_RINGLB_REPLICA: HeaderName = HeaderName::from_static("x-ringlb-replica");

/// How the client reached ringlb, for `X-Forwarded-Proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP on `listen`.
    Http,
    /// Over TLS on `tls.listen`.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// True for a header that concerns one connection only (the name in any case).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// True for a header that a `Connection` option may not remove (the name in any case).
pub fn is_protected(name: &[u8]) -> bool {
    PROTECTED.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(name))
}

/// Removes the hop-by-hop headers: the fixed list and every header the `Connection` header names
/// (but the protected ones).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !is_protected(name.as_str().as_bytes()))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares a client's request headers for the replica: hop-by-hop headers out, the client's
/// address appended to `X-Forwarded-For`, `X-Forwarded-Proto` (`scheme`) and `X-Forwarded-Host`
/// set unless an earlier proxy set them.
pub fn for_upstream(headers: &mut HeaderMap, client: IpAddr, scheme: Scheme) {
    remove_hop_by_hop(headers);
    let client = plain_ip(client);
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme.as_str()));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// True when the client's `TE` header accepts trailers (before the hop-by-hop headers go).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")))
}

/// Makes headers prepared by [`for_upstream`] those of an HTTP/2 request to an `h2c` replica:
/// `Host` goes (the replica's address is the `:authority`, and the client's host is in
/// `X-Forwarded-Host`), and `te: trailers`, the one `TE` HTTP/2 allows and gRPC servers look
/// for, comes back when the client sent it (`trailers`, from [`accepts_trailers`]).
pub fn for_h2c(headers: &mut HeaderMap, trailers: bool) {
    headers.remove(HOST);
    if trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The gRPC trailers a gRPC answer ends with, declared to HTTP/1.1 clients when the replica
/// declared none (gRPC servers speak HTTP/2, where trailers need no declaration).
const GRPC_TRAILERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

/// The `Trailer` declaration an answer keeps for a client that accepts trailers: HTTP/1.1 sends
/// only the trailer fields its head declared. The replica's own `Trailer` header when it sent one,
/// else the gRPC trailers for a gRPC answer, else none (read before [`remove_hop_by_hop`], which
/// takes `Trailer` out with the rest).
pub fn declared_trailers(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(declared) = headers.get(http::header::TRAILER) {
        return Some(declared.clone());
    }
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    content_type
        .get(..16)
        .is_some_and(|t| t.eq_ignore_ascii_case(b"application/grpc"))
        .then_some(HeaderValue::from_static(GRPC_TRAILERS))
}

/// The protocols an upgrade request asks for (its one `Upgrade` header), when `Connection` lists
/// `upgrade`; `None` for any other request. The fast path reads the same rule off raw bytes.
pub fn upgrade_protocols(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    let mut protocols = headers.get_all(http::header::UPGRADE).iter();
    match (asks, protocols.next(), protocols.next()) {
        (true, Some(only), None) if !only.as_bytes().iter().all(u8::is_ascii_whitespace) => {
            Some(only.clone())
        }
        _ => None,
    }
}

/// Puts an upgrade's own headers back after the hop-by-hop headers were removed.
pub fn restore_upgrade(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, protocols);
}

/// The client's address as `X-Forwarded-For` names it: an IPv4-mapped IPv6 address as IPv4.
pub fn plain_ip(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn an_upgrade_needs_its_connection_option_and_one_upgrade_header() {
        let upgrade = |pairs: &[(&str, &str)]| upgrade_protocols(&map(pairs));
        assert_eq!(
            upgrade(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]).unwrap(),
            "websocket"
        );
        assert_eq!(upgrade(&[("upgrade", "websocket")]), None);
        assert_eq!(upgrade(&[("connection", "upgrade")]), None);
        assert_eq!(upgrade(&[("connection", "upgrade"), ("upgrade", "a"), ("upgrade", "b")]), None);
        let mut headers = map(&[("connection", "upgrade"), ("upgrade", "h2c"), ("x-a", "1")]);
        remove_hop_by_hop(&mut headers);
        restore_upgrade(&mut headers, HeaderValue::from_static("h2c"));
        assert_eq!(
            (headers["connection"].to_str().unwrap(), headers["upgrade"].to_str().unwrap()),
            ("upgrade", "h2c")
        );
    }

    #[test]
    fn a_connection_option_cannot_remove_a_protected_header() {
        let mut headers =
            map(&[("connection", "Host, content-length"), ("host", "a"), ("content-length", "2")]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers["host"], "a");
        assert_eq!(headers["content-length"], "2");
    }

    #[test]
    fn the_byte_tests_ignore_case_and_match_only_the_lists() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name.to_ascii_uppercase().as_bytes()), "{name}");
        }
        assert!(!is_hop_by_hop(b"content-length") && !is_hop_by_hop(b"connections"));
        assert!(is_protected(b"Host") && is_protected(b"CONTENT-LENGTH") && !is_protected(b"x-a"));
    }

    #[test]
    fn forwarded_headers_are_added_and_appended() {
        let mut headers = map(&[("host", "lb.example:5000")]);
        for_upstream(&mut headers, "10.1.2.3".parse().unwrap(), Scheme::Http);
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "lb.example:5000");

        let mut behind = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https")]);
        for_upstream(&mut behind, "::ffff:10.0.0.9".parse().unwrap(), Scheme::Https);
        assert_eq!(behind["x-forwarded-for"], "1.1.1.1, 10.0.0.9");
        assert_eq!(behind["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_grpc_answer_declares_its_trailers_and_a_declared_trailer_is_kept() {
        let mut grpc = HeaderMap::new();
        grpc.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
        assert_eq!(declared_trailers(&grpc).unwrap(), GRPC_TRAILERS);
        grpc.insert(http::header::TRAILER, HeaderValue::from_static("x-checksum"));
        assert_eq!(declared_trailers(&grpc).unwrap(), "x-checksum");
        let mut plain = HeaderMap::new();
        plain.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(declared_trailers(&plain), None);
        assert_eq!(declared_trailers(&HeaderMap::new()), None);
    }

    #[test]
    fn an_h2c_request_keeps_te_trailers_and_drops_host() {
        let mut headers = map(&[("host", "shop.example"), ("te", "gzip, trailers;q=1"), ("x", "1")]);
        let trailers = accepts_trailers(&headers);
        assert!(trailers);
        for_upstream(&mut headers, "10.0.0.9".parse().unwrap(), Scheme::Http);
        for_h2c(&mut headers, trailers);
        assert_eq!(headers["te"], "trailers");
        assert!(!headers.contains_key("host"));
        assert_eq!(headers["x-forwarded-host"], "shop.example");
        let mut plain = map(&[("host", "a"), ("te", "gzip")]);
        assert!(!accepts_trailers(&plain));
        for_upstream(&mut plain, "10.0.0.9".parse().unwrap(), Scheme::Http);
        for_h2c(&mut plain, false);
        assert!(!plain.contains_key("te"));
    }
}
