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
//!   heartbeat from inside the container, every [`check_interval`]). Swarm calls a task
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
//!   and a poll of the task list every [`POLL_EVERY`] (Swarm has no task events) fire the
//!   controller's trigger.
//! - **Only ours**, as with containers: a service without the cluster label is never updated or
//!   removed; a foreign service holding a replica's name is reported and left alone.
//! - **No pulls.** The service names the image by its local ID, so a task never tries a
//!   registry; other nodes need the image loaded (`docker save | docker load`) or a registry.
//! - **Managers only.** Services can only be managed through a Swarm manager; connecting to an
//!   engine that is not one is an error saying so.

use super::engine::api::EngineApi;
use super::engine::events::{container_events, follow_events, service_events};
use super::engine::labels::{self, LABEL_CLUSTER, LABEL_SPEC};
use super::engine::names::{ForeignName, Holder, is_ours};
use super::engine::network::{NetworkKind, Networks};
use super::engine::{self, EngineError, describe, status_of};
use super::{Cause, Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::{Health, Manifest, ReplicaSpec};
use crate::trigger::Trigger;
use bollard::Docker;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, LocalNodeState, NetworkAttachmentConfig, Service,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder, UpdateServiceOptions,
};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// How often the task list is polled for changes (Swarm has no task events).
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long Swarm waits before restarting a task that exited.
const RESTART_DELAY: Duration = Duration::from_millis(200);
/// The label on ringlb's own service or container (not a replica): the cluster it serves.
pub use super::engine::labels::LABEL_LOAD_BALANCER;

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

/// A task as `GET /tasks` gives it: only what ringlb reads, `NetworksAttachments` included.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TaskView {
    #[serde(rename = "ID", deserialize_with = "null_as_default")]
    id: String,
    #[serde(rename = "ServiceID", deserialize_with = "null_as_default")]
    service_id: String,
    #[serde(deserialize_with = "null_as_default")]
    created_at: String,
    #[serde(deserialize_with = "null_as_default")]
    desired_state: String,
    #[serde(deserialize_with = "null_as_default")]
    status: TaskStatusView,
    #[serde(deserialize_with = "null_as_default")]
    spec: TaskSpecView,
    #[serde(deserialize_with = "null_as_default")]
    networks_attachments: Vec<AttachmentView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TaskStatusView {
    #[serde(deserialize_with = "null_as_default")]
    state: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TaskSpecView {
    #[serde(deserialize_with = "null_as_default")]
    container_spec: ContainerSpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ContainerSpecView {
    /// The labels its container was given: they carry the spec the task was made from, which
    /// differs from its service's while an update rolls.
    #[serde(deserialize_with = "null_as_default")]
    labels: HashMap<String, String>,
}

/// One network a task is attached to, with the addresses Swarm gave it there (`10.0.1.5/24`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AttachmentView {
    #[serde(deserialize_with = "null_as_default")]
    network: NetworkView,
    #[serde(deserialize_with = "null_as_default")]
    addresses: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkView {
    #[serde(deserialize_with = "null_as_default")]
    spec: NetworkSpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkSpecView {
    #[serde(deserialize_with = "null_as_default")]
    name: String,
}

/// A JSON `null` (which the engine writes for empty lists and maps) as the type's default.
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

impl TaskView {
    /// Swarm wants it running and its container runs: `starting` until its health check first
    /// passes, then `running`.
    fn is_live(&self) -> bool {
        self.desired_state == "running" && matches!(self.status.state.as_str(), "starting" | "running")
    }

    /// Its address on the network named `network`.
    fn address_on(&self, network: &str) -> Option<IpAddr> {
        let attachment = self.networks_attachments.iter().find(|a| a.network.spec.name == network)?;
        attachment.addresses.iter().find_map(|a| a.split('/').next()?.parse().ok())
    }
}

/// What one look at the swarm found.
#[derive(Debug, Default)]
struct Observation {
    /// Running tasks with an address, as instances.
    instances: Vec<Instance>,
    /// The service id of every running task (addressed or not).
    service_of: HashMap<String, String>,
    /// Running tasks whose address is not known yet: (task id, replica name, network).
    unaddressed: Vec<(String, String, String)>,
    /// Services with no running task: (service id, replica name).
    idle: Vec<(String, String)>,
}

impl Observation {
    /// What the poller compares between two looks.
    fn fingerprint(&self) -> BTreeSet<(String, Option<SocketAddr>)> {
        let mut seen: BTreeSet<(String, Option<SocketAddr>)> =
            self.instances.iter().map(|i| (i.id.0.clone(), i.addr)).collect();
        seen.extend(self.unaddressed.iter().map(|(task, _, _)| (task.clone(), None)));
        seen
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

/// The service spec of a replica.
fn service_spec(cluster: &str, request: &StartRequest, image_id: String, force_update: u64) -> ServiceSpec {
    let spec = &request.spec;
    let name = &request.name;
    let labels = labels::of_replica(cluster, request);
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image_id),
                labels: Some(labels),
                args: Some(vec!["server".into(), "--port".into(), spec.port.to_string()]),
                hostname: Some(name.clone()),
                env: Some(vec![format!("SERVER_ID={name}")]),
                stop_grace_period: Some(nanos(spec.stop_timeout.get())),
                health_check: Some(health_check(spec, &request.health)),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(RESTART_DELAY)),
                max_attempts: Some(0),
                window: None,
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(spec.network.clone()),
                aliases: Some(vec![name.clone()]),
                driver_opts: None,
            }]),
            force_update: Some(force_update),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::CONTINUE),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports: None }),
        ..Default::default()
    }
}

