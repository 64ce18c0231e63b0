//! Replicas as Docker Swarm services (`replica.runtime: swarm`), through the same Docker API
//! client and labels as the Docker runtime.
//!
//! Each replica is one service named after the replica (its hostname), with one task: replicated
//! mode with `replicas: 1`, endpoint mode `dnsrr` (no virtual IP: ringlb balances, not IPVS),
//! restart policy `any`, updates `start-first`, on the overlay network `replica.network`. The
//! service and its containers carry the labels `ringlb.cluster`, `ringlb.hostname`, `ringlb.id`,
//! `ringlb.network`, `ringlb.port` and `ringlb.spec`.
//!
//! Who does what:
//! - **Swarm runs the tasks.** A dead task is restarted by Swarm, never by ringlb, so the two never
//!   fight over a replica. `start` creates the service, or updates it when its spec is outdated
//!   (Swarm then rolls it, the new task beside the old one), and returns at once: the task shows
//!   up in [`list`](Runtime::list) when it runs.
//! - **ringlb routes.** An instance is one task that Swarm wants running and whose container
//!   runs (actual state `starting` or `running`), at its address on the overlay network;
//!   ringlb's heartbeats take it in and out of the ring. A task that keeps running but fails
//!   `health.replace_after` heartbeats in a row is force-updated ([`replace`](Runtime::replace)):
//!   Swarm starts a fresh one.
//! - **Health check.** Each task also has a container health check (`ringlb probe`, the same
//!   heartbeat from inside the container, every [`check_interval`](spec::check_interval)). Swarm calls a task
//!   `running` only once it passes, and a start-first update stops the old task only then: by
//!   that time ringlb, which probes `starting` tasks itself, has the new one in its ring and the
//!   old one out of it. So a roll never leaves a name out of the ring. (A new spec whose tasks
//!   fail still costs the first rolled replica: Swarm replaces its old task when the new one
//!   fails; the controller's roll then goes no further.) Swarm restarts a task that fails the
//!   check `replace_after` times, which takes at least twice as long as ringlb's own
//!   replacement: it is the backstop while no load balancer runs.
//! - **Addresses.** A task's overlay address is the one Swarm allocated to it
//!   (`NetworksAttachments` of `GET /tasks`, read with types of our own: bollard's task type
//!   lacks the field). It is known before the container starts and for tasks on every node;
//!   ringlb must be attached to the overlay network to reach it (it runs as a container or
//!   service on it).
//! - **Watching.** Container events with the cluster label (local tasks dying), service events,
//!   and a poll of the task list every [`POLL_EVERY`](observe::POLL_EVERY) (Swarm has no task events) fire the
//!   controller's trigger.
//! - **Only ours**, as with containers: a service without the cluster label is never updated or
//!   removed; a foreign service holding a replica's name is reported and left alone.
//! - **No pulls.** The service names the image by its local ID, so a task never tries a
//!   registry; other nodes need the image loaded (`docker save | docker load`) or a registry.
//! - **Managers only.** Services can only be managed through a Swarm manager; connecting to an
//!   engine that is not one is an error saying so.
//!
//! This file holds the runtime and its calls; `view.rs` reads the engine's task list, `spec.rs`
//! makes a replica's service spec, health check and spec hash, and `observe.rs` looks at the
//! swarm and polls it. What it shares with the Docker runtime is in [`super::engine`].

mod observe;
mod spec;
mod view;

use super::engine::api::EngineApi;
use super::engine::events::{container_events, follow_events, service_events};
use super::engine::labels::{self, LABEL_CLUSTER, LABEL_SPEC};
use super::engine::names::{ForeignName, Holder, is_ours};
use super::engine::network::{NetworkKind, Networks};
use super::engine::{self, EngineError, describe, status_of};
use super::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use crate::trigger::Trigger;
use bollard::Docker;
use bollard::models::{
    LocalNodeState, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskState,
};
use bollard::query_parameters::{KillContainerOptionsBuilder, ListTasksOptionsBuilder, UpdateServiceOptions};
use observe::{observe, poll_tasks};
use spec::{service_spec, spec_hash_of};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use view::{parse_rfc3339_seconds, task_labels};

