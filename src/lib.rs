//! ringlb: an HTTP load balancer that keeps a declared number of replicas alive, spreads requests
//! over them with a consistent hash, replaces replicas that stop answering their heartbeat, and
//! follows a watched YAML manifest.
//!
//! # Layout
//! - [`manifest`]: the desired state: types, validation, the watched file, atomic edits.
//! - [`controller`]: the reconcile loop; [`controller::plan`] is its pure core,
//!   [`controller::health`] the heartbeats.
//! - [`runtime`]: what runs replicas (child processes now), behind one trait.
//! - [`snapshot`]: the immutable routing state the controller publishes and the proxy reads.
//! - [`ring`]: the hash rings (Maglev, and the exercise's slot ring).
//! - [`listener`], [`proxy`], [`admin`]: the front door, the data plane, the admin API;
//!   [`balancer`] starts and stops them together with the controller.
//! - [`replica`]: the replica server (`ringlb server`); [`probe`]: its container health check.
//! - [`status`]: the `ringlb status` client.
//! - [`telemetry`]: Prometheus metrics; [`json`], [`trigger`], [`logging`]: small shared pieces.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
#[cfg(feature = "analyze")]
pub mod analyze;
pub mod balancer;
pub mod controller;
pub mod events;
pub mod ids;
pub mod json;
pub mod listener;
pub mod logging;
pub mod manifest;
pub mod probe;
pub mod proxy;
pub mod replica;
pub mod reserved;
pub mod ring;
pub mod runtime;
pub mod snapshot;
pub mod telemetry;
pub mod trigger;

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
