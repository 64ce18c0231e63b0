//! The manifest: the desired state of a cluster, as the user writes it in YAML.
//!
//! This module owns the types and their defaults, parsing with line and column on every error, and
//! validation with the failing field named. The submodules own the rest of the manifest's life:
//! [`source`] keeps the last good manifest and hands new versions to the controller, [`watch`]
//! follows the file, [`edit`] rewrites `replicas:` and `hostnames:` without touching comments, and
//! [`file`](mod@file) writes it atomically. The keys of DESIGN.md are a contract: add keys, never rename them.

pub mod duration;
pub mod edit;
pub mod file;
pub mod locate;
pub mod source;
pub mod watch;

use crate::ring::maglev::{MAX_TABLE_SIZE, default_table_size};
use crate::ring::slots::MAX_SLOTS;
use crate::ring::{Algorithm, HashFunction, Probing, RingConfig, is_prime};
use duration::HumanDuration;
use serde::{Deserialize, Deserializer, de};
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

/// The most replicas a manifest may ever allow (`limits.max_replicas` is capped here).
pub const MAX_REPLICAS_CEILING: u32 = 1024;

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
}

/// The autoscaler's settings (see `controller/autoscale.rs` for the rule).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest replicas; 0 scales to zero after an idle scale-down window.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Requests in flight per replica to aim at.
    #[serde(default = "defaults::target_inflight")]
    pub target_inflight: f64,
    /// Relative band around the target within which nothing changes.
    #[serde(default = "defaults::tolerance")]
    pub tolerance: f64,
    /// Scaling up follows the lowest recommendation of this window (shorter spikes are ignored).
    #[serde(default = "defaults::scale_up_window")]
    pub scale_up_window: HumanDuration,
    /// Scaling down follows the highest recommendation of this window.
    #[serde(default = "defaults::scale_down_window")]
    pub scale_down_window: HumanDuration,
    /// The most replicas one decision may add.
    #[serde(default = "defaults::max_step")]
    pub max_step: u32,
    /// Time between decisions.
    #[serde(default = "defaults::autoscale_interval")]
    pub interval: HumanDuration,
    /// Scale to zero: requests held while the first replica starts; more get a 503.
    #[serde(default = "defaults::hold_queue")]
    pub hold_queue: u32,
    /// Scale to zero: the longest a request is held; then a 503 with Retry-After.
    #[serde(default = "defaults::hold_timeout")]
    pub hold_timeout: HumanDuration,
}

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

/// How one replica is run.
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

impl Default for ReplicaSpec {
    fn default() -> Self {
        ReplicaSpec {
            runtime: RuntimeKind::default(),
            image: "ringlb:latest".into(),
            network: "net1".into(),
            port: 5000,
            endpoints: Vec::new(),
            replacement_name: ReplacementName::Same,
            start_timeout: HumanDuration::from_secs(30),
            drain_timeout: HumanDuration::from_secs(30),
            stop_timeout: HumanDuration::from_secs(10),
        }
    }
}

/// What part of a request is hashed to pick its replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeySource {
    /// The `X-Request-Id` header if present, else a random 6-digit id made for the request.
    #[default]
    RequestId,
    /// The client's IP address.
    ClientIp,
    /// The request path (without the query).
    Path,
    /// The value of this header (absent: an empty key).
    Header(http::HeaderName),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::RequestId => f.write_str("request-id"),
            KeySource::ClientIp => f.write_str("client-ip"),
            KeySource::Path => f.write_str("path"),
            KeySource::Header(name) => write!(f, "header:{name}"),
        }
    }
}

