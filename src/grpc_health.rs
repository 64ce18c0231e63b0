//! The standard gRPC health check, `grpc.health.v1.Health/Check`, as one heartbeat of
//! `health.kind: grpc`: a new h2c connection, one unary call for the whole server (the empty
//! service name), healthy when the replica answers `SERVING`. The controller's probes and
//! `ringlb probe --grpc` (the container health check) both run this, so they judge alike.
//!
//! The two messages are small enough to be written and read by hand: the request is an empty
//! `HealthCheckRequest`, the answer a `HealthCheckResponse` whose field 1 is the status enum.

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use thiserror::Error;

/// The method every gRPC health service serves.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The largest answer read; a `HealthCheckResponse` is a few bytes.
const ANSWER_LIMIT: usize = 4096;

/// Why a gRPC health check failed.
#[derive(Debug, Error)]
pub enum GrpcHealthError {
    /// Nothing accepted the connection.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The connection did not become an HTTP/2 one (the replica does not speak h2c).
    #[error("no HTTP/2 with prior knowledge")]
    Handshake(#[source] hyper::Error),
    /// The call broke before its answer was whole.
    #[error("the health call failed")]
    Call(#[source] hyper::Error),
    /// An HTTP status other than 200: not a gRPC answer.
    #[error("answered HTTP {0}, not a gRPC answer")]
    HttpStatus(StatusCode),
    /// A gRPC status other than OK, e.g. `UNIMPLEMENTED` from a server without a health service.
    #[error("gRPC status {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The `grpc-status`.
        code: u32,
        /// The `grpc-message`, as sent.
        message: String,
    },
    /// The answer's status is not `SERVING`.
    #[error("answered {}", serving_name(*.0))]
    NotServing(u64),
    /// The answer is not a `HealthCheckResponse`.
    #[error("malformed health answer: {0}")]
    Malformed(&'static str),
}

/// The names of `HealthCheckResponse.ServingStatus`.
fn serving_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("serving status {other}"),
    }
}

/// One health check of the gRPC server at `addr`; the caller bounds its time.
///
/// # Errors
/// Why the replica is not healthy.
pub async fn check(addr: SocketAddr) -> Result<(), GrpcHealthError> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(GrpcHealthError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(GrpcHealthError::Handshake)?;
    // The connection is driven beside the call and ends with it (the caller's timeout drops both).
    let driver = tokio::spawn(connection);
    let result = call(&mut sender, addr).await;
    driver.abort();
    result
}

async fn call(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
) -> Result<(), GrpcHealthError> {
    // An empty `HealthCheckRequest` (service ""): the compressed flag 0 and the length 0.
    let request = Request::post(format!("http://{addr}{CHECK_PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .map_err(|_| GrpcHealthError::Malformed("cannot build the request"))?;
    let response = sender.send_request(request).await.map_err(GrpcHealthError::Call)?;
    if response.status() != StatusCode::OK {
        return Err(GrpcHealthError::HttpStatus(response.status()));
    }
    let (parts, body) = response.into_parts();
    let collected =
        Limited::new(body, ANSWER_LIMIT).collect().await.map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => GrpcHealthError::Call(*e),
            Err(_) => GrpcHealthError::Malformed("the answer is too long"),
        })?;
    let trailers = collected.trailers().cloned();
    // A trailers-only answer carries its status in the headers.
    grpc_status(trailers.as_ref().unwrap_or(&parts.headers))?;
    serving(collected.to_bytes())
}

/// `Ok` for `grpc-status: 0`.
fn grpc_status(headers: &HeaderMap) -> Result<(), GrpcHealthError> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or(GrpcHealthError::Malformed("no grpc-status"))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    Err(GrpcHealthError::Status { code, message })
}

/// Reads the one length-prefixed `HealthCheckResponse` of `body`: `Ok` for `SERVING`.
fn serving(mut body: Bytes) -> Result<(), GrpcHealthError> {
    if body.len() < 5 {
        return Err(GrpcHealthError::Malformed("no message"));
    }
    if body.get_u8() != 0 {
        return Err(GrpcHealthError::Malformed("a compressed message"));
    }
    let length = body.get_u32() as usize;
    if length != body.len() {
        return Err(GrpcHealthError::Malformed("the message length does not match"));
    }
    // proto3 leaves a field at its default out: no field 1 is UNKNOWN (0).
    let mut status = 0;
    while body.has_remaining() {
        let tag = varint(&mut body)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => status = varint(&mut body)?,
            (_, 0) => {
                varint(&mut body)?;
            }
            (_, 2) => {
                let skip = usize::try_from(varint(&mut body)?).unwrap_or(usize::MAX);
                if skip > body.len() {
                    return Err(GrpcHealthError::Malformed("a field runs past the message"));
                }
                body.advance(skip);
            }
            _ => return Err(GrpcHealthError::Malformed("an unexpected field")),
        }
    }
    if status == 1 { Ok(()) } else { Err(GrpcHealthError::NotServing(status)) }
}

/// A protobuf varint.
fn varint(body: &mut Bytes) -> Result<u64, GrpcHealthError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !body.has_remaining() {
            return Err(GrpcHealthError::Malformed("a cut varint"));
        }
        let byte = body.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(GrpcHealthError::Malformed("an overlong varint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Bytes {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        out.extend_from_slice(message);
        out.into()
    }

    #[test]
    fn only_serving_is_healthy() {
        assert!(serving(framed(&[0x08, 0x01])).is_ok());
        assert_eq!(serving(framed(&[0x08, 0x02])).unwrap_err().to_string(), "answered NOT_SERVING");
        assert_eq!(serving(framed(&[])).unwrap_err().to_string(), "answered UNKNOWN");
        assert_eq!(serving(framed(&[0x08, 0x03])).unwrap_err().to_string(), "answered SERVICE_UNKNOWN");
        // An unknown field is skipped, as protobuf readers do.
        assert!(serving(framed(&[0x12, 0x02, b'h', b'i', 0x08, 0x01])).is_ok());
    }

    #[test]
    fn malformed_answers_say_what_is_wrong() {
        let bad = |body: &[u8]| serving(Bytes::copy_from_slice(body)).unwrap_err().to_string();
        assert_eq!(bad(&[0, 0, 0]), "malformed health answer: no message");
        assert_eq!(bad(&[1, 0, 0, 0, 0]), "malformed health answer: a compressed message");
        assert_eq!(bad(&[0, 0, 0, 0, 5, 8]), "malformed health answer: the message length does not match");
        assert_eq!(bad(&[0, 0, 0, 0, 1, 8]), "malformed health answer: a cut varint");
        assert_eq!(
            bad(&[0, 0, 0, 0, 2, 0x12, 0x09]),
            "malformed health answer: a field runs past the message"
        );
    }

    #[test]
    fn a_grpc_error_status_is_named_with_its_message() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "12".parse().unwrap());
        headers.insert("grpc-message", "Method not found".parse().unwrap());
        assert_eq!(grpc_status(&headers).unwrap_err().to_string(), "gRPC status 12: Method not found");
        assert_eq!(
            grpc_status(&HeaderMap::new()).unwrap_err().to_string(),
            "malformed health answer: no grpc-status"
        );
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_status(&headers).is_ok());
    }
}
