//! ringlb: an HTTP load balancer that keeps a declared number of replicas alive, spreads requests
//! over them with a consistent hash, replaces replicas that stop answering their heartbeat, and
//! follows a watched YAML manifest.
//!
//! # Layout, from the bottom up
//! - `ring/`: the hash rings, one file per algorithm behind one trait; pure data. `routes`: which
//!   service a request belongs to (host and path prefix); pure data too.
//! - `manifest/`: the desired state: types, defaults, validation, the watched file, atomic edits.
//! - `runtime/`: what runs replicas (Docker, Swarm, local processes, static endpoints) behind one
//!   trait; the only code that talks to Docker or spawns processes.
//! - `controller/`: the reconcile loop in parts (inventory, execution, scaling, publishing);
//!   `plan.rs` is its pure core, `health.rs` the heartbeats.
//! - `snapshot`: the immutable routing state the controller publishes and the proxy reads.
//! - `proxy/`: the data plane: the rules both engines share (candidates, retries, headers,
//!   errors) and the engines as siblings (`hyper/`, `fast/`).
//! - `listener`: the front door; `reserved`: which paths are ringlb's own; `admin/`: `/rep`,
//!   `/add`, `/rm`, the status JSON, the metrics endpoint and the dashboard.
//! - `balancer`: starts and stops all of the above together.
//! - `replica`: the replica server (`ringlb server`); `probe`: its container health check.
//! - `telemetry` (Prometheus metrics), `logging` and `events` (log lines and the recent events),
//!   `trigger`, `json`, `ids`: small shared pieces. `analyze/`: the exercise's analysis (the
//!   `analyze` feature).
//!
//! The binary (`main.rs`, `cli.rs`, `commands/`) is the edge: it parses the command line and turns
//! errors into exit codes. The public API below is what it, the tests, the benchmarks and the fuzz
//! targets use; the rest is private to the crate.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod admin;
#[cfg(feature = "analyze")]
pub mod analyze;
mod balancer;
mod calendar;
mod controller;
mod events;
mod grpc_health;
mod ids;
mod json;
mod listener;
pub mod logging;
pub mod manifest;
pub mod probe;
mod proxy;
pub mod replica;
mod reserved;
pub mod ring;
pub mod routes;
pub mod runtime;
mod snapshot;
pub mod telemetry;
pub mod trigger;

pub use admin::{
    TOKEN_ENV as ADMIN_TOKEN_ENV, TOKEN_FILE_ENV as ADMIN_TOKEN_FILE_ENV, TokenError as AdminTokenError,
    admin_token,
};
/// The certificate checks `ringlb check` shares with the TLS listener.
pub mod certificates {
    pub use crate::listener::certs::{CertificateError, check_each};
    pub use crate::listener::x509::{CertificateFacts, utc};
}
pub use balancer::{Balancer, Inherited as InheritedSockets, Options as BalancerOptions, StartError};

/// What the fuzz targets (`fuzz/`) drive directly: the fast path's parsers and the admin API's
/// body checks, which are private otherwise. Not an API for anything else.
pub mod fuzzing {
    pub use crate::admin::{
        ScaleBodyError, ScaleCheckError, ScaleRequest, check_scale_request, parse_scale_body,
    };
    pub use crate::controller::plan::generate_name;
    pub use crate::proxy::fast::chunked::ChunkedScanner;
    pub use crate::proxy::fast::wire::has_bare_lf;
    pub use crate::proxy::fast::{request, response};
    pub use crate::proxy::headers::is_hop_by_hop;
    pub use crate::reserved::is_reserved;
}

/// An error and its chain of sources on one line (`outer: inner: root`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
