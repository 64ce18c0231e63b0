//! The Prometheus metrics at `/_ringlb/metrics` (the names and their meaning are in
//! `telemetry.rs`).

use super::AdminState;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;

/// `GET /_ringlb/metrics`: the Prometheus text format (404 when no recorder is installed, as in
/// `ringlb analyze`).
pub async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let Some(handle) = &state.metrics else {
        return crate::json::failure(StatusCode::NOT_FOUND, "metrics are not recorded in this process");
    };
    // Gauges that mirror atomics are set now rather than on every request.
    for backend in &state.snapshots.load().members {
        backend.metrics.set_inflight(backend.inflight());
    }
    let mut response = Response::new(Body::from(handle.render()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
