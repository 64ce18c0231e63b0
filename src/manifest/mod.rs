//! The manifest: the desired state of a cluster, as the user writes it in YAML.
//!
//! This file owns the [`Manifest`] type and its entry points (parse, load, the derived numbers, the
//! summary, what may not change live). The rest of the manifest lives beside it:
//! - the sections, one file each: `replica.rs`, `hashing.rs`, `health.rs`, `proxy.rs`,
//!   `limits.rs`, `autoscale.rs`, and `services.rs` for several services behind one listener; every default in `defaults.rs`; [`duration`] for `500ms`,
//!   `resources.rs` for `64MiB`, [`template`] for `{name}` in commands and environments;
//! - `validate.rs` the rules the types cannot express, `names.rs` the naming rules, `error.rs`
//!   the errors, with line and column on every one ([`locate`] finds them in the text);
//! - `yaml_tree.rs` the YAML text as a tree of nodes with their spans, which [`locate`] and
//!   [`edit`] both read;
//! - [`source`] keeps the last good manifest and hands new versions to the controller, [`watch`]
//!   follows the file, [`edit`] rewrites `replicas:` and `hostnames:` without touching comments,
//!   and [`file`](mod@file) writes it atomically.
//!
//! The keys of DESIGN.md are a contract: add keys, never rename them.

pub mod duration;
pub mod edit;
pub mod file;
pub mod locate;
pub mod source;
pub mod watch;

mod autoscale;
mod defaults;
mod error;
mod hashing;
mod health;
mod limits;
mod names;
mod proxy;
mod replica;
mod resources;
mod services;
pub mod template;
pub mod tls;
mod validate;
mod yaml_tree;

pub use autoscale::Autoscale;
pub use error::{FieldError, ManifestError};
pub use hashing::{Hashing, KeySource, KeySourceError};
pub use health::{Health, HealthKind, StatusSet};
pub use limits::{Limits, MAX_REPLICAS_CEILING};
pub use names::{NAME_RULE, is_valid_image, is_valid_name};
pub use proxy::{Http2Limits, ProxyEngine, ProxySettings, UnknownPath};
pub use replica::{ReplacementName, ReplicaProtocol, ReplicaSpec, RuntimeKind};
pub use resources::{ByteSize, Resources};
pub use services::{ProxyOverrides, RouteSpec, SERVICE_KEYS, Service, ServiceSpec};
pub use tls::{CertificateFiles, TlsSettings};

use crate::ring::{Algorithm, RingConfig};
use serde::Deserialize;
use std::net::SocketAddr;

/// The desired state of one cluster.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Cluster name; every replica ringlb owns carries it (as a Docker label, in generated names).
    pub name: String,
    /// N: how many replicas to keep alive.
    #[serde(default = "defaults::replicas")]
    pub replicas: u32,
    /// Preferred replica names, in order; the first `replicas` of them are used, the rest of the
    /// replicas get generated names.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Where the load balancer accepts requests.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// How replicas are run.
    #[serde(default)]
    pub replica: ReplicaSpec,
    /// How requests are spread over replicas.
    #[serde(default)]
    pub hashing: Hashing,
    /// How replicas are checked.
    #[serde(default)]
    pub health: Health,
    /// How requests are forwarded.
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Caps that protect the host.
    #[serde(default)]
    pub limits: Limits,
    /// Present: the replica count follows load within `[min, max]`; `replicas:` is the start.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// Present: TLS is terminated on a second listener.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Several services behind the listener, each with its own replicas (`services.rs`); left
    /// out, the cluster is one service that takes every request.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

