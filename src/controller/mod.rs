//! The reconcile loop: makes the running replicas match the manifest, and publishes the routing
//! snapshot the proxy reads.
//!
//! Level-triggered: every pass lists the runtime's instances, merges them into the inventory
//! (`inventory.rs`), resolves the wanted names, asks the pure [`plan`](plan::plan) what to do,
//! carries it out (`execute.rs`, with the backoff of failed starts), and publishes a fresh
//! snapshot (`publish.rs`). Events only say "look now" (`wake.rs`): a manifest version, the
//! runtime's trigger (a replica exited), a heartbeat that changed a replica's state, a finished
//! drain, an autoscaling decision (`scaling.rs`), and a periodic resync as the safety net; the
//! reason reaches the log lines of the pass it caused as `woken_by`. One loop, one task: no
//! replica is ever reconciled concurrently. Stopping (drain, then stop) runs in owned background
//! tasks so a slow stop never stalls the loop.

pub mod autoscale;
mod execute;
pub mod health;
mod inventory;
pub mod plan;
mod publish;
mod scaling;
mod wake;

use crate::manifest::Manifest;
use crate::manifest::source::Desired as DesiredManifest;
use crate::runtime::Runtime;
use crate::snapshot::Snapshots;
use crate::telemetry;
use crate::trigger::Trigger;
use execute::{Executor, Retries};
use health::HealthReport;
use inventory::Inventory;
use plan::Action;
use publish::{Published, Publisher};
use scaling::Scaling;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wake::{Wake, WakeUps};

/// The reconcile loop's state. Build with [`Controller::new`], then [`Controller::run`].
pub struct Controller<R: Runtime> {
    runtime: Arc<R>,
    /// The desired state of the one service it reconciles (`ManifestSource::service`).
    desired: watch::Receiver<DesiredManifest>,
    trigger: Trigger,
    /// Every heartbeat's result, from the inventory's probe tasks.
    reports: mpsc::Receiver<HealthReport>,
    /// The manifest version the last pass worked from, and the names it listed.
    applied: Option<(u64, Vec<String>)>,
    inventory: Inventory,
    executor: Executor<R>,
    scaling: Scaling,
    publisher: Publisher,
}

impl<R: Runtime> Controller<R> {
    /// A controller for `runtime`, following `desired` (one service's desired state, from
    /// `ManifestSource::service`), publishing to `snapshots`, woken by `trigger` (the same
    /// trigger the runtime and the proxy fire).
    pub fn new(
        runtime: Arc<R>,
        desired: watch::Receiver<DesiredManifest>,
        snapshots: Arc<Snapshots>,
        trigger: Trigger,
    ) -> Self {
        let (reports_tx, reports) = mpsc::channel(4096);
        let inventory = Inventory::new(&desired.borrow().manifest, reports_tx);
        Controller {
            inventory,
            executor: Executor::new(Arc::clone(&runtime)),
            scaling: Scaling::new(Arc::clone(&snapshots)),
            publisher: Publisher::new(snapshots),
            runtime,
            desired,
            trigger,
            reports,
            applied: None,
        }
    }

    /// The desired state now.
    fn current(&self) -> DesiredManifest {
        self.desired.borrow().clone()
    }

