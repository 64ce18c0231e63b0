//! What a replica's service is made of: its spec (one replicated task, `dnsrr`, restart `any`,
//! start-first updates, on the overlay network), its container health check (`ringlb probe`), and
//! the spec hash that says when a running service is outdated.
//!
//! The health check needs `/ringlb` inside the container, so only ringlb's own image gets it. A
//! task of any other image keeps the image's own check (if it has one); without one, Swarm's
//! start-first update stops the old task as soon as the new one runs, before ringlb has heard
//! from it. A roll then relies on ringlb's side: the old task's address refuses connections once
//! it stops, and a refused or reset-before-any-byte attempt is retried on the next replica, so
//! the replica's name may leave the ring for a moment but no request is lost.
//!
//! The hash of the same manifest must never change: a changed hash rolls every replica on
//! upgrade. The tests pin today's values.

use super::observe::POLL_EVERY;
use crate::manifest::template::Values;
use crate::manifest::{Health, HealthKind, ReplicaSpec};
use crate::runtime::StartRequest;
use crate::runtime::engine::labels;
use crate::runtime::launch::{self, Launch};
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use std::time::Duration;

/// How long Swarm waits before restarting a task that exited.
const RESTART_DELAY: Duration = Duration::from_millis(200);

/// The service spec of a replica.
pub(super) fn service_spec(
    cluster: &str,
    request: &StartRequest,
    image_id: String,
    force_update: u64,
) -> ServiceSpec {
    let spec = &request.spec;
    let name = &request.name;
    let labels = labels::of_replica(cluster, request);
    let launch = Launch::of(spec, Values { name, id: request.replica_id, port: spec.port });
    let env = launch.env_assignments();
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image_id),
                labels: Some(labels),
                // Swarm's `command` is the image's entrypoint, its `args` the image's command.
                command: launch.entrypoint,
                args: launch.command,
                hostname: Some(name.clone()),
                env,
                stop_signal: spec.stop_signal.clone(),
                stop_grace_period: Some(nanos(spec.stop_timeout.get())),
                // Only ringlb's image holds `ringlb probe`; another keeps its own check, if any.
                health_check: spec.image_is_ringlb().then(|| health_check(spec, &request.health)),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(RESTART_DELAY)),
                max_attempts: Some(0),
                window: None,
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(spec.network.clone()),
                aliases: Some(vec![name.clone()]),
                driver_opts: None,
            }]),
            resources: resources(spec),
            force_update: Some(force_update),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::CONTINUE),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports: None }),
        ..Default::default()
    }
}

/// `replica.resources` as the task's limits (none when unset, as before the key existed).
fn resources(spec: &ReplicaSpec) -> Option<TaskSpecResources> {
    if spec.resources.is_unlimited() {
        return None;
    }
    Some(TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: spec.resources.nano_cpus(),
            memory_bytes: spec.resources.memory_bytes(),
            pids: None,
        }),
        ..Default::default()
    })
}

/// How often a task's container health check runs. Only its first pass matters much (Swarm's
/// start-first update stops the old task then), and it must come after ringlb saw the new task
/// (a poll) and heard its first heartbeat, with room to spare. Each check is an exec in the
/// container: 53 ms of CPU on engine 20.10 here, so not more often than every 5 s.
pub fn check_interval(health: &Health) -> Duration {
    Duration::from_secs(5).max((POLL_EVERY + health.interval.get()) * 2)
}

