//! Validation: the rules the manifest's types cannot express, each broken rule reported with the
//! field it is about.
//!
//! One check per part of the manifest. They run in a fixed order, which is the order of the list
//! users read (and the first error is the one whose position is reported): keep it when adding a
//! rule, so existing error lists stay as they are.

use super::names::{NAME_RULE, is_valid_image, is_valid_name};
use super::template;
use super::{Autoscale, FieldError, Hashing, MAX_REPLICAS_CEILING, Manifest, RuntimeKind};
use crate::ring::maglev::MAX_TABLE_SIZE;
use crate::ring::slots::MAX_SLOTS;
use crate::ring::{Algorithm, is_prime};
use std::collections::BTreeSet;
use std::net::SocketAddr;

impl Manifest {
    /// Every rule the types cannot express; an empty list means valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Errors::default();
        check_name(self, &mut errors);
        check_scale(self, &mut errors);
        check_replica(self, &mut errors);
        check_launch(self, &mut errors);
        check_timeouts(self, &mut errors);
        check_health_and_proxy(self, &mut errors);
        if let Some(tls) = &self.tls {
            check_tls(self, tls, &mut errors);
        }
        check_balance_factor(&self.hashing, &mut errors);
        if let Some(autoscale) = &self.autoscale {
            check_autoscale(autoscale, self.limits.max_replicas, &mut errors);
        }
        check_ring_size(self, &mut errors);
        errors.0
    }
}

/// The errors found so far, in the order they were found.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into(), position: None });
    }
}

/// `name`: a valid cluster name.
fn check_name(m: &Manifest, errors: &mut Errors) {
    if !is_valid_name(&m.name) {
        errors.fail("name", format!("{:?} is not a valid cluster name ({NAME_RULE})", m.name));
    }
}

/// `limits.max_replicas`, `replicas` within it, and `hostnames`: valid, each listed once.
fn check_scale(m: &Manifest, errors: &mut Errors) {
    let max = m.limits.max_replicas;
    if max == 0 || max > MAX_REPLICAS_CEILING {
        errors.fail(
            "limits.max_replicas",
            format!("must be between 1 and {MAX_REPLICAS_CEILING}, found {max}"),
        );
    }
    if m.replicas > max {
        errors.fail("replicas", format!("{} is more than limits.max_replicas ({max})", m.replicas));
    }
    let mut seen = BTreeSet::new();
    for (i, name) in m.hostnames.iter().enumerate() {
        let field = format!("hostnames[{i}]");
        if !is_valid_name(name) {
            errors.fail(&field, format!("{name:?} is not a valid hostname ({NAME_RULE})"));
        } else if !seen.insert(name.as_str()) {
            errors.fail(&field, format!("{name:?} is listed twice"));
        }
    }
}

/// `replica`: image, network, the static runtime's endpoints (which are then its replicas), port.
fn check_replica(m: &Manifest, errors: &mut Errors) {
    let replica = &m.replica;
    if !is_valid_image(&replica.image) {
        errors.fail("replica.image", format!("{:?} is not a valid image reference", replica.image));
    }
    if !is_valid_name(&replica.network) {
        errors.fail(
            "replica.network",
            format!("{:?} is not a valid network name ({NAME_RULE})", replica.network),
        );
    }
    if replica.runtime == RuntimeKind::Static {
        if replica.endpoints.is_empty() {
            errors.fail("replica.endpoints", "the static runtime needs at least one host:port endpoint");
        }
        if m.replicas as usize != replica.endpoints.len() {
            errors.fail(
                "replicas",
                format!(
                    "with replica.runtime: static the replicas are the endpoints: set replicas: {}",
                    replica.endpoints.len()
                ),
            );
        }
        if m.autoscale.is_some() {
            errors.fail("autoscale", "the static runtime cannot scale: its replicas are its endpoints");
        }
    } else if !replica.endpoints.is_empty() {
        errors.fail("replica.endpoints", "only the static runtime uses endpoints");
    }
    let mut seen = BTreeSet::new();
    for (i, endpoint) in replica.endpoints.iter().enumerate() {
        let field = format!("replica.endpoints[{i}]");
        if !is_valid_endpoint(endpoint) {
            errors.fail(
                &field,
                format!("{endpoint:?} is not host:port (an IP address or a host name, and a port 1-65535)"),
            );
        } else if !seen.insert(endpoint.as_str()) {
            errors.fail(&field, format!("{endpoint:?} is listed twice"));
        }
    }
    if replica.port == 0 {
        errors.fail("replica.port", "must be between 1 and 65535");
    }
}

