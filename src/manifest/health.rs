//! The `health:` section: how replicas are checked.

use super::duration::HumanDuration;
use serde::Deserialize;

/// How replicas are checked (defaults in `defaults.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// The heartbeat path, answered 200 by a healthy replica.
    pub path: String,
    /// Time between heartbeats.
    pub interval: HumanDuration,
    /// How long a heartbeat may take.
    pub timeout: HumanDuration,
    /// Consecutive failed heartbeats after which a replica that still runs is replaced.
    /// (It leaves the ring at the first failure and comes back at the next success.)
    pub replace_after: u32,
}
