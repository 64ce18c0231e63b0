//! The autoscaler's place in the loop: load samples taken between decisions, the replica count
//! the autoscaler set, and when a manifest edit resets it.
//!
//! The rule itself is the pure [`Autoscaler`]; this file feeds it the load the inventory's
//! counters show, and holds its answer until the next decision or manifest edit.

use super::autoscale::{self, Autoscaler};
use super::inventory::Inventory;
use super::wake::RESYNC;
use crate::manifest::Manifest;
use crate::snapshot::Snapshots;
use crate::telemetry;
use std::sync::Arc;
use tokio::time::Instant;

/// Requests in flight, sampled between two autoscaling decisions.
#[derive(Debug)]
struct LoadSamples {
    sum: f64,
    count: u32,
    /// The requests counter at the last decision, to see whether any request came since.
    requests_before: u64,
    last_decision: Instant,
}

impl LoadSamples {
    /// No samples yet, `requests` served so far.
    fn fresh(requests: u64) -> LoadSamples {
        LoadSamples { sum: 0.0, count: 0, requests_before: requests, last_decision: Instant::now() }
    }
}

/// The autoscaler and the count it decided.
pub(super) struct Scaling {
    /// The autoscaler, while the manifest has an `autoscale:` section.
    autoscaler: Option<Autoscaler>,
    /// The replica count the autoscaler set (None: the manifest's `replicas:`).
    scaled: Option<u32>,
    /// Concurrency samples since the last autoscaling decision.
    load: LoadSamples,
    /// `replicas:` of the manifest version last taken.
    last_replicas: Option<u32>,
    /// Where the proxy notes a request that found no replica (scaled to zero, it asks for one).
    demand: Arc<Snapshots>,
}

impl Scaling {
    /// No autoscaler yet; demand is read from `snapshots`.
    pub(super) fn new(snapshots: Arc<Snapshots>) -> Scaling {
        Scaling {
            autoscaler: None,
            scaled: None,
            load: LoadSamples::fresh(0),
            last_replicas: None,
            demand: snapshots,
        }
    }

    /// Whether an autoscaler runs (and load should be sampled).
    pub(super) fn is_active(&self) -> bool {
        self.autoscaler.is_some()
    }

    /// How many replicas to run under `manifest`: the autoscaler's count, else `replicas:`.
    pub(super) fn replicas(&self, manifest: &Manifest) -> u32 {
        self.scaled.unwrap_or(manifest.replicas)
    }

    /// Follows a new manifest version. A new count by hand (`replicas:` edited, or the hostnames
    /// when `hostnames_changed`: /add, /rm) is the new starting point, and the windows start
    /// afresh from it.
    pub(super) fn take_version(&mut self, manifest: &Manifest, hostnames_changed: bool) {
        let scale_changed = hostnames_changed || self.last_replicas != Some(manifest.replicas);
        match &manifest.autoscale {
            Some(settings) => {
                let policy = autoscale::Policy::from(settings);
                match &mut self.autoscaler {
                    Some(scaler) => scaler.set_policy(policy),
                    None => self.autoscaler = Some(Autoscaler::new(policy)),
                }
                if scale_changed || self.scaled.is_none() {
                    if let Some(scaler) = &mut self.autoscaler {
                        scaler.reset();
                    }
                    self.scaled = Some(manifest.initial_replicas());
                } else if let (Some(scaler), Some(n)) = (&self.autoscaler, self.scaled) {
                    self.scaled = Some(scaler.clamp(n));
                }
            }
            None => {
                self.autoscaler = None;
                self.scaled = None;
            }
        }
        self.last_replicas = Some(manifest.replicas);
    }

    /// Scaled to zero, a request that found no replica asks for one at once.
    pub(super) fn on_demand(&mut self, inventory: &Inventory) {
        if self.scaled == Some(0) && self.demand.take_demand() {
            self.decide(inventory, true);
        }
    }

    /// Takes one load sample; makes an autoscaling decision when one is due under `manifest`.
    /// True when the replica count changed (a pass should follow).
    pub(super) fn sample(&mut self, inventory: &Inventory, manifest: &Manifest) -> bool {
        self.load.sum += inventory.ready_inflight() as f64;
        self.load.count += 1;
        let interval = manifest.autoscale.as_ref().map(|a| a.interval.get()).unwrap_or(RESYNC);
        if self.load.last_decision.elapsed() < interval {
            return false;
        }
        self.decide(inventory, false)
    }

    /// Decides the replica count from the samples since the last decision (or at once on
    /// `demand`); logs every decision that is not a plain "no change"; true if the count changed.
    fn decide(&mut self, inventory: &Inventory, demand: bool) -> bool {
        let requests = inventory.requests();
        let (Some(scaler), Some(current)) = (&mut self.autoscaler, self.scaled) else { return false };
        let mut concurrency =
            if self.load.count == 0 { 0.0 } else { self.load.sum / f64::from(self.load.count) };
        if requests > self.load.requests_before {
            // Requests came: count at least one in flight, so short requests are activity too.
            concurrency = concurrency.max(1.0);
        }
        self.load = LoadSamples::fresh(requests);
        let decision = scaler.decide(Instant::now(), current, concurrency, demand);
        let target = scaler.policy().target_inflight;
        if decision.desired != current || decision.raw != current {
            tracing::info!(event = "autoscale", current, desired = decision.desired, raw = decision.raw,
                observed_total = decision.observed_total, observed_per_replica = decision.observed_per_replica,
                target, reason = ?decision.reason,
                "autoscaler: {current} -> {} replicas ({:.1} in flight, {:.2} per replica, target {target}; the rule says {}; {:?})",
                decision.desired, decision.observed_total, decision.observed_per_replica, decision.raw, decision.reason);
        }
        let service = inventory.service().to_owned();
        metrics::gauge!(telemetry::AUTOSCALER_DESIRED, "service" => service.clone())
            .set(f64::from(decision.desired));
        metrics::gauge!(telemetry::AUTOSCALER_OBSERVED, "service" => service).set(decision.observed_total);
        self.scaled = Some(decision.desired);
        decision.desired != current
    }
}
