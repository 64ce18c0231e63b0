//! The controller's inventory: every instance it knows about, in which lifecycle state, with its
//! data-path handle and its heartbeat task; the instances stopped while the runtime still lists
//! them; and the names retired in exercise naming.
//!
//! It folds in what the runtime lists and what the heartbeats say, and answers what the plan,
//! the executor, the autoscaler and the publisher ask of it. It does no I/O of its own besides
//! starting and stopping probe tasks.

use super::health::{HealthReport, ProbeHandle, ProbeSettings, Prober};
use super::plan::{InstanceState, Observed};
use super::wake::Wake;
use crate::ids::InstanceId;
use crate::manifest::Manifest;
use crate::runtime::{Instance, RuntimeError};
use crate::snapshot::Backend;
use crate::telemetry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One instance the controller knows about.
pub(super) struct Tracked {
    /// As the runtime last reported it.
    pub(super) instance: Instance,
    /// Its lifecycle state.
    pub(super) state: InstanceState,
    /// Its data-path handle (counters, ejection), shared with the snapshots while it runs.
    pub(super) backend: Option<Arc<Backend>>,
    /// Its heartbeat task, while it is probed.
    probe: Option<ProbeHandle>,
    /// Once stopped: whether it stays out of the ring while the runtime still lists it even with
    /// no other ready instance of its name (it leaves the cluster, or it was dead or hung), or
    /// only while another one is ready (it was superseded, or a duplicate).
    hold_alone: bool,
}

/// An instance stopped while the runtime still lists it (see [`Inventory::merge`]).
struct Retiring {
    since: Instant,
    hold_alone: bool,
}

/// What the controller knows of the instances, and the names it will not reuse.
pub(super) struct Inventory {
    tracked: BTreeMap<InstanceId, Tracked>,
    /// Instances stopped (drained and stopped or replaced) while the runtime may still list them
    /// for a while, and when: a runtime whose scheduler retires them itself (Swarm stops an
    /// outdated task once its successor passes its health check) lists them until then, and
    /// they must not come back into the ring meanwhile.
    stopped: BTreeMap<InstanceId, Retiring>,
    /// Exercise naming: names whose replica failed, never to be reused for its replacement.
    retired: BTreeSet<String>,
    /// Starts the heartbeat task of every running instance tracked.
    prober: Prober,
    /// The heartbeat settings all probe tasks follow.
    probe_settings: watch::Sender<ProbeSettings>,
    /// The service whose replicas these are (the cluster's name without `services:`): the
    /// `service` label of their metrics.
    service: String,
}

fn probe_settings(manifest: &Manifest) -> ProbeSettings {
    ProbeSettings {
        kind: manifest.health.kind,
        path: manifest.health.path.clone(),
        status: manifest.health.status.clone(),
        interval: manifest.health.interval.get(),
        timeout: manifest.health.timeout.get(),
    }
}

impl Inventory {
    /// An empty inventory whose probes follow `manifest`'s heartbeat settings and send their
    /// results to `reports`.
    pub(super) fn new(manifest: &Manifest, reports: mpsc::Sender<HealthReport>) -> Inventory {
        let (probe_settings, settings_rx) = watch::channel(probe_settings(manifest));
        Inventory {
            tracked: BTreeMap::new(),
            stopped: BTreeMap::new(),
            retired: BTreeSet::new(),
            prober: Prober::new(settings_rx, reports),
            probe_settings,
            service: manifest.name.clone(),
        }
    }

    /// The service whose replicas these are.
    pub(super) fn service(&self) -> &str {
        &self.service
    }

