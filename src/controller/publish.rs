//! Publishing what the controller knows: the immutable [`Snapshot`] the proxy and the status API
//! read (ring, replica addresses and states, routing settings, problems), and the replica gauges.
//!
//! The ring is rebuilt only when its members or the hashing settings change. Publishing reads the
//! inventory and changes nothing in it.

use super::execute::describe_action;
use super::inventory::{Inventory, Tracked};
use super::plan::{Action, InstanceState};
use super::wake::Wake;
use crate::manifest::Manifest;
use crate::manifest::source::Desired as DesiredManifest;
use crate::ring::{Member, Ring, RingConfig};
use crate::snapshot::{
    Backend, Hold, LastReconcile, Problem, ReplicaState, ReplicaStatus, Routing, Snapshot, Snapshots,
};
use crate::telemetry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How many requests may wait for a first replica while the load balancer starts.
const START_HOLD_QUEUE: u32 = 1000;

/// The ring last built, reused while its members and configuration stay the same.
struct RingCache {
    members: Vec<(String, u32)>,
    config: RingConfig,
    ring: Arc<Ring>,
}

/// What goes into a snapshot besides the inventory and the manifest.
pub(super) struct Published<'a> {
    /// The manifest version the pass worked from.
    pub(super) desired: &'a DesiredManifest,
    /// The wanted names; `None` when the runtime could not be listed (the last names stay).
    pub(super) names: Option<Vec<String>>,
    /// The runtime's hash of the manifest's spec, to tell current instances from outdated ones.
    pub(super) spec_hash: u64,
    /// The replicas that cannot be started.
    pub(super) problems: Vec<Problem>,
}

/// The one writer of the controller's snapshots.
pub(super) struct Publisher {
    snapshots: Arc<Snapshots>,
    /// Counts the snapshots published.
    generation: u64,
    ring_cache: Option<RingCache>,
    /// The last pass that did something, for the status API.
    last_actions: Option<LastReconcile>,
    /// When the controller started, and whether the ring has had a member since: until then,
    /// for at most `replica.start_timeout`, requests wait for a first replica instead of a 503
    /// (a load balancer that just restarted is still finding its replicas' health).
    started: Instant,
    ring_ever_had_members: bool,
}

impl Publisher {
    /// A publisher to `snapshots`; the start hold counts from now.
    pub(super) fn new(snapshots: Arc<Snapshots>) -> Publisher {
        Publisher {
            snapshots,
            generation: 0,
            ring_cache: None,
            last_actions: None,
            started: Instant::now(),
            ring_ever_had_members: false,
        }
    }

    /// Notes what a pass is about to do, for the status API (a pass that does nothing leaves the
    /// last one in place).
    pub(super) fn record(&mut self, actions: &[Action]) {
        if actions.is_empty() {
            return;
        }
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.last_actions =
            Some(LastReconcile { at_ms, actions: actions.iter().map(describe_action).collect() });
    }

