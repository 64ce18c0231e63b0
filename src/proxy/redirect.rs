//! `tls.redirect_http`: a plain-HTTP request is answered with a `308 Permanent Redirect` to the same
//! URL over https on the TLS listener's port (308 keeps the method and the body, where 301 lets a
//! client turn a POST into a GET). ringlb's own paths (`/rep`, `/add`, `/rm`, `/_ringlb/...`) are
//! answered before this, so the exercise's API keeps working over plain HTTP. The fast path hands
//! such requests to the hyper path, so this is the one place that answers them.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Request, StatusCode, header};

/// The 308 for `request`, to `https://<its host><its target>` on `port`.
pub fn to_https<B>(request: &Request<B>, port: u16) -> Response {
    let host = request
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(host_of))
        .unwrap_or_else(|| "localhost".to_owned());
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = location(&host, port, target);
    let mut response = crate::json::failure(StatusCode::PERMANENT_REDIRECT, format!("use {location}"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.map(Body::new)
}

/// The host part of a `Host` header: without its port (an IPv6 literal keeps its brackets).
fn host_of(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name.to_owned()
        }
        _ => host.to_owned(),
    }
}

/// `https://host[:port]target`, the port left out when it is 443.
fn location(host: &str, port: u16, target: &str) -> String {
    if port == 443 { format!("https://{host}{target}") } else { format!("https://{host}:{port}{target}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_keeps_the_host_and_target_and_names_the_tls_port() {
        let request =
            Request::builder().uri("/a/b?c=1").header("host", "shop.example:5000").body(()).unwrap();
        let response = to_https(&request, 5443);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(response.headers()["location"], "https://shop.example:5443/a/b?c=1");
        let request = Request::builder().uri("/").header("host", "[::1]:80").body(()).unwrap();
        assert_eq!(to_https(&request, 443).headers()["location"], "https://[::1]/");
        let request = Request::builder().uri("/x").header("host", "[::1]").body(()).unwrap();
        assert_eq!(to_https(&request, 8443).headers()["location"], "https://[::1]:8443/x");
    }
}