/// `ip:port`, `[v6]:port` or `name:port`, with a port from 1 to 65535 and a DNS name of letters,
/// digits and hyphens.
fn is_valid_endpoint(endpoint: &str) -> bool {
    if let Ok(addr) = endpoint.parse::<SocketAddr>() {
        return addr.port() != 0;
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else { return false };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(label_ok)
        && !host.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit()));
    port_ok && name_ok
}

/// The smallest memory limit Docker accepts.
const MIN_MEMORY: u64 = 6 << 20;
/// The most CPUs a limit may name.
const MAX_CPUS: f64 = 1024.0;

/// What a replica runs: `command`, `entrypoint`, `env`, `resources`, `labels`, `stop_signal`,
/// each well formed and each meaningful for the runtime.
fn check_launch(m: &Manifest, errors: &mut Errors) {
    let replica = &m.replica;
    for (field, list) in [("replica.command", &replica.command), ("replica.entrypoint", &replica.entrypoint)]
    {
        let Some(list) = list else { continue };
        if list.first().is_none_or(|program| program.trim().is_empty()) {
            errors.fail(field, "must name a program first, e.g. [\"/bin/busybox\", \"httpd\", \"-f\"]");
        }
        for (i, part) in list.iter().enumerate() {
            if let Err(e) = template::check(part) {
                errors.fail(&format!("{field}[{i}]"), e.to_string());
            }
        }
    }
    for (name, value) in &replica.env {
        let field = if name.contains(['.', '[', ']']) {
            "replica.env".to_owned()
        } else {
            format!("replica.env.{name}")
        };
        if !is_valid_env_name(name) {
            errors.fail(
                &field,
                format!(
                    "{name:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
                ),
            );
        } else if let Err(e) = template::check(value) {
            errors.fail(&field, e.to_string());
        }
    }
    for key in replica.labels.keys() {
        if key.starts_with("ringlb.") {
            errors.fail(
                "replica.labels",
                format!("{key:?}: labels under ringlb. are ringlb's own and cannot be set"),
            );
        } else if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errors.fail("replica.labels", format!("{key:?} is not a valid label key"));
        }
    }
    if let Some(signal) = &replica.stop_signal
        && signal.parse::<nix::sys::signal::Signal>().is_err()
    {
        errors.fail(
            "replica.stop_signal",
            format!("{signal:?} is not a signal name like SIGTERM, SIGINT or SIGQUIT"),
        );
    }
    if let Some(cpus) = replica.resources.cpus
        && !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS)
    {
        errors
            .fail("replica.resources.cpus", format!("must be above 0 and at most {MAX_CPUS}, found {cpus}"));
    }
    if let Some(memory) = replica.resources.memory
        && memory.0 < MIN_MEMORY
    {
        errors.fail(
            "replica.resources.memory",
            format!("must be at least 6MiB (Docker's minimum), found {memory}"),
        );
    }
    check_launch_fits_runtime(m, errors);
}

