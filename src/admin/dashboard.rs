//! The dashboard at `/_ringlb/`: one HTML page, its script and its style, embedded in the binary
//! (no build step, no framework, no CDN). The page is rendered with the current state (the replica
//! table, the events) so it says what matters with JavaScript off; the script then polls
//! `/_ringlb/status` every second for requests per second, the ring as a circle, and who answered
//! the last requests.

use super::AdminState;
use super::status::{self, Status};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use std::fmt::Write as _;
use std::sync::Arc;

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/style.css");

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page with the state filled in.
pub fn render(cluster: &str, status: &Status) -> String {
    let mut rows = String::new();
    let mut replicas: Vec<_> = status.replicas.iter().collect();
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    for r in replicas {
        let state = serde_json::to_string(&r.state).unwrap_or_default().trim_matches('"').to_owned();
        let _ = write!(
            rows,
            "<tr data-replica=\"{name}\"><td>{name}</td><td><span class=\"state state-{state}\">{state}</span></td>\
             <td>{address}</td><td class=\"num\">{id}</td><td class=\"num\">{age} s</td><td class=\"num\">{inflight}</td>\
             <td class=\"num\">{requests}</td><td class=\"num\">-</td><td class=\"num\">{share:.1} %</td></tr>",
            name = escape(&r.name),
            address = r.address.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            id = r.id,
            age = r.age_seconds,
            inflight = r.inflight,
            requests = r.requests,
            share = 100.0 * r.share,
        );
    }
    let mut events = String::new();
    for e in status.events.iter().rev().take(30) {
        let _ = write!(events, "<li class=\"{}\">{}</li>", escape(&e.level), escape(&e.message));
    }
    let mut alerts = String::new();
    if let Some(error) = &status.last_manifest_error {
        let _ = write!(alerts, "<div class=\"alert\">Manifest refused: {}</div>", escape(error));
    }
    for p in &status.problems {
        let _ = write!(alerts, "<div class=\"alert\">{}: {}</div>", escape(&p.replica), escape(&p.error));
    }
    PAGE.replace("{{CLUSTER}}", &escape(cluster))
        .replace("{{READY}}", &status.ready.to_string())
        .replace("{{DESIRED}}", &status.desired.to_string())
        .replace("{{HASHING}}", &escape(&format!("{}, key {}", status.hashing.algorithm, status.hashing.key)))
        .replace("{{VERSION}}", &status.manifest_version.to_string())
        .replace("{{ALERTS}}", &alerts)
        .replace("{{ROWS}}", &rows)
        .replace("{{EVENTS}}", &events)
}

fn with_type(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /_ringlb/`.
pub async fn page(State(state): State<Arc<AdminState>>) -> Response {
    let cluster = state.source.current().manifest.name.clone();
    with_type(render(&cluster, &status::status(&state)), "text/html; charset=utf-8")
}

/// `GET /_ringlb/app.js`.
pub async fn script() -> Response {
    with_type(SCRIPT.to_owned(), "text/javascript; charset=utf-8")
}

/// `GET /_ringlb/style.css`.
pub async fn style() -> Response {
    with_type(STYLE.to_owned(), "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