    /// Runs until `shutdown`; then stops probing (the caller decides what happens to replicas).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut wakeups = WakeUps::new(self.desired.clone());
        let mut wake = Wake::Start;
        loop {
            self.reconcile(&wake).await;
            match self.next_wake(&mut wakeups, &shutdown).await {
                Some(next) => wake = next,
                None => return,
            }
        }
    }

    /// Waits for the next reason to run a pass, applying heartbeats and load samples that do not
    /// call for one on the way. `None`: shut down (or the manifest source is gone).
    async fn next_wake(&mut self, wakeups: &mut WakeUps, shutdown: &CancellationToken) -> Option<Wake> {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                changed = wakeups.versions.changed() => {
                    changed.ok()?;
                    return Some(Wake::Manifest { version: wakeups.versions.borrow_and_update().version });
                }
                () = self.trigger.fired() => return Some(Wake::Trigger),
                Some(done) = self.executor.next_stopped() => {
                    let name = match done {
                        Ok((id, result)) => self.inventory.stop_finished(id, result),
                        Err(_) => String::new(),
                    };
                    return Some(Wake::Stopped { name });
                }
                Some(report) = self.reports.recv() => {
                    let replace_after = self.current().manifest.health.replace_after;
                    if let Some(name) = self.inventory.apply_health(report, replace_after) {
                        return Some(Wake::Health { name });
                    }
                }
                _ = wakeups.resync.tick() => return Some(Wake::Resync),
                _ = wakeups.sample.tick(), if self.scaling.is_active() => {
                    if self.scaling.sample(&self.inventory, &self.current().manifest) {
                        return Some(Wake::Load);
                    }
                }
            }
        }
    }

    /// One level-triggered pass (repeated at once when it retired a name, so the replacement
    /// starts in the same wake-up).
    async fn reconcile(&mut self, wake: &Wake) {
        for _ in 0..3 {
            if !self.reconcile_once(wake).await {
                break;
            }
        }
    }

    /// Returns true when another pass should follow at once.
    async fn reconcile_once(&mut self, wake: &Wake) -> bool {
        metrics::counter!(telemetry::RECONCILE_PASSES).increment(1);
        let desired = self.current();
        let manifest = Arc::clone(&desired.manifest);
        self.take_version(&desired, wake);
        let now = Instant::now();
        // List, and merge what runs into the inventory.
        let list = match self.runtime.list().await {
            Ok(list) => list,
            Err(error) => {
                tracing::error!(event = "runtime_unavailable", %error, woken_by = %wake,
                    "cannot list replicas; retrying");
                self.publish(&desired, None, wake);
                return false;
            }
        };
        let adopted = self.inventory.merge(list, now, manifest.replica.start_timeout.get(), wake);
        self.executor.started(&adopted);
        self.scaling.on_demand(&self.inventory);
        // Resolve the wanted names.
        let observed = self.inventory.observed();
        let replicas = self.scaling.replicas(&manifest);
        let names = plan::resolve_names(
            &manifest.name,
            replicas,
            &manifest.hostnames,
            self.inventory.retired(),
            &observed,
        );
        // Plan.
        let spec_hash = self.runtime.spec_hash(&manifest);
        // A name's problem is over once an instance of the current spec answers.
        let ready =
            observed.iter().filter(|o| o.state == plan::InstanceState::Ready && o.spec_hash == spec_hash);
        self.executor.answered(ready.map(|o| o.name.as_str()));
        let retries = self.executor.retries(&names);
        let input = plan_input(&manifest, &names, spec_hash, &retries, self.runtime.replaces_failed());
        let actions = plan::plan(&input, &observed, now);
        // Execute: removals at once, starts after the ring changed.
        self.runtime.remove_idle(&names).await;
        let again = actions.iter().any(|a| matches!(a, Action::Retire { .. }));
        self.publisher.record(&actions);
        let starts = self.executor.begin_removals(actions, &manifest, &names, &mut self.inventory, wake);
        // Publish: the ring changes now (a replica gone, one draining); starting replacements can
        // take a while and must not hold that back.
        self.publish(&desired, Some(names.clone()), wake);
        if !starts.is_empty() {
            self.executor.start_all(starts, &manifest, spec_hash, &mut self.inventory, wake).await;
            self.publish(&desired, Some(names), wake);
        }
        again
    }

    /// Notes a new manifest version: new probe settings, names listed anew are no longer
    /// retired, and a count set by hand restarts the autoscaler from it.
    fn take_version(&mut self, desired: &DesiredManifest, wake: &Wake) {
        if self.applied.as_ref().is_some_and(|(v, _)| *v == desired.version) {
            return;
        }
        let manifest = &desired.manifest;
        if let Some((_, before)) = &self.applied {
            for name in manifest.hostnames.iter().filter(|n| !before.contains(n)) {
                self.inventory.unretire(name);
            }
        }
        self.inventory.follow_probe_settings(manifest);
        self.runtime.follow(manifest);
        tracing::info!(event = "desired_state", version = desired.version, replicas = manifest.replicas,
            hostnames = ?manifest.hostnames, woken_by = %wake, "working toward manifest version {}", desired.version);
        let hostnames_changed = self.applied.as_ref().is_none_or(|(_, before)| *before != manifest.hostnames);
        self.scaling.take_version(manifest, hostnames_changed);
        self.applied = Some((desired.version, manifest.hostnames.clone()));
    }

    /// Publishes a snapshot of the inventory (`names` is `None` when the runtime could not be
    /// listed: the last names stay).
    fn publish(&mut self, desired: &DesiredManifest, names: Option<Vec<String>>, wake: &Wake) {
        let published = Published {
            desired,
            names,
            spec_hash: self.runtime.spec_hash(&desired.manifest),
            problems: self.executor.problems(),
        };
        self.publisher.publish(published, &self.inventory, wake);
    }
}