/// The launch keys each runtime can honour: containers take them all; a process has no image,
/// labels or limits, and needs `{port}` to get a port of its own; static endpoints run nothing.
fn check_launch_fits_runtime(m: &Manifest, errors: &mut Errors) {
    let replica = &m.replica;
    let given = [
        ("replica.command", replica.command.is_some()),
        ("replica.entrypoint", replica.entrypoint.is_some()),
        ("replica.env", !replica.env.is_empty()),
        ("replica.resources", !replica.resources.is_unlimited()),
        ("replica.labels", !replica.labels.is_empty()),
        ("replica.stop_signal", replica.stop_signal.is_some()),
    ];
    match replica.runtime {
        RuntimeKind::Docker | RuntimeKind::Swarm => {}
        RuntimeKind::Static => {
            for (field, set) in given {
                if set {
                    errors.fail(field, "the static runtime runs nothing: its replicas are replica.endpoints");
                }
            }
        }
        RuntimeKind::Process => {
            for (field, set) in [
                ("replica.resources", !replica.resources.is_unlimited()),
                ("replica.labels", !replica.labels.is_empty()),
            ] {
                if set {
                    errors.fail(field, "the process runtime has no containers: only docker and swarm use it");
                }
            }
            if replica.entrypoint.is_some() && replica.command.is_none() {
                errors.fail(
                    "replica.entrypoint",
                    "the process runtime runs replica.command: give the program there",
                );
            }
            let mentions_port = replica
                .command
                .iter()
                .chain(&replica.entrypoint)
                .flatten()
                .any(|part| template::mentions_port(part))
                || replica.env.values().any(|value| template::mentions_port(value));
            if replica.command.is_some() && !mentions_port {
                errors.fail(
                    "replica.command",
                    "with the process runtime, the command (or a variable of replica.env) must use {port}: \
                     each replica gets a free port of its own, and {port} is how it learns which",
                );
            }
        }
    }
}

/// A POSIX-portable environment variable name.
fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every timeout of `replica`, `health` and `proxy`: longer than zero.
fn check_timeouts(m: &Manifest, errors: &mut Errors) {
    for (field, value) in [
        ("replica.start_timeout", m.replica.start_timeout),
        ("replica.drain_timeout", m.replica.drain_timeout),
        ("replica.stop_timeout", m.replica.stop_timeout),
        ("health.interval", m.health.interval),
        ("health.timeout", m.health.timeout),
        ("proxy.timeout", m.proxy.timeout),
        ("proxy.connect_timeout", m.proxy.connect_timeout),
        ("proxy.client_timeout", m.proxy.client_timeout),
        ("proxy.tunnel_idle_timeout", m.proxy.tunnel_idle_timeout),
    ] {
        if value.get().is_zero() {
            errors.fail(field, "must be longer than zero");
        }
    }
}

/// The rest of `health` and `proxy`, in the order their errors have always been listed:
/// `health.path`, `proxy.max_connections`, `health.replace_after`.
fn check_health_and_proxy(m: &Manifest, errors: &mut Errors) {
    if m.health.kind == super::HealthKind::Http && !m.health.path.starts_with('/') {
        errors.fail("health.path", format!("must start with '/', found {:?}", m.health.path));
    }
    if m.proxy.max_connections == 0 {
        errors.fail("proxy.max_connections", "must be at least 1");
    }
    check_http2(&m.proxy.http2, errors);
    if m.health.replace_after == 0 {
        errors.fail("health.replace_after", "must be at least 1");
    }
}

/// `proxy.http2`: limits HTTP/2 can carry (RFC 9113 section 6.5.2 and 6.9.1).
fn check_http2(limits: &super::Http2Limits, errors: &mut Errors) {
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    if limits.max_concurrent_streams == 0 {
        errors.fail("proxy.http2.max_concurrent_streams", "must be at least 1");
    }
    if !(1024..=1024 * 1024).contains(&limits.max_header_bytes) {
        errors.fail(
            "proxy.http2.max_header_bytes",
            format!("must be between 1024 and 1048576, found {}", limits.max_header_bytes),
        );
    }
    for (field, window) in [
        ("proxy.http2.stream_window_bytes", limits.stream_window_bytes),
        ("proxy.http2.connection_window_bytes", limits.connection_window_bytes),
    ] {
        if !(65_535..=MAX_WINDOW).contains(&window) {
            errors.fail(field, format!("must be between 65535 and {MAX_WINDOW}, found {window}"));
        }
    }
}

