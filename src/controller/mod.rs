//! The reconcile loop: makes the running replicas match the manifest, and publishes the routing
//! snapshot the proxy reads.
//!
//! Level-triggered: every pass lists the runtime's instances, merges what the heartbeats said,
//! resolves the wanted names, asks the pure [`plan`](plan::plan) what to do, does it, and publishes
//! a fresh [`Snapshot`]. Events only say "look now": a manifest version, the runtime's trigger (a
//! replica exited), a heartbeat that changed a replica's state, a finished drain, and a periodic
//! resync as the safety net. One loop, one task: no replica is ever reconciled concurrently.
//! Stopping (drain, then stop) runs in owned background tasks so a slow stop never stalls the loop.

pub mod autoscale;
pub mod health;
pub mod plan;

use crate::manifest::Manifest;
use crate::manifest::source::{Desired as DesiredManifest, ManifestSource};
use crate::ring::{Member, Ring};
use crate::runtime::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::snapshot::{
    Backend, Hold, LastReconcile, Problem, ReplicaState, ReplicaStatus, Routing, Snapshot, Snapshots,
};
use crate::telemetry;
use crate::trigger::Trigger;
use autoscale::Autoscaler;
use health::{HealthReport, ProbeHandle, ProbeSettings, Prober};
use plan::{Action, InstanceState, Observed, Reason};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The safety-net pass period.
const RESYNC: Duration = Duration::from_secs(2);
/// First and largest wait before retrying a start that failed.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a drain looks at the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// One instance the controller knows about.
struct Tracked {
    /// As the runtime last reported it.
    instance: Instance,
    /// Its lifecycle state.
    state: InstanceState,
    /// Its data-path handle (counters, ejection), shared with the snapshots while it runs.
    backend: Option<Arc<Backend>>,
    /// Its heartbeat task, while it is probed.
    probe: Option<ProbeHandle>,
    /// Once stopped: whether it stays out of the ring while the runtime still lists it even with
    /// no other ready instance of its name (it leaves the cluster, or it was dead or hung), or
    /// only while another one is ready (it was superseded, or a duplicate).
    hold_alone: bool,
}

/// An instance stopped while the runtime still lists it (see [`Controller::merge`]).
struct Retiring {
    since: Instant,
    hold_alone: bool,
}

/// A start that failed: when to try again, how long to wait after the next failure, and why it
/// failed (reported in the status until a start succeeds).
struct Backoff {
    until: Instant,
    next: Duration,
    error: String,
    /// The name is held by something the runtime does not own.
    held_by_other: bool,
}

/// The ring last built, reused while its members and configuration stay the same.
struct RingCache {
    members: Vec<(String, u32)>,
    config: crate::ring::RingConfig,
    ring: Arc<Ring>,
}

/// The reconcile loop's state. Build with [`Controller::new`], then [`Controller::run`].
pub struct Controller<R: Runtime> {
    runtime: Arc<R>,
    source: Arc<ManifestSource>,
    snapshots: Arc<Snapshots>,
    trigger: Trigger,
    tracked: BTreeMap<InstanceId, Tracked>,
    /// Instances stopped (drained and stopped or replaced) while the runtime may still list them
    /// for a while, and when: a runtime whose scheduler retires them itself (Swarm stops an
    /// outdated task once its successor passes its health check) lists them until then, and
    /// they must not come back into the ring meanwhile.
    stopped: BTreeMap<InstanceId, Retiring>,
    /// Exercise naming: names whose replica failed, never to be reused for its replacement.
    retired: BTreeSet<String>,
    backoff: BTreeMap<String, Backoff>,
    prober: Prober,
    probe_settings: watch::Sender<ProbeSettings>,
    reports: mpsc::Receiver<HealthReport>,
    /// Drain-and-stop tasks; each yields the instance it stopped.
    stopping: JoinSet<(InstanceId, Result<(), RuntimeError>)>,
    /// The manifest version the last pass worked from, and the names it listed.
    applied: Option<(u64, Vec<String>)>,
    generation: u64,
    ring_cache: Option<RingCache>,
    /// The last pass that did something, for the status API.
    last_actions: Option<LastReconcile>,
    /// `replicas:` of the manifest version last taken.
    last_replicas: Option<u32>,
    /// The autoscaler, while the manifest has an `autoscale:` section.
    autoscaler: Option<Autoscaler>,
    /// The replica count the autoscaler set (None: the manifest's `replicas:`).
    scaled: Option<u32>,
    /// Concurrency samples since the last autoscaling decision.
    load: LoadSamples,
    /// When the controller started, and whether the ring has had a member since: until then,
    /// for at most `replica.start_timeout`, requests wait for a first replica instead of a 503
    /// (a load balancer that just restarted is still finding its replicas' health).
    started: Instant,
    ring_ever_had_members: bool,
}

