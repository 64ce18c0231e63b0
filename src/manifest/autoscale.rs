//! The `autoscale:` section: present, the replica count follows load within `[min, max]`.

use super::defaults;
use super::duration::HumanDuration;
use serde::Deserialize;

/// The autoscaler's settings (see `controller/autoscale.rs` for the rule).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest replicas; 0 scales to zero after an idle scale-down window.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Requests in flight per replica to aim at.
    #[serde(default = "defaults::target_inflight")]
    pub target_inflight: f64,
    /// Relative band around the target within which nothing changes.
    #[serde(default = "defaults::tolerance")]
    pub tolerance: f64,
    /// Scaling up follows the lowest recommendation of this window (shorter spikes are ignored).
    #[serde(default = "defaults::scale_up_window")]
    pub scale_up_window: HumanDuration,
    /// Scaling down follows the highest recommendation of this window.
    #[serde(default = "defaults::scale_down_window")]
    pub scale_down_window: HumanDuration,
    /// The most replicas one decision may add.
    #[serde(default = "defaults::max_step")]
    pub max_step: u32,
    /// Time between decisions.
    #[serde(default = "defaults::autoscale_interval")]
    pub interval: HumanDuration,
    /// Scale to zero: requests held while the first replica starts; more get a 503.
    #[serde(default = "defaults::hold_queue")]
    pub hold_queue: u32,
    /// Scale to zero: the longest a request is held; then a 503 with Retry-After.
    #[serde(default = "defaults::hold_timeout")]
    pub hold_timeout: HumanDuration,
}
