//! The request key: the 64-bit value the ring hashes to pick a replica (`hashing.key`).
//!
//! `request-id` keys on the `X-Request-Id` header; without one, the proxy makes a random 6-digit id
//! (the exercise's `i`) and forwards it, so the replica and the client's logs can name the request.
//! A numeric id is used as the integer itself, which is what the exercise's `H(i)` expects; any
//! other text is hashed with xxh3.

use crate::manifest::KeySource;
use crate::ring::hash::key_hash;
use http::{HeaderMap, HeaderValue, Uri};
use std::net::IpAddr;

/// The request id header.
pub const X_REQUEST_ID: &str = "x-request-id";

/// The key of one request, and the request id to add to it if the proxy made one.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestKey {
    /// What the ring hashes.
    pub key: u64,
    /// A request id the proxy generated (six digits), to forward as `X-Request-Id`.
    pub generated_id: Option<u32>,
}

/// Computes the key of a request held in an `http` header map (the hyper path).
pub fn request_key(source: &KeySource, headers: &HeaderMap, uri: &Uri, client: IpAddr) -> RequestKey {
    key_of(source, |name| headers.get(name).map(HeaderValue::as_bytes), uri.path().as_bytes(), client)
}

/// Computes the key of a request from its parts: `header(name)` gives the first value of a header
/// (`name` in lower case), `path` is the target's path without the query.
pub fn key_of<'a>(
    source: &KeySource,
    header: impl Fn(&str) -> Option<&'a [u8]>,
    path: &[u8],
    client: IpAddr,
) -> RequestKey {
    let hashed = |bytes: &[u8]| RequestKey { key: key_hash(bytes), generated_id: None };
    match source {
        KeySource::RequestId => match header(X_REQUEST_ID) {
            Some(value) => match std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(id) => RequestKey { key: id, generated_id: None },
                None => hashed(value),
            },
            None => {
                let id: u32 = rand::random_range(100_000..=999_999);
                RequestKey { key: u64::from(id), generated_id: Some(id) }
            }
        },
        KeySource::ClientIp => match client {
            IpAddr::V4(v4) => hashed(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => hashed(&v4.octets()),
                None => hashed(&v6.octets()),
            },
        },
        KeySource::Path => hashed(path),
        KeySource::Header(name) => hashed(header(name.as_str()).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: &KeySource, headers: &[(&str, &str)], uri: &str, ip: &str) -> RequestKey {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        request_key(source, &map, &uri.parse().unwrap(), ip.parse().unwrap())
    }

    #[test]
    fn a_numeric_request_id_is_the_key_itself() {
        let k = key(&KeySource::RequestId, &[("x-request-id", "123456")], "/", "10.0.0.1");
        assert_eq!(k, RequestKey { key: 123_456, generated_id: None });
    }

    #[test]
    fn a_missing_request_id_is_generated_with_six_digits_and_is_the_key() {
        for _ in 0..100 {
            let k = key(&KeySource::RequestId, &[], "/", "10.0.0.1");
            let id = k.generated_id.expect("an id is generated");
            assert!((100_000..=999_999).contains(&id));
            assert_eq!(k.key, u64::from(id));
        }
    }

    #[test]
    fn text_request_ids_hash_stably() {
        let a = key(&KeySource::RequestId, &[("x-request-id", "abc")], "/", "10.0.0.1");
        let b = key(&KeySource::RequestId, &[("x-request-id", "abc")], "/other", "10.0.0.2");
        assert_eq!(a, b);
    }

    #[test]
    fn client_ip_path_and_header_keys_depend_only_on_their_part() {
        let ip = KeySource::ClientIp;
        assert_eq!(key(&ip, &[], "/a", "10.0.0.1"), key(&ip, &[], "/b", "10.0.0.1"));
        assert_ne!(key(&ip, &[], "/a", "10.0.0.1"), key(&ip, &[], "/a", "10.0.0.2"));
        assert_eq!(key(&ip, &[], "/", "::ffff:10.0.0.1"), key(&ip, &[], "/", "10.0.0.1"));
        let path = KeySource::Path;
        assert_eq!(key(&path, &[], "/a?x=1", "10.0.0.1"), key(&path, &[], "/a?x=2", "10.0.0.9"));
        let header = KeySource::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(
            key(&header, &[("x-user", "ann")], "/", "1.1.1.1"),
            key(&header, &[("x-user", "ann")], "/z", "2.2.2.2")
        );
        assert_ne!(
            key(&header, &[("x-user", "ann")], "/", "1.1.1.1"),
            key(&header, &[("x-user", "bob")], "/", "1.1.1.1")
        );
    }
}
