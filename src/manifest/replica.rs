//! The `replica:` section: what runs the replicas and how long they get to start, drain and stop.

use super::duration::HumanDuration;
use serde::Deserialize;
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
}