impl std::str::FromStr for KeySource {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "request-id" => Ok(KeySource::RequestId),
            "client-ip" => Ok(KeySource::ClientIp),
            "path" => Ok(KeySource::Path),
            _ => match text.strip_prefix("header:") {
                Some(name) => http::HeaderName::try_from(name.trim())
                    .map(KeySource::Header)
                    .map_err(|_| format!("{name:?} is not a valid header name")),
                None => Err(format!(
                    "unknown key {text:?}: expected request-id, client-ip, path or header:<Name>"
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// How requests are spread over replicas (see DESIGN.md for the exercise's functions).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hashing {
    /// `maglev` (the default) or `ring` (slots and virtual nodes).
    pub algorithm: Algorithm,
    /// ring: M, the number of slots.
    pub slots: u32,
    /// ring: K, virtual nodes per replica.
    pub virtual_nodes: u32,
    /// ring: `assignment` (the exercise's H and Phi) or `xxh3`.
    pub function: HashFunction,
    /// ring: how colliding virtual nodes find a free slot.
    pub probing: Probing,
    /// maglev: the lookup table's size, a prime; unset: 65537, or larger when `limits.max_replicas`
    /// exceeds 65 (see [`crate::ring::maglev::default_table_size`]).
    pub table_size: Option<u32>,
    /// What is hashed.
    pub key: KeySource,
    /// Bounded loads: a replica whose in-flight count would exceed `ceil(factor x mean)` is
    /// skipped for the next candidate (e.g. 1.25); unset: off.
    pub balance_factor: Option<f64>,
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

impl Hashing {
    /// The ring's own configuration, for a cluster of at most `max_replicas`.
    pub fn ring_config(&self, max_replicas: u32) -> RingConfig {
        RingConfig {
            algorithm: self.algorithm,
            slots: self.slots,
            virtual_nodes: self.virtual_nodes,
            function: self.function,
            probing: self.probing,
            table_size: self.table_size.unwrap_or_else(|| default_table_size(max_replicas)),
        }
    }

    /// True when ring ids are the exercise's integer server ids (ring + assignment).
    pub fn uses_assignment_ids(&self) -> bool {
        self.algorithm == Algorithm::Ring && self.function == HashFunction::Assignment
    }
}

/// How replicas are checked.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// The heartbeat path, answered 200 by a healthy replica.
    pub path: String,
    /// Time between heartbeats.
    pub interval: HumanDuration,
    /// How long a heartbeat may take.
    pub timeout: HumanDuration,
    /// Consecutive failed heartbeats after which a replica that still runs is replaced.
    /// (It leaves the ring at the first failure and comes back at the next success.)
    pub replace_after: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/heartbeat".into(),
            interval: HumanDuration::from_secs(1),
            timeout: HumanDuration::from_millis(500),
            replace_after: 3,
        }
    }
}

/// What a replica's 404 becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownPath {
    /// The replica's answer reaches the client unchanged.
    #[default]
    Pass,
    /// The exercise's 400: `'/<path>' endpoint does not exist in server replicas`.
    Exercise,
}

/// Which implementation of HTTP/1.1 forwards the requests (both follow the same rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyEngine {
    /// ringlb's own HTTP/1.1 framing on `httparse`: the fast path. Requests it does not handle
    /// itself (upgrades, `Expect`, chunked uploads, HTTP/1.0, ringlb's own routes) are passed, with
    /// the rest of their connection, to the hyper path.
    #[default]
    Fast,
    /// hyper on both sides: the reference implementation.
    Hyper,
}

/// How requests are forwarded.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// How long a replica may take to answer (response head) before the client gets a 504.
    pub timeout: HumanDuration,
    /// How long connecting to a replica may take before the next replica is tried.
    pub connect_timeout: HumanDuration,
    /// What a replica's 404 becomes.
    pub unknown_path: UnknownPath,
    /// One log line per request (method, path, status, replica, time), target `ringlb::access`.
    pub access_log: bool,
    /// The HTTP/1.1 implementation of client connections (applies to new connections).
    pub engine: ProxyEngine,
    /// How long a client may take to send a request head (or, on the fast path, the next piece
    /// of a body); then 408 and the connection closes. Applies to new connections.
    pub client_timeout: HumanDuration,
    /// The most client connections open at once; one more gets a 503 and is closed.
    pub max_connections: u32,
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
        }
    }
}

/// Caps that protect the host.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The most replicas `replicas:` or `/add` may ask for.
    pub max_replicas: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_replicas: 64 }
    }
}

mod defaults {
    use super::HumanDuration;
    use std::net::{Ipv4Addr, SocketAddr};
    pub fn target_inflight() -> f64 {
        10.0
    }
    pub fn tolerance() -> f64 {
        0.1
    }
    pub fn scale_up_window() -> HumanDuration {
        HumanDuration::from_secs(3)
    }
    pub fn scale_down_window() -> HumanDuration {
        HumanDuration::from_secs(60)
    }
    pub fn max_step() -> u32 {
        4
    }
    pub fn autoscale_interval() -> HumanDuration {
        HumanDuration::from_secs(1)
    }
    pub fn hold_queue() -> u32 {
        1000
    }
    pub fn hold_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn replicas() -> u32 {
        3
    }
    pub fn listen() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5000))
    }
}

