//! Replicas as Docker containers (`replica.runtime: docker`), through the Docker API (bollard).
//!
//! Each replica is a container of `replica.image` running what [`launch`] decides (ringlb's own
//! image: `ringlb server`), with `replica.resources` as its limits, named after the
//! replica, on `replica.network`, with the labels `ringlb.cluster`, `ringlb.hostname`,
//! `ringlb.id`, `ringlb.network`, `ringlb.port` and `ringlb.spec` ([`labels`]). The load balancer
//! reaches it by the IP address Docker reports on that network, so no DNS is needed, whether
//! ringlb runs on the host or in a container on the same network.
//!
//! Rules this file keeps:
//! - **Only ours.** Every listing is filtered by the cluster label, and nothing without it is ever
//!   stopped, removed or renamed. A container name held by a foreign container is an error that
//!   names it; the foreign container is left as it is.
//! - **Adoption.** Containers carrying the cluster's label are listed like any other instance, so a
//!   restarted load balancer adopts them instead of starting duplicates.
//! - **No pulls.** A missing image is an error naming the image and `make image`.
//! - **Exits at once.** A container that exits within a second of its start, before it listens,
//!   is a start error with its exit code and last log lines ([`super::exit`]), and is removed.
//! - **Events.** The event stream, filtered by the cluster label, fires the reconcile trigger when
//!   a container dies, so a `docker kill` is noticed at once; the controller's periodic pass covers
//!   a broken stream, which is reopened with backoff.
//! - A successor (rolling replacement) needs the container name its predecessor holds: the
//!   predecessor, ours by its label, is renamed `<name>.<short id>` first and keeps serving.
//!
//! What it shares with the Swarm runtime (connecting, labels, events, networks, the foreign-name
//! check) is in [`super::engine`].

use super::engine::events::{container_events, follow_events};
use super::engine::labels;
use super::engine::names::{ForeignName, Holder, is_ours};
use super::engine::network::{self, NetworkKind, Networks};
use super::engine::{self, EngineError, status_of};
use super::exit::{EARLY_EXIT_WINDOW, Exited, OutputTail, TAIL_LINES, describe_status};
use super::launch::{self, Launch};
use super::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use crate::manifest::template::Values;
use crate::trigger::Trigger;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HostConfig, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// How often a starting container's port is tried within [`EARLY_EXIT_WINDOW`] (each try is
/// an inspect call too).
const LISTEN_POLL: Duration = Duration::from_millis(50);

/// Runs replicas as containers of one cluster.
pub struct DockerRuntime {
    docker: Docker,
    cluster: String,
    /// The event-stream task; aborted when the runtime is dropped.
    events: JoinHandle<()>,
    /// Creates the bridge networks replicas serve on, one at a time.
    networks: Networks,
    /// Serialises renames and removals: Docker 20.10 can leave a container stuck in "Removal In
    /// Progress" when it is renamed while being removed (a replacement freeing the name of its
    /// dead predecessor while that one is cleaned up).
    rename_or_remove: tokio::sync::Mutex<()>,
}

impl Drop for DockerRuntime {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl DockerRuntime {
    /// Connects to the engine `DOCKER_HOST` names (`unix://...`, or `tcp://...` for a socket proxy;
    /// `/var/run/docker.sock` without it), agrees on an API
    /// version the engine speaks (so engines from API 1.41 work), checks that it answers, and
    /// starts following the cluster's container events.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`] saying what to check.
    pub async fn connect(cluster: &str, trigger: Trigger) -> Result<DockerRuntime, RuntimeError> {
        let docker = engine::connect().await.map_err(RuntimeError::unavailable)?;
        let events = tokio::spawn(follow_events(docker.clone(), container_events(cluster), trigger));
        Ok(DockerRuntime {
            docker,
            cluster: cluster.to_owned(),
            events,
            networks: Networks::new(NetworkKind::Bridge),
            rename_or_remove: tokio::sync::Mutex::new(()),
        })
    }

    /// The id and labels of the container named `name`, or `None` if there is none.
    async fn labels_of(&self, name: &str) -> Result<Option<(String, HashMap<String, String>)>, EngineError> {
        match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(details) => {
                let labels = details.config.and_then(|c| c.labels).unwrap_or_default();
                Ok(Some((details.id.unwrap_or_default(), labels)))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(EngineError::call(format!("cannot inspect container {name}"), e)),
        }
    }

