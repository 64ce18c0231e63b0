//! The `replica:` section: what runs the replicas and how long they get to start, drain and stop.

use super::duration::HumanDuration;
use super::resources::Resources;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Which mechanism runs the replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// Docker containers of `replica.image` on `replica.network`.
    #[default]
    Docker,
    /// Child processes of `ringlb run` on 127.0.0.1 (`ringlb server`).
    Process,
    /// Fixed `host:port` endpoints (`replica.endpoints`) that ringlb balances but does not run.
    Static,
    /// Docker Swarm services of `replica.image` on the overlay network `replica.network`, one per
    /// replica; Swarm restarts their tasks, ringlb routes.
    Swarm,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
            RuntimeKind::Static => "static",
            RuntimeKind::Swarm => "swarm",
        })
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    /// The names `replica.runtime` takes.
    fn from_str(text: &str) -> Result<RuntimeKind, String> {
        match text {
            "docker" => Ok(RuntimeKind::Docker),
            "process" => Ok(RuntimeKind::Process),
            "static" => Ok(RuntimeKind::Static),
            "swarm" => Ok(RuntimeKind::Swarm),
            other => Err(format!("{other:?} is not a runtime: docker, process, static or swarm")),
        }
    }
}

/// The HTTP version ringlb speaks to the replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaProtocol {
    /// HTTP/1.1 over keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (no TLS, no upgrade): requests multiplexed over one connection
    /// per replica, trailers kept; what gRPC servers speak.
    H2c,
}

impl fmt::Display for ReplicaProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaProtocol::Http1 => "http1",
            ReplicaProtocol::H2c => "h2c",
        })
    }
}

/// What a replacement for a failed replica is called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplacementName {
    /// The replacement keeps the failed replica's name, so it keeps its ring positions.
    #[default]
    Same,
    /// The replacement gets a newly generated name, as the exercise asks.
    New,
}

/// How one replica is run (defaults in `defaults.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaSpec {
    /// The mechanism that runs replicas.
    pub runtime: RuntimeKind,
    /// Docker: the image of a replica.
    pub image: String,
    /// Docker: the network shared by the load balancer and the replicas.
    pub network: String,
    /// The port a replica listens on (Docker); the process runtime picks free ports itself.
    pub port: u16,
    /// The HTTP version spoken to the replicas: `http1` or `h2c`.
    pub protocol: ReplicaProtocol,
    /// Static: the `ip:port` of each replica, which ringlb balances but does not run.
    pub endpoints: Vec<String>,
    /// What a replacement for a failed replica is called.
    pub replacement_name: ReplacementName,
    /// How long a new replica may take to answer its first heartbeat before it is replaced.
    pub start_timeout: HumanDuration,
    /// How long a replica that leaves may take to finish its in-flight requests.
    pub drain_timeout: HumanDuration,
    /// How long a replica has to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout: HumanDuration,
    /// Replaces the image's command (docker, swarm); the program and its arguments (process).
    /// Templates: `{name}`, `{id}`, `{port}` (`template.rs`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint (docker, swarm); runs before `command` (process).
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables of the replica; values are templates like `command`'s.
    pub env: BTreeMap<String, String>,
    /// CPU and memory limits of a replica's container.
    pub resources: Resources,
    /// Extra container labels (never `ringlb.*`, which are ringlb's own).
    pub labels: BTreeMap<String, String>,
    /// The signal that asks a replica to stop, instead of SIGTERM (or the image's own).
    pub stop_signal: Option<String>,
}

/// The name of the image ringlb itself ships (`make image`): its replicas run `ringlb server`.
const RINGLB_IMAGE_NAME: &str = "ringlb";

impl ReplicaSpec {
    /// True when a replica runs ringlb's own `server` with its defaults: no `command` or
    /// `entrypoint` is given, and the image is ringlb's (its repository's last path segment is
    /// `ringlb`, whatever the registry or tag). Such a replica is started as `server --port <port>`
    /// with `SERVER_ID=<name>`, as before these keys existed; every other image runs its own
    /// command unless the manifest gives one.
    pub fn runs_ringlb_server(&self) -> bool {
        self.command.is_none() && self.entrypoint.is_none() && self.image_is_ringlb()
    }

    /// True when `image` is ringlb's own (so it holds `/ringlb`, for `ringlb probe`).
    pub fn image_is_ringlb(&self) -> bool {
        image_is_ringlb(&self.image)
    }
}

/// True when `image`'s repository is ringlb's (`ringlb`, `ringlb:v2`, `registry:5000/x/ringlb:1`,
/// `ringlb@sha256:...`).
fn image_is_ringlb(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repository = last.split(':').next().unwrap_or(last);
    repository == RINGLB_IMAGE_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ringlbs_own_image_without_a_command_runs_ringlb_server() {
        let spec = |image: &str| ReplicaSpec { image: image.into(), ..ReplicaSpec::default() };
        for ours in
            ["ringlb", "ringlb:latest", "ringlb:test-7", "registry:5000/team/ringlb:1", "ringlb@sha256:ab"]
        {
            assert!(spec(ours).runs_ringlb_server(), "{ours}");
        }
        for theirs in ["nginx:1", "ringlb-app:1", "team/myringlb", "busybox"] {
            assert!(!spec(theirs).runs_ringlb_server(), "{theirs}");
        }
        let with_command = ReplicaSpec { command: Some(vec!["server".into()]), ..spec("ringlb") };
        assert!(!with_command.runs_ringlb_server(), "a command given is a command run");
    }
}