/// Runs replicas as Swarm services of one cluster.
pub struct SwarmRuntime {
    docker: Docker,
    /// For the task list with its network attachments.
    api: EngineApi,
    cluster: String,
    /// Event followers and the task poller; aborted when the runtime is dropped.
    watchers: Vec<JoinHandle<()>>,
    /// Creates the overlay networks replicas serve on, one at a time (two may start at once).
    networks: Networks,
    /// The service of each task seen in the last listing, so that a replica can be removed by
    /// its service even when the task itself is already gone.
    service_of: Mutex<HashMap<String, String>>,
    /// Tasks already reported as running without a known address (reported once each).
    unaddressed: Mutex<HashSet<String>>,
    /// Services that ran no task at the last listing: (service id, replica name).
    idle: Mutex<Vec<(String, String)>>,
}

impl Drop for SwarmRuntime {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

/// Checks that `docker` is a Swarm manager.
async fn require_manager(docker: &Docker) -> Result<(), RuntimeError> {
    let info = docker.info().await.map_err(|e| {
        RuntimeError::unavailable(EngineError::call("cannot read the engine's information", e))
    })?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
    if state != LocalNodeState::ACTIVE {
        let state = if state == LocalNodeState::EMPTY { "inactive".to_string() } else { state.to_string() };
        return Err(RuntimeError::unavailable(EngineError::Unsuitable(format!(
            "replica.runtime is swarm, but this Docker engine is not part of an active swarm (state: {state}); \
             run `docker swarm init` (or `make run-swarm`), or point DOCKER_HOST at a swarm manager"
        ))));
    }
    if swarm.control_available != Some(true) {
        return Err(RuntimeError::unavailable(EngineError::Unsuitable(
            "replica.runtime is swarm, but this Docker engine is a swarm worker, not a manager: only a manager \
             can create and remove services; run ringlb on a manager node (placement constraint \
             node.role==manager) or point DOCKER_HOST at a manager"
                .into(),
        )));
    }
    Ok(())
}

impl SwarmRuntime {
    /// Connects to the engine as the Docker runtime does (`DOCKER_HOST`), checks that it is a Swarm manager, and
    /// starts watching the cluster's services and tasks.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`] when the engine does not answer or is not a manager.
    pub async fn connect(cluster: &str, trigger: Trigger) -> Result<SwarmRuntime, RuntimeError> {
        let docker = engine::connect().await.map_err(RuntimeError::unavailable)?;
        require_manager(&docker).await?;
        let api = EngineApi::like(&docker).map_err(|e| RuntimeError::unavailable(EngineError::from(e)))?;
        let watchers = vec![
            tokio::spawn(follow_events(docker.clone(), container_events(cluster), trigger.clone())),
            tokio::spawn(follow_events(docker.clone(), service_events(), trigger.clone())),
            tokio::spawn(poll_tasks(docker.clone(), api.clone(), cluster.to_owned(), trigger)),
        ];
        Ok(SwarmRuntime {
            docker,
            api,
            cluster: cluster.to_owned(),
            watchers,
            networks: Networks::new(NetworkKind::Overlay),
            service_of: Mutex::new(HashMap::new()),
            unaddressed: Mutex::new(HashSet::new()),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn is_ours(&self, labels: Option<&HashMap<String, String>>) -> bool {
        is_ours(labels, &self.cluster)
    }

    /// The service named `name` (or with the id `name`), or `None`. The engine also answers for a
    /// mere prefix of some service's id (a short replica name such as `ab` may be one): that
    /// service is not the one asked for.
    async fn service(&self, name: &str) -> Result<Option<Service>, EngineError> {
        match self.docker.inspect_service(name, None).await {
            Ok(service) => {
                let named = service.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name);
                Ok((named || service.id.as_deref() == Some(name)).then_some(service))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(EngineError::call(format!("cannot inspect service {name}"), e)),
        }
    }

    /// Sets a service of ours that was scaled by hand (`docker service scale`) back to one task:
    /// one task per replica, always. True if it had to.
    async fn restore_one_task(&self, service: &Service) -> Result<bool, EngineError> {
        let Some(spec) = service.spec.as_ref() else { return Ok(false) };
        let replicas = spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas);
        if replicas == Some(1) {
            return Ok(false);
        }
        let mut restored = spec.clone();
        restored.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        });
        let name = spec.name.clone().unwrap_or_default();
        let id = service.id.clone().unwrap_or_else(|| name.clone());
        self.update(&id, restored, service.version.as_ref().and_then(|v| v.index)).await?;
        tracing::warn!(event = "replica_restored", replica = %name,
            "service {name} had {} replicas; set back to 1", replicas.map_or("no".to_string(), |n| n.to_string()));
        Ok(true)
    }