impl Manifest {
    /// Parses and validates manifest text.
    ///
    /// # Errors
    /// [`ManifestError::Syntax`] with line and column, or [`ManifestError::Invalid`] listing every
    /// invalid field with its position.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_as(text, None)
    }

    /// As [`Manifest::parse`], with `replica.runtime` replaced by `runtime` when given (before
    /// validation, so the rules of that runtime apply): `ringlb run --runtime process` runs a
    /// manifest written for Docker as local processes.
    ///
    /// # Errors
    /// As [`Manifest::parse`].
    pub fn parse_as(text: &str, runtime: Option<RuntimeKind>) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest =
            serde_saphyr::from_str(text).map_err(|e| error::syntax_error(text, &e))?;
        if manifest.services.is_empty() {
            if let Some(runtime) = runtime {
                manifest.replica.runtime = runtime;
            }
            // Static endpoints are the replicas: `replicas:` left out means as many as there are.
            if manifest.replica.runtime == RuntimeKind::Static && !locate::is_written(text, "replicas") {
                manifest.replicas = u32::try_from(manifest.replica.endpoints.len()).unwrap_or(u32::MAX);
            }
        }
        services::complete(&mut manifest, text, runtime);
        let mut errors = services::validate(&manifest, text);
        if errors.is_empty() {
            return Ok(manifest);
        }
        for error in errors.iter_mut().filter(|e| e.position.is_none()) {
            error.position = locate::locate(text, &error.field);
        }
        Err(ManifestError::Invalid(errors))
    }

    /// Reads, parses and validates the manifest at `path`.
    ///
    /// # Errors
    /// As [`Manifest::parse`], or [`ManifestError::Read`].
    pub fn load(path: &std::path::Path) -> Result<(Manifest, String), ManifestError> {
        Manifest::load_as(path, None)
    }

    /// As [`Manifest::load`], with `replica.runtime` replaced as [`Manifest::parse_as`] does.
    ///
    /// # Errors
    /// As [`Manifest::load`].
    pub fn load_as(
        path: &std::path::Path,
        runtime: Option<RuntimeKind>,
    ) -> Result<(Manifest, String), ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ManifestError::Read { path: path.display().to_string(), source })?;
        Ok((Manifest::parse_as(&text, runtime)?, text))
    }

    /// The ring configuration this manifest asks for.
    pub fn ring_config(&self) -> RingConfig {
        self.hashing.ring_config(self.limits.max_replicas)
    }

    /// The replica count to start from: `replicas:`, inside `autoscale`'s bounds when present.
    pub fn initial_replicas(&self) -> u32 {
        match &self.autoscale {
            Some(a) => self.replicas.clamp(a.min, a.max.max(a.min)),
            None => self.replicas,
        }
    }

    /// How many replicas the ring can hold with this manifest's hashing (for `/add`).
    pub fn ring_capacity(&self) -> u32 {
        match self.hashing.algorithm {
            Algorithm::Maglev => self.limits.max_replicas,
            Algorithm::Ring => {
                (self.hashing.slots / self.hashing.virtual_nodes.max(1)).min(self.limits.max_replicas)
            }
        }
    }

    /// A summary, as `ringlb check` prints it: one line for a cluster, and with `services:` a
    /// line for the listener and one more for each service.
    pub fn summary(&self) -> String {
        if self.services.is_empty() {
            return self.cluster_summary();
        }
        let count = match self.services.len() {
            1 => "1 service".to_owned(),
            n => format!("{n} services"),
        };
        let mut text = format!("cluster {}: {count}, listening on {}", self.name, self.listen);
        for service in self.services() {
            let m = &service.manifest;
            text.push_str(&format!(
                "\n  service {} ({}): {} replicas on the {} runtime, {}, key {}",
                service.name,
                service.route,
                m.replicas,
                m.replica.runtime,
                m.hashing_summary(),
                m.hashing.key
            ));
        }
        text
    }

    /// How it hashes, in a few words.
    fn hashing_summary(&self) -> String {
        match self.hashing.algorithm {
            Algorithm::Maglev => format!("maglev (table {})", self.ring_config().table_size),
            Algorithm::Ring => format!(
                "ring (M {}, K {}, {:?}, {:?} probing)",
                self.hashing.slots, self.hashing.virtual_nodes, self.hashing.function, self.hashing.probing
            )
            .to_lowercase(),
        }
    }

    /// The one-line summary of a manifest without `services:`.
    fn cluster_summary(&self) -> String {
        format!(
            "cluster {}: {} replicas on the {} runtime, {}, key {}, listening on {}",
            self.name,
            self.replicas,
            self.replica.runtime,
            self.hashing_summary(),
            self.hashing.key,
            self.listen
        )
    }

    /// Fields that cannot change while `ringlb run` runs; a list of messages, empty if none changed.
    pub fn immutable_changes(&self, next: &Manifest) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut check = |field: &str, changed: bool, old: String, new: String| {
            if changed {
                errors.push(FieldError {
                    field: field.into(),
                    message: format!(
                        "cannot change while ringlb runs ({old} -> {new}); restart ringlb to change it"
                    ),
                    position: None,
                });
            }
        };
        check("name", self.name != next.name, self.name.clone(), next.name.clone());
        check("listen", self.listen != next.listen, self.listen.to_string(), next.listen.to_string());
        let services = |m: &Manifest| {
            let all =
                m.services.iter().map(|s| format!("{} for {}", s.name, m.route_of(s))).collect::<Vec<_>>();
            if all.is_empty() { "no services: list".to_owned() } else { all.join(", ") }
        };
        check("services", services(self) != services(next), services(self), services(next));
        let tls_listen = |m: &Manifest| m.tls.as_ref().map_or("no tls".to_owned(), |t| t.listen.to_string());
        check("tls.listen", tls_listen(self) != tls_listen(next), tls_listen(self), tls_listen(next));
        check(
            "replica.runtime",
            self.replica.runtime != next.replica.runtime,
            self.replica.runtime.to_string(),
            next.replica.runtime.to_string(),
        );
        if self.replica.runtime == RuntimeKind::Swarm && self.replica.network != next.replica.network {
            // Swarm's tasks are reached on the overlay network, which the load balancer's own
            // container must be attached to: ringlb cannot attach itself while it runs.
            errors.push(FieldError {
                field: "replica.network".into(),
                message: format!(
                    "cannot change while ringlb runs on Swarm ({} -> {}): the load balancer must be attached \
                     to the new overlay network to reach the replicas there; attach it (docker service update \
                     --network-add {} <its service>) and restart it with this manifest",
                    self.replica.network, next.replica.network, next.replica.network
                ),
                position: None,
            });
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name: demo\n";

    #[test]
    fn listen_name_and_runtime_cannot_change_live() {
        let a = Manifest::parse(MINIMAL).unwrap();
        let b = Manifest::parse("name: other\nlisten: 127.0.0.1:1\n").unwrap();
        let fields: Vec<_> = a.immutable_changes(&b).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "listen"]);
        assert!(a.immutable_changes(&a.clone()).is_empty());
    }

    #[test]
    fn on_swarm_the_network_cannot_change_live() {
        let on = |network: &str, runtime: &str| {
            Manifest::parse(&format!("name: d\nreplica: {{runtime: {runtime}, network: {network}}}\n"))
                .unwrap()
        };
        let errors = on("a", "swarm").immutable_changes(&on("b", "swarm"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "replica.network");
        assert!(errors[0].message.contains("--network-add b"), "{}", errors[0].message);
        assert!(on("a", "docker").immutable_changes(&on("b", "docker")).is_empty(), "Docker rolls it");
    }
}
