//! Looking at the swarm: the cluster's services and their live tasks as instances (at their
//! overlay addresses), and the poller that fires the controller's trigger when they change
//! (Swarm has no task events).

use super::view::{TaskView, parse_rfc3339_seconds};
use crate::runtime::engine::EngineError;
use crate::runtime::engine::api::EngineApi;
use crate::runtime::engine::labels;
use crate::runtime::engine::names::is_ours;
use crate::runtime::{Instance, InstanceId};
use crate::trigger::Trigger;
use bollard::Docker;
use bollard::query_parameters::ListServicesOptionsBuilder;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the task list is polled for changes (Swarm has no task events).
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// What one look at the swarm found.
#[derive(Debug, Default)]
pub(super) struct Observation {
    /// Running tasks with an address, as instances.
    pub(super) instances: Vec<Instance>,
    /// The service id of every running task (addressed or not).
    pub(super) service_of: HashMap<String, String>,
    /// Running tasks whose address is not known yet: (task id, replica name, network).
    pub(super) unaddressed: Vec<(String, String, String)>,
    /// Services with no running task: (service id, replica name).
    pub(super) idle: Vec<(String, String)>,
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

/// Looks at the cluster's services and their live tasks.
pub(super) async fn observe(
    docker: &Docker,
    api: &EngineApi,
    cluster: &str,
) -> Result<Observation, EngineError> {
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

/// Fires `trigger` whenever the cluster's running tasks or their addresses change.
pub(super) async fn poll_tasks(docker: Docker, api: EngineApi, cluster: String, trigger: Trigger) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(task: &str, addr: &str) -> Instance {
        Instance {
            id: InstanceId(task.into()),
            name: "s1".into(),
            replica_id: 1,
            addr: Some(addr.parse().unwrap()),
            spec_hash: 0,
            running: true,
            started_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn the_poller_sees_tasks_and_addresses_come_and_go_and_nothing_else() {
        let look = |instances: Vec<Instance>, unaddressed: &[&str]| Observation {
            instances,
            unaddressed: unaddressed.iter().map(|t| (t.to_string(), "s2".into(), "net".into())).collect(),
            ..Observation::default()
        };
        let before = look(vec![instance("t1", "10.0.1.2:5000")], &["t2"]).fingerprint();
        let mut other_spec = instance("t1", "10.0.1.2:5000");
        other_spec.spec_hash = 7;
        assert_eq!(look(vec![other_spec], &["t2"]).fingerprint(), before, "only tasks and addresses count");
        assert_ne!(look(vec![instance("t1", "10.0.1.3:5000")], &["t2"]).fingerprint(), before);
        assert_ne!(look(vec![instance("t1", "10.0.1.2:5000")], &[]).fingerprint(), before);
        assert_ne!(look(vec![instance("t3", "10.0.1.2:5000")], &["t2"]).fingerprint(), before);
    }
}