    /// Why the service `name` runs no task, if its last task failed: `None` while one runs or
    /// none has failed yet.
    async fn task_failure(&self, name: &str) -> Option<String> {
        let filter = HashMap::from([("service".to_string(), vec![name.to_owned()])]);
        let options = ListTasksOptionsBuilder::new().filters(&filter).build();
        let tasks = match self.docker.list_tasks(Some(options)).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(replica = %name, error = %describe(&e), "cannot list the tasks of service {name}");
                return None;
            }
        };
        let state = |t: &Task| t.status.as_ref().and_then(|s| s.state);
        if tasks.iter().any(|t| matches!(state(t), Some(TaskState::RUNNING | TaskState::STARTING))) {
            return None;
        }
        let last_failed = tasks
            .iter()
            .filter(|t| matches!(state(t), Some(TaskState::FAILED | TaskState::REJECTED)))
            .max_by_key(|t| {
                t.status.as_ref().and_then(|s| s.timestamp.as_deref()).and_then(parse_rfc3339_seconds)
            })?;
        let status = last_failed.status.as_ref()?;
        let why = status
            .err
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| status.message.clone())
            .unwrap_or_default();
        Some(format!("no task of its service runs; the last one failed: {why} (Swarm keeps retrying)"))
    }

    /// The local ID of `image` (`sha256:...`): a task given it never tries a registry.
    async fn image_id(&self, image: &str) -> Result<String, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(found) => found.id.ok_or_else(|| EngineError::Unsuitable(format!("image {image} has no ID"))),
            Err(e) if status_of(&e) == Some(404) => Err(EngineError::Unsuitable(format!(
                "image {image} not found on this node; build it with `make image` (ringlb never pulls images; \
                 other nodes need it too: `docker save {image} | docker load`, or a registry)"
            ))),
            Err(e) => Err(EngineError::call(format!("cannot inspect image {image}"), e)),
        }
    }

    /// Writes `spec` over the service `name` at `version` (optimistic concurrency).
    async fn update(&self, name: &str, spec: ServiceSpec, version: Option<u64>) -> Result<(), EngineError> {
        let version = version.and_then(|v| i32::try_from(v).ok()).unwrap_or(0);
        let options = UpdateServiceOptions { version, ..Default::default() };
        self.docker
            .update_service(name, spec, options, None)
            .await
            .map(|_| ())
            .map_err(|e| EngineError::call(format!("cannot update service {name}"), e))
    }
}

/// The error for a replica name held by a service that is not ours.
fn foreign(name: &str, cluster: &str) -> RuntimeError {
    let holder = ForeignName { holder: Holder::Service, name: name.to_owned(), cluster: cluster.to_owned() };
    RuntimeError::name_taken(name, holder)
}

