//! The `limits:` section: caps that protect the host.

use serde::Deserialize;

/// The most replicas a manifest may ever allow (`limits.max_replicas` is capped here).
pub const MAX_REPLICAS_CEILING: u32 = 1024;

/// Caps that protect the host (defaults in `defaults.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The most replicas `replicas:` or `/add` may ask for.
    pub max_replicas: u32,
}