    fn is_ours(&self, labels: &HashMap<String, String>) -> bool {
        is_ours(Some(labels), &self.cluster)
    }

    /// Frees the container name `name` for a new replica: ours is renamed, a foreign one is an error.
    async fn free_name(&self, name: &str) -> Result<(), RuntimeError> {
        let _exclusive = self.rename_or_remove.lock().await;
        let found = self.labels_of(name).await.map_err(|e| RuntimeError::name_taken(name, e))?;
        let Some((id, labels)) = found else { return Ok(()) };
        if !self.is_ours(&labels) {
            return Err(foreign(name, &self.cluster));
        }
        let short: String = id.chars().take(12).collect();
        let new_name = format!("{name}.{short}");
        let options = RenameContainerOptionsBuilder::new().name(&new_name).build();
        match self.docker.rename_container(&id, options).await {
            Ok(()) => {}
            // Removed since we looked: the name is free.
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => {
                return Err(RuntimeError::start(name, EngineError::call("cannot rename its predecessor", e)));
            }
        }
        tracing::info!(event = "replica_renamed", replica = name, container = %short,
            "renamed the previous container of {name} to {new_name} to free the name");
        Ok(())
    }

    /// The instance a container summary or inspection describes.
    fn instance(
        &self,
        id: String,
        labels: &HashMap<String, String>,
        running: bool,
        ip: Option<IpAddr>,
        port: u16,
        created: i64,
    ) -> Instance {
        Instance {
            id: InstanceId(id),
            name: labels::hostname(labels),
            replica_id: labels::replica_id(labels),
            addr: ip.map(|ip| SocketAddr::new(ip, port)),
            spec_hash: labels::spec_hash(labels),
            running,
            started_at: UNIX_EPOCH + Duration::from_secs(u64::try_from(created).unwrap_or(0)),
        }
    }

    /// Waits until a container just started listens on `addr`, exits, or has run for
    /// [`EARLY_EXIT_WINDOW`]; an exit in that time comes back with its status and last lines
    /// of output (a wrong `replica.command`, say), `None` otherwise.
    async fn exited_at_once(&self, id: &str, addr: SocketAddr) -> Option<Exited> {
        let deadline = tokio::time::Instant::now() + EARLY_EXIT_WINDOW;
        loop {
            let state = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Ok(details) => details.state?,
                Err(error) => {
                    // Not a verdict on the replica: its heartbeat decides from here on.
                    tracing::debug!(container = id, error = %EngineError::Docker(error),
                        "cannot inspect a starting container; leaving it to its heartbeat");
                    return None;
                }
            };
            if state.running != Some(true) {
                let code = state.exit_code;
                return Some(Exited {
                    status: describe_status(code, None),
                    last_output: self.last_output(id).await,
                });
            }
            let connect = tokio::time::timeout(LISTEN_POLL, tokio::net::TcpStream::connect(addr)).await;
            if matches!(connect, Ok(Ok(_))) || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(LISTEN_POLL).await;
        }
    }

    /// The last lines a container printed (stdout and stderr), oldest first.
    async fn last_output(&self, id: &str) -> Vec<String> {
        use tokio_stream::StreamExt;
        let tail = TAIL_LINES.to_string();
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&tail).build();
        let lines = OutputTail::default();
        let mut logs = self.docker.logs(id, Some(options));
        let read = async {
            while let Some(Ok(chunk)) = logs.next().await {
                for line in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                    lines.push(line);
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        lines.lines()
    }

    /// Removes the networks carrying this cluster's label (the ones it created when missing),
    /// for a cluster that is gone for good (`ringlb analyze`). A network still in use stays.
    pub async fn remove_own_networks(&self) {
        network::remove_own(&self.docker, &self.cluster).await;
    }
}

/// The error for a name held by a container that is not ours.
fn foreign(name: &str, cluster: &str) -> RuntimeError {
    let holder =
        ForeignName { holder: Holder::Container, name: name.to_owned(), cluster: cluster.to_owned() };
    RuntimeError::name_taken(name, holder)
}

/// What a replica's container is created from.
fn container_body(request: &StartRequest, labels: &HashMap<String, String>) -> ContainerCreateBody {
    let name = &request.name;
    let spec = &request.spec;
    let launch = Launch::of(spec, Values { name, id: request.replica_id, port: spec.port });
    let env = launch.env_assignments();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: launch.entrypoint,
        cmd: launch.command,
        env,
        hostname: Some(name.clone()),
        labels: Some(labels.clone()),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: Some(i64::try_from(spec.stop_timeout.get().as_secs()).unwrap_or(10)),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            nano_cpus: spec.resources.nano_cpus(),
            memory: spec.resources.memory_bytes(),
            // ringlb replaces failed replicas itself; Docker restarting them too would fight it.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(spec.network.clone(), EndpointSettings::default())])),
        }),
        ..Default::default()
    }
}