/// `tls`: at least one certificate, both files named, and a listener of its own. (Whether the
/// files hold a usable certificate is checked when they are loaded, and by `ringlb check`.)
fn check_tls(m: &Manifest, tls: &super::TlsSettings, errors: &mut Errors) {
    if tls.certificates.is_empty() {
        errors.fail("tls.certificates", "must list at least one certificate (cert and key)");
    }
    for (i, files) in tls.certificates.iter().enumerate() {
        for (which, path) in [("cert", &files.cert), ("key", &files.key)] {
            if path.as_os_str().is_empty() {
                errors.fail(&format!("tls.certificates[{i}].{which}"), "must name a PEM file");
            }
        }
    }
    if tls.listen == m.listen {
        errors.fail("tls.listen", format!("must differ from listen ({})", m.listen));
    }
}

/// `hashing.balance_factor`: above 1 (bounded loads), when set.
fn check_balance_factor(hashing: &Hashing, errors: &mut Errors) {
    if let Some(factor) = hashing.balance_factor
        && !(factor.is_finite() && factor > 1.0 && factor <= 100.0)
    {
        errors.fail("hashing.balance_factor", format!("must be above 1.0 (e.g. 1.25), found {factor}"));
    }
}

/// `autoscale`: bounds within `limits.max_replicas` (`max`), and a usable rule.
fn check_autoscale(a: &Autoscale, max: u32, errors: &mut Errors) {
    if a.max == 0 || a.max > max {
        errors.fail(
            "autoscale.max",
            format!("must be between 1 and limits.max_replicas ({max}), found {}", a.max),
        );
    }
    if a.min > a.max {
        errors.fail("autoscale.min", format!("{} is more than autoscale.max ({})", a.min, a.max));
    }
    if !(a.target_inflight.is_finite() && a.target_inflight > 0.0) {
        errors.fail("autoscale.target_inflight", format!("must be above 0, found {}", a.target_inflight));
    }
    if !(a.tolerance.is_finite() && (0.0..1.0).contains(&a.tolerance)) {
        errors.fail("autoscale.tolerance", format!("must be at least 0 and below 1, found {}", a.tolerance));
    }
    if a.max_step == 0 {
        errors.fail("autoscale.max_step", "must be at least 1");
    }
    if a.interval.get().is_zero() {
        errors.fail("autoscale.interval", "must be longer than zero");
    }
    if a.hold_queue == 0 {
        errors.fail("autoscale.hold_queue", "must be at least 1");
    }
    if a.hold_timeout.get().is_zero() {
        errors.fail("autoscale.hold_timeout", "must be longer than zero");
    }
}