/// One thing wrong with a manifest, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The dotted path of the field (`hashing.slots`, `hostnames[2]`).
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
    /// Where the field is in the text, when known.
    pub position: Option<locate::Position>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.position {
            write!(f, "line {}, column {}: ", p.line, p.column)?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a manifest was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The manifest's path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or does not have the manifest's shape (wrong type, unknown key).
    #[error("{}{message}", position.map(|p| format!("line {}, column {}: ", p.line, p.column)).unwrap_or_default())]
    Syntax {
        /// What is wrong, starting with the field when known (`replicas: invalid u32`).
        message: String,
        /// Where, when the parser knows.
        position: Option<locate::Position>,
        /// The offending lines with a caret under the spot, for people.
        snippet: String,
    },
    /// The manifest parses but asks for something invalid.
    #[error("{}", display_list(.0))]
    Invalid(Vec<FieldError>),
}

/// A parser error as a [`ManifestError::Syntax`]: the field it is about, a one-line message and
/// the parser's snippet.
fn syntax_error(text: &str, error: &serde_saphyr::Error) -> ManifestError {
    let position = error.location().map(|l| locate::Position {
        line: usize::try_from(l.line()).unwrap_or(usize::MAX),
        column: usize::try_from(l.column()).unwrap_or(usize::MAX),
    });
    let rendered = error.to_string();
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    // The parser's first line reads "error: line L column C: <what>"; keep <what>.
    let what =
        first
            .strip_prefix("error: ")
            .map(|rest| {
                if rest.starts_with("line ") { rest.split_once(": ").map_or(rest, |(_, w)| w) } else { rest }
            })
            .unwrap_or(first)
            .trim();
    let message = match position.and_then(|p| locate::path_at(text, p)) {
        Some(field) if !what.contains(&format!("`{field}`")) => format!("{field}: {what}"),
        _ => what.to_owned(),
    };
    ManifestError::Syntax { message, position, snippet: lines.collect::<Vec<_>>().join("\n") }
}

fn display_list(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ManifestError {
    /// Where the (first) error is, if known.
    pub fn position(&self) -> Option<locate::Position> {
        match self {
            ManifestError::Read { .. } => None,
            ManifestError::Syntax { position, .. } => *position,
            ManifestError::Invalid(list) => list.iter().find_map(|e| e.position),
        }
    }
}

/// True if `name` is a valid replica (container) name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63
/// characters.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// True if `image` looks like a Docker image reference (`name[:tag][@digest]`, lowercase path
/// components, an optional registry host with a port): enough to refuse obvious mistakes and
/// anything with spaces or shell characters.
pub fn is_valid_image(image: &str) -> bool {
    let (name, digest) = image.split_once('@').map_or((image, None), |(n, d)| (n, Some(d)));
    let (path, tag) = match name.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (name, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    });
    let digest_ok =
        digest.is_none_or(|d| d.split_once(':').is_some_and(|(a, h)| !a.is_empty() && !h.is_empty()));
    let mut parts = path.split('/').peekable();
    let mut path_ok = !path.is_empty();
    let mut first = true;
    while let Some(part) = parts.next() {
        let is_registry = first
            && parts.peek().is_some()
            && (part.contains('.') || part.contains(':') || part == "localhost");
        let allowed = |c: char| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '_' | '.' | '-')
                || (is_registry && (c == ':' || c.is_ascii_uppercase()))
        };
        path_ok &= !part.is_empty() && part.chars().all(allowed);
        first = false;
    }
    path_ok && tag_ok && digest_ok && image.len() <= 255
}

/// The rule that [`is_valid_name`] checks, for error messages.
pub const NAME_RULE: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 63 characters";

