//! The fast path's HTTP/1.1 parsers: the client's request head (`proxy::fast::request::parse`),
//! the replica's response head (`proxy::fast::response::parse`) and the chunked-body scanner.
//!
//! Input: any bytes, read as a request head, as a response head, and as a chunked body.
//!
//! Checks: nothing panics; a forwarded request's head for the replica parses completely as one
//! HTTP/1.1 request with no bare LF, exactly one Host, no Transfer-Encoding, at most one
//! Content-Length (equal to the body length the parser found), no hop-by-hop header, and the same
//! method and target; a response head for the client parses as one HTTP/1.1 response with the same
//! status and the replica's name; the chunked scanner never claims more bytes than it was given,
//! and feeding the same bytes in two pieces gives the same answer as in one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::manifest::KeySource;
use ringlb::fuzzing::request::{self, Parsed};
use ringlb::fuzzing::{ChunkedScanner, has_bare_lf, is_hop_by_hop, response};

fuzz_target!(|data: &[u8]| {
    check_request(data);
    check_response(data);
    check_chunked(data);
});

fn check_request(data: &[u8]) {
    let key = KeySource::RequestId;
    let context = request::Context {
        key: &key,
        client: "10.1.2.3".parse().expect("an address"),
        is_reserved: ringlb::fuzzing::is_reserved,
    };
    let mut out = Vec::new();
    let Parsed::Forward(head) = request::parse(data, &context, &mut out) else { return };
    assert!(head.head_len <= data.len());
    assert!(!has_bare_lf(&out), "bare LF forwarded: {:?}", String::from_utf8_lossy(&out));
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut forwarded = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(len)) = forwarded.parse(&out) else {
        panic!("the forwarded head does not parse: {:?}", String::from_utf8_lossy(&out));
    };
    assert_eq!(len, out.len(), "the forwarded head is one head and nothing else");
    assert_eq!(forwarded.version, Some(1));
    let mut original_fields = [httparse::EMPTY_HEADER; 128];
    let mut original = httparse::Request::new(&mut original_fields);
    assert!(matches!(original.parse(data), Ok(httparse::Status::Complete(_))));
    assert_eq!(forwarded.method, original.method);
    assert_eq!(forwarded.path, original.path);
    let count = |name: &str| forwarded.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    assert_eq!(count("host"), 1);
    assert_eq!(count("transfer-encoding"), 0);
    assert!(count("content-length") <= 1);
    if let Some(length) = forwarded.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length")) {
        let length: u64 = std::str::from_utf8(length.value).expect("digits").trim().parse().expect("a length");
        assert_eq!(length, head.body_len);
    } else {
        assert_eq!(head.body_len, 0);
    }
    for field in forwarded.headers.iter() {
        assert!(!is_hop_by_hop(field.name.as_bytes()), "hop-by-hop header {} forwarded", field.name);
    }
}

fn check_response(data: &[u8]) {
    let context = response::Context { is_head: data.first().is_some_and(|b| b & 1 == 1), close: false, replica: b"s1" };
    let mut out = Vec::new();
    let Ok(Some(head)) = response::parse(data, &context, &mut out) else { return };
    assert!(head.head_len <= data.len());
    if head.status.is_informational() {
        return;
    }
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut forwarded = httparse::Response::new(&mut fields);
    let Ok(httparse::Status::Complete(len)) = forwarded.parse(&out) else {
        panic!("the client's head does not parse: {:?}", String::from_utf8_lossy(&out));
    };
    assert_eq!(len, out.len());
    assert_eq!(forwarded.code, Some(head.status.as_u16()));
    assert!(forwarded.headers.iter().any(|h| h.name == "x-ringlb-replica" && h.value == b"s1"));
    assert!(!has_bare_lf(&out));
}

fn check_chunked(data: &[u8]) {
    let whole = {
        let mut scanner = ChunkedScanner::default();
        scanner.advance(data).map(|used| (used, scanner.is_done()))
    };
    if let Ok((used, _)) = whole {
        assert!(used <= data.len());
    }
    let cut = data.len() / 2;
    let mut scanner = ChunkedScanner::default();
    let split = scanner.advance(&data[..cut]).and_then(|first| {
        if scanner.is_done() {
            Ok((first, true))
        } else {
            scanner.advance(&data[cut..]).map(|second| (first + second, scanner.is_done()))
        }
    });
    match (whole, split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "one piece and two pieces disagree"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one piece gave {a:?}, two pieces {b:?}"),
    }
}
