//! Header rules of a forwarding proxy (RFC 9110 section 7.6): hop-by-hop headers stop here, and the
//! replica learns who the client was from `X-Forwarded-For`, `-Proto` and `-Host`.

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers: the fixed list and every header the `Connection` header names
/// (but `Host` and `Content-Length`).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        // The target host and the body's framing are not the client's to drop (the fast path
        // keeps them too).
        .filter(|name| !crate::proxy::fast::request::is_essential(name.as_str().as_bytes()))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
}

/// Prepares a client's request headers for the replica: hop-by-hop headers out, the client's
/// address appended to `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` set unless an
/// earlier proxy set them.
pub fn for_upstream(headers: &mut HeaderMap, client: IpAddr) {
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
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
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
    fn forwarded_headers_are_added_and_appended() {
        let mut headers = map(&[("host", "lb.example:5000")]);
        for_upstream(&mut headers, "10.1.2.3".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "lb.example:5000");

        let mut behind = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https")]);
        for_upstream(&mut behind, "::ffff:10.0.0.9".parse().unwrap());
        assert_eq!(behind["x-forwarded-for"], "1.1.1.1, 10.0.0.9");
        assert_eq!(behind["x-forwarded-proto"], "https");
    }
}
