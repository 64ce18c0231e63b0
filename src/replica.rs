//! The replica server (`ringlb server`): the exercise's Flask server, exactly.
//!
//! `GET /home` greets with the replica's id and `GET /heartbeat` answers 200 with an empty body;
//! any other path is a 404. Two helper endpoints make load and the data path observable on purpose:
//! `GET /work?ms=N` answers after N milliseconds (with `--work-slots K`, at most K run at once and
//! the rest queue, like a server with K workers), and `/echo` (any method) streams the request body
//! back with the request's method, URI and headers in `X-Echo-*` response headers. On SIGTERM the
//! server stops accepting, finishes the requests in flight (bounded), and exits.

use crate::json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The line prefix a replica started with `--announce` prints on stdout, followed by its address.
pub const ANNOUNCE_PREFIX: &str = "ringlb-replica listening on ";

/// The longest `/work` will wait.
const MAX_WORK: Duration = Duration::from_secs(60);

/// What the handlers share.
#[derive(Clone)]
struct Replica {
    /// The id in "Hello from Server: <id>".
    id: Arc<str>,
    /// `/work`'s workers, when limited.
    work_slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// The replica's routes, answering as replica `id`; `work_slots` limits how many `/work` requests
/// run at once (`None`: no limit).
pub fn router(id: &str, work_slots: Option<usize>) -> Router {
    let state = Replica {
        id: Arc::from(id),
        work_slots: work_slots.filter(|n| *n > 0).map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
    };
    Router::new()
        .route("/home", get(home))
        .route("/heartbeat", get(heartbeat))
        .route("/work", get(work))
        .route("/echo", any(echo))
        .fallback(not_found)
        .method_not_allowed_fallback(json::method_not_allowed)
        .with_state(state)
}

async fn home(State(replica): State<Replica>) -> Response {
    json::success(format!("Hello from Server: {}", replica.id))
}

async fn heartbeat() -> StatusCode {
    StatusCode::OK
}

#[derive(Deserialize)]
struct WorkQuery {
    ms: Option<u64>,
}

async fn work(State(replica): State<Replica>, Query(query): Query<WorkQuery>) -> Response {
    let ms = query.ms.unwrap_or(0);
    let wait = Duration::from_millis(ms).min(MAX_WORK);
    // A free worker first, when workers are limited (the semaphore is never closed).
    let _worker = match &replica.work_slots {
        Some(slots) => Arc::clone(slots).acquire_owned().await.ok(),
        None => None,
    };
    tokio::time::sleep(wait).await;
    json::success(format!("Server: {} worked {} ms", replica.id, wait.as_millis()))
}

async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers: BTreeMap<&str, &str> =
        parts.headers.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("<binary>"))).collect();
    let mut response = Body::new(body).into_response();
    let out = response.headers_mut();
    let set = |value: String| HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("<invalid>"));
    out.insert("x-echo-method", set(parts.method.to_string()));
    out.insert("x-echo-uri", set(parts.uri.to_string()));
    out.insert("x-echo-headers", set(serde_json::to_string(&headers).unwrap_or_default()));
    response
}

async fn not_found(request: Request) -> Response {
    json::failure(StatusCode::NOT_FOUND, format!("'{}' endpoint does not exist", request.uri().path()))
}

/// Serves the replica on `listener` until `shutdown` completes, then waits up to `drain` for the
/// requests in flight.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    id: &str,
    work_slots: Option<usize>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(id, work_slots)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = stopping => {}
    }
    match tokio::time::timeout(drain, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("requests still in flight after {drain:?}; exiting anyway");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(method: &str, uri: &str, body: &'static str) -> (StatusCode, http::HeaderMap, String) {
        let request = Request::builder().method(method).uri(uri).body(Body::from(body)).unwrap();
        let response = router("7", None).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn home_and_heartbeat_follow_the_contract_exactly() {
        let (status, headers, body) = call("GET", "/home", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body, r#"{"message": "Hello from Server: 7", "status": "successful"}"#);
        let (status, _, body) = call("GET", "/heartbeat", "").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405() {
        let (status, _, body) = call("GET", "/nope", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("'/nope'"), "{body}");
        let (status, _, _) = call("POST", "/home", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn echo_returns_the_body_and_describes_the_request() {
        let (status, headers, body) = call("PUT", "/echo?x=1", "payload").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "payload");
        assert_eq!(headers["x-echo-method"], "PUT");
        assert_eq!(headers["x-echo-uri"], "/echo?x=1");
    }

    #[tokio::test(start_paused = true)]
    async fn limited_work_slots_queue_the_rest() {
        let app = router("7", Some(2));
        let started = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let app = app.clone();
            calls.spawn(async move {
                let request = Request::builder().uri("/work?ms=100").body(Body::empty()).unwrap();
                app.oneshot(request).await.unwrap().status()
            });
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.unwrap(), StatusCode::OK);
        }
        // Four requests of 100 ms through two workers take two rounds.
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn work_waits_the_asked_time() {
        let started = tokio::time::Instant::now();
        let (status, _, body) = call("GET", "/work?ms=250", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(body.contains("worked 250 ms"), "{body}");
    }
}