    /// Has every probe follow `manifest`'s heartbeat settings (the tasks see a change at once).
    pub(super) fn follow_probe_settings(&self, manifest: &Manifest) {
        self.probe_settings.send_if_modified(|s| {
            let next = probe_settings(manifest);
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    /// Names retired in exercise naming.
    pub(super) fn retired(&self) -> &BTreeSet<String> {
        &self.retired
    }

    /// Retires `name`: its replacement gets a new one.
    pub(super) fn retire(&mut self, name: String) {
        self.retired.insert(name);
    }

    /// A name listed anew in the manifest may be used again.
    pub(super) fn unretire(&mut self, name: &str) {
        self.retired.remove(name);
    }

    /// Every tracked instance, in id order.
    pub(super) fn tracked(&self) -> impl Iterator<Item = &Tracked> {
        self.tracked.values()
    }

    /// Folds the runtime's list into what the controller tracks, and returns the names of the
    /// running instances it adopted (a start problem of those names is over).
    ///
    /// An instance stopped earlier that the runtime still lists is not tracked again, for at
    /// most `hold`: one that left, died or hung for as long as it is listed; one that was
    /// superseded or a duplicate only while another instance of its name is ready (if that one
    /// went instead, as when Swarm picks which task of a service scaled by hand to remove, it is
    /// the replica's only instance, and serves again at once).
    pub(super) fn merge(
        &mut self,
        list: Vec<Instance>,
        now: Instant,
        hold: Duration,
        wake: &Wake,
    ) -> Vec<String> {
        let listed: BTreeSet<InstanceId> = list.iter().map(|i| i.id.clone()).collect();
        self.tracked.retain(|id, t| listed.contains(id) || t.state == InstanceState::Draining);
        self.stopped.retain(|id, _| listed.contains(id));
        let ready: BTreeSet<String> = self
            .tracked
            .values()
            .filter(|t| t.state == InstanceState::Ready)
            .map(|t| t.instance.name.clone())
            .collect();
        let mut adopted = Vec::new();
        for instance in list {
            if let Some(retiring) = self.stopped.get(&instance.id) {
                let since = now.saturating_duration_since(retiring.since);
                if since < hold && (retiring.hold_alone || ready.contains(&instance.name)) {
                    continue;
                }
                self.stopped.remove(&instance.id);
                tracing::info!(replica = %instance.name, instance = %instance.id, woken_by = %wake,
                    "replica {} was stopped {since:?} ago but is still there; tracking it again", instance.name);
            }
            match self.tracked.get_mut(&instance.id) {
                Some(t) => {
                    if !instance.running
                        && !matches!(t.state, InstanceState::Exited | InstanceState::Draining)
                    {
                        tracing::warn!(event = "replica_exited", replica = %instance.name, instance = %instance.id,
                            woken_by = %wake, "replica {} is gone; out of the ring", instance.name);
                        t.state = InstanceState::Exited;
                        t.probe = None;
                    }
                    t.instance = instance;
                }
                None => {
                    tracing::info!(event = "replica_adopted", replica = %instance.name, instance = %instance.id,
                        running = instance.running, woken_by = %wake,
                        "found replica {} already running; adopting it", instance.name);
                    if instance.running {
                        adopted.push(instance.name.clone());
                    }
                    self.track(instance, now);
                }
            }
        }
        adopted
    }

    /// Starts tracking (and probing) an instance.
    pub(super) fn track(&mut self, instance: Instance, now: Instant) {
        let state =
            if instance.running { InstanceState::Starting { since: now } } else { InstanceState::Exited };
        let backend = instance
            .addr
            .map(|addr| Arc::new(Backend::new(&self.service, &instance.name, instance.replica_id, addr)));
        let probe = match (instance.running, instance.addr) {
            (true, Some(addr)) => Some(self.prober.spawn(instance.id.clone(), addr)),
            _ => None,
        };
        self.tracked
            .insert(instance.id.clone(), Tracked { instance, state, backend, probe, hold_alone: false });
    }

    /// The instances as the pure plan sees them.
    pub(super) fn observed(&self) -> Vec<Observed> {
        self.tracked
            .values()
            .map(|t| Observed {
                id: t.instance.id.clone(),
                name: t.instance.name.clone(),
                replica_id: t.instance.replica_id,
                spec_hash: t.instance.spec_hash,
                state: t.state,
            })
            .collect()
    }

    /// Takes an instance out of the ring for a drain (no more probes) and returns it, or `None`
    /// when it is not tracked. `hold_alone`: see [`Tracked::hold_alone`].
    pub(super) fn begin_draining(&mut self, id: &InstanceId, hold_alone: bool) -> Option<&Tracked> {
        let t = self.tracked.get_mut(id)?;
        t.state = InstanceState::Draining;
        t.probe = None;
        t.hold_alone = hold_alone;
        Some(t)
    }

    /// Forgets an instance whose drain-and-stop ended; one that stopped is held back from the
    /// ring while the runtime still lists it. Returns its replica's name (empty if it was not
    /// tracked).
    pub(super) fn stop_finished(&mut self, id: InstanceId, result: Result<(), RuntimeError>) -> String {
        let (name, hold_alone) =
            self.tracked.remove(&id).map(|t| (t.instance.name, t.hold_alone)).unwrap_or_default();
        match result {
            Ok(()) => {
                tracing::info!(event = "replica_removed", replica = %name, instance = %id, "replica {name} stopped and removed");
                self.stopped.insert(id, Retiring { since: Instant::now(), hold_alone });
            }
            // Forgotten here; if it still exists, the next list adopts it and the plan retries.
            Err(error) => {
                tracing::error!(event = "replica_stop_failed", replica = %name, %error, "{error}")
            }
        }
        name
    }

    /// Requests in flight on the ready instances.
    pub(super) fn ready_inflight(&self) -> u64 {
        self.tracked
            .values()
            .filter(|t| t.state == InstanceState::Ready)
            .filter_map(|t| t.backend.as_ref())
            .map(|b| b.inflight())
            .sum()
    }

    /// Requests served so far by every tracked instance.
    pub(super) fn requests(&self) -> u64 {
        self.tracked.values().filter_map(|t| t.backend.as_ref()).map(|b| b.requests()).sum()
    }

    /// Applies one heartbeat; returns the replica's name when its state changed so that a pass
    /// should follow (for a failing one: once it failed `replace_after` heartbeats in a row).
    pub(super) fn apply_health(&mut self, report: HealthReport, replace_after: u32) -> Option<String> {
        let t = self.tracked.get_mut(&report.instance)?;
        let name = &t.instance.name;
        let restored = report.result.is_ok() && t.backend.as_ref().is_some_and(|b| b.restore());
        let changed = match (t.state, report.result) {
            (InstanceState::Starting { .. }, Ok(())) => {
                tracing::info!(event = "replica_ready", replica = %name, "replica {name} answered its heartbeat; in the ring");
                t.state = InstanceState::Ready;
                true
            }
            (InstanceState::Failing { failures }, Ok(())) => {
                tracing::info!(event = "replica_recovered", replica = %name,
                    "replica {name} answers again after {failures} failed heartbeats; back in the ring");
                t.state = InstanceState::Ready;
                true
            }
            (InstanceState::Ready, Ok(())) => {
                if restored {
                    tracing::info!(event = "replica_restored", replica = %name, "replica {name} answers heartbeats; ejection lifted");
                }
                false
            }
            (InstanceState::Ready, Err(error)) => {
                let why = crate::error_chain(&error);
                metrics::counter!(telemetry::HEARTBEAT_FAILURES, "service" => self.service.clone(), "replica" => name.clone()).increment(1);
                tracing::warn!(event = "replica_failing", replica = %name, reason = %why,
                    "replica {name} failed a heartbeat ({why}); out of the ring");
                t.state = InstanceState::Failing { failures: 1 };
                true
            }
            (InstanceState::Failing { failures }, Err(error)) => {
                let why = crate::error_chain(&error);
                metrics::counter!(telemetry::HEARTBEAT_FAILURES, "service" => self.service.clone(), "replica" => name.clone()).increment(1);
                let failures = failures.saturating_add(1);
                tracing::warn!(event = "replica_failing", replica = %name, failures, reason = %why,
                    "replica {name} failed {failures} heartbeats in a row ({why})");
                t.state = InstanceState::Failing { failures };
                failures >= replace_after
            }
            _ => false,
        };
        changed.then(|| name.clone())
    }
}