/// How many requests may wait for a first replica while the load balancer starts.
const START_HOLD_QUEUE: u32 = 1000;

/// Requests in flight, sampled between two autoscaling decisions.
#[derive(Debug)]
struct LoadSamples {
    sum: f64,
    count: u32,
    /// The requests counter at the last decision, to see whether any request came since.
    requests_before: u64,
    last_decision: Instant,
}

/// How often the load is sampled for the autoscaler.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn probe_settings(manifest: &Manifest) -> ProbeSettings {
    ProbeSettings {
        path: manifest.health.path.clone(),
        interval: manifest.health.interval.get(),
        timeout: manifest.health.timeout.get(),
    }
}

impl<R: Runtime> Controller<R> {
    /// A controller for `runtime`, following `source`, publishing to `snapshots`, woken by
    /// `trigger` (the same trigger the runtime and the proxy fire).
    pub fn new(
        runtime: Arc<R>,
        source: Arc<ManifestSource>,
        snapshots: Arc<Snapshots>,
        trigger: Trigger,
    ) -> Self {
        let (probe_settings, settings_rx) = watch::channel(probe_settings(&source.current().manifest));
        let (reports_tx, reports) = mpsc::channel(4096);
        Controller {
            runtime,
            source,
            snapshots,
            trigger,
            tracked: BTreeMap::new(),
            stopped: BTreeMap::new(),
            retired: BTreeSet::new(),
            backoff: BTreeMap::new(),
            prober: Prober::new(settings_rx, reports_tx),
            probe_settings,
            reports,
            stopping: JoinSet::new(),
            applied: None,
            generation: 0,
            ring_cache: None,
            autoscaler: None,
            scaled: None,
            last_replicas: None,
            last_actions: None,
            load: LoadSamples { sum: 0.0, count: 0, requests_before: 0, last_decision: Instant::now() },
            started: Instant::now(),
            ring_ever_had_members: false,
        }
    }

