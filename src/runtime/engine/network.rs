//! The networks replicas serve on: created (labelled as the cluster's) when missing, one at a
//! time, and removed with a cluster that is gone for good. The Docker runtime makes a bridge
//! network, the Swarm runtime an overlay one; both are attachable, so that ringlb itself can join
//! them.

use super::labels::{self, LABEL_CLUSTER};
use super::names::is_ours;
use super::{EngineError, describe, status_of};
use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptionsBuilder};
use std::collections::HashMap;

/// The kind of network a runtime's replicas need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetworkKind {
    /// A local bridge network (containers on one engine).
    Bridge,
    /// A Swarm overlay network (tasks on every node).
    Overlay,
}

impl NetworkKind {
    /// The driver it is created with.
    fn driver(self) -> &'static str {
        match self {
            NetworkKind::Bridge => "bridge",
            NetworkKind::Overlay => "overlay",
        }
    }

    /// How the log line names a network just created.
    fn created(self) -> &'static str {
        match self {
            NetworkKind::Bridge => "Docker network",
            NetworkKind::Overlay => "overlay network",
        }
    }

    /// How an error names a network that cannot be created.
    fn noun(self) -> &'static str {
        match self {
            NetworkKind::Bridge => "network",
            NetworkKind::Overlay => "overlay network",
        }
    }
}

/// Creates a runtime's networks when missing, one at a time.
#[derive(Debug)]
pub(crate) struct Networks {
    kind: NetworkKind,
    /// Serialises creation: engines before 25 accept two networks with one name, and replicas
    /// start concurrently.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Networks {
    /// Networks of `kind`.
    pub(crate) fn new(kind: NetworkKind) -> Networks {
        Networks { kind, one_at_a_time: tokio::sync::Mutex::new(()) }
    }

    /// Creates `network` (attachable, labelled as `cluster`'s) unless it exists. An overlay
    /// network must be one: a local network of the same name cannot carry Swarm tasks.
    ///
    /// # Errors
    /// The engine's error naming the network, or [`EngineError::Unsuitable`] for a network of
    /// the wrong driver.
    pub(crate) async fn ensure(
        &self,
        docker: &Docker,
        cluster: &str,
        network: &str,
    ) -> Result<(), EngineError> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let options = match self.kind {
            NetworkKind::Bridge => None,
            NetworkKind::Overlay => {
                Some(InspectNetworkOptions { verbose: false, scope: Some("swarm".into()) })
            }
        };
        match docker.inspect_network(network, options).await {
            Ok(found) => return self.check_driver(network, found.driver.unwrap_or_default()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(EngineError::call(format!("cannot inspect network {network}"), e)),
        }
        let request = NetworkCreateRequest {
            name: network.to_owned(),
            driver: Some(self.kind.driver().into()),
            attachable: Some(true),
            labels: Some(HashMap::from([(LABEL_CLUSTER.to_string(), cluster.to_owned())])),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(
                    event = "network_created",
                    network,
                    "created {} {network}",
                    self.kind.created()
                );
                Ok(())
            }
            // Someone else created it in between: fine.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(EngineError::call(format!("cannot create {} {network}", self.kind.noun()), e)),
        }
    }

    /// Whether an existing network of `driver` serves: any does for containers (a user's own
    /// network is theirs to choose), only an overlay one for Swarm tasks.
    fn check_driver(&self, network: &str, driver: String) -> Result<(), EngineError> {
        if self.kind == NetworkKind::Overlay && driver != "overlay" {
            return Err(EngineError::Unsuitable(format!(
                "network {network} exists with driver {driver:?}; the swarm runtime needs an overlay network \
                 (set replica.network to another name, and ringlb creates it)"
            )));
        }
        Ok(())
    }
}

/// Removes the networks carrying `cluster`'s label (the ones ringlb created when missing), for a
/// cluster that is gone for good. A network still in use stays; failures are logged.
pub(crate) async fn remove_own(docker: &Docker, cluster: &str) {
    let options = ListNetworksOptionsBuilder::new().filters(&labels::cluster_filter(cluster)).build();
    let Ok(networks) = docker.list_networks(Some(options)).await else { return };
    for network in networks {
        if let Some(id) = network.id
            && is_ours(network.labels.as_ref(), cluster)
            && let Err(e) = docker.remove_network(&id).await
        {
            tracing::warn!(network = %id, error = %describe(&e), "cannot remove a network of this cluster");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_tasks_need_an_overlay_network_and_containers_take_any() {
        let overlay = Networks::new(NetworkKind::Overlay);
        assert!(overlay.check_driver("blue", "overlay".into()).is_ok());
        let error = overlay.check_driver("blue", "bridge".into()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "network blue exists with driver \"bridge\"; the swarm runtime needs an overlay network \
             (set replica.network to another name, and ringlb creates it)"
        );
        let bridge = Networks::new(NetworkKind::Bridge);
        for driver in ["bridge", "overlay", "macvlan", ""] {
            assert!(bridge.check_driver("blue", driver.into()).is_ok(), "{driver}");
        }
    }

    #[test]
    fn each_kind_is_created_with_its_driver_and_named_as_before() {
        assert_eq!((NetworkKind::Bridge.driver(), NetworkKind::Overlay.driver()), ("bridge", "overlay"));
        assert_eq!(NetworkKind::Bridge.noun(), "network");
        assert_eq!(NetworkKind::Overlay.noun(), "overlay network");
        assert_eq!(NetworkKind::Bridge.created(), "Docker network");
        assert_eq!(NetworkKind::Overlay.created(), "overlay network");
    }
}
