//! Carrying out the plan's actions against the runtime: stops and drains in owned background
//! tasks (so a slow stop never stalls the loop), starts concurrently, and a capped backoff for a
//! start that failed.
//!
//! What an action means is decided by the pure plan; this file only does it, notes the outcome in
//! the inventory, and says in words what it did.

use super::inventory::Inventory;
use super::plan::{Action, Reason};
use super::wake::Wake;
use crate::ids::InstanceId;
use crate::manifest::Manifest;
use crate::runtime::{Runtime, RuntimeError, StartRequest};
use crate::snapshot::Problem;
use crate::telemetry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

/// First and largest wait before retrying a start that failed.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a drain looks at the in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What a drain-and-stop task yields: the instance, and whether the runtime stopped it.
pub(super) type StopOutcome = (InstanceId, Result<(), RuntimeError>);

/// A start that failed: when to try again, how long to wait after the next failure, and why it
/// failed (reported in the status until a start succeeds).
struct Backoff {
    until: Instant,
    next: Duration,
    error: String,
    /// The name is held by something the runtime does not own.
    held_by_other: bool,
    /// An instance started but never answered: the problem lasts until one is ready, not
    /// merely started.
    until_ready: bool,
}

/// The starts that wait for their backoff, as the plan reads them.
pub(super) struct Retries {
    /// Names whose next start waits until then.
    pub(super) until: BTreeMap<String, Instant>,
    /// Names held by something the runtime does not own.
    pub(super) held_by_others: BTreeSet<String>,
}

/// Does what the plan decided, and remembers what failed.
pub(super) struct Executor<R: Runtime> {
    runtime: Arc<R>,
    backoff: BTreeMap<String, Backoff>,
    /// Drain-and-stop tasks; each yields the instance it stopped.
    stopping: JoinSet<StopOutcome>,
}

impl<R: Runtime> Executor<R> {
    /// An executor acting on `runtime`, with nothing failed and nothing stopping.
    pub(super) fn new(runtime: Arc<R>) -> Executor<R> {
        Executor { runtime, backoff: BTreeMap::new(), stopping: JoinSet::new() }
    }

    /// Waits for the next drain-and-stop task to end (`None` while none runs).
    pub(super) async fn next_stopped(&mut self) -> Option<Result<StopOutcome, JoinError>> {
        self.stopping.join_next().await
    }

    /// A start problem of these names is over (an instance of theirs runs).
    pub(super) fn started(&mut self, names: &[String]) {
        for name in names {
            self.forget_if_started(name);
        }
    }

