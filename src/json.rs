//! The JSON bodies of the exercise's HTTP contract.
//!
//! The exercise's servers were Python, so its contract is written the way Python's `json.dumps`
//! spaces things: `{"message": "...", "status": "successful"}` with a space after every `:` and `,`.
//! This module renders exactly that, and builds the two envelopes every answer uses.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::ser::Formatter;
use std::io;

/// A serde_json formatter that writes `", "` between items and `": "` after keys, like Python.
struct PythonSpacing;

impl Formatter for PythonSpacing {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// Serialises `value` with Python's spacing.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonSpacing);
    // Serialising our own plain structs (strings, numbers, vectors) into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(br#"{"message": "<Error> internal serialisation error", "status": "failure"}"#);
    }
    out
}

/// The exercise's envelope: `{"message": <message>, "status": "successful" | "failure"}`.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    /// The payload: a greeting, the replica list, or an error sentence.
    pub message: T,
    /// `successful` or `failure`.
    pub status: &'static str,
}

/// A JSON response with Python spacing and the given status code.
pub fn response<T: Serialize>(code: StatusCode, message: T, status: &'static str) -> Response {
    let body = to_python_json(&Envelope { message, status });
    let mut resp = (code, Body::from(body)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A success answer: `{"message": <message>, "status": "successful"}`.
pub fn success<T: Serialize>(message: T) -> Response {
    response(StatusCode::OK, message, "successful")
}

/// An error answer in the exercise's shape: `{"message": "<Error> <text>", "status": "failure"}`.
pub fn failure(code: StatusCode, text: impl std::fmt::Display) -> Response {
    response(code, failure_message(text), "failure")
}

/// The message of a failure answer: the exercise's `<Error> ` and the text.
pub fn failure_message(text: impl std::fmt::Display) -> String {
    format!("<Error> {text}")
}

/// The 405 every router here answers for a known path with the wrong method.
pub async fn method_not_allowed(request: axum::extract::Request) -> Response {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {} is not allowed on '{}'", request.method(), request.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Rep {
        #[serde(rename = "N")]
        n: usize,
        replicas: Vec<&'static str>,
    }

    #[test]
    fn python_spacing_matches_the_contract_byte_for_byte() {
        let body = to_python_json(&Envelope {
            message: Rep { n: 3, replicas: vec!["server1", "server2", "server3"] },
            status: "successful",
        });
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"message": {"N": 3, "replicas": ["server1", "server2", "server3"]}, "status": "successful"}"#
        );
    }

    #[test]
    fn empty_list_and_escapes_are_plain_json() {
        let body = to_python_json(&Envelope { message: Rep { n: 0, replicas: vec![] }, status: "x\"y" });
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"message": {"N": 0, "replicas": []}, "status": "x\"y"}"#
        );
    }
}