    /// Runs until `shutdown`; then stops probing (the caller decides what happens to replicas).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut versions = self.source.subscribe();
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.reconcile().await;
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    changed = versions.changed() => {
                        if changed.is_err() { return }
                        break;
                    }
                    () = self.trigger.fired() => break,
                    Some(done) = self.stopping.join_next() => {
                        self.finish_stop(done);
                        break;
                    }
                    Some(report) = self.reports.recv() => {
                        if self.apply_health(report) { break }
                    }
                    _ = resync.tick() => break,
                    _ = sample.tick(), if self.autoscaler.is_some() => {
                        if self.sample_load() { break }
                    }
                }
            }
        }
    }

    /// One level-triggered pass (repeated at once when it retired a name, so the replacement
    /// starts in the same wake-up).
    async fn reconcile(&mut self) {
        for _ in 0..3 {
            if !self.reconcile_once().await {
                break;
            }
        }
    }

    /// Returns true when another pass should follow at once.
    async fn reconcile_once(&mut self) -> bool {
        metrics::counter!(telemetry::RECONCILE_PASSES).increment(1);
        let desired = self.source.current();
        let manifest = Arc::clone(&desired.manifest);
        self.take_version(&desired);
        let now = Instant::now();
        match self.runtime.list().await {
            Ok(list) => self.merge(list, now, manifest.replica.start_timeout.get()),
            Err(error) => {
                tracing::error!(event = "runtime_unavailable", %error, "cannot list replicas; retrying");
                self.publish(&desired, None);
                return false;
            }
        }
        if self.scaled == Some(0) && self.snapshots.take_demand() {
            self.autoscale(true);
        }
        let observed = self.observed();
        let names = plan::resolve_names(
            &manifest.name,
            self.scaled.unwrap_or(manifest.replicas),
            &manifest.hostnames,
            &self.retired,
            &observed,
        );
        let spec_hash = self.runtime.spec_hash(&manifest);
        // A name no longer wanted has nothing left to retry.
        self.backoff.retain(|name, _| names.contains(name));
        let backoff: BTreeMap<String, Instant> =
            self.backoff.iter().map(|(k, b)| (k.clone(), b.until)).collect();
        let held_by_others: BTreeSet<String> =
            self.backoff.iter().filter(|(_, b)| b.held_by_other).map(|(k, _)| k.clone()).collect();
        let plan_input = plan::Desired {
            names: &names,
            spec_hash,
            replace_after: if self.runtime.replaces_failed() {
                manifest.health.replace_after
            } else {
                u32::MAX
            },
            start_timeout: manifest.replica.start_timeout.get(),
            replacement: manifest.replica.replacement_name,
            backoff: &backoff,
            held_by_others: &held_by_others,
        };
        let actions = plan::plan(&plan_input, &observed, now);
        self.runtime.remove_idle(&names).await;
        let again = actions.iter().any(|a| matches!(a, Action::Retire { .. }));
        let starts = self.begin_removals(actions, &manifest, &names);
        // The ring changes now (a replica gone, one draining); starting replacements can take a
        // while and must not hold that back.
        self.publish(&desired, Some(names.clone()));
        if !starts.is_empty() {
            self.start_all(starts, &manifest, spec_hash).await;
            self.publish(&desired, Some(names));
        }
        again
    }

    /// Notes a new manifest version: new probe settings, and names listed anew are no longer retired.
    fn take_version(&mut self, desired: &DesiredManifest) {
        if self.applied.as_ref().is_some_and(|(v, _)| *v == desired.version) {
            return;
        }
        let manifest = &desired.manifest;
        if let Some((_, before)) = &self.applied {
            for name in manifest.hostnames.iter().filter(|n| !before.contains(n)) {
                self.retired.remove(name);
            }
        }
        self.probe_settings.send_if_modified(|s| {
            let next = probe_settings(manifest);
            let changed = *s != next;
            *s = next;
            changed
        });
        tracing::info!(event = "desired_state", version = desired.version, replicas = manifest.replicas,
            hostnames = ?manifest.hostnames, "working toward manifest version {}", desired.version);
        // Autoscaling: a new count by hand (replicas or hostnames edited, /add, /rm) is the new
        // starting point, and the windows start afresh from it.
        let scale_changed = self.applied.as_ref().is_none_or(|(_, before)| *before != manifest.hostnames)
            || self.last_replicas != Some(manifest.replicas);
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
        self.applied = Some((desired.version, manifest.hostnames.clone()));
    }

    /// Folds the runtime's list into what the controller tracks.
    ///
    /// An instance stopped earlier that the runtime still lists is not tracked again, for at
    /// most `hold`: one that left, died or hung for as long as it is listed; one that was
    /// superseded or a duplicate only while another instance of its name is ready (if that one
    /// went instead, as when Swarm picks which task of a service scaled by hand to remove, it is
    /// the replica's only instance, and serves again at once).
    fn merge(&mut self, list: Vec<Instance>, now: Instant, hold: Duration) {
        let listed: BTreeSet<InstanceId> = list.iter().map(|i| i.id.clone()).collect();
        self.tracked.retain(|id, t| listed.contains(id) || t.state == InstanceState::Draining);
        self.stopped.retain(|id, _| listed.contains(id));
        let ready: BTreeSet<String> = self
            .tracked
            .values()
            .filter(|t| t.state == InstanceState::Ready)
            .map(|t| t.instance.name.clone())
            .collect();
        for instance in list {
            if let Some(retiring) = self.stopped.get(&instance.id) {
                let since = now.saturating_duration_since(retiring.since);
                if since < hold && (retiring.hold_alone || ready.contains(&instance.name)) {
                    continue;
                }
                self.stopped.remove(&instance.id);
                tracing::info!(replica = %instance.name, instance = %instance.id,
                    "replica {} was stopped {since:?} ago but is still there; tracking it again", instance.name);
            }
            match self.tracked.get_mut(&instance.id) {
                Some(t) => {
                    if !instance.running
                        && !matches!(t.state, InstanceState::Exited | InstanceState::Draining)
                    {
                        tracing::warn!(event = "replica_exited", replica = %instance.name, instance = %instance.id,
                            "replica {} is gone; out of the ring", instance.name);
                        t.state = InstanceState::Exited;
                        t.probe = None;
                    }
                    t.instance = instance;
                }
                None => {
                    tracing::info!(event = "replica_adopted", replica = %instance.name, instance = %instance.id,
                        running = instance.running, "found replica {} already running; adopting it", instance.name);
                    self.track(instance, now);
                }
            }
        }
    }

    /// Starts tracking (and probing) an instance. A start problem of its name is over.
    fn track(&mut self, instance: Instance, now: Instant) {
        if instance.running {
            self.backoff.remove(&instance.name);
        }
        let state =
            if instance.running { InstanceState::Starting { since: now } } else { InstanceState::Exited };
        let backend =
            instance.addr.map(|addr| Arc::new(Backend::new(&instance.name, instance.replica_id, addr)));
        let probe = match (instance.running, instance.addr) {
            (true, Some(addr)) => Some(self.prober.spawn(instance.id.clone(), addr)),
            _ => None,
        };
        self.tracked
            .insert(instance.id.clone(), Tracked { instance, state, backend, probe, hold_alone: false });
    }

    fn observed(&self) -> Vec<Observed> {
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

    /// Carries out the stops, drains and retirements at once (each stop finishes in the
    /// background) and returns the starts, as (name, exercise id).
    fn begin_removals(
        &mut self,
        actions: Vec<Action>,
        manifest: &Manifest,
        names: &[String],
    ) -> Vec<(String, u32)> {
        let mut starts = Vec::new();
        if !actions.is_empty() {
            let at_ms =
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            self.last_actions =
                Some(LastReconcile { at_ms, actions: actions.iter().map(describe_action).collect() });
        }
        for action in actions {
            match action {
                Action::Stop { id, name, reason } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "stop").increment(1);
                    tracing::warn!(event = "replica_replaced", replica = %name, instance = %id, reason = ?reason,
                        "stopping replica {name} ({}); a replacement follows", describe(reason));
                    let leaves = !names.contains(&name);
                    // Dead, hung or never up: it stays out while it is listed.
                    self.begin_stop(&id, Duration::ZERO, manifest, leaves, true);
                }
                Action::Drain { id, name, reason } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "drain").increment(1);
                    tracing::info!(event = "replica_draining", replica = %name, instance = %id, reason = ?reason,
                        "replica {name} leaves the ring ({}); draining it", describe(reason));
                    let leaves = !names.contains(&name);
                    self.begin_stop(&id, manifest.replica.drain_timeout.get(), manifest, leaves, leaves);
                }
                Action::Retire { name } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "retire").increment(1);
                    tracing::info!(event = "replica_name_retired", replica = %name,
                        "replica {name} failed; its replacement gets a new name");
                    self.retired.insert(name);
                }
                Action::Start { name, replica_id } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "start").increment(1);
                    starts.push((name, replica_id));
                }
            }
        }
        starts
    }

    /// Starts replicas concurrently and tracks those that started; a failure backs off.
    async fn start_all(&mut self, starts: Vec<(String, u32)>, manifest: &Manifest, spec_hash: u64) {
        let mut running = JoinSet::new();
        for (name, replica_id) in starts {
            let runtime = Arc::clone(&self.runtime);
            let request = StartRequest {
                name,
                replica_id,
                spec_hash,
                spec: manifest.replica.clone(),
                health: manifest.health.clone(),
            };
            running.spawn(async move { (request.name.clone(), runtime.start(request).await) });
        }
        let now = Instant::now();
        while let Some(joined) = running.join_next().await {
            let Ok((name, result)) = joined else { continue };
            match result {
                Ok(None) => {
                    tracing::debug!(replica = %name, "the runtime's scheduler places replica {name}");
                    self.backoff.remove(&name);
                }
                Ok(Some(instance)) => {
                    tracing::info!(event = "replica_started", replica = %name, instance = %instance.id,
                        address = %instance.addr.map(|a| a.to_string()).unwrap_or_default(),
                        id = instance.replica_id, "started replica {name}");
                    self.backoff.remove(&name);
                    self.track(instance, now);
                }
                Err(error) => {
                    let entry = self.backoff.entry(name.clone()).or_insert(Backoff {
                        until: now,
                        next: BACKOFF_FIRST,
                        error: String::new(),
                        held_by_other: false,
                    });
                    entry.until = now + entry.next;
                    entry.error = error.to_string();
                    entry.held_by_other = matches!(error, RuntimeError::NameTaken { .. });
                    tracing::error!(event = "replica_start_failed", replica = %name, %error,
                        "{error}; retrying in {:?}", entry.next);
                    entry.next = (entry.next * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Takes an instance out of the ring and stops it in the background after its in-flight
    /// requests finished or `drain` passed. `leaves`: its replica leaves the cluster
    /// ([`Runtime::stop`]); otherwise its name stays wanted ([`Runtime::replace`]). `hold_alone`:
    /// see [`Tracked::hold_alone`].
    fn begin_stop(
        &mut self,
        id: &InstanceId,
        drain: Duration,
        manifest: &Manifest,
        leaves: bool,
        hold_alone: bool,
    ) {
        let Some(t) = self.tracked.get_mut(id) else {
            return;
        };
        t.state = InstanceState::Draining;
        t.probe = None;
        t.hold_alone = hold_alone;
        let backend = t.backend.clone();
        let runtime = Arc::clone(&self.runtime);
        let grace = manifest.replica.stop_timeout.get();
        let id = id.clone();
        self.stopping.spawn(async move {
            if let Some(backend) = backend {
                let deadline = Instant::now() + drain;
                while backend.inflight() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
            }
            let result =
                if leaves { runtime.stop(&id, grace).await } else { runtime.replace(&id, grace).await };
            (id, result)
        });
    }

    fn finish_stop(&mut self, done: Result<(InstanceId, Result<(), RuntimeError>), tokio::task::JoinError>) {
        let Ok((id, result)) = done else { return };
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
    }

    /// Takes one load sample; makes an autoscaling decision when one is due. True when the
    /// replica count changed (a pass should follow).
    fn sample_load(&mut self) -> bool {
        let inflight: u64 = self.ready_backends().map(|b| b.inflight()).sum();
        self.load.sum += inflight as f64;
        self.load.count += 1;
        let interval =
            self.source.current().manifest.autoscale.as_ref().map(|a| a.interval.get()).unwrap_or(RESYNC);
        if self.load.last_decision.elapsed() < interval {
            return false;
        }
        self.autoscale(false)
    }

    fn ready_backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.tracked.values().filter(|t| t.state == InstanceState::Ready).filter_map(|t| t.backend.as_ref())
    }

    /// Decides the replica count from the samples since the last decision (or at once on
    /// `demand`); logs every decision that is not a plain "no change"; true if the count changed.
    fn autoscale(&mut self, demand: bool) -> bool {
        let requests: u64 =
            self.tracked.values().filter_map(|t| t.backend.as_ref()).map(|b| b.requests()).sum();
        let (Some(scaler), Some(current)) = (&mut self.autoscaler, self.scaled) else { return false };
        let mut concurrency =
            if self.load.count == 0 { 0.0 } else { self.load.sum / f64::from(self.load.count) };
        if requests > self.load.requests_before {
            // Requests came: count at least one in flight, so short requests are activity too.
            concurrency = concurrency.max(1.0);
        }
        self.load =
            LoadSamples { sum: 0.0, count: 0, requests_before: requests, last_decision: Instant::now() };
        let decision = scaler.decide(Instant::now(), current, concurrency, demand);
        let target = scaler.policy().target_inflight;
        if decision.desired != current || decision.raw != current {
            tracing::info!(event = "autoscale", current, desired = decision.desired, raw = decision.raw,
                observed_total = decision.observed_total, observed_per_replica = decision.observed_per_replica,
                target, reason = ?decision.reason,
                "autoscaler: {current} -> {} replicas ({:.1} in flight, {:.2} per replica, target {target}; the rule says {}; {:?})",
                decision.desired, decision.observed_total, decision.observed_per_replica, decision.raw, decision.reason);
        }
        metrics::gauge!(telemetry::AUTOSCALER_DESIRED).set(f64::from(decision.desired));
        metrics::gauge!(telemetry::AUTOSCALER_OBSERVED).set(decision.observed_total);
        self.scaled = Some(decision.desired);
        decision.desired != current
    }

    /// Applies one heartbeat; true when the replica's state changed (a pass should follow).
    fn apply_health(&mut self, report: HealthReport) -> bool {
        let replace_after = self.source.current().manifest.health.replace_after;
        let Some(t) = self.tracked.get_mut(&report.instance) else {
            return false;
        };
        let name = &t.instance.name;
        let restored = report.result.is_ok() && t.backend.as_ref().is_some_and(|b| b.restore());
        match (t.state, report.result) {
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
                metrics::counter!(telemetry::HEARTBEAT_FAILURES, "replica" => name.clone()).increment(1);
                tracing::warn!(event = "replica_failing", replica = %name, reason = %why,
                    "replica {name} failed a heartbeat ({why}); out of the ring");
                t.state = InstanceState::Failing { failures: 1 };
                true
            }
            (InstanceState::Failing { failures }, Err(error)) => {
                let why = crate::error_chain(&error);
                metrics::counter!(telemetry::HEARTBEAT_FAILURES, "replica" => name.clone()).increment(1);
                let failures = failures.saturating_add(1);
                tracing::warn!(event = "replica_failing", replica = %name, failures, reason = %why,
                    "replica {name} failed {failures} heartbeats in a row ({why})");
                t.state = InstanceState::Failing { failures };
                failures >= replace_after
            }
            _ => false,
        }
    }

    /// Builds and stores a snapshot of the current state (`names` is `None` when the runtime could
    /// not be listed: the last names stay).
    fn publish(&mut self, desired: &DesiredManifest, names: Option<Vec<String>>) {
        let manifest = &desired.manifest;
        let previous = self.snapshots.load();
        let names = names.unwrap_or_else(|| previous.replica_names.clone());
        let spec_hash = self.runtime.spec_hash(manifest);

        // One ring member per wanted name: its best ready instance (current spec preferred).
        let mut best: BTreeMap<&str, &Tracked> = BTreeMap::new();
        for t in self.tracked.values().filter(|t| t.state == InstanceState::Ready && t.backend.is_some()) {
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
        let Some(ring) = self.ring_for(&members, manifest) else {
            return;
        };

        let mut taken: BTreeSet<String> = names.iter().cloned().collect();
        taken.extend(self.tracked.values().map(|t| t.instance.name.clone()));
        taken.extend(self.retired.iter().cloned());
        self.generation += 1;
        let count = |state: InstanceState| self.tracked.values().filter(|t| t.state == state).count() as f64;
        metrics::gauge!(telemetry::REPLICAS, "state" => "desired").set(names.len() as f64);
        metrics::gauge!(telemetry::REPLICAS, "state" => "ready").set(members.len() as f64);
        metrics::gauge!(telemetry::REPLICAS, "state" => "draining").set(count(InstanceState::Draining));
        metrics::gauge!(telemetry::REPLICAS, "state" => "exited").set(count(InstanceState::Exited));
        let starting =
            self.tracked.values().filter(|t| matches!(t.state, InstanceState::Starting { .. })).count();
        let failing =
            self.tracked.values().filter(|t| matches!(t.state, InstanceState::Failing { .. })).count();
        metrics::gauge!(telemetry::REPLICAS, "state" => "starting").set(starting as f64);
        metrics::gauge!(telemetry::REPLICAS, "state" => "failing").set(failing as f64);
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
                hold: manifest
                    .autoscale
                    .as_ref()
                    .filter(|a| a.min == 0)
                    .map(|a| Hold { queue: a.hold_queue, timeout: a.hold_timeout.get() })
                    .or(start_hold),
            },
            replicas: self.tracked.values().map(|t| status(t, spec_hash)).collect(),
            last_reconcile: self.last_actions.clone(),
            problems: self
                .backoff
                .iter()
                .map(|(name, b)| Problem { replica: name.clone(), error: b.error.clone() })
                .collect(),
            built_at: SystemTime::now(),
        });
    }

    /// The ring over `members`, rebuilt only when they or the hashing settings changed.
    fn ring_for(&mut self, members: &[Arc<Backend>], manifest: &Manifest) -> Option<Arc<Ring>> {
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
                    "ring now has {} replicas", key.len());
                self.ring_cache = Some(RingCache { members: key, config, ring: Arc::clone(&ring) });
                Some(ring)
            }
            Err(error) => {
                tracing::error!(event = "ring_build_failed", %error, "cannot build the ring; keeping the previous one");
                None
            }
        }
    }
}

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

