//! `services:`: several services behind one listener, each with its own replicas, hashing, health
//! and scaling, picked per request by its `match:` (a host, a path prefix, or both; see
//! [`crate::routes`] for which one wins).
//!
//! A manifest without `services:` is one service that matches every request, named after the
//! cluster: [`Manifest::services`] gives both forms the same shape, one [`Service`] each, whose
//! [`Service::manifest`] is a whole [`Manifest`] (the cluster's `listen`, `tls` and `proxy`, the
//! service's own keys), so everything that acts on one cluster acts on one service unchanged.
//! With `services:`, the keys that belong to a service may not also sit at the top, and each
//! service may override `proxy.timeout`, `proxy.connect_timeout` and `proxy.unknown_path`.
//!
//! The rules of a service's keys are the cluster's (`validate.rs`), checked on its view; their
//! errors name the field inside the list (`services[1].replica.image`), with line and column.

use super::autoscale::Autoscale;
use super::duration::HumanDuration;
use super::error::FieldError;
use super::hashing::Hashing;
use super::health::Health;
use super::limits::Limits;
use super::proxy::UnknownPath;
use super::replica::{ReplicaSpec, RuntimeKind};
use super::{Manifest, defaults, locate};
use crate::routes::{Match, MatchError, RouteTable};
use serde::Deserialize;

/// The top-level keys that belong to each service when there is a `services:` list.
pub const SERVICE_KEYS: [&str; 7] =
    ["replicas", "hostnames", "replica", "hashing", "health", "limits", "autoscale"];

/// One entry of `services:`, as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name, by the rule of cluster names; its replicas' generated names are
    /// `<name>-<k>`.
    pub name: String,
    /// Which requests it serves; every request when left out.
    #[serde(rename = "match", default)]
    pub route: RouteSpec,
    /// As the cluster's `replicas`.
    #[serde(default = "defaults::replicas")]
    pub replicas: u32,
    /// As the cluster's `hostnames`.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// As the cluster's `replica`.
    #[serde(default)]
    pub replica: ReplicaSpec,
    /// As the cluster's `hashing`.
    #[serde(default)]
    pub hashing: Hashing,
    /// As the cluster's `health`.
    #[serde(default)]
    pub health: Health,
    /// As the cluster's `limits`.
    #[serde(default)]
    pub limits: Limits,
    /// As the cluster's `autoscale`.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// What it changes of the cluster's `proxy` settings.
    #[serde(default)]
    pub proxy: ProxyOverrides,
}

/// A service's `match:` as written.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `web.example`, or `*.example` for any name under it.
    #[serde(default)]
    pub host: Option<String>,
    /// `/api`: the requests whose path starts with these segments.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// The `proxy` settings a service may set for itself.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyOverrides {
    /// Instead of `proxy.timeout`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Instead of `proxy.connect_timeout`.
    #[serde(default)]
    pub connect_timeout: Option<HumanDuration>,
    /// Instead of `proxy.unknown_path`.
    #[serde(default)]
    pub unknown_path: Option<UnknownPath>,
}

/// One service of a manifest, in either form.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Its name: the cluster's for a manifest without `services:`.
    pub name: String,
    /// The requests it serves.
    pub route: Match,
    /// The service as a cluster of its own: named after the service, with the cluster's
    /// `listen`, `tls` and `proxy` (and the service's overrides) and the service's keys.
    pub manifest: Manifest,
    /// Where its keys are in the file: `""` at the top, `services[1].` in the list.
    pub field_prefix: String,
}

impl Manifest {
    /// Its services: the `services:` list, or the one service the cluster is without it.
    pub fn services(&self) -> Vec<Service> {
        if self.services.is_empty() {
            let mut manifest = self.clone();
            manifest.services.clear();
            return vec![Service {
                name: self.name.clone(),
                route: Match::default(),
                manifest,
                field_prefix: String::new(),
            }];
        }
        self.services
            .iter()
            .enumerate()
            .map(|(i, spec)| Service {
                name: spec.name.clone(),
                // A match that does not compile was refused by validation; none is left here.
                route: Match::new(spec.route.host.as_deref(), spec.route.path_prefix.as_deref())
                    .unwrap_or_default(),
                manifest: self.view_of(spec),
                field_prefix: format!("services[{i}]."),
            })
            .collect()
    }

    /// The routes of its services, in their order.
    ///
    /// # Errors
    /// A match does not compile, or two match the same requests (validation reports both).
    pub fn route_table(&self) -> Result<RouteTable, MatchError> {
        RouteTable::new(self.services().into_iter().map(|service| service.route))
    }