/// What the plan needs of the manifest, the wanted names and the starts that back off.
fn plan_input<'a>(
    manifest: &Manifest,
    names: &'a [String],
    spec_hash: u64,
    retries: &'a Retries,
    replaces_failed: bool,
) -> plan::Desired<'a> {
    plan::Desired {
        names,
        spec_hash,
        replace_after: if replaces_failed { manifest.health.replace_after } else { u32::MAX },
        start_timeout: manifest.replica.start_timeout.get(),
        replacement: manifest.replica.replacement_name,
        backoff: &retries.until,
        held_by_others: &retries.held_by_others,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::source::ManifestSource;
    use crate::runtime::fake::{Call, FakeRuntime};
    use std::sync::Mutex;
    use std::time::Duration;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::SubscriberExt;

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
                source.service(0).unwrap(),
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

    /// The `woken_by` field of every `desired_state` log line, in order.
    #[derive(Clone, Default)]
    struct WokenBy(Arc<Mutex<Vec<String>>>);

    #[derive(Default)]
    struct Fields {
        event: Option<String>,
        woken_by: Option<String>,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.record_debug(field, &value);
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let value = format!("{value:?}").trim_matches('"').to_owned();
            match field.name() {
                "event" => self.event = Some(value),
                "woken_by" => self.woken_by = Some(value),
                _ => {}
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WokenBy {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if fields.event.as_deref() == Some("desired_state") {
                self.0.lock().unwrap().push(fields.woken_by.unwrap_or_default());
            }
        }
    }

    #[tokio::test]
    async fn a_pass_caused_by_a_manifest_edit_logs_the_manifest_version_as_its_reason() {
        let seen = WokenBy::default();
        let _logs = tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, manifest(1, "hostnames: [a]\n")).unwrap();
        let trigger = Trigger::new();
        let source = ManifestSource::open(&path).unwrap();
        let mut controller = Controller::new(
            Arc::new(FakeRuntime::new(trigger.clone())),
            source.service(0).unwrap(),
            Arc::new(Snapshots::default()),
            trigger,
        );
        // The loop's own steps, driven by hand: a first pass, an edit, the wake-up it causes.
        let mut wakeups = WakeUps::new(source.service(0).unwrap());
        controller.reconcile(&Wake::Start).await;
        source.apply_text(&manifest(2, "hostnames: [a]\n")).unwrap();
        let version = source.current().version;
        let wake = controller.next_wake(&mut wakeups, &CancellationToken::new()).await;
        assert_eq!(wake, Some(Wake::Manifest { version }));
        controller.reconcile(&Wake::Manifest { version }).await;
        assert_eq!(*seen.0.lock().unwrap(), ["start".to_string(), format!("manifest version {version}")]);
    }
}