/// An action in a sentence, for the status API.
fn describe_action(action: &Action) -> String {
    match action {
        Action::Start { name, replica_id } => format!("start {name} (id {replica_id})"),
        Action::Drain { name, reason, .. } => format!("drain {name}: {}", describe(*reason)),
        Action::Stop { name, reason, .. } => format!("stop {name}: {}", describe(*reason)),
        Action::Retire { name } => format!("retire the name {name}"),
    }
}

fn describe(reason: Reason) -> String {
    match reason {
        Reason::NotDesired => "no longer in the manifest".into(),
        Reason::Exited => "its process exited".into(),
        Reason::Unhealthy(n) => format!("{n} failed heartbeats in a row"),
        Reason::StartTimedOut => "no good heartbeat within the start timeout".into(),
        Reason::Superseded => "its successor with the new spec is ready".into(),
        Reason::Duplicate => "another instance with its name is preferred".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{Call, FakeRuntime};

    /// A controller over a fake runtime, running on its own task.
    struct Harness {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        runtime: Arc<FakeRuntime>,
        snapshots: Arc<Snapshots>,
        source: Arc<ManifestSource>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        trigger: Trigger,
    }

    fn manifest(replicas: u32, extra: &str) -> String {
        manifest_naming(replicas, "same", extra)
    }

    fn manifest_naming(replicas: u32, replacement: &str, extra: &str) -> String {
        format!(
            "name: t\nreplicas: {replicas}\nlisten: 127.0.0.1:0\nreplica:\n  runtime: process\n  drain_timeout: 5s\n  \
             start_timeout: 5s\n  replacement_name: {replacement}\nhealth:\n  interval: 50ms\n  timeout: 40ms\n  \
             replace_after: 3\n{extra}"
        )
    }

    impl Harness {
        fn start(text: &str) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.yaml");
            std::fs::write(&path, text).unwrap();
            let trigger = Trigger::new();
            let runtime = Arc::new(FakeRuntime::new(trigger.clone()));
            let source = ManifestSource::open(&path).unwrap();
            let snapshots = Arc::new(Snapshots::default());
            let controller = Controller::new(
                Arc::clone(&runtime),
                Arc::clone(&source),
                Arc::clone(&snapshots),
                trigger.clone(),
            );
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(controller.run(shutdown.clone()));
            Harness { _dir: dir, path, runtime, snapshots, source, shutdown, task, trigger }
        }

        fn ring(&self) -> Vec<String> {
            let mut names: Vec<String> =
                self.snapshots.load().members.iter().map(|b| b.name.clone()).collect();
            names.sort();
            names
        }

        async fn until(&self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !condition(self) {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}: ring {:?}, calls {:?}",
                    self.ring(),
                    self.runtime.calls()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        async fn apply(&self, text: &str) {
            std::fs::write(&self.path, text).unwrap();
            self.source.apply_text(text).unwrap();
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap();
        }
    }

    impl Harness {
        /// Asks for a pass and waits until it has published its snapshot.
        async fn next_pass(&self) {
            let target = self.snapshots.load().generation + 1;
            self.trigger.fire();
            self.until("a pass", |h| h.snapshots.load().generation >= target).await;
        }

        fn stops_of(&self, name: &str) -> usize {
            self.runtime.calls().iter().filter(|c| **c == Call::Stop(name.into())).count()
        }
    }

    #[tokio::test]
    async fn a_replica_that_left_but_is_still_listed_stays_out_of_the_ring() {
        let h = Harness::start(&manifest(2, "hostnames: [a, b]\n"));
        h.until("two ready", |h| h.ring() == ["a", "b"]).await;
        h.runtime.set_retire_later(true);
        h.apply(&manifest(1, "hostnames: [a, b]\n")).await;
        h.until("b stopped", |h| h.stops_of("b") == 1).await;
        // The runtime still lists b, and b still answers: pass after pass, it is neither taken
        // back into the ring nor stopped again.
        for _ in 0..10 {
            h.next_pass().await;
            assert_eq!(h.ring(), ["a"]);
        }
        assert_eq!(h.stops_of("b"), 1, "b was stopped again and again");
        h.runtime.retire_stopped();
        h.until("b gone", |h| h.runtime.running() == ["a"]).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn a_superseded_instance_still_listed_stays_out_while_its_successor_serves() {
        let h = Harness::start(&manifest(1, "hostnames: [a]\n"));
        h.until("a ready", |h| h.ring() == ["a"]).await;
        h.runtime.set_retire_later(true);
        h.runtime.set_spec_hash(2);
        h.until("the old a stopped", |h| h.stops_of("a") == 1).await;
        // Tracked: only the successor (the old instance is held back, not tracked again).
        let current = |h: &Harness| {
            let replicas = &h.snapshots.load().replicas;
            replicas.len() == 1 && replicas[0].current_spec
        };
        for _ in 0..10 {
            h.next_pass().await;
            assert_eq!(h.ring(), ["a"]);
            assert!(current(&h), "the old instance came back into the ring");
        }
        assert_eq!(h.stops_of("a"), 1, "the old instance was stopped again and again");
        assert_eq!(h.runtime.running(), ["a", "a"], "the runtime still lists both");
        h.runtime.retire_stopped();
        h.until("the old a gone", |h| h.runtime.running() == ["a"]).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn converges_to_the_manifest_and_publishes_the_ring() {
        let h = Harness::start(&manifest(3, "hostnames: [a, b]\n"));
        h.until("three ready", |h| h.ring() == ["a", "b", "t-1"]).await;
        assert_eq!(h.snapshots.load().replica_names, ["a", "b", "t-1"]);
        assert_eq!(
            h.runtime.calls(),
            [Call::Start("a".into(), 1), Call::Start("b".into(), 2), Call::Start("t-1".into(), 3)]
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn a_crashed_replica_leaves_the_ring_and_comes_back_under_its_name() {
        let h = Harness::start(&manifest(2, "hostnames: [a, b]\n"));
        h.until("two ready", |h| h.ring().len() == 2).await;
        h.runtime.crash("b");
        h.until("b replaced", |h| {
            h.runtime.calls().iter().filter(|c| **c == Call::Start("b".into(), 2)).count() == 2
        })
        .await;
        h.until("b back in the ring", |h| h.ring() == ["a", "b"]).await;
        assert!(h.runtime.calls().contains(&Call::Stop("b".into())), "the dead instance is cleaned up");
        h.stop().await;
    }

    #[tokio::test]
    async fn a_hung_replica_leaves_the_ring_at_once_and_is_replaced_after_three_failures() {
        let h = Harness::start(&manifest(2, "hostnames: [a, b]\n"));
        h.until("two ready", |h| h.ring().len() == 2).await;
        let hung_at = Instant::now();
        h.runtime.hang("a");
        h.until("a out of the ring", |h| h.ring() == ["b"]).await;
        let out_after = hung_at.elapsed();
        h.until("a restarted", |h| {
            h.runtime.calls().iter().filter(|c| matches!(c, Call::Start(n, _) if n == "a")).count() == 2
        })
        .await;
        h.until("a back", |h| h.ring() == ["a", "b"]).await;
        assert!(out_after < Duration::from_millis(500), "left the ring after {out_after:?}");
        h.stop().await;
    }

    #[tokio::test]
    async fn in_exercise_naming_a_replacement_gets_a_new_name() {
        let h = Harness::start(&manifest_naming(2, "new", "hostnames: [a, b]\n"));
        h.until("two ready", |h| h.ring().len() == 2).await;
        h.runtime.crash("b");
        h.until("replaced by t-1", |h| h.ring() == ["a", "t-1"]).await;
        assert_eq!(h.snapshots.load().replica_names, ["a", "t-1"]);
        assert!(
            h.runtime.calls().contains(&Call::Start("t-1".into(), 2)),
            "it takes the free id 2: {:?}",
            h.runtime.calls()
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn a_failed_start_is_retried_after_a_backoff() {
        let h = Harness::start(&manifest(0, ""));
        h.runtime.fail_next_start("t-1");
        h.apply(&manifest(1, "")).await;
        h.until("t-1 ready", |h| h.ring() == ["t-1"]).await;
        let starts = h.runtime.calls().iter().filter(|c| matches!(c, Call::Start(..))).count();
        assert_eq!(starts, 2, "one failure, one retry: {:?}", h.runtime.calls());
        h.stop().await;
    }

    #[tokio::test]
    async fn an_unreachable_runtime_keeps_the_ring_and_is_retried() {
        let h = Harness::start(&manifest(2, "hostnames: [a, b]\n"));
        h.until("two ready", |h| h.ring().len() == 2).await;
        h.runtime.set_unreachable(true);
        let generation = h.snapshots.load().generation;
        h.apply(&manifest(3, "hostnames: [a, b]\n")).await;
        h.until("a pass while unreachable", |h| h.snapshots.load().generation > generation).await;
        assert_eq!(h.ring(), ["a", "b"], "the replicas that run keep serving");
        assert_eq!(h.runtime.running().len(), 2, "nothing is started blind");
        h.runtime.set_unreachable(false);
        h.until("the third once reachable", |h| h.ring() == ["a", "b", "t-1"]).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn scaling_down_takes_a_replica_out_of_the_ring_and_stops_it_only_after_its_requests() {
        let h = Harness::start(&manifest(2, "hostnames: [a, b]\n"));
        h.until("two ready", |h| h.ring().len() == 2).await;
        let b = h.snapshots.load().members.iter().find(|m| m.name == "b").cloned().unwrap();
        let in_flight = b.begin_request();
        h.apply(&manifest(1, "hostnames: [a, b]\n")).await;
        h.until("b out of the ring", |h| h.ring() == ["a"]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !h.runtime.calls().contains(&Call::Stop("b".into())),
            "b was stopped with a request in flight"
        );
        drop(in_flight);
        h.until("b stopped", |h| h.runtime.calls().contains(&Call::Stop("b".into()))).await;
        h.stop().await;
    }
}