    /// The requests `spec` (one of its services) matches, in words.
    pub(super) fn route_of(&self, spec: &ServiceSpec) -> String {
        Match::new(spec.route.host.as_deref(), spec.route.path_prefix.as_deref())
            .map_or_else(|e| e.to_string(), |route| route.to_string())
    }

    /// `spec` as a cluster: the service's keys, the cluster's `listen`, `tls` and `proxy`.
    fn view_of(&self, spec: &ServiceSpec) -> Manifest {
        let mut proxy = self.proxy.clone();
        let overrides = &spec.proxy;
        proxy.timeout = overrides.timeout.unwrap_or(proxy.timeout);
        proxy.connect_timeout = overrides.connect_timeout.unwrap_or(proxy.connect_timeout);
        proxy.unknown_path = overrides.unknown_path.unwrap_or(proxy.unknown_path);
        Manifest {
            name: spec.name.clone(),
            replicas: spec.replicas,
            hostnames: spec.hostnames.clone(),
            listen: self.listen,
            replica: spec.replica.clone(),
            hashing: spec.hashing.clone(),
            health: spec.health.clone(),
            proxy,
            limits: spec.limits.clone(),
            autoscale: spec.autoscale.clone(),
            tls: self.tls.clone(),
            services: Vec::new(),
        }
    }
}

/// Before validation: `runtime` (from `ringlb run --runtime`) for every service, and a static
/// service without `replicas:` gets as many as it has endpoints.
pub(super) fn complete(manifest: &mut Manifest, text: &str, runtime: Option<RuntimeKind>) {
    for (i, spec) in manifest.services.iter_mut().enumerate() {
        if let Some(runtime) = runtime {
            spec.replica.runtime = runtime;
        }
        if spec.replica.runtime == RuntimeKind::Static
            && !locate::is_written(text, &format!("services[{i}].replicas"))
        {
            spec.replicas = u32::try_from(spec.replica.endpoints.len()).unwrap_or(u32::MAX);
        }
    }
}

/// Every rule of `manifest` (`text` tells which keys were written): the cluster's, and with
/// `services:`, none of [`SERVICE_KEYS`] at the top beside it, names used once, matches that
/// compile and that no two services share, and every service's own keys by the cluster's rules.
pub(super) fn validate(manifest: &Manifest, text: &str) -> Vec<FieldError> {
    let mut errors = manifest.validate();
    if manifest.services.is_empty() {
        if locate::is_written(text, "services") {
            errors.push(error(
                "services".to_owned(),
                "must list at least one service (or be left out)".to_owned(),
            ));
        }
        return errors;
    }
    // The keys of a service belong to the services: one written at the top is refused below, once.
    errors.retain(|e| !SERVICE_KEYS.contains(&first_key(&e.field)));
    for key in SERVICE_KEYS {
        if locate::is_written(text, key) {
            errors.push(error(
                key.to_owned(),
                "belongs in each service when there is a services: list; move it into the services that need it"
                    .to_owned(),
            ));
        }
    }
    let mut compiled: Vec<Option<Match>> = Vec::new();
    for (i, spec) in manifest.services.iter().enumerate() {
        if let Some(first) = manifest.services[..i].iter().position(|earlier| earlier.name == spec.name) {
            errors.push(error(
                format!("services[{i}].name"),
                format!(
                    "{:?} is the name of services[{first}] already; each service needs its own",
                    spec.name
                ),
            ));
        }
        match Match::new(spec.route.host.as_deref(), spec.route.path_prefix.as_deref()) {
            Ok(route) => compiled.push(Some(route)),
            Err(e) => {
                let key = if matches!(e, MatchError::Host(_)) { "host" } else { "path_prefix" };
                errors.push(error(format!("services[{i}].match.{key}"), e.to_string()));
                compiled.push(None);
            }
        }
    }
    for (j, route) in compiled.iter().enumerate() {
        let Some(route) = route else { continue };
        if let Some(i) = compiled[..j].iter().position(|earlier| earlier.as_ref() == Some(route)) {
            let field = format!("services[{j}].match");
            // Without a `match:` of its own, the service's entry is where the match is missing.
            let at =
                if locate::is_written(text, &field) { field.clone() } else { format!("services[{j}].name") };
            errors.push(FieldError {
                field,
                message: format!(
                    "matches the same requests as service {} ({route}): one request can go to one service \
                     only; give one of them a host or a longer path_prefix",
                    manifest.services[i].name
                ),
                position: locate::locate(text, &at),
            });
        }
    }
    for (i, spec) in manifest.services.iter().enumerate() {
        for e in manifest.view_of(spec).validate() {
            if let Some(field) = service_field(&e.field, &spec.proxy) {
                let message = if field == "name" {
                    e.message.replace("cluster name", "service name")
                } else {
                    e.message
                };
                errors.push(error(format!("services[{i}].{field}"), message));
            }
        }
    }
    errors
}