/// `hashing`'s table: a Maglev table large enough and prime; a slot ring with room for every
/// virtual node of `replicas`, and of `autoscale.max` when the autoscaler may grow the cluster.
fn check_ring_size(m: &Manifest, errors: &mut Errors) {
    let hashing = &m.hashing;
    let max = m.limits.max_replicas;
    match hashing.algorithm {
        Algorithm::Maglev => match hashing.table_size {
            Some(size) if !is_prime(size) => {
                errors.fail("hashing.table_size", format!("must be a prime, found {size}"));
            }
            Some(size) if size > MAX_TABLE_SIZE => {
                errors.fail("hashing.table_size", format!("must be at most {MAX_TABLE_SIZE}, found {size}"))
            }
            Some(size) if size < max.saturating_mul(100) => errors.fail(
                "hashing.table_size",
                format!(
                    "must be at least 100 x limits.max_replicas ({}) for an even spread, found {size}",
                    max.saturating_mul(100)
                ),
            ),
            _ => {}
        },
        Algorithm::Ring => {
            if hashing.slots == 0 || hashing.slots > MAX_SLOTS {
                errors.fail(
                    "hashing.slots",
                    format!("must be between 1 and {MAX_SLOTS}, found {}", hashing.slots),
                );
            }
            if hashing.virtual_nodes == 0 {
                errors.fail("hashing.virtual_nodes", "must be at least 1");
            }
            let needed = u64::from(m.replicas) * u64::from(hashing.virtual_nodes);
            if needed > u64::from(hashing.slots) {
                errors.fail(
                    "hashing.slots",
                    format!(
                        "{} replicas x {} virtual nodes need {needed} slots, more than the {} there are",
                        m.replicas, hashing.virtual_nodes, hashing.slots
                    ),
                );
            }
            // The autoscaler may grow the cluster to autoscale.max: the ring must hold that too.
            if let Some(a) = &m.autoscale {
                let needed = u64::from(a.max) * u64::from(hashing.virtual_nodes);
                if a.max > m.replicas && needed > u64::from(hashing.slots) {
                    errors.fail(
                        "autoscale.max",
                        format!(
                            "{} replicas x {} virtual nodes need {needed} slots, more than the {} of hashing.slots",
                            a.max, hashing.virtual_nodes, hashing.slots
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ManifestError, locate};
    use super::*;

    #[test]
    fn validation_lists_every_bad_field_with_its_position() {
        let text =
            "name: demo\nreplicas: 100\nhostnames: [ok, 'bad name', ok]\nhashing:\n  table_size: 65536\n";
        let ManifestError::Invalid(errors) = Manifest::parse(text).unwrap_err() else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["replicas", "hostnames[1]", "hostnames[2]", "hashing.table_size"]);
        assert_eq!(errors[0].position, Some(locate::Position { line: 2, column: 11 }));
        assert_eq!(errors[3].position.map(|p| p.line), Some(5));
    }

    #[test]
    fn autoscale_takes_defaults_and_is_checked() {
        let m = Manifest::parse("name: d\nreplicas: 9\nautoscale: {min: 0, max: 4}\n").unwrap();
        let a = m.autoscale.as_ref().unwrap();
        assert_eq!((a.target_inflight, a.tolerance, a.max_step), (10.0, 0.1, 4));
        assert_eq!(a.scale_down_window.get(), std::time::Duration::from_secs(60));
        assert_eq!(m.initial_replicas(), 4, "replicas: is clamped into [min, max]");
        let ManifestError::Invalid(errors) = Manifest::parse(
            "name: d\nautoscale: {min: 5, max: 2, tolerance: 1.5}\nhashing: {balance_factor: 0.9}\n",
        )
        .unwrap_err() else {
            panic!()
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["hashing.balance_factor", "autoscale.min", "autoscale.tolerance"]);
    }

    #[test]
    fn the_ring_must_have_room_for_every_virtual_node() {
        let text = "name: demo\nreplicas: 60\nhashing: {algorithm: ring, slots: 512, virtual_nodes: 9}\n";
        let ManifestError::Invalid(errors) = Manifest::parse(text).unwrap_err() else { panic!() };
        assert_eq!(errors[0].field, "hashing.slots");
    }

    /// Found by `fuzz/fuzz_targets/manifest_parse.rs`: the autoscaler could grow a cluster past what
    /// the slot ring holds (the ring then failed to build and new replicas got no traffic).
    #[test]
    fn the_ring_must_have_room_for_autoscale_max() {
        let text = "name: d\nreplicas: 1\nhashing: {algorithm: ring, slots: 9, virtual_nodes: 9}\nautoscale: {min: 1, max: 5}\n";
        let ManifestError::Invalid(errors) = Manifest::parse(text).unwrap_err() else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["autoscale.max"]);
        assert_eq!(errors[0].position.map(|p| (p.line, p.column)), Some((4, 26)));
        assert!(
            errors[0].message.contains("5 replicas x 9 virtual nodes need 45 slots"),
            "{}",
            errors[0].message
        );
        let fits = "name: d\nreplicas: 1\nhashing: {algorithm: ring, slots: 45, virtual_nodes: 9}\nautoscale: {min: 1, max: 5}\n";
        let manifest = Manifest::parse(fits).unwrap();
        let members: Vec<_> = (1..=5).map(|id| crate::ring::Member { name: format!("d-{id}"), id }).collect();
        assert!(crate::ring::Ring::build(&manifest.ring_config(), &members).is_ok());
    }

    /// Errors of different sections come out in the order the checks have always run.
    #[test]
    fn errors_of_every_section_keep_their_order() {
        let text = "name: 'bad name'\nreplicas: 2\nhostnames: [a, a]\n\
            replica: {image: 'Bad', network: 'n n', port: 0, endpoints: ['x'], stop_timeout: 0s}\n\
            health: {path: hb, interval: 0s, replace_after: 0}\n\
            proxy: {timeout: 0s, max_connections: 0}\n\
            hashing: {algorithm: ring, slots: 0, virtual_nodes: 0, balance_factor: 1.0}\n\
            autoscale: {min: 3, max: 0, max_step: 0}\n";
        let ManifestError::Invalid(errors) = Manifest::parse(text).unwrap_err() else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "hostnames[1]",
                "replica.image",
                "replica.network",
                "replica.endpoints",
                "replica.endpoints[0]",
                "replica.port",
                "replica.stop_timeout",
                "health.interval",
                "proxy.timeout",
                "health.path",
                "proxy.max_connections",
                "health.replace_after",
                "hashing.balance_factor",
                "autoscale.max",
                "autoscale.min",
                "autoscale.max_step",
                "hashing.slots",
                "hashing.virtual_nodes",
            ]
        );
    }

    #[test]
    fn launch_keys_are_checked_with_their_positions() {
        let text = "name: d\nreplica:\n  image: app:1\n  command: [httpd, '-p', '{prot}']\n  env:\n    9LIVES: x\n    OK: '{name}'\n  labels: {ringlb.cluster: x}\n  stop_signal: SIGNOPE\n  resources: {cpus: 0, memory: 1Mi}\n";
        let ManifestError::Invalid(errors) = Manifest::parse(text).unwrap_err() else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "replica.command[2]",
                "replica.env.9LIVES",
                "replica.labels",
                "replica.stop_signal",
                "replica.resources.cpus",
                "replica.resources.memory"
            ]
        );
        assert_eq!(errors[0].position, Some(locate::Position { line: 4, column: 26 }));
        assert_eq!(errors[1].position.map(|p| p.line), Some(6));
        assert!(errors[1].message.contains("not a valid variable name"), "{}", errors[1].message);
    }

    #[test]
    fn a_memory_without_a_unit_or_an_unknown_key_is_a_syntax_error_with_a_position() {
        let err = Manifest::parse("name: d\nreplica:\n  resources: {memory: 64}\n").unwrap_err();
        let ManifestError::Syntax { position, message, .. } = &err else { panic!("{err:?}") };
        assert_eq!(position.map(|p| p.line), Some(3), "{message}");
        assert!(message.contains("a size needs a unit"), "{message}");
        let err = Manifest::parse("name: d\nreplica:\n  comand: [x]\n").unwrap_err();
        assert_eq!(err.position().map(|p| p.line), Some(3), "{err}");
        assert!(err.to_string().contains("comand"), "{err}");
    }

    #[test]
    fn each_runtime_takes_the_launch_keys_it_can_honour() {
        let fields = |text: &str| match Manifest::parse(text) {
            Ok(_) => vec![],
            Err(ManifestError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("{other}"),
        };
        let process = "name: d\nreplica:\n  runtime: process\n";
        assert_eq!(
            fields(&format!("{process}  command: [python3, -m, http.server, '{{port}}']\n")),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(&format!("{process}  command: [app]\n  env: {{PORT: '{{port}}'}}\n")),
            Vec::<String>::new()
        );
        assert_eq!(fields(&format!("{process}  command: [app, '8080']\n")), ["replica.command"]);
        assert_eq!(fields(&format!("{process}  resources: {{cpus: 1}}\n")), ["replica.resources"]);
        let static_ = "name: d\nreplicas: 1\nreplica:\n  runtime: static\n  endpoints: ['127.0.0.1:1']\n";
        assert_eq!(fields(&format!("{static_}  env: {{A: b}}\n")), ["replica.env"]);
        let docker = "name: d\nreplica:\n  image: app:1\n  command: [app]\n  entrypoint: [/bin/sh, -c]\n  env: {A: '1'}\n  resources: {cpus: 0.5, memory: 64MiB}\n  labels: {team: web}\n  stop_signal: SIGQUIT\n";
        let m = Manifest::parse(docker).unwrap();
        assert_eq!(m.replica.resources.memory_bytes(), Some(64 << 20));
        assert_eq!(m.replica.env["A"], "1");
    }

    #[test]
    fn static_endpoints_are_host_and_port_and_replicas_may_be_left_out() {
        let m =
            Manifest::parse("name: d\nreplica: {runtime: static, endpoints: ['web:8080', '10.0.0.1:80']}\n")
                .unwrap();
        assert_eq!(m.replicas, 2, "replicas: left out is the number of endpoints");
        let text = "name: d\nreplicas: 2\nreplica:\n  runtime: static\n  endpoints: ['web:8080', 'web', 'bad_name:1', '999.1.1.1:80', 'web:0', 'web:8080']\n";
        let ManifestError::Invalid(errors) = Manifest::parse(text).unwrap_err() else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "replicas",
                "replica.endpoints[1]",
                "replica.endpoints[2]",
                "replica.endpoints[3]",
                "replica.endpoints[4]",
                "replica.endpoints[5]"
            ]
        );
        assert_eq!(errors[1].position.map(|p| (p.line, p.column)), Some((5, 27)));
        assert!(errors[5].message.contains("listed twice"), "{}", errors[5].message);
        assert!(
            Manifest::parse(
                "name: d\nreplica: {runtime: static, endpoints: ['[::1]:80', 'a-b.example.com:443']}\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn a_tcp_heartbeat_needs_no_path_and_statuses_are_parsed() {
        let m = Manifest::parse("name: d\nhealth: {kind: tcp, path: ''}\n").unwrap();
        assert_eq!(m.health.kind, super::super::HealthKind::Tcp);
        let m = Manifest::parse("name: d\nhealth: {status: [200, '300-302']}\n").unwrap();
        assert!(m.health.status.contains(301) && !m.health.status.contains(204));
        let err = Manifest::parse("name: d\nhealth: {status: 2xx}\n").unwrap_err();
        assert!(err.to_string().contains("expected a status"), "{err}");
    }

    #[test]
    fn grpc_replicas_speak_h2c_and_other_protocols_are_named_errors() {
        let m =
            Manifest::parse("name: d\nreplica: {protocol: h2c}\nhealth: {kind: grpc, path: ''}\n").unwrap();
        assert_eq!(m.replica.protocol, super::super::ReplicaProtocol::H2c);
        assert_eq!(m.health.kind, super::super::HealthKind::Grpc);
        assert_eq!(
            Manifest::parse("name: d\n").unwrap().replica.protocol,
            super::super::ReplicaProtocol::Http1
        );
        let err = Manifest::parse("name: d\nreplica: {protocol: h3}\n").unwrap_err().to_string();
        assert!(err.contains("h3") && err.contains("h2c") && err.contains("line 2"), "{err}");
    }
}
