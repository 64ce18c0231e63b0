//! The seam between the controller and whatever runs replicas.
//!
//! A [`Runtime`] lists the replicas it runs for the cluster, starts one, and stops one. It is the
//! only code that spawns processes or talks to Docker. It does not decide anything: which
//! replicas should exist is the controller's business. When something happens on its side (a
//! replica exited) it fires the [`Trigger`](crate::trigger::Trigger) it was built with, and the
//! controller looks again.
//!
//! One runtime per file or folder (`docker.rs`, `swarm/`, `process.rs`, `static_endpoints.rs`, and
//! a fake for the controller's unit tests); none imports another. What the two Docker runtimes
//! share is in `engine/`; why a call failed is a [`RuntimeError`] with a [`Cause`]. [`AnyRuntime`] is the
//! one place that turns the manifest's `replica.runtime` into one of them.

mod any;
mod docker;
mod engine;
mod error;
pub mod exit;
#[cfg(test)]
pub(crate) mod fake;
pub mod launch;
mod process;
mod static_endpoints;
mod swarm;

pub use crate::ids::InstanceId;
use crate::manifest::{Health, Manifest, ReplicaSpec};
pub use any::{AnyRuntime, Setup};
pub use error::{Cause, RuntimeError};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// One replica instance as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The runtime's id for it.
    pub id: InstanceId,
    /// The replica's name (hostname, `SERVER_ID`).
    pub name: String,
    /// The exercise's integer server id it was started with.
    pub replica_id: u32,
    /// Where it serves, when it runs.
    pub addr: Option<SocketAddr>,
    /// The hash of the spec it was started from (see [`Runtime::spec_hash`]).
    pub spec_hash: u64,
    /// False once its process or container has exited.
    pub running: bool,
    /// When it was started.
    pub started_at: SystemTime,
}

/// What the controller asks a runtime to start.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// Replica name.
    pub name: String,
    /// Exercise id.
    pub replica_id: u32,
    /// The spec hash to record on it.
    pub spec_hash: u64,
    /// The manifest's replica section it is started from.
    pub spec: ReplicaSpec,
    /// The manifest's heartbeat settings, for a runtime that gives its replicas a health check
    /// of its own (Swarm).
    pub health: Health,
}

/// Runs replicas: the only code that starts or stops them.
pub trait Runtime: Send + Sync + 'static {
    /// A hash of the parts of the manifest that shape a replica under this runtime. An instance
    /// whose recorded hash differs is replaced (one at a time).
    fn spec_hash(&self, manifest: &Manifest) -> u64;

    /// Every instance this runtime runs for the cluster, including exited ones not yet stopped.
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, RuntimeError>> + Send;

    /// Starts an instance and returns it once its address is known (not necessarily ready), or
    /// `None` when the runtime's own scheduler places it (Swarm): it then appears in [`list`] when
    /// it runs. Asking again for a name the scheduler already has in hand must do nothing more.
    ///
    /// [`list`]: Runtime::list
    fn start(
        &self,
        request: StartRequest,
    ) -> impl Future<Output = Result<Option<Instance>, RuntimeError>> + Send;

    /// Stops an instance whose replica leaves the cluster: SIGTERM, SIGKILL after `grace`, then
    /// forgets it. Stopping an exited or unknown instance succeeds.
    fn stop(&self, id: &InstanceId, grace: Duration)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops an instance whose replica stays wanted (it died, hung, is outdated or a duplicate); a
    /// successor takes its name. Runtimes that run their instances themselves just stop it; one
    /// whose scheduler restarts instances (Swarm) asks the scheduler for a fresh one instead.
    fn replace(
        &self,
        id: &InstanceId,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.stop(id, grace)
    }

    /// Kills an instance abruptly (SIGKILL), the way a crash would: for failure experiments
    /// (`ringlb analyze`, soak tests). The controller never calls it.
    fn kill(&self, id: &InstanceId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Called once when `ringlb run` exits: stop what must not outlive it.
    fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + Send;

    /// Called with every manifest version the controller takes (and not on the data path): a
    /// runtime whose replicas are listed in the manifest itself (static endpoints) follows it.
    fn follow(&self, _manifest: &Manifest) {}

    /// False for runtimes whose replicas ringlb does not run (static endpoints): a failing one only
    /// leaves the ring until it answers again, and is never stopped and started afresh.
    fn replaces_failed(&self) -> bool {
        true
    }

    /// Removes what the runtime keeps for replicas whose names are not in `wanted` and that have
    /// no instance the controller could stop (Swarm: a service whose task never ran, say of a
    /// broken image). Called after each pass that listed the runtime. Most runtimes keep nothing
    /// of the kind.
    fn remove_idle(&self, _wanted: &[String]) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// True if `name` is held by something this runtime does not own (a foreign container), so a
    /// replica cannot take it. Runtimes without a shared namespace never have one.
    fn name_held_by_other(&self, _name: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send {
        std::future::ready(Ok(false))
    }
}

/// The one question the admin API asks a runtime, in a form that can sit behind `dyn`.
pub trait NameCheck: Send + Sync {
    /// See [`Runtime::name_held_by_other`].
    fn held_by_other<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, RuntimeError>> + Send + 'a>>;
}

impl<R: Runtime> NameCheck for R {
    fn held_by_other<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, RuntimeError>> + Send + 'a>> {
        Box::pin(self.name_held_by_other(name))
    }
}