/// An error at `field`, positioned later from the text.
fn error(field: String, message: String) -> FieldError {
    FieldError { field, message, position: None }
}

/// `hashing` of `hashing.slots`, `hostnames` of `hostnames[2]`.
fn first_key(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or(field)
}

/// The field of a service's view that error `field` is about, if the service wrote it: one of
/// its own keys, or a `proxy` setting it overrides. The rest come from the cluster's keys, whose
/// own validation reports them once.
fn service_field<'a>(field: &'a str, overrides: &ProxyOverrides) -> Option<&'a str> {
    let key = first_key(field);
    let overridden = match field {
        "proxy.timeout" => overrides.timeout.is_some(),
        "proxy.connect_timeout" => overrides.connect_timeout.is_some(),
        "proxy.unknown_path" => overrides.unknown_path.is_some(),
        _ => false,
    };
    (key == "name" || SERVICE_KEYS.contains(&key) || overridden).then_some(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestError;
    use std::time::Duration;

    const TWO: &str = "\
name: shop
listen: 127.0.0.1:5000
proxy:
  timeout: 7s
services:
  - name: web
    match:
      host: web.example
    replicas: 2
    replica: {runtime: process, command: [web, '{port}']}
  - name: api
    match: {path_prefix: /api}
    replicas: 3
    replica: {runtime: process, command: [api, '{port}']}
    autoscale: {min: 1, max: 8}
    proxy: {timeout: 2s}
";

    /// The errors of `text`, as `field: message` lines with their line numbers.
    fn errors_of(text: &str) -> Vec<(String, usize, String)> {
        match Manifest::parse(text) {
            Err(ManifestError::Invalid(errors)) => {
                errors.into_iter().map(|e| (e.field, e.position.map_or(0, |p| p.line), e.message)).collect()
            }
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_manifest_without_services_is_one_service_that_matches_everything() {
        let manifest = Manifest::parse("name: demo\nreplicas: 4\n").expect("valid");
        let services = manifest.services();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].name, "demo");
        assert_eq!(services[0].route, Match::default());
        assert_eq!(services[0].manifest, manifest);
        assert_eq!(services[0].field_prefix, "");
        assert_eq!(manifest.route_table().expect("one route").route(Some(b"any"), b"/x"), Some(0));
    }

    #[test]
    fn each_service_is_a_cluster_of_its_own_with_the_listener_and_proxy_of_the_manifest() {
        let manifest = Manifest::parse(TWO).expect("valid");
        let services = manifest.services();
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "api"]);
        let (web, api) = (&services[0].manifest, &services[1].manifest);
        assert_eq!((web.name.as_str(), web.replicas, web.autoscale.is_some()), ("web", 2, false));
        assert_eq!((api.name.as_str(), api.initial_replicas(), api.autoscale.is_some()), ("api", 3, true));
        assert_eq!(web.listen, manifest.listen);
        assert_eq!(web.proxy.timeout.get(), std::time::Duration::from_secs(7), "the cluster's");
        assert_eq!(api.proxy.timeout.get(), std::time::Duration::from_secs(2), "its own");
        assert_eq!(services[1].field_prefix, "services[1].");
        let table = manifest.route_table().expect("distinct");
        assert_eq!(table.route(Some(b"web.example:5000"), b"/home"), Some(0));
        assert_eq!(table.route(Some(b"other.example"), b"/api/orders"), Some(1));
        assert_eq!(table.route(Some(b"other.example"), b"/home"), None);
    }

    #[test]
    fn a_service_key_at_the_top_beside_services_is_refused_once_where_it_is() {
        // An invalid value too: it is the key's place that is wrong, and said once.
        for key in ["replicas: 3", "replicas: 3000", "hostnames: [x, x]", "autoscale: {min: 5, max: 2}"] {
            let text = format!("{key}\n{TWO}");
            let field = key.split(':').next().expect("a key").to_owned();
            assert_eq!(errors_of(&text), [(field, 1, SERVICE_KEY_MESSAGE.to_owned())], "{key}");
        }
        let errors = errors_of("name: shop\nreplicas: 2\nservices: []\n");
        assert_eq!((errors[0].0.as_str(), errors[0].1), ("services", 3));
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn a_service_takes_every_key_of_its_own_and_not_the_clusters() {
        let text = "\
name: shop
proxy: {connect_timeout: 3s, unknown_path: exercise}
services:
  - name: web
    match: {host: web.example}
    replicas: 2
    hostnames: [w1, w2]
    replica: {runtime: process, command: [web, '{port}']}
    hashing: {algorithm: ring, slots: 128, virtual_nodes: 3}
    health: {kind: tcp, interval: 250ms}
    limits: {max_replicas: 8}
    proxy: {connect_timeout: 1s, unknown_path: pass}
  - name: api
    replica: {runtime: process, command: [api, '{port}']}
";
        let manifest = Manifest::parse(text).expect("valid");
        let services = manifest.services();
        let (web, api) = (&services[0].manifest, &services[1].manifest);
        assert_eq!(web.hostnames, ["w1", "w2"]);
        assert_eq!(
            (web.hashing.algorithm, web.hashing.slots, web.hashing.virtual_nodes),
            (crate::ring::Algorithm::Ring, 128, 3)
        );
        assert_eq!(web.health.kind, crate::manifest::HealthKind::Tcp);
        assert_eq!(web.health.interval.get(), Duration::from_millis(250));
        assert_eq!(web.limits.max_replicas, 8);
        assert_eq!(
            (web.proxy.connect_timeout.get(), web.proxy.unknown_path),
            (Duration::from_secs(1), UnknownPath::Pass)
        );
        let defaults = Manifest::parse("name: d\n").expect("valid");
        assert_eq!(api.replicas, 3);
        assert_eq!(
            (&api.hashing, &api.health, &api.limits),
            (&defaults.hashing, &defaults.health, &defaults.limits)
        );
        assert_eq!(
            (api.proxy.connect_timeout.get(), api.proxy.unknown_path),
            (Duration::from_secs(3), UnknownPath::Exercise)
        );
        assert_eq!(services[1].route, Match::default(), "no match: what no other takes");
    }

    const SERVICE_KEY_MESSAGE: &str =
        "belongs in each service when there is a services: list; move it into the services that need it";

    #[test]
    fn a_name_used_twice_and_matches_that_collide_or_do_not_compile_are_refused_with_line_and_column() {
        let text = "\
name: shop
services:
  - name: web
    match: {host: web.example}
  - name: web
    match: {host: 'web .example'}
  - name: api
    match: {path_prefix: api}
";
        let errors = errors_of(text);
        let fields: Vec<_> = errors.iter().map(|(f, line, _)| (f.as_str(), *line)).collect();
        assert_eq!(
            fields,
            [("services[1].name", 5), ("services[1].match.host", 6), ("services[2].match.path_prefix", 8)]
        );
        assert!(errors[0].2.contains("services[0]"), "{}", errors[0].2);

        let same = "name: shop\nservices:\n  - name: a\n    match: {path_prefix: /api}\n  - name: b\n    match: {path_prefix: /api}\n";
        let errors = errors_of(same);
        assert_eq!((errors[0].0.as_str(), errors[0].1), ("services[1].match", 6));
        assert!(errors[0].2.contains("service a (path prefix /api)"), "{}", errors[0].2);
        // Services without a match all take every request: each after the first is named, at
        // its entry, beside any other error.
        let errors = errors_of("name: shop\nreplicas: 2\nservices:\n  - name: a\n  - name: b\n  - name: a\n");
        let fields: Vec<_> = errors.iter().map(|(f, line, _)| (f.as_str(), *line)).collect();
        assert_eq!(
            fields,
            [("replicas", 2), ("services[2].name", 6), ("services[1].match", 5), ("services[2].match", 6)]
        );
        // A service name follows the name rule, and the error says it is a service's.
        let errors = errors_of(&TWO.replace("name: api", "name: 'a pi'"));
        assert_eq!((errors[0].0.as_str(), errors[0].1), ("services[1].name", 11));
        assert!(errors[0].2.contains("not a valid service name"), "{}", errors[0].2);
    }

    #[test]
    fn a_service_key_by_the_clusters_rules_is_named_inside_the_list() {
        let text = TWO.replace("replicas: 3", "replicas: 3000").replace("timeout: 2s", "timeout: 0s");
        let errors = errors_of(&text);
        let fields: Vec<_> = errors.iter().map(|(f, line, _)| (f.as_str(), *line)).collect();
        assert_eq!(fields, [("services[1].replicas", 13), ("services[1].proxy.timeout", 16)]);
        // A cluster-wide setting is reported once, at the top, not once per service.
        let text = TWO.replace("timeout: 7s", "timeout: 0s");
        let errors = errors_of(&text);
        let fields: Vec<_> = errors.iter().map(|(f, line, _)| (f.as_str(), *line)).collect();
        assert_eq!(fields, [("proxy.timeout", 4)]);
    }

    #[test]
    fn the_services_their_names_and_matches_cannot_change_live_and_their_keys_can() {
        let before = Manifest::parse(TWO).expect("valid");
        let more = Manifest::parse(&TWO.replace("replicas: 2", "replicas: 5")).expect("valid");
        assert!(before.immutable_changes(&more).is_empty());
        for changed in
            [TWO.replace("host: web.example", "host: www.example"), TWO.replace("name: api", "name: api2")]
        {
            let after = Manifest::parse(&changed).expect("valid");
            let fields: Vec<_> = before.immutable_changes(&after).into_iter().map(|e| e.field).collect();
            assert_eq!(fields, ["services"], "{changed}");
        }
        let single = Manifest::parse("name: shop\nlisten: 127.0.0.1:5000\n").expect("valid");
        let errors = single.immutable_changes(&before);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .contains("no services: list -> web for host web.example, api for path prefix /api"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn the_summary_has_a_line_for_each_service() {
        let summary = Manifest::parse(TWO).expect("valid").summary();
        let lines: Vec<_> = summary.lines().collect();
        assert_eq!(lines[0], "cluster shop: 2 services, listening on 127.0.0.1:5000");
        assert!(
            lines[1]
                .starts_with("  service web (host web.example): 2 replicas on the process runtime, maglev"),
            "{summary}"
        );
        assert!(
            lines[2].starts_with("  service api (path prefix /api): 3 replicas on the process runtime"),
            "{summary}"
        );
    }

    #[test]
    fn unknown_keys_in_a_service_or_its_match_are_syntax_errors_with_a_position() {
        for (text, line) in [
            (TWO.replace("    replicas: 2\n", "    replicas: 2\n    replica_count: 2\n"), 10),
            (TWO.replace("      host: web.example\n", "      host: web.example\n      method: GET\n"), 9),
        ] {
            match Manifest::parse(&text) {
                Err(ManifestError::Syntax { position: Some(p), message, .. }) => {
                    assert_eq!(p.line, line, "{message}");
                }
                other => panic!("expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_runtime_override_and_the_static_replica_count_apply_to_every_service() {
        let text = "\
name: shop
services:
  - name: web
    match: {host: web.example}
    replica: {runtime: static, endpoints: ['127.0.0.1:1', '127.0.0.1:2']}
  - name: api
    match: {path_prefix: /api}
    replica: {runtime: static, endpoints: ['127.0.0.1:3']}
";
        let manifest = Manifest::parse(text).expect("valid");
        let counts: Vec<_> = manifest.services().iter().map(|s| s.manifest.replicas).collect();
        assert_eq!(counts, [2, 1], "as many as its endpoints");
        let wrong = text.replace(
            "    replica: {runtime: static, endpoints: ['127.0.0.1:3']}",
            "    replicas: 2\n    replica: {runtime: static, endpoints: ['127.0.0.1:3']}",
        );
        assert_eq!(errors_of(&wrong)[0].0, "services[1].replicas");
        let docker = TWO.replace("runtime: process", "runtime: docker, image: 'app:1'");
        let as_process = Manifest::parse_as(&docker, Some(RuntimeKind::Process)).expect("valid as processes");
        assert!(as_process.services().iter().all(|s| s.manifest.replica.runtime == RuntimeKind::Process));
        // As static endpoints, each service is told it has none; the cluster at the top is not.
        let errors = match Manifest::parse_as(TWO, Some(RuntimeKind::Static)) {
            Err(ManifestError::Invalid(errors)) => errors,
            other => panic!("static without endpoints: {other:?}"),
        };
        assert!(!errors.is_empty() && errors.iter().all(|e| e.field.starts_with("services[")), "{errors:?}");
    }
}
