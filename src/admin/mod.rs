//! ringlb's own HTTP API on the load balancer's port, served by one axum router: the exercise's
//! `/rep`, `/add` and `/rm` (`scale.rs`, guarded by `auth.rs`), and under `/_ringlb/` the status
//! JSON (`status.rs`), the Prometheus metrics (`metrics.rs`) and the dashboard (`dashboard.rs`).
//! Which paths are ringlb's is decided in [`crate::reserved`]; everything else is the proxy's.

mod auth;
mod dashboard;
mod metrics;
mod scale;
mod status;

pub use auth::{TOKEN_ENV, TOKEN_FILE_ENV, TokenError, admin_token, open_admin_warning};
pub use scale::{ScaleBodyError, ScaleCheckError, ScaleRequest, check_scale_request, parse_scale_body};

use crate::json;
use crate::manifest::source::ManifestSource;
use crate::runtime::NameCheck;
use crate::snapshot::Snapshots;
use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{get, post};
use http::StatusCode;
use std::sync::Arc;

/// What the admin handlers share.
pub struct AdminState {
    /// The desired state.
    pub source: Arc<ManifestSource>,
    /// The published state.
    pub snapshots: Arc<Snapshots>,
    /// Serialises manifest edits.
    pub edits: tokio::sync::Mutex<()>,
    /// `/add` and `/rm` need `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Tells whether a name is held by something ringlb does not own (a foreign container).
    pub names: Arc<dyn NameCheck>,
    /// Renders the Prometheus metrics, when a recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/rep", get(scale::rep))
        .route("/add", post(scale::add))
        .route("/rm", post(scale::rm).delete(scale::rm))
        .route("/_ringlb/status", get(status::status_json))
        .route("/_ringlb/metrics", get(metrics::metrics))
        .route("/_ringlb", get(dashboard::page))
        .route("/_ringlb/", get(dashboard::page))
        .route("/_ringlb/app.js", get(dashboard::script))
        .route("/_ringlb/style.css", get(dashboard::style))
        .fallback(unknown)
        .method_not_allowed_fallback(json::method_not_allowed)
        .with_state(state)
}

async fn unknown(request: Request) -> Response {
    json::failure(StatusCode::NOT_FOUND, format!("'{}' is not a ringlb endpoint", request.uri().path()))
}
