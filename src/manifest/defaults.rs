//! Every default of the manifest in one place: what a key left out means (DESIGN.md documents
//! these values). The sections' `Default` impls, and the functions serde calls for single fields.

use super::duration::HumanDuration;
use super::health::{HealthKind, StatusSet};
use super::resources::Resources;
use super::{Hashing, Health, KeySource, Limits, ProxyEngine, ProxySettings, ReplacementName, ReplicaSpec};
use super::{Http2Limits, ReplicaProtocol, RuntimeKind, UnknownPath};
use crate::ring::RingConfig;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

/// `replicas:`.
pub(super) fn replicas() -> u32 {
    3
}

/// `listen:`.
pub(super) fn listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5000))
}

/// `autoscale.target_inflight`.
pub(super) fn target_inflight() -> f64 {
    10.0
}

/// `autoscale.tolerance`.
pub(super) fn tolerance() -> f64 {
    0.1
}

/// `autoscale.scale_up_window`.
pub(super) fn scale_up_window() -> HumanDuration {
    HumanDuration::from_secs(3)
}

/// `autoscale.scale_down_window`.
pub(super) fn scale_down_window() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// `autoscale.max_step`.
pub(super) fn max_step() -> u32 {
    4
}

/// `autoscale.interval`.
pub(super) fn autoscale_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// `autoscale.hold_queue`.
pub(super) fn hold_queue() -> u32 {
    1000
}

/// `autoscale.hold_timeout`.
pub(super) fn hold_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

impl Default for ReplicaSpec {
    fn default() -> Self {
        ReplicaSpec {
            runtime: RuntimeKind::default(),
            image: "ringlb:latest".into(),
            network: "net1".into(),
            port: 5000,
            protocol: ReplicaProtocol::Http1,
            endpoints: Vec::new(),
            replacement_name: ReplacementName::Same,
            start_timeout: HumanDuration::from_secs(30),
            drain_timeout: HumanDuration::from_secs(30),
            stop_timeout: HumanDuration::from_secs(10),
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            resources: Resources::default(),
            labels: BTreeMap::new(),
            stop_signal: None,
        }
    }
}

impl Default for Hashing {
    fn default() -> Self {
        let ring = RingConfig::default();
        Hashing {
            algorithm: ring.algorithm,
            slots: ring.slots,
            virtual_nodes: ring.virtual_nodes,
            function: ring.function,
            probing: ring.probing,
            table_size: None,
            key: KeySource::RequestId,
            balance_factor: None,
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            kind: HealthKind::Http,
            path: "/heartbeat".into(),
            status: StatusSet::default(),
            interval: HumanDuration::from_secs(1),
            timeout: HumanDuration::from_millis(500),
            replace_after: 3,
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            timeout: HumanDuration::from_secs(30),
            connect_timeout: HumanDuration::from_secs(1),
            unknown_path: UnknownPath::Pass,
            access_log: false,
            engine: ProxyEngine::Fast,
            client_timeout: HumanDuration::from_secs(30),
            max_connections: 10_000,
            tunnel_idle_timeout: HumanDuration::from_secs(3600),
            http2: Http2Limits::default(),
        }
    }
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 128,
            max_header_bytes: 64 * 1024,
            stream_window_bytes: 256 * 1024,
            connection_window_bytes: 1024 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_replicas: 64 }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;
    use crate::ring::Algorithm;

    const MINIMAL: &str = "name: demo\n";

    #[test]
    fn a_minimal_manifest_takes_the_documented_defaults() {
        let m = Manifest::parse(MINIMAL).unwrap();
        assert_eq!(m.replicas, 3);
        assert!(m.hostnames.is_empty());
        assert_eq!(m.listen.to_string(), "0.0.0.0:5000");
        assert_eq!(m.hashing.algorithm, Algorithm::Maglev);
        assert_eq!(m.ring_config().table_size, 65537);
        assert_eq!(m.hashing.key, KeySource::RequestId);
        assert_eq!(m.health.interval.get(), std::time::Duration::from_secs(1));
        assert_eq!(m.health.timeout.get(), std::time::Duration::from_millis(500));
        assert_eq!(m.limits.max_replicas, 64);
    }
}
