//! Replicas that ringlb balances but does not run (`replica.runtime: static`): fixed
//! `host:port` endpoints from `replica.endpoints`, health-checked, hashed and listed by `/rep`
//! like any other replica. This is how ringlb sits in front of servers it does not manage, and how
//! the benchmark puts every proxy in front of the very same backends.
//!
//! The runtime always reports every endpoint as running; nothing is ever started or stopped. A
//! failing endpoint leaves the ring at its first failed heartbeat and comes back at its next good
//! one (the controller never replaces a static replica).

use super::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Fixed endpoints, named after `hostnames` (or `<cluster>-<i>` beyond them).
pub struct StaticRuntime {
    instances: Vec<Instance>,
}

impl StaticRuntime {
    /// The endpoints of `manifest` (validated: every endpoint is a `host:port` socket address).
    ///
    /// # Errors
    /// An endpoint that is not an IP address and port.
    pub fn new(manifest: &Manifest) -> Result<StaticRuntime, RuntimeError> {
        let started_at = SystemTime::now();
        let instances = manifest
            .replica
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let addr: SocketAddr = endpoint.parse().map_err(|e| {
                    RuntimeError::unavailable(format!(
                        "replica.endpoints[{i}] {endpoint:?} is not an address: {e}"
                    ))
                })?;
                let name = manifest
                    .hostnames
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("{}-{}", manifest.name, i + 1));
                Ok(Instance {
                    id: InstanceId(format!("static-{endpoint}")),
                    name,
                    replica_id: i as u32 + 1,
                    addr: Some(addr),
                    spec_hash: 0,
                    running: true,
                    started_at,
                })
            })
            .collect::<Result<_, RuntimeError>>()?;
        Ok(StaticRuntime { instances })
    }
}

impl Runtime for StaticRuntime {
    fn spec_hash(&self, _manifest: &Manifest) -> u64 {
        0
    }

    fn replaces_failed(&self) -> bool {
        false
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        Ok(self.instances.clone())
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        Err(RuntimeError::start(
            &request.name,
            "the static runtime does not start replicas; list them in replica.endpoints",
        ))
    }

    async fn stop(&self, _id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        // Not ours to stop: it just leaves the ring.
        Ok(())
    }

    async fn kill(&self, _id: &InstanceId) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn shutdown(&self, _grace: Duration) {}
}