/// The error for a replica name held by a service that is not ours.
fn foreign(name: &str, cluster: &str) -> RuntimeError {
    let holder = ForeignName { holder: Holder::Service, name: name.to_owned(), cluster: cluster.to_owned() };
    RuntimeError::name_taken(name, holder)
}

/// How often a task's container health check runs. Only its first pass matters much (Swarm's
/// start-first update stops the old task then), and it must come after ringlb saw the new task
/// (a poll) and heard its first heartbeat, with room to spare. Each check is an exec in the
/// container: 53 ms of CPU on engine 20.10 here, so not more often than every 5 s.
pub fn check_interval(health: &Health) -> Duration {
    Duration::from_secs(5).max((POLL_EVERY + health.interval.get()) * 2)
}

/// A replica's container health check: `ringlb probe` of its heartbeat path on its port.
fn health_check(spec: &ReplicaSpec, health: &Health) -> HealthConfig {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let timeout = health.timeout.get();
    let test = [
        "CMD",
        "/ringlb",
        "probe",
        "--port",
        &spec.port.to_string(),
        "--path",
        &health.path,
        "--timeout-ms",
        &timeout.as_millis().to_string(),
    ];
    HealthConfig {
        test: Some(test.iter().map(|s| s.to_string()).collect()),
        interval: Some(nanos(check_interval(health))),
        // The probe gives up first, and says why in the check's log.
        timeout: Some(nanos(timeout + Duration::from_secs(1))),
        retries: Some(i64::from(health.replace_after.max(1))),
        start_period: Some(nanos(spec.start_timeout.get())),
        start_interval: None,
    }
}

