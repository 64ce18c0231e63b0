//! The one place that turns the manifest's `replica.runtime` into a runtime: [`AnyRuntime`] is
//! whichever runtime the kind names, and is a [`Runtime`] itself, so `ringlb run`, the analysis and
//! the balancer need not know which one runs the replicas.

use super::docker::DockerRuntime;
use super::process::ProcessRuntime;
use super::static_endpoints::StaticRuntime;
use super::swarm::SwarmRuntime;
use super::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::{Manifest, RuntimeKind};
use crate::trigger::Trigger;
use std::path::PathBuf;
use std::time::Duration;

/// A runtime of any kind.
pub enum AnyRuntime {
    /// `replica.runtime: process`.
    Process(ProcessRuntime),
    /// `replica.runtime: static`.
    Static(StaticRuntime),
    /// `replica.runtime: docker`.
    Docker(DockerRuntime),
    /// `replica.runtime: swarm`.
    Swarm(SwarmRuntime),
}

/// What building a runtime needs besides the manifest.
pub struct Setup {
    /// Fired when something happens on the runtime's side (a replica exited).
    pub trigger: Trigger,
    /// The `ringlb` executable the process runtime starts as `ringlb server` replicas.
    pub executable: PathBuf,
    /// Options every replica of the process runtime gets before `server` (its log settings).
    pub replica_args: Vec<String>,
    /// Options every replica of the process runtime gets after `server` (`--work-slots`, say).
    pub server_args: Vec<String>,
}

impl AnyRuntime {
    /// The runtime `manifest.replica.runtime` names, for the cluster `manifest.name`.
    ///
    /// # Errors
    /// The Docker engine cannot be reached (docker, swarm), the engine is no swarm manager
    /// (swarm), the endpoints do not fit the manifest (static).
    pub async fn for_manifest(manifest: &Manifest, setup: Setup) -> Result<AnyRuntime, RuntimeError> {
        let Setup { trigger, executable, replica_args, server_args } = setup;
        Ok(match manifest.replica.runtime {
            RuntimeKind::Process => AnyRuntime::Process(
                ProcessRuntime::new(executable, replica_args, trigger).with_server_args(server_args),
            ),
            RuntimeKind::Static => AnyRuntime::Static(StaticRuntime::new(manifest).await?),
            RuntimeKind::Docker => AnyRuntime::Docker(DockerRuntime::connect(&manifest.name, trigger).await?),
            RuntimeKind::Swarm => AnyRuntime::Swarm(SwarmRuntime::connect(&manifest.name, trigger).await?),
        })
    }

    /// Removes the networks the runtime created for the cluster (Docker; nothing for the others).
    /// For runs that leave nothing behind (the analysis); `ringlb run` keeps them for its restart.
    pub async fn remove_own_networks(&self) {
        if let AnyRuntime::Docker(docker) = self {
            docker.remove_own_networks().await;
        }
    }
}

/// `$body` with `$runtime` bound to the runtime inside, whatever its kind.
macro_rules! on_each {
    ($self:expr, $runtime:ident => $body:expr) => {
        match $self {
            AnyRuntime::Process($runtime) => $body,
            AnyRuntime::Static($runtime) => $body,
            AnyRuntime::Docker($runtime) => $body,
            AnyRuntime::Swarm($runtime) => $body,
        }
    };
}

impl Runtime for AnyRuntime {
    fn spec_hash(&self, manifest: &Manifest) -> u64 {
        on_each!(self, runtime => runtime.spec_hash(manifest))
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        on_each!(self, runtime => runtime.list().await)
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        on_each!(self, runtime => runtime.start(request).await)
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        on_each!(self, runtime => runtime.stop(id, grace).await)
    }

    async fn replace(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        on_each!(self, runtime => runtime.replace(id, grace).await)
    }

    async fn kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        on_each!(self, runtime => runtime.kill(id).await)
    }

    async fn shutdown(&self, grace: Duration) {
        on_each!(self, runtime => runtime.shutdown(grace).await)
    }

    fn follow(&self, manifest: &Manifest) {
        on_each!(self, runtime => runtime.follow(manifest))
    }

    fn replaces_failed(&self) -> bool {
        on_each!(self, runtime => runtime.replaces_failed())
    }

    async fn remove_idle(&self, wanted: &[String]) {
        on_each!(self, runtime => runtime.remove_idle(wanted).await)
    }

    async fn name_held_by_other(&self, name: &str) -> Result<bool, RuntimeError> {
        on_each!(self, runtime => runtime.name_held_by_other(name).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            trigger: Trigger::new(),
            executable: PathBuf::from("/nonexistent/ringlb"),
            replica_args: Vec::new(),
            server_args: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_kind_in_the_manifest_picks_the_runtime_and_calls_go_to_it() {
        let text = "name: s\nreplicas: 2\nhostnames: [a, b]\nreplica:\n  runtime: static\n  \
                    endpoints: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n";
        let manifest = Manifest::parse(text).unwrap();
        let runtime = AnyRuntime::for_manifest(&manifest, setup()).await.unwrap();
        assert!(matches!(runtime, AnyRuntime::Static(_)));
        assert!(!runtime.replaces_failed(), "static endpoints are never replaced");
        let names: Vec<String> = runtime.list().await.unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["a", "b"]);

        let manifest = Manifest::parse("name: p\nreplicas: 1\nreplica:\n  runtime: process\n").unwrap();
        let runtime = AnyRuntime::for_manifest(&manifest, setup()).await.unwrap();
        assert!(matches!(runtime, AnyRuntime::Process(_)));
        assert!(runtime.replaces_failed());
        assert!(runtime.list().await.unwrap().is_empty(), "nothing started yet");
    }
}