impl Manifest {
    /// Parses and validates manifest text.
    ///
    /// # Errors
    /// [`ManifestError::Syntax`] with line and column, or [`ManifestError::Invalid`] listing every
    /// invalid field with its position.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let mut errors = manifest.validate();
        if errors.is_empty() {
            return Ok(manifest);
        }
        for error in &mut errors {
            error.position = locate::locate(text, &error.field);
        }
        Err(ManifestError::Invalid(errors))
    }

    /// Reads, parses and validates the manifest at `path`.
    ///
    /// # Errors
    /// As [`Manifest::parse`], or [`ManifestError::Read`].
    pub fn load(path: &std::path::Path) -> Result<(Manifest, String), ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ManifestError::Read { path: path.display().to_string(), source })?;
        Ok((Manifest::parse(&text)?, text))
    }

    /// Every rule the types cannot express; an empty list means valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError { field: field.into(), message, position: None });
        };
        if !is_valid_name(&self.name) {
            fail("name", format!("{:?} is not a valid cluster name ({NAME_RULE})", self.name));
        }
        let max = self.limits.max_replicas;
        if max == 0 || max > MAX_REPLICAS_CEILING {
            fail("limits.max_replicas", format!("must be between 1 and {MAX_REPLICAS_CEILING}, found {max}"));
        }
        if self.replicas > max {
            fail("replicas", format!("{} is more than limits.max_replicas ({max})", self.replicas));
        }
        let mut seen = BTreeSet::new();
        for (i, name) in self.hostnames.iter().enumerate() {
            let field = format!("hostnames[{i}]");
            if !is_valid_name(name) {
                fail(&field, format!("{name:?} is not a valid hostname ({NAME_RULE})"));
            } else if !seen.insert(name.as_str()) {
                fail(&field, format!("{name:?} is listed twice"));
            }
        }
        if !is_valid_image(&self.replica.image) {
            fail("replica.image", format!("{:?} is not a valid image reference", self.replica.image));
        }
        if !is_valid_name(&self.replica.network) {
            fail(
                "replica.network",
                format!("{:?} is not a valid network name ({NAME_RULE})", self.replica.network),
            );
        }
        if self.replica.runtime == RuntimeKind::Static {
            if self.replica.endpoints.is_empty() {
                fail("replica.endpoints", "the static runtime needs at least one ip:port endpoint".into());
            }
            if self.replicas as usize != self.replica.endpoints.len() {
                fail(
                    "replicas",
                    format!(
                        "with replica.runtime: static the replicas are the endpoints: set replicas: {}",
                        self.replica.endpoints.len()
                    ),
                );
            }
            if self.autoscale.is_some() {
                fail("autoscale", "the static runtime cannot scale: its replicas are its endpoints".into());
            }
        } else if !self.replica.endpoints.is_empty() {
            fail("replica.endpoints", "only the static runtime uses endpoints".into());
        }
        for (i, endpoint) in self.replica.endpoints.iter().enumerate() {
            if endpoint.parse::<SocketAddr>().is_err() {
                fail(&format!("replica.endpoints[{i}]"), format!("{endpoint:?} is not an ip:port address"));
            }
        }
        if self.replica.port == 0 {
            fail("replica.port", "must be between 1 and 65535".into());
        }
        for (field, value) in [
            ("replica.start_timeout", self.replica.start_timeout),
            ("replica.drain_timeout", self.replica.drain_timeout),
            ("replica.stop_timeout", self.replica.stop_timeout),
            ("health.interval", self.health.interval),
            ("health.timeout", self.health.timeout),
            ("proxy.timeout", self.proxy.timeout),
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            ("proxy.client_timeout", self.proxy.client_timeout),
        ] {
            if value.get().is_zero() {
                fail(field, "must be longer than zero".into());
            }
        }
        if !self.health.path.starts_with('/') {
            fail("health.path", format!("must start with '/', found {:?}", self.health.path));
        }
        if self.proxy.max_connections == 0 {
            fail("proxy.max_connections", "must be at least 1".into());
        }
        if self.health.replace_after == 0 {
            fail("health.replace_after", "must be at least 1".into());
        }
        if let Some(factor) = self.hashing.balance_factor
            && !(factor.is_finite() && factor > 1.0 && factor <= 100.0)
        {
            fail("hashing.balance_factor", format!("must be above 1.0 (e.g. 1.25), found {factor}"));
        }
        if let Some(a) = &self.autoscale {
            if a.max == 0 || a.max > max {
                fail(
                    "autoscale.max",
                    format!("must be between 1 and limits.max_replicas ({max}), found {}", a.max),
                );
            }
            if a.min > a.max {
                fail("autoscale.min", format!("{} is more than autoscale.max ({})", a.min, a.max));
            }
            if !(a.target_inflight.is_finite() && a.target_inflight > 0.0) {
                fail("autoscale.target_inflight", format!("must be above 0, found {}", a.target_inflight));
            }
            if !(a.tolerance.is_finite() && (0.0..1.0).contains(&a.tolerance)) {
                fail("autoscale.tolerance", format!("must be at least 0 and below 1, found {}", a.tolerance));
            }
            if a.max_step == 0 {
                fail("autoscale.max_step", "must be at least 1".into());
            }
            if a.interval.get().is_zero() {
                fail("autoscale.interval", "must be longer than zero".into());
            }
            if a.hold_queue == 0 {
                fail("autoscale.hold_queue", "must be at least 1".into());
            }
            if a.hold_timeout.get().is_zero() {
                fail("autoscale.hold_timeout", "must be longer than zero".into());
            }
        }
        let hashing = &self.hashing;
        match hashing.algorithm {
            Algorithm::Maglev => match hashing.table_size {
                Some(size) if !is_prime(size) => {
                    fail("hashing.table_size", format!("must be a prime, found {size}"));
                }
                Some(size) if size > MAX_TABLE_SIZE => {
                    fail("hashing.table_size", format!("must be at most {MAX_TABLE_SIZE}, found {size}"))
                }
                Some(size) if size < max.saturating_mul(100) => fail(
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
                    fail(
                        "hashing.slots",
                        format!("must be between 1 and {MAX_SLOTS}, found {}", hashing.slots),
                    );
                }
                if hashing.virtual_nodes == 0 {
                    fail("hashing.virtual_nodes", "must be at least 1".into());
                }
                let needed = u64::from(self.replicas) * u64::from(hashing.virtual_nodes);
                if needed > u64::from(hashing.slots) {
                    fail(
                        "hashing.slots",
                        format!(
                            "{} replicas x {} virtual nodes need {needed} slots, more than the {} there are",
                            self.replicas, hashing.virtual_nodes, hashing.slots
                        ),
                    );
                }
                // The autoscaler may grow the cluster to autoscale.max: the ring must hold that too.
                if let Some(a) = &self.autoscale {
                    let needed = u64::from(a.max) * u64::from(hashing.virtual_nodes);
                    if a.max > self.replicas && needed > u64::from(hashing.slots) {
                        fail(
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
        errors
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

    /// A one-line summary, as `ringlb check` prints it.
    pub fn summary(&self) -> String {
        let hashing = match self.hashing.algorithm {
            Algorithm::Maglev => format!("maglev (table {})", self.ring_config().table_size),
            Algorithm::Ring => format!(
                "ring (M {}, K {}, {:?}, {:?} probing)",
                self.hashing.slots, self.hashing.virtual_nodes, self.hashing.function, self.hashing.probing
            )
            .to_lowercase(),
        };
        format!(
            "cluster {}: {} replicas on the {} runtime, {}, key {}, listening on {}",
            self.name, self.replicas, self.replica.runtime, hashing, self.hashing.key, self.listen
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

    #[test]
    fn a_wrong_type_names_its_line_and_column() {
        let err = Manifest::parse("name: demo\nreplicas: three\n").unwrap_err();
        let ManifestError::Syntax { position, message, snippet } = &err else { panic!("{err:?}") };
        assert_eq!(position.map(|p| (p.line, p.column)), Some((2, 11)), "{message}");
        assert!(message.starts_with("replicas: "), "{message}");
        assert!(snippet.contains("replicas: three"), "{snippet}");
        assert_eq!(err.to_string(), format!("line 2, column 11: {message}"));
    }

    #[test]
    fn an_unknown_key_is_an_error_not_silence() {
        let err = Manifest::parse("name: demo\nreplcias: 3\n").unwrap_err();
        assert!(err.to_string().contains("replcias"), "{err}");
    }

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
    fn keys_parse_from_their_names() {
        assert_eq!("client-ip".parse::<KeySource>(), Ok(KeySource::ClientIp));
        assert_eq!(
            "header:X-User".parse::<KeySource>(),
            Ok(KeySource::Header(http::HeaderName::from_static("x-user")))
        );
        assert!("header:bad name".parse::<KeySource>().is_err());
        assert!("cookie".parse::<KeySource>().is_err());
    }

    #[test]
    fn names_follow_the_container_name_rule() {
        assert!(is_valid_name("server1"));
        assert!(is_valid_name("S5.a_b-c"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(is_valid_name(&"a".repeat(63)));
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
    fn image_references_are_checked() {
        for ok in [
            "ringlb:latest",
            "ringlb",
            "registry.local:5000/team/ringlb:v1.2",
            "a/b@sha256:abc",
            "x_y.z-1:T_1",
        ] {
            assert!(is_valid_image(ok), "{ok}");
        }
        for bad in ["", "Ringlb", "ringlb:", "ring lb", "ringlb;rm -rf /", "a//b", ":tag", "a@", "a:b:c"] {
            assert!(!is_valid_image(bad), "{bad}");
        }
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