/// What shapes a container: the image, the network, the port, and what it runs
/// ([`launch::hash_text`], empty for a manifest without the launch keys).
fn spec_hash_of(spec: &crate::manifest::ReplicaSpec) -> u64 {
    let text = format!("docker\n{}\n{}\n{}{}", spec.image, spec.network, spec.port, launch::hash_text(spec));
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

impl Runtime for DockerRuntime {
    fn spec_hash(&self, manifest: &Manifest) -> u64 {
        spec_hash_of(&manifest.replica)
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&labels::cluster_filter(&self.cluster))
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::unavailable(EngineError::call("cannot list containers", e)))?;
        let mut instances = Vec::with_capacity(containers.len());
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            // Belt and braces: the filter already did this.
            if !self.is_ours(&labels) {
                continue;
            }
            let network = labels::network(&labels);
            let ip = c
                .network_settings
                .and_then(|s| s.networks)
                .and_then(|mut n| n.remove(&network))
                .and_then(|e| e.ip_address)
                .and_then(|ip| ip.parse().ok());
            let running = matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING));
            let port = labels::port(&labels);
            instances.push(self.instance(
                c.id.unwrap_or_default(),
                &labels,
                running,
                ip,
                port,
                c.created.unwrap_or(0),
            ));
        }
        Ok(instances)
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        let name = request.name.clone();
        let spec = &request.spec;
        self.networks
            .ensure(&self.docker, &self.cluster, &spec.network)
            .await
            .map_err(|e| RuntimeError::start(&name, e))?;
        self.free_name(&name).await?;

        let labels = labels::of_replica(&self.cluster, &request);
        let body = container_body(&request, &labels);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match self.docker.create_container(Some(options.clone()), body.clone()).await {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(404) => {
                return Err(RuntimeError::start(
                    &name,
                    EngineError::Unsuitable(format!(
                        "image {} not found; build it with `make image` (ringlb never pulls images)",
                        spec.image
                    )),
                ));
            }
            Err(e) if status_of(&e) == Some(409) => {
                // Taken since we looked: free it once more (or learn it is foreign) and retry once.
                self.free_name(&name).await?;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map_err(|e| RuntimeError::start(&name, EngineError::Docker(e)))?
            }
            Err(e) => {
                return Err(RuntimeError::start(&name, EngineError::call("cannot create its container", e)));
            }
        };
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let remove = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = self.docker.remove_container(&created.id, Some(remove)).await;
            return Err(RuntimeError::start(&name, EngineError::call("cannot start its container", e)));
        }
        let details =
            self.docker.inspect_container(&created.id, None::<InspectContainerOptions>).await.map_err(
                |e| RuntimeError::start(&name, EngineError::call("cannot inspect its container", e)),
            )?;
        let ip = details
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(&spec.network))
            .and_then(|e| e.ip_address)
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let Some(ip) = ip else {
            return Err(RuntimeError::start(
                &name,
                format!("its container has no address on network {}", spec.network),
            ));
        };
        let running = details.state.and_then(|s| s.running).unwrap_or(false);
        let addr = SocketAddr::new(ip, spec.port);
        if let Some(exited) = self.exited_at_once(&created.id, addr).await {
            let remove = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = self.docker.remove_container(&created.id, Some(remove)).await;
            return Err(RuntimeError::start(&name, exited));
        }
        let created_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(Some(self.instance(
            created.id,
            &labels,
            running,
            Some(ip),
            spec.port,
            i64::try_from(created_at).unwrap_or(0),
        )))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        // Never touch a container that is not ours, whatever id we were handed.
        match self.labels_of(&id.0).await {
            Ok(Some((_, labels))) if self.is_ours(&labels) => {}
            Ok(Some(_)) => {
                return Err(RuntimeError::stop(id, "not a container of this cluster; left alone"));
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(RuntimeError::stop(id, e)),
        }
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        match self.docker.stop_container(&id.0, Some(options)).await {
            Ok(()) => {}
            // 304: already stopped; 404: already gone.
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => {}
            Err(e) => return Err(RuntimeError::stop(id, EngineError::call("cannot stop it", e))),
        }
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        let _exclusive = self.rename_or_remove.lock().await;
        match self.docker.remove_container(&id.0, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404)) => Ok(()),
            // 409: removal already in progress.
            Err(e) if matches!(status_of(&e), Some(409)) => Ok(()),
            Err(e) => Err(RuntimeError::stop(id, EngineError::call("cannot remove it", e))),
        }
    }

    async fn kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        match self.labels_of(&id.0).await {
            Ok(Some((_, labels))) if self.is_ours(&labels) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(RuntimeError::stop(id, e)),
        }
        let options = bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        match self.docker.kill_container(&id.0, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::stop(id, EngineError::call("cannot kill it", e))),
        }
    }

    async fn shutdown(&self, _grace: Duration) {
        // Containers outlive the load balancer on purpose: a restart adopts them.
        self.events.abort();
    }

    async fn name_held_by_other(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.labels_of(name).await {
            Ok(Some((_, labels))) => Ok(!self.is_ours(&labels)),
            Ok(None) => Ok(false),
            Err(e) => Err(RuntimeError::unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_hash_follows_image_network_and_port_only() {
        let base = Manifest::parse("name: d\n").unwrap();
        let hash = |m: &Manifest| spec_hash_of(&m.replica);
        let image = Manifest::parse("name: d\nreplica: {image: 'ringlb:v2'}\n").unwrap();
        let replicas = Manifest::parse("name: d\nreplicas: 7\n").unwrap();
        assert_ne!(hash(&base), hash(&image));
        assert_eq!(hash(&base), hash(&replicas));
    }

    #[test]
    fn the_spec_hash_of_a_fixed_manifest_never_changes() {
        // A changed hash would roll every user's replicas on upgrade: these are the values of
        // ringlb before the runtime code moved (issue 17), and must stay bit-for-bit.
        let default = Manifest::parse("name: d\n").unwrap();
        assert_eq!(spec_hash_of(&default.replica), 0xc95a_f3a5_e2eb_df33);
        let custom = Manifest::parse(
            "name: d\nreplica: {image: 'ringlb:v2', network: blue, port: 5001, stop_timeout: 3s}\n",
        )
        .unwrap();
        assert_eq!(spec_hash_of(&custom.replica), 0x60df_cbac_2f88_e177);
    }

    /// The request the golden test below is made from.
    fn fixed_request() -> StartRequest {
        let manifest = Manifest::parse(
            "name: d\nreplica: {image: 'ringlb:v2', network: blue, port: 5001, stop_timeout: 3s}\n",
        )
        .unwrap();
        StartRequest {
            name: "s1".into(),
            replica_id: 7,
            spec_hash: 0x0123_4567_89ab_cdef,
            spec: manifest.replica,
            health: manifest.health,
        }
    }

    #[test]
    fn a_replica_container_is_created_as_before() {
        // Golden: what ringlb asked Docker for before the runtime code moved (issue 17).
        let labels = serde_json::json!({
            "ringlb.cluster": "demo", "ringlb.hostname": "s1", "ringlb.id": "7",
            "ringlb.network": "blue", "ringlb.port": "5001", "ringlb.spec": "0123456789abcdef"
        });
        let request = fixed_request();
        let made = labels::of_replica("demo", &request);
        assert_eq!(serde_json::to_value(&made).unwrap(), labels);
        let body = serde_json::to_value(container_body(&request, &made)).unwrap();
        let expected = serde_json::json!({
            "Hostname": "s1", "Env": ["SERVER_ID=s1"], "Cmd": ["server", "--port", "5001"],
            "Image": "ringlb:v2", "Labels": labels, "StopTimeout": 3,
            "HostConfig": {"NetworkMode": "blue", "RestartPolicy": {"Name": "no"}},
            "NetworkingConfig": {"EndpointsConfig": {"blue": {}}}
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn a_foreign_name_error_says_what_to_do() {
        let error = foreign("server1", "demo");
        assert!(matches!(error, RuntimeError::NameTaken { .. }), "the controller tells it by its variant");
        let text = error.to_string();
        assert!(text.contains("not managed by ringlb") && text.contains("ringlb.cluster=demo"), "{text}");
        assert!(text.starts_with("cannot start replica server1: a container named server1 exists"), "{text}");
    }
}