impl Runtime for SwarmRuntime {
    fn spec_hash(&self, manifest: &Manifest) -> u64 {
        spec_hash_of(&manifest.replica, &manifest.health)
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let observation =
            observe(&self.docker, &self.api, &self.cluster).await.map_err(RuntimeError::unavailable)?;
        {
            let mut warned = self.unaddressed.lock().unwrap_or_else(PoisonError::into_inner);
            warned.retain(|task| observation.unaddressed.iter().any(|(t, _, _)| t == task));
            for (task, name, network) in &observation.unaddressed {
                if warned.insert(task.clone()) {
                    tracing::info!(replica = %name, task = %task,
                        "task {task} of replica {name} runs, but Swarm gave it no address on network {network}; \
                         it is not routed to");
                }
            }
        }
        {
            // Keep tasks seen earlier (a draining replica's task may no longer be listed when it is
            // stopped) as long as their service exists.
            let services: HashSet<String> = observation
                .service_of
                .values()
                .cloned()
                .chain(observation.idle.iter().map(|(id, _)| id.clone()))
                .collect();
            let mut known = self.service_of.lock().unwrap_or_else(PoisonError::into_inner);
            known.extend(observation.service_of);
            known.retain(|_, service| services.contains(service));
        }
        *self.idle.lock().unwrap_or_else(PoisonError::into_inner) = observation.idle;
        Ok(observation.instances)
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        let name = request.name.clone();
        let existing = self.service(&name).await.map_err(|e| RuntimeError::start(&name, e))?;
        let current = existing.as_ref().and_then(|s| s.spec.as_ref());
        if let Some(spec) = current {
            if !self.is_ours(spec.labels.as_ref()) {
                return Err(foreign(&name, &self.cluster));
            }
            let wanted = labels::spec_label(request.spec_hash);
            if spec.labels.as_ref().and_then(|l| l.get(LABEL_SPEC)) == Some(&wanted) {
                if let Some(service) = &existing
                    && self.restore_one_task(service).await.map_err(|e| RuntimeError::start(&name, e))?
                {
                    return Ok(None);
                }
                // Swarm has it in hand: its task runs, starts, or is being restarted. Say so when
                // its tasks keep failing, so that the status shows why the replica is missing.
                return match self.task_failure(&name).await {
                    Some(why) => Err(RuntimeError::start(&name, why)),
                    None => Ok(None),
                };
            }
        }
        let network = &request.spec.network;
        self.networks
            .ensure(&self.docker, &self.cluster, network)
            .await
            .map_err(|e| RuntimeError::start(&name, e))?;
        let image = self.image_id(&request.spec.image).await.map_err(|e| RuntimeError::start(&name, e))?;
        match existing {
            Some(service) => {
                let force = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.task_template.as_ref())
                    .and_then(|t| t.force_update)
                    .unwrap_or(0);
                let spec = service_spec(&self.cluster, &request, image, force.wrapping_add(1));
                self.update(&name, spec, service.version.and_then(|v| v.index))
                    .await
                    .map_err(|e| RuntimeError::start(&name, e))?;
                tracing::info!(event = "replica_rolling", replica = %name,
                    "updating service {name} to the current spec; Swarm starts its new task beside the old one");
            }
            None => {
                let spec = service_spec(&self.cluster, &request, image, 0);
                match self.docker.create_service(spec, None).await {
                    Ok(_) => {
                        tracing::info!(event = "replica_service_created", replica = %name,
                            "created service {name}; Swarm schedules its task");
                    }
                    // Created since we looked: by us (an earlier pass) or by someone else; the
                    // next pass finds out which.
                    Err(e) if status_of(&e) == Some(409) => {
                        return Err(RuntimeError::start(
                            &name,
                            EngineError::call("its service was created meanwhile", e),
                        ));
                    }
                    Err(e) => {
                        return Err(RuntimeError::start(
                            &name,
                            EngineError::call("cannot create its service", e),
                        ));
                    }
                }
            }
        }
        Ok(None)
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let service_id = self.service_of.lock().unwrap_or_else(PoisonError::into_inner).get(&id.0).cloned();
        let Some(service_id) = service_id else {
            // Never listed by us: nothing of ours to remove.
            return Ok(());
        };
        let Some(service) = self.service(&service_id).await.map_err(|e| RuntimeError::stop(id, e))? else {
            self.service_of.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| *s != service_id);
            return Ok(());
        };
        if !self.is_ours(service.spec.as_ref().and_then(|s| s.labels.as_ref())) {
            return Err(RuntimeError::stop(id, "not a service of this cluster; left alone"));
        }
        // Swarm stops the task with the stop grace period of its spec (replica.stop_timeout).
        match self.docker.delete_service(&service_id).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(RuntimeError::stop(id, EngineError::call("cannot remove its service", e))),
        }
        self.service_of.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| *s != service_id);
        Ok(())
    }

    async fn replace(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let task = match self.docker.inspect_task(&id.0).await {
            Ok(task) => task,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(RuntimeError::stop(id, EngineError::call("cannot inspect task", e))),
        };
        if task.desired_state != Some(TaskState::RUNNING) {
            // Swarm is already replacing it.
            return Ok(());
        }
        let Some(service_id) = task.service_id.clone() else { return Ok(()) };
        let Some(service) = self.service(&service_id).await.map_err(|e| RuntimeError::stop(id, e))? else {
            return Ok(());
        };
        let Some(mut spec) = service.spec.clone() else { return Ok(()) };
        if !self.is_ours(spec.labels.as_ref()) {
            return Err(RuntimeError::stop(id, "not a service of this cluster; left alone"));
        }
        // An outdated task, or one with a sibling: an update is under way and Swarm retires it.
        let current = spec.labels.as_ref().and_then(|l| l.get(LABEL_SPEC));
        if task_labels(&task).get(LABEL_SPEC) != current {
            return Ok(());
        }
        let filter = HashMap::from([
            ("service".to_string(), vec![service_id.clone()]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let options = ListTasksOptionsBuilder::new().filters(&filter).build();
        let siblings = self
            .docker
            .list_tasks(Some(options))
            .await
            .map_err(|e| RuntimeError::stop(id, EngineError::call("cannot list tasks", e)))?;
        if siblings.iter().any(|t| t.id != task.id && t.desired_state == Some(TaskState::RUNNING)) {
            // Two tasks of the current spec: the service was scaled by hand (Swarm picks the task
            // it removes), or an update is under way and Swarm retires the old one itself.
            self.restore_one_task(&service).await.map_err(|e| RuntimeError::stop(id, e))?;
            return Ok(());
        }
        let name = spec.name.clone().unwrap_or_default();
        if let Some(template) = spec.task_template.as_mut() {
            template.force_update = Some(template.force_update.unwrap_or(0).wrapping_add(1));
        }
        self.update(&service_id, spec, service.version.and_then(|v| v.index))
            .await
            .map_err(|e| RuntimeError::stop(id, e))?;
        tracing::warn!(event = "replica_force_updated", replica = %name, task = %id,
            "task {id} of replica {name} failed its heartbeats; forced an update of service {name} (Swarm starts a new task)");
        Ok(())
    }

    async fn kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let task = match self.docker.inspect_task(&id.0).await {
            Ok(task) => task,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(RuntimeError::stop(id, EngineError::call("cannot inspect task", e))),
        };
        if task_labels(&task).get(LABEL_CLUSTER) != Some(&self.cluster) {
            return Ok(());
        }
        let container = task.status.and_then(|s| s.container_status).and_then(|c| c.container_id);
        let Some(container) = container else { return Ok(()) };
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        match self.docker.kill_container(&container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::stop(
                id,
                EngineError::call("cannot kill its container (on this node only)", e),
            )),
        }
    }

    async fn shutdown(&self, _grace: Duration) {
        // Services outlive the load balancer on purpose: a restart adopts their tasks.
        for watcher in &self.watchers {
            watcher.abort();
        }
    }

    async fn remove_idle(&self, wanted: &[String]) {
        let unwanted: Vec<(String, String)> = {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.iter().filter(|(_, name)| !wanted.contains(name)).cloned().collect()
        };
        for (id, name) in unwanted {
            // Look again: the service may be gone or have changed hands since the listing. (A task
            // that started meanwhile is not in the ring yet, and its replica is not wanted.)
            match self.service(&id).await {
                Ok(Some(service)) if self.is_ours(service.spec.as_ref().and_then(|s| s.labels.as_ref())) => {}
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(replica = %name, %error, "cannot look at an idle service");
                    continue;
                }
            }
            match self.docker.delete_service(&id).await {
                Ok(()) => tracing::info!(event = "replica_removed", replica = %name,
                    "removed service {name}: its replica is no longer wanted and it ran no task"),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(replica = %name, error = %describe(&e), "cannot remove service {name}")
                }
            }
        }
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).retain(|(_, name)| wanted.contains(name));
    }

    async fn name_held_by_other(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.service(name).await {
            Ok(Some(service)) => Ok(!self.is_ours(service.spec.as_ref().and_then(|s| s.labels.as_ref()))),
            Ok(None) => Ok(false),
            Err(e) => Err(RuntimeError::unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_service_error_says_what_to_do() {
        let text = foreign("server1", "demo").to_string();
        assert!(text.contains("not managed by ringlb") && text.contains("ringlb.cluster=demo"), "{text}");
    }
}
