//! The `ringlb.*` labels on the containers and services of a cluster: what makes one ringlb's,
//! and what a restarted load balancer reads back from it (its replica, network, port and spec).
//!
//! The names are part of ringlb's contract with the engine: changing one would orphan every
//! running replica of every user, so they never change.

use crate::runtime::StartRequest;
use std::collections::HashMap;

/// The cluster a container or service belongs to: the label that makes it ours.
pub const LABEL_CLUSTER: &str = "ringlb.cluster";
/// The replica's name (the container name can differ during a rolling replacement).
pub const LABEL_HOSTNAME: &str = "ringlb.hostname";
/// The exercise's server id.
pub const LABEL_ID: &str = "ringlb.id";
/// The network the replica serves on.
pub const LABEL_NETWORK: &str = "ringlb.network";
/// The hash of the replica spec it was created from.
pub const LABEL_SPEC: &str = "ringlb.spec";
/// The port the replica listens on.
pub const LABEL_PORT: &str = "ringlb.port";
// ringlb's own service or container (not a replica) carries `ringlb.load-balancer=<cluster>`:
// `make run-swarm` sets it, and `make stop-swarm` finds it by it. No code here reads it.

/// The port a replica listens on when its label does not say.
const DEFAULT_PORT: u16 = 5000;

/// The labels of a replica's container or service: they make it ours and say what it was made
/// from.
///
/// The manifest's own `replica.labels` come first, so ringlb's can never be overridden (the
/// manifest refuses `ringlb.*` keys anyway).
pub(crate) fn of_replica(cluster: &str, request: &StartRequest) -> HashMap<String, String> {
    let spec = &request.spec;
    let mut labels: HashMap<String, String> =
        spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.extend([
        (LABEL_CLUSTER.to_string(), cluster.to_owned()),
        (LABEL_HOSTNAME.to_string(), request.name.clone()),
        (LABEL_ID.to_string(), request.replica_id.to_string()),
        (LABEL_NETWORK.to_string(), spec.network.clone()),
        (LABEL_SPEC.to_string(), spec_label(request.spec_hash)),
        (LABEL_PORT.to_string(), spec.port.to_string()),
    ]);
    labels
}

/// How a spec hash is written in [`LABEL_SPEC`]: 16 hex digits.
pub(crate) fn spec_label(spec_hash: u64) -> String {
    format!("{spec_hash:016x}")
}

/// The listing filter that selects the cluster's containers, services or networks.
pub(crate) fn cluster_filter(cluster: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_CLUSTER}={cluster}")])])
}

/// The replica name in `labels` (empty without one).
pub(crate) fn hostname(labels: &HashMap<String, String>) -> String {
    labels.get(LABEL_HOSTNAME).cloned().unwrap_or_default()
}

/// The exercise id in `labels` (0 without a readable one).
pub(crate) fn replica_id(labels: &HashMap<String, String>) -> u32 {
    labels.get(LABEL_ID).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The spec hash in `labels` (0 without a readable one: such an instance is outdated).
pub(crate) fn spec_hash(labels: &HashMap<String, String>) -> u64 {
    labels.get(LABEL_SPEC).and_then(|s| u64::from_str_radix(s, 16).ok()).unwrap_or(0)
}

/// The network in `labels` (empty without one).
pub(crate) fn network(labels: &HashMap<String, String>) -> String {
    labels.get(LABEL_NETWORK).cloned().unwrap_or_default()
}

/// The port in `labels`, else 5000.
pub(crate) fn port(labels: &HashMap<String, String>) -> u16 {
    labels.get(LABEL_PORT).and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_back_what_was_written() {
        let manifest =
            crate::manifest::Manifest::parse("name: d\nreplica: {network: blue, port: 5001}\n").unwrap();
        let request = StartRequest {
            name: "s1".into(),
            replica_id: 7,
            spec_hash: 0x00ab,
            spec: manifest.replica,
            health: manifest.health,
        };
        let labels = of_replica("demo", &request);
        assert_eq!(labels.get(LABEL_SPEC).map(String::as_str), Some("00000000000000ab"));
        assert_eq!(
            (hostname(&labels), replica_id(&labels), spec_hash(&labels), network(&labels), port(&labels)),
            ("s1".to_string(), 7, 0xab, "blue".to_string(), 5001)
        );
        let bare = HashMap::new();
        assert_eq!((replica_id(&bare), spec_hash(&bare), port(&bare)), (0, 0, 5000));
    }
}