/// What shapes a replica's service: the image, the network, the port, and its health check.
fn spec_hash_of(spec: &ReplicaSpec, health: &Health) -> u64 {
    let check = health_check(spec, health);
    let numbers = [check.interval, check.timeout, check.retries, check.start_period].map(|n| n.unwrap_or(0));
    let text = format!(
        "swarm\n{}\n{}\n{}\n{}\n{numbers:?}",
        spec.image,
        spec.network,
        spec.port,
        check.test.unwrap_or_default().join(" ")
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Seconds since the epoch of an RFC 3339 time as Docker writes it (`2026-11-25T12:00:00.5Z`);
/// `None` if it is not one. Fractions and offsets other than `Z` are ignored.
fn parse_rfc3339_seconds(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

/// Looks at the cluster's services and their live tasks.
async fn observe(docker: &Docker, api: &EngineApi, cluster: &str) -> Result<Observation, EngineError> {
    let options = ListServicesOptionsBuilder::new().filters(&labels::cluster_filter(cluster)).build();
    let services = docker
        .list_services(Some(options))
        .await
        .map_err(|e| EngineError::call("cannot list services", e))?;
    // Service id -> replica name, for the services that are ours.
    let ours: BTreeMap<String, String> = services
        .iter()
        .filter_map(|s| {
            let labels = s.spec.as_ref().and_then(|spec| spec.labels.as_ref())?;
            if !is_ours(Some(labels), cluster) {
                return None;
            }
            Some((s.id.clone()?, labels::hostname(labels)))
        })
        .collect();
    let mut observation = Observation::default();
    if ours.is_empty() {
        return Ok(observation);
    }
    let filters =
        serde_json::json!({"desired-state": ["running"], "service": ours.keys().collect::<Vec<_>>()});
    let tasks: Vec<TaskView> =
        api.get("/tasks", &filters).await.map_err(|e| EngineError::api("cannot list tasks", e))?;
    for task in tasks.into_iter().filter(|t| ours.contains_key(&t.service_id) && t.is_live()) {
        let labels = &task.spec.container_spec.labels;
        let name = labels::hostname(labels);
        let network = labels::network(labels);
        observation.service_of.insert(task.id.clone(), task.service_id.clone());
        let port = labels::port(labels);
        let Some(ip) = task.address_on(&network) else {
            observation.unaddressed.push((task.id.clone(), name, network));
            continue;
        };
        let started = parse_rfc3339_seconds(&task.created_at);
        observation.instances.push(Instance {
            id: InstanceId(task.id.clone()),
            name,
            replica_id: labels::replica_id(labels),
            addr: Some(SocketAddr::new(ip, port)),
            spec_hash: labels::spec_hash(labels),
            running: true,
            started_at: started.map_or_else(SystemTime::now, |s| UNIX_EPOCH + Duration::from_secs(s)),
        });
    }
    // Services with no instance the controller could stop (their tasks never ran, or run without
    // an address): removed by `remove_idle` once their replica is no longer wanted.
    let busy: HashSet<&str> = observation
        .instances
        .iter()
        .filter_map(|i| observation.service_of.get(&i.id.0))
        .map(String::as_str)
        .collect();
    observation.idle = ours
        .iter()
        .filter(|(id, _)| !busy.contains(id.as_str()))
        .map(|(id, name)| (id.clone(), name.clone()))
        .collect();
    Ok(observation)
}

/// The labels a task's container was given (see [`ContainerSpecView::labels`]).
fn task_labels(task: &Task) -> HashMap<String, String> {
    task.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

/// Fires `trigger` whenever the cluster's running tasks or their addresses change.
async fn poll_tasks(docker: Docker, api: EngineApi, cluster: String, trigger: Trigger) {
    let mut last = None;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match observe(&docker, &api, &cluster).await {
            Ok(observation) => {
                let now = observation.fingerprint();
                if last.as_ref() != Some(&now) {
                    if last.is_some() {
                        tracing::debug!("the cluster's tasks changed");
                        trigger.fire();
                    }
                    last = Some(now);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot poll the swarm's tasks"),
        }
    }
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
        let fail = |cause: Cause| RuntimeError::start(&name, cause);
        let existing = self.service(&name).await.map_err(|e| fail(e.into()))?;
        let current = existing.as_ref().and_then(|s| s.spec.as_ref());
        if let Some(spec) = current {
            if !self.is_ours(spec.labels.as_ref()) {
                return Err(foreign(&name, &self.cluster));
            }
            let wanted = labels::spec_label(request.spec_hash);
            if spec.labels.as_ref().and_then(|l| l.get(LABEL_SPEC)) == Some(&wanted) {
                if let Some(service) = &existing
                    && self.restore_one_task(service).await.map_err(|e| fail(e.into()))?
                {
                    return Ok(None);
                }
                // Swarm has it in hand: its task runs, starts, or is being restarted. Say so when
                // its tasks keep failing, so that the status shows why the replica is missing.
                return match self.task_failure(&name).await {
                    Some(why) => Err(fail(why.into())),
                    None => Ok(None),
                };
            }
        }
        let network = &request.spec.network;
        self.networks.ensure(&self.docker, &self.cluster, network).await.map_err(|e| fail(e.into()))?;
        let image = self.image_id(&request.spec.image).await.map_err(|e| fail(e.into()))?;
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
                    .map_err(|e| fail(e.into()))?;
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
                        return Err(fail(EngineError::call("its service was created meanwhile", e).into()));
                    }
                    Err(e) => return Err(fail(EngineError::call("cannot create its service", e).into())),
                }
            }
        }
        Ok(None)
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let fail = |cause: Cause| RuntimeError::stop(id, cause);
        let service_id = self.service_of.lock().unwrap_or_else(PoisonError::into_inner).get(&id.0).cloned();
        let Some(service_id) = service_id else {
            // Never listed by us: nothing of ours to remove.
            return Ok(());
        };
        let Some(service) = self.service(&service_id).await.map_err(|e| fail(e.into()))? else {
            self.service_of.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| *s != service_id);
            return Ok(());
        };
        if !self.is_ours(service.spec.as_ref().and_then(|s| s.labels.as_ref())) {
            return Err(fail("not a service of this cluster; left alone".into()));
        }
        // Swarm stops the task with the stop grace period of its spec (replica.stop_timeout).
        match self.docker.delete_service(&service_id).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(fail(EngineError::call("cannot remove its service", e).into())),
        }
        self.service_of.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| *s != service_id);
        Ok(())
    }

    async fn replace(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let fail = |cause: Cause| RuntimeError::stop(id, cause);
        let task = match self.docker.inspect_task(&id.0).await {
            Ok(task) => task,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(fail(EngineError::call("cannot inspect task", e).into())),
        };
        if task.desired_state != Some(TaskState::RUNNING) {
            // Swarm is already replacing it.
            return Ok(());
        }
        let Some(service_id) = task.service_id.clone() else { return Ok(()) };
        let Some(service) = self.service(&service_id).await.map_err(|e| fail(e.into()))? else {
            return Ok(());
        };
        let Some(mut spec) = service.spec.clone() else { return Ok(()) };
        if !self.is_ours(spec.labels.as_ref()) {
            return Err(fail("not a service of this cluster; left alone".into()));
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
            .map_err(|e| fail(EngineError::call("cannot list tasks", e).into()))?;
        if siblings.iter().any(|t| t.id != task.id && t.desired_state == Some(TaskState::RUNNING)) {
            // Two tasks of the current spec: the service was scaled by hand (Swarm picks the task
            // it removes), or an update is under way and Swarm retires the old one itself.
            self.restore_one_task(&service).await.map_err(|e| fail(e.into()))?;
            return Ok(());
        }
        let name = spec.name.clone().unwrap_or_default();
        if let Some(template) = spec.task_template.as_mut() {
            template.force_update = Some(template.force_update.unwrap_or(0).wrapping_add(1));
        }
        self.update(&service_id, spec, service.version.and_then(|v| v.index))
            .await
            .map_err(|e| fail(e.into()))?;
        tracing::warn!(event = "replica_force_updated", replica = %name, task = %id,
            "task {id} of replica {name} failed its heartbeats; forced an update of service {name} (Swarm starts a new task)");
        Ok(())
    }

    async fn kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let fail = |cause: Cause| RuntimeError::stop(id, cause);
        let task = match self.docker.inspect_task(&id.0).await {
            Ok(task) => task,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(fail(EngineError::call("cannot inspect task", e).into())),
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
            Err(e) => Err(fail(EngineError::call("cannot kill its container (on this node only)", e).into())),
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
    fn rfc3339_times_as_docker_writes_them() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_seconds("2000-03-01T00:00:00.123456789Z"), Some(951_868_800));
        assert_eq!(parse_rfc3339_seconds("2026-11-25T12:05:20.5Z"), Some(1_795_608_320));
        assert_eq!(parse_rfc3339_seconds("not a time"), None);
        assert_eq!(parse_rfc3339_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_seconds(""), None);
    }

    #[test]
    fn a_task_parses_with_its_network_attachments() {
        // Trimmed from `GET /v1.41/tasks` of engine 20.10 (a task whose health check has not
        // passed yet, and nulls where the engine writes them).
        let value = serde_json::json!({
            "ID": "vh7d92yffhxpqa7lgw9oeavhu", "Version": {"Index": 12},
            "CreatedAt": "2026-12-02T01:31:22.5Z", "Labels": {},
            "Spec": {"ContainerSpec": {"Image": "sha256:33aa", "Labels": {"ringlb.hostname": "s1", "ringlb.network": "net"},
                     "Args": ["server"], "Healthcheck": {"Test": ["CMD", "/ringlb", "probe"]}},
                     "Networks": [{"Target": "k1"}], "ForceUpdate": 0},
            "ServiceID": "v60x89dqjw1gn7i635bdhghlu", "Slot": 1, "NodeID": "n1",
            "Status": {"Timestamp": "2026-12-02T01:31:23Z", "State": "starting", "Message": "starting",
                       "ContainerStatus": {"ContainerID": "6b36", "PID": 4242, "ExitCode": 0}, "PortStatus": {}},
            "DesiredState": "running",
            "NetworksAttachments": [
                {"Network": {"ID": "i0", "Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.7/24"]},
                {"Network": {"ID": "k1", "Spec": {"Name": "net", "Labels": null}}, "Addresses": ["10.0.1.2/24"]}
            ]
        });
        let task: TaskView = serde_json::from_value(value).unwrap();
        assert!(task.is_live());
        assert_eq!(task.address_on("net"), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(task.address_on("other"), None);
        assert_eq!(task.spec.container_spec.labels.get("ringlb.hostname").map(String::as_str), Some("s1"));
        assert_eq!(parse_rfc3339_seconds(&task.created_at), Some(1_796_175_082));
        let bare: TaskView = serde_json::from_value(serde_json::json!({
            "ID": "t", "Spec": {"ContainerSpec": {"Labels": null}}, "NetworksAttachments": null,
            "Status": {"State": "running"}, "DesiredState": "shutdown"
        }))
        .unwrap();
        assert!(!bare.is_live(), "a task Swarm is stopping is not routed to");
        assert!(bare.spec.container_spec.labels.is_empty() && bare.address_on("net").is_none());
    }

    #[test]
    fn the_health_check_probes_the_heartbeat_after_ringlb_would_have() {
        let manifest = Manifest::parse("name: d\nreplica: {port: 5001}\nhealth: {timeout: 250ms}\n").unwrap();
        let check = health_check(&manifest.replica, &manifest.health);
        let test = check.test.unwrap().join(" ");
        assert_eq!(test, "CMD /ringlb probe --port 5001 --path /heartbeat --timeout-ms 250");
        assert_eq!(check.timeout, Some(1_250_000_000));
        assert_eq!(check.retries, Some(i64::from(manifest.health.replace_after)));
        // Never more often than every 5 s; later than a poll and two heartbeats.
        assert_eq!(check_interval(&manifest.health), Duration::from_secs(5));
        let slow = Manifest::parse("name: d\nhealth: {interval: 4s, timeout: 1s}\n").unwrap();
        assert_eq!(check_interval(&slow.health), Duration::from_secs(9));
    }

    #[test]
    fn the_spec_hash_follows_the_image_and_the_health_check() {
        let hash = |text: &str| {
            let manifest = Manifest::parse(text).unwrap();
            spec_hash_of(&manifest.replica, &manifest.health)
        };
        let base = hash("name: d\n");
        assert_ne!(base, hash("name: d\nreplica: {image: 'ringlb:v2'}\n"));
        assert_ne!(base, hash("name: d\nhealth: {path: /ok}\n"), "the check must probe the new path");
        assert_eq!(base, hash("name: d\nreplicas: 7\n"));
        assert_eq!(base, hash("name: d\nhealth: {interval: 2s}\n"), "the same check every 5 s");
    }

    #[test]
    fn the_spec_hash_of_a_fixed_manifest_never_changes() {
        // A changed hash would roll every user's replicas on upgrade: these are the values of
        // ringlb before the runtime code moved (issue 17), and must stay bit-for-bit.
        let hash = |text: &str| {
            let manifest = Manifest::parse(text).unwrap();
            spec_hash_of(&manifest.replica, &manifest.health)
        };
        assert_eq!(hash("name: d\n"), 0xf394_c24c_5039_0931);
        assert_eq!(
            hash(
                "name: d\nreplica: {image: 'ringlb:v2', network: blue, port: 5001, start_timeout: 12s}\n\
                 health: {path: /ok, interval: 4s, timeout: 700ms, replace_after: 5}\n"
            ),
            0xa29d_0c49_d4c1_4788
        );
    }

    #[test]
    fn a_replica_service_is_specified_as_before() {
        // Golden: what ringlb asked Swarm for before the runtime code moved (issue 17).
        let manifest = Manifest::parse(
            "name: d\nreplica: {image: 'ringlb:v2', network: blue, port: 5001, stop_timeout: 3s, start_timeout: 12s}\n\
             health: {path: /ok, interval: 4s, timeout: 700ms, replace_after: 5}\n",
        )
        .unwrap();
        let request = StartRequest {
            name: "s1".into(),
            replica_id: 7,
            spec_hash: 0x0123_4567_89ab_cdef,
            spec: manifest.replica,
            health: manifest.health,
        };
        let labels = serde_json::json!({
            "ringlb.cluster": "demo", "ringlb.hostname": "s1", "ringlb.id": "7",
            "ringlb.network": "blue", "ringlb.port": "5001", "ringlb.spec": "0123456789abcdef"
        });
        let expected = serde_json::json!({
            "Name": "s1", "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "sha256:33aa", "Labels": labels, "Args": ["server", "--port", "5001"],
                    "Hostname": "s1", "Env": ["SERVER_ID=s1"], "StopGracePeriod": 3_000_000_000_u64,
                    "HealthCheck": {
                        "Test": ["CMD", "/ringlb", "probe", "--port", "5001", "--path", "/ok", "--timeout-ms", "700"],
                        "Interval": 9_000_000_000_u64, "Timeout": 1_700_000_000_u64, "Retries": 5,
                        "StartPeriod": 12_000_000_000_u64
                    }
                },
                "RestartPolicy": {"Condition": "any", "Delay": 200_000_000, "MaxAttempts": 0},
                "ForceUpdate": 4,
                "Networks": [{"Target": "blue", "Aliases": ["s1"]}]
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "continue", "Order": "start-first"},
            "EndpointSpec": {"Mode": "dnsrr"}
        });
        let spec = service_spec("demo", &request, "sha256:33aa".into(), 4);
        assert_eq!(serde_json::to_value(spec).unwrap(), expected);
    }

    #[test]
    fn a_foreign_service_error_says_what_to_do() {
        let text = foreign("server1", "demo").to_string();
        assert!(text.contains("not managed by ringlb") && text.contains("ringlb.cluster=demo"), "{text}");
    }
}