    /// Builds and stores a snapshot of the current state.
    pub(super) fn publish(&mut self, published: Published<'_>, inventory: &Inventory, wake: &Wake) {
        let Published { desired, names, spec_hash, problems } = published;
        let manifest = &desired.manifest;
        let previous = self.snapshots.load();
        let names = names.unwrap_or_else(|| previous.replica_names.clone());

        // One ring member per wanted name: its best ready instance (current spec preferred).
        let mut best: BTreeMap<&str, &Tracked> = BTreeMap::new();
        for t in inventory.tracked().filter(|t| t.state == InstanceState::Ready && t.backend.is_some()) {
            let better =
                |old: &&Tracked| (t.instance.spec_hash == spec_hash) && old.instance.spec_hash != spec_hash;
            match best.get(t.instance.name.as_str()) {
                Some(old) if !better(old) => {}
                _ => {
                    best.insert(t.instance.name.as_str(), t);
                }
            }
        }
        let members: Vec<Arc<Backend>> =
            names.iter().filter_map(|n| best.get(n.as_str()).and_then(|t| t.backend.clone())).collect();
        let Some(ring) = self.ring_for(&members, manifest, wake) else {
            return;
        };

        let mut taken: BTreeSet<String> = names.iter().cloned().collect();
        taken.extend(inventory.tracked().map(|t| t.instance.name.clone()));
        taken.extend(inventory.retired().iter().cloned());
        self.generation += 1;
        set_gauges(inventory, names.len(), members.len());
        self.ring_ever_had_members |= !members.is_empty();
        let start_grace = manifest.replica.start_timeout.get().saturating_sub(self.started.elapsed());
        let start_hold = (!self.ring_ever_had_members && !names.is_empty() && !start_grace.is_zero())
            .then_some(Hold { queue: START_HOLD_QUEUE, timeout: start_grace });
        self.snapshots.publish(Snapshot {
            generation: self.generation,
            manifest_version: desired.version,
            replica_names: names,
            taken_names: taken.into_iter().collect(),
            members,
            ring,
            routing: Routing {
                key: manifest.hashing.key.clone(),
                numeric_request_ids: manifest.hashing.uses_assignment_ids(),
                timeout: manifest.proxy.timeout.get(),
                connect_timeout: manifest.proxy.connect_timeout.get(),
                unknown_path: manifest.proxy.unknown_path,
                balance_factor: manifest.hashing.balance_factor,
                access_log: manifest.proxy.access_log,
                engine: manifest.proxy.engine,
                client_timeout: manifest.proxy.client_timeout.get(),
                max_connections: manifest.proxy.max_connections,
                tunnel_idle_timeout: manifest.proxy.tunnel_idle_timeout.get(),
                http2: manifest.proxy.http2,
                redirect_http: manifest.tls.as_ref().is_some_and(|tls| tls.redirect_http),
                upstream: manifest.replica.protocol,
                hold: manifest
                    .autoscale
                    .as_ref()
                    .filter(|a| a.min == 0)
                    .map(|a| Hold { queue: a.hold_queue, timeout: a.hold_timeout.get() })
                    .or(start_hold),
            },
            replicas: inventory.tracked().map(|t| status(t, spec_hash)).collect(),
            last_reconcile: self.last_actions.clone(),
            problems,
            built_at: SystemTime::now(),
        });
    }

    /// The ring over `members`, rebuilt only when they or the hashing settings changed.
    fn ring_for(&mut self, members: &[Arc<Backend>], manifest: &Manifest, wake: &Wake) -> Option<Arc<Ring>> {
        let key: Vec<(String, u32)> = members.iter().map(|b| (b.name.clone(), b.id)).collect();
        let config = manifest.ring_config();
        if let Some(cache) = &self.ring_cache
            && cache.members == key
            && cache.config == config
        {
            return Some(Arc::clone(&cache.ring));
        }
        let ring_members: Vec<Member> =
            key.iter().map(|(name, id)| Member { name: name.clone(), id: *id }).collect();
        match Ring::build(&config, &ring_members) {
            Ok(ring) => {
                let ring = Arc::new(ring);
                tracing::info!(event = "ring_rebuilt", members = ?key.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                    woken_by = %wake, "ring now has {} replicas", key.len());
                self.ring_cache = Some(RingCache { members: key, config, ring: Arc::clone(&ring) });
                Some(ring)
            }
            Err(error) => {
                tracing::error!(event = "ring_build_failed", %error, woken_by = %wake,
                    "cannot build the ring; keeping the previous one");
                None
            }
        }
    }
}

/// The replica gauges: how many are desired and ready, and how many are in each other state.
fn set_gauges(inventory: &Inventory, desired: usize, ready: usize) {
    let count = |state: InstanceState| inventory.tracked().filter(|t| t.state == state).count() as f64;
    let service = inventory.service().to_owned();
    let gauge = |state: &'static str| metrics::gauge!(telemetry::REPLICAS, "service" => service.clone(), "state" => state);
    gauge("desired").set(desired as f64);
    gauge("ready").set(ready as f64);
    gauge("draining").set(count(InstanceState::Draining));
    gauge("exited").set(count(InstanceState::Exited));
    let starting = inventory.tracked().filter(|t| matches!(t.state, InstanceState::Starting { .. })).count();
    let failing = inventory.tracked().filter(|t| matches!(t.state, InstanceState::Failing { .. })).count();
    gauge("starting").set(starting as f64);
    gauge("failing").set(failing as f64);
}

/// One tracked instance as the status API shows it.
fn status(t: &Tracked, spec_hash: u64) -> ReplicaStatus {
    ReplicaStatus {
        name: t.instance.name.clone(),
        instance: t.instance.id.0.clone(),
        id: t.instance.replica_id,
        address: t.instance.addr,
        state: match t.state {
            InstanceState::Starting { .. } => ReplicaState::Starting,
            InstanceState::Ready => ReplicaState::Ready,
            InstanceState::Failing { .. } => ReplicaState::Failing,
            InstanceState::Draining => ReplicaState::Draining,
            InstanceState::Exited => ReplicaState::Exited,
        },
        started_at: t.instance.started_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        current_spec: t.instance.spec_hash == spec_hash,
    }
}