    /// Any problem of these names is over: an instance of theirs answers its heartbeats.
    pub(super) fn answered<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        for name in names {
            self.backoff.remove(name);
        }
    }

    /// Forgets a start problem of `name`, unless it is one that only a ready instance ends.
    fn forget_if_started(&mut self, name: &str) {
        if self.backoff.get(name).is_some_and(|b| !b.until_ready) {
            self.backoff.remove(name);
        }
    }

    /// Keeps the backoff of the wanted names only: a name no longer wanted has nothing left to
    /// retry. Returns what the plan needs of the rest.
    pub(super) fn retries(&mut self, names: &[String]) -> Retries {
        self.backoff.retain(|name, _| names.contains(name));
        Retries {
            until: self.backoff.iter().map(|(k, b)| (k.clone(), b.until)).collect(),
            held_by_others: self
                .backoff
                .iter()
                .filter(|(_, b)| b.held_by_other)
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    /// The replicas that cannot be started, and why, for the status.
    pub(super) fn problems(&self) -> Vec<Problem> {
        self.backoff
            .iter()
            .map(|(name, b)| Problem { replica: name.clone(), error: b.error.clone() })
            .collect()
    }

    /// Carries out the stops, drains and retirements at once (each stop finishes in the
    /// background) and returns the starts, as (name, exercise id).
    pub(super) fn begin_removals(
        &mut self,
        actions: Vec<Action>,
        manifest: &Manifest,
        names: &[String],
        inventory: &mut Inventory,
        wake: &Wake,
    ) -> Vec<(String, u32)> {
        let mut starts = Vec::new();
        for action in actions {
            match action {
                Action::Stop { id, name, reason } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "stop").increment(1);
                    tracing::warn!(event = "replica_replaced", replica = %name, instance = %id, reason = ?reason,
                        woken_by = %wake, "stopping replica {name} ({}); a replacement follows", describe(reason));
                    if reason == Reason::StartTimedOut {
                        // Started, yet never answered: a problem of the application (not
                        // listening on replica.port, a wrong health path), reported and backed
                        // off like a start that failed.
                        let error = never_answered(&name, manifest);
                        let retry_in = self.back_off(&name, error.clone(), false, true, Instant::now());
                        tracing::error!(event = "replica_never_answered", replica = %name, instance = %id,
                            woken_by = %wake, "{error}; replacing it in {retry_in:?}");
                    }
                    let leaves = !names.contains(&name);
                    // Dead, hung or never up: it stays out while it is listed.
                    self.begin_stop(inventory, &id, Duration::ZERO, manifest, leaves, true);
                }
                Action::Drain { id, name, reason } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "drain").increment(1);
                    tracing::info!(event = "replica_draining", replica = %name, instance = %id, reason = ?reason,
                        woken_by = %wake, "replica {name} leaves the ring ({}); draining it", describe(reason));
                    let leaves = !names.contains(&name);
                    let drain = manifest.replica.drain_timeout.get();
                    self.begin_stop(inventory, &id, drain, manifest, leaves, leaves);
                }
                Action::Retire { name } => {
                    metrics::counter!(telemetry::RECONCILE_ACTIONS, "kind" => "retire").increment(1);
                    tracing::info!(event = "replica_name_retired", replica = %name, woken_by = %wake,
                        "replica {name} failed; its replacement gets a new name");
                    inventory.retire(name);
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
    pub(super) async fn start_all(
        &mut self,
        starts: Vec<(String, u32)>,
        manifest: &Manifest,
        spec_hash: u64,
        inventory: &mut Inventory,
        wake: &Wake,
    ) {
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
                    tracing::debug!(replica = %name, woken_by = %wake, "the runtime's scheduler places replica {name}");
                    self.forget_if_started(&name);
                }
                Ok(Some(instance)) => {
                    tracing::info!(event = "replica_started", replica = %name, instance = %instance.id,
                        address = %instance.addr.map(|a| a.to_string()).unwrap_or_default(),
                        id = instance.replica_id, woken_by = %wake, "started replica {name}");
                    self.forget_if_started(&name);
                    inventory.track(instance, now);
                }
                Err(error) => {
                    let held_by_other = matches!(error, RuntimeError::NameTaken { .. });
                    let retry_in = self.back_off(&name, error.to_string(), held_by_other, false, now);
                    tracing::error!(event = "replica_start_failed", replica = %name, %error, woken_by = %wake,
                        "{error}; retrying in {retry_in:?}");
                }
            }
        }
    }

    /// Notes that `name` failed to come up because of `error`: its next start waits (a wait
    /// that doubles with each failure, up to a cap), and the status reports it until a start
    /// succeeds. Returns the wait.
    fn back_off(
        &mut self,
        name: &str,
        error: String,
        held_by_other: bool,
        until_ready: bool,
        now: Instant,
    ) -> Duration {
        let entry = self.backoff.entry(name.to_owned()).or_insert(Backoff {
            until: now,
            next: BACKOFF_FIRST,
            error: String::new(),
            held_by_other: false,
            until_ready,
        });
        entry.until_ready = until_ready;
        let wait = entry.next;
        entry.until = now + wait;
        entry.error = error;
        entry.held_by_other = held_by_other;
        entry.next = (entry.next * 2).min(BACKOFF_MAX);
        wait
    }

    /// Takes an instance out of the ring and stops it in the background after its in-flight
    /// requests finished or `drain` passed. `leaves`: its replica leaves the cluster
    /// ([`Runtime::stop`]); otherwise its name stays wanted ([`Runtime::replace`]). `hold_alone`:
    /// whether it stays out of the ring while still listed even with no other ready instance of
    /// its name.
    fn begin_stop(
        &mut self,
        inventory: &mut Inventory,
        id: &InstanceId,
        drain: Duration,
        manifest: &Manifest,
        leaves: bool,
        hold_alone: bool,
    ) {
        let Some(t) = inventory.begin_draining(id, hold_alone) else {
            return;
        };
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
                // The tunnels still open to it close now, before the replica stops: their
                // clients see a close, not a reset.
                backend.close_tunnels();
            }
            let result =
                if leaves { runtime.stop(&id, grace).await } else { runtime.replace(&id, grace).await };
            (id, result)
        });
    }
}

/// Why a replica that started never joined the ring, with what to check.
fn never_answered(name: &str, manifest: &Manifest) -> String {
    let health = &manifest.health;
    let port = match manifest.replica.runtime {
        crate::manifest::RuntimeKind::Process if manifest.replica.command.is_some() => {
            "the port given as {port}".to_owned()
        }
        _ => format!("port {}", manifest.replica.port),
    };
    let heartbeat = match health.kind {
        crate::manifest::HealthKind::Tcp => "a connect".to_owned(),
        crate::manifest::HealthKind::Http => format!("GET {} answered {}", health.path, health.status),
        crate::manifest::HealthKind::Grpc => "grpc.health.v1.Health/Check answered SERVING".to_owned(),
    };
    format!(
        "replica {name} gave no good heartbeat ({heartbeat}) within replica.start_timeout ({}): \
         check that the application listens on {port} (replica.port) and answers health.path",
        manifest.replica.start_timeout
    )
}

/// An action in a sentence, for the status API.
pub(super) fn describe_action(action: &Action) -> String {
    match action {
        Action::Start { name, replica_id } => format!("start {name} (id {replica_id})"),
        Action::Drain { name, reason, .. } => format!("drain {name}: {}", describe(*reason)),
        Action::Stop { name, reason, .. } => format!("stop {name}: {}", describe(*reason)),
        Action::Retire { name } => format!("retire the name {name}"),
    }
}

/// Why an instance goes, in words.
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