/// A replica's container health check: `ringlb probe` of its heartbeat path on its port.
fn health_check(spec: &ReplicaSpec, health: &Health) -> HealthConfig {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let timeout = health.timeout.get();
    let mut test: Vec<String> = [
        "CMD",
        "/ringlb",
        "probe",
        "--port",
        &spec.port.to_string(),
        "--path",
        &health.path,
        "--timeout-ms",
        &timeout.as_millis().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Only what differs from the defaults, so the checks (and hashes) of existing manifests stay.
    if !health.status.is_default() {
        test.extend(["--status".to_owned(), health.status.to_string()]);
    }
    match health.kind {
        HealthKind::Tcp => test.push("--tcp".to_owned()),
        HealthKind::Grpc => test.push("--grpc".to_owned()),
        HealthKind::Http => {}
    }
    HealthConfig {
        test: Some(test),
        interval: Some(nanos(check_interval(health))),
        // The probe gives up first, and says why in the check's log.
        timeout: Some(nanos(timeout + Duration::from_secs(1))),
        retries: Some(i64::from(health.replace_after.max(1))),
        start_period: Some(nanos(spec.start_timeout.get())),
        start_interval: None,
    }
}

/// What shapes a replica's service: the image, the network, the port, and its health check.
pub(super) fn spec_hash_of(spec: &ReplicaSpec, health: &Health) -> u64 {
    let check = health_check(spec, health);
    let numbers = [check.interval, check.timeout, check.retries, check.start_period].map(|n| n.unwrap_or(0));
    let text = format!(
        "swarm\n{}\n{}\n{}\n{}\n{numbers:?}{}",
        spec.image,
        spec.network,
        spec.port,
        check.test.unwrap_or_default().join(" "),
        launch::hash_text(spec)
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn the_health_check_probes_the_heartbeat_after_ringlb_would_have() {
        let manifest = Manifest::parse("name: d\nreplica: {port: 5001}\nhealth: {timeout: 250ms}\n").unwrap();
        let check = health_check(&manifest.replica, &manifest.health);
        let test = check.test.unwrap().join(" ");
        assert_eq!(test, "CMD /ringlb probe --port 5001 --path /heartbeat --timeout-ms 250");
        assert_eq!(check.timeout, Some(1_250_000_000));
        assert_eq!(check.retries, Some(i64::from(manifest.health.replace_after)));
        // Never more often than every 5 s; later than a poll and two heartbeats.
        assert_eq!(check_interval(&manifest.health), Duration::from_secs(5));
        let slow = Manifest::parse("name: d\nhealth: {interval: 4s, timeout: 1s}\n").unwrap();
        assert_eq!(check_interval(&slow.health), Duration::from_secs(9));
    }

    #[test]
    fn the_spec_hash_follows_the_image_and_the_health_check() {
        let hash = |text: &str| {
            let manifest = Manifest::parse(text).unwrap();
            spec_hash_of(&manifest.replica, &manifest.health)
        };
        let base = hash("name: d\n");
        assert_ne!(base, hash("name: d\nreplica: {image: 'ringlb:v2'}\n"));
        assert_ne!(base, hash("name: d\nhealth: {path: /ok}\n"), "the check must probe the new path");
        assert_eq!(base, hash("name: d\nreplicas: 7\n"));
        assert_eq!(base, hash("name: d\nhealth: {interval: 2s}\n"), "the same check every 5 s");
    }

    #[test]
    fn the_spec_hash_of_a_fixed_manifest_never_changes() {
        // A changed hash would roll every user's replicas on upgrade: these are the values of
        // ringlb before the runtime code moved (issue 17), and must stay bit-for-bit.
        let hash = |text: &str| {
            let manifest = Manifest::parse(text).unwrap();
            spec_hash_of(&manifest.replica, &manifest.health)
        };
        assert_eq!(hash("name: d\n"), 0xf394_c24c_5039_0931);
        assert_eq!(
            hash(
                "name: d\nreplica: {image: 'ringlb:v2', network: blue, port: 5001, start_timeout: 12s}\n\
                 health: {path: /ok, interval: 4s, timeout: 700ms, replace_after: 5}\n"
            ),
            0xa29d_0c49_d4c1_4788
        );
    }

    #[test]
    fn a_replica_service_is_specified_as_before() {
        // Golden: what ringlb asked Swarm for before the runtime code moved (issue 17).
        let manifest = Manifest::parse(
            "name: d\nreplica: {image: 'ringlb:v2', network: blue, port: 5001, stop_timeout: 3s, start_timeout: 12s}\n\
             health: {path: /ok, interval: 4s, timeout: 700ms, replace_after: 5}\n",
        )
        .unwrap();
        let request = StartRequest {
            name: "s1".into(),
            replica_id: 7,
            spec_hash: 0x0123_4567_89ab_cdef,
            spec: manifest.replica,
            health: manifest.health,
        };
        let labels = serde_json::json!({
            "ringlb.cluster": "demo", "ringlb.hostname": "s1", "ringlb.id": "7",
            "ringlb.network": "blue", "ringlb.port": "5001", "ringlb.spec": "0123456789abcdef"
        });
        let expected = serde_json::json!({
            "Name": "s1", "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "sha256:33aa", "Labels": labels, "Args": ["server", "--port", "5001"],
                    "Hostname": "s1", "Env": ["SERVER_ID=s1"], "StopGracePeriod": 3_000_000_000_u64,
                    "HealthCheck": {
                        "Test": ["CMD", "/ringlb", "probe", "--port", "5001", "--path", "/ok", "--timeout-ms", "700"],
                        "Interval": 9_000_000_000_u64, "Timeout": 1_700_000_000_u64, "Retries": 5,
                        "StartPeriod": 12_000_000_000_u64
                    }
                },
                "RestartPolicy": {"Condition": "any", "Delay": 200_000_000, "MaxAttempts": 0},
                "ForceUpdate": 4,
                "Networks": [{"Target": "blue", "Aliases": ["s1"]}]
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "continue", "Order": "start-first"},
            "EndpointSpec": {"Mode": "dnsrr"}
        });
        let spec = service_spec("demo", &request, "sha256:33aa".into(), 4);
        assert_eq!(serde_json::to_value(spec).unwrap(), expected);
    }
}
