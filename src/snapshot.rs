//! The routing snapshot: everything a request needs, immutable, swapped whole.
//!
//! The controller builds a new [`Snapshot`] off the request path whenever the ring's membership or
//! the settings change, and stores it in the one [`Snapshots`] `ArcSwap`; the proxy loads it once per
//! request without a lock. What changes per request (in-flight counts, passive ejection) lives in
//! atomics inside each [`Backend`], which is shared between consecutive snapshots, so counters
//! survive a rebuild. The controller is the only writer.

use crate::manifest::{KeySource, ProxyEngine, UnknownPath};
use crate::ring::{Ring, Selector};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// One running replica as the data path sees it.
#[derive(Debug)]
pub struct Backend {
    /// The replica's name (hostname); answers carry it in `X-Ringlb-Replica`.
    pub name: String,
    /// The exercise's integer server id.
    pub id: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `name` as a header value, made once.
    pub name_header: http::HeaderValue,
    /// Set by the proxy when connecting failed; cleared by the next good heartbeat.
    ejected: AtomicBool,
    /// Requests being forwarded to it now.
    inflight: AtomicU64,
    /// Requests forwarded to it since it started.
    requests: AtomicU64,
    /// Requests to it that failed (connection error, timeout, reset).
    errors: AtomicU64,
    /// Its Prometheus handles.
    pub metrics: crate::telemetry::ReplicaMetrics,
    /// Cancelled when its drain is over: the tunnels still open to it close.
    tunnels: tokio_util::sync::CancellationToken,
}

impl Backend {
    /// A backend of `service` with zeroed counters.
    pub fn new(service: &str, name: &str, id: u32, addr: SocketAddr) -> Backend {
        Backend {
            name: name.to_owned(),
            id,
            addr,
            name_header: http::HeaderValue::from_str(name)
                .unwrap_or_else(|_| http::HeaderValue::from_static("invalid-name")),
            ejected: AtomicBool::new(false),
            inflight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics: crate::telemetry::ReplicaMetrics::new(service, name),
            tunnels: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// True while the proxy has ejected it (a refused connection), until the next good heartbeat.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Ejects it; true if it was not ejected before.
    pub fn eject(&self) -> bool {
        !self.ejected.swap(true, Ordering::Relaxed)
    }

    /// Lifts an ejection; true if it was ejected.
    pub fn restore(&self) -> bool {
        self.ejected.swap(false, Ordering::Relaxed)
    }

    /// Counts a request as started; the guard counts it as finished when dropped.
    pub fn begin_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InflightGuard(Arc::clone(self))
    }

    /// Closes the tunnels open to it (its drain is over); tunnels opened later close at once.
    pub fn close_tunnels(&self) {
        self.tunnels.cancel();
    }

    /// Completes once [`Backend::close_tunnels`] was called.
    pub fn tunnels_closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.tunnels.cancelled()
    }

    /// Counts a failed request.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Keeps a request counted as in flight until the response body is done.
#[derive(Debug)]
pub struct InflightGuard(Arc<Backend>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The settings the proxy reads per request.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// What is hashed.
    pub key: KeySource,
    /// True when the key's integer is the exercise's request id `i` (request ids are numeric).
    pub numeric_request_ids: bool,
    /// Time to the response head before a 504.
    pub timeout: Duration,
    /// Time to connect before the next replica is tried.
    pub connect_timeout: Duration,
    /// What a replica's 404 becomes.
    pub unknown_path: UnknownPath,
    /// Bounded loads' factor, when on.
    pub balance_factor: Option<f64>,
    /// Scale to zero: how requests wait for a first replica, when the autoscaler may reach zero.
    pub hold: Option<Hold>,
    /// One log line per request (target `ringlb::access`).
    pub access_log: bool,
    /// Which HTTP/1.1 implementation serves new client connections.
    pub engine: ProxyEngine,
    /// Time a client has for a request head (and for each piece of a body on the fast path).
    pub client_timeout: Duration,
    /// The most client connections open at once.
    pub max_connections: u32,
    /// How long a tunnel may stay silent both ways before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// Limits of HTTP/2 client connections (applied to new connections).
    pub http2: crate::manifest::Http2Limits,
    /// `tls.redirect_http`: plain-HTTP requests get a 308 to https.
    pub redirect_http: bool,
    /// `replica.protocol`: the HTTP version spoken to the replicas.
    pub upstream: crate::manifest::ReplicaProtocol,
}

/// How requests wait while a cluster scaled to zero starts its first replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The most requests waiting at once; more get a 503.
    pub queue: u32,
    /// The longest a request waits; then a 503.
    pub timeout: Duration,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            key: KeySource::RequestId,
            numeric_request_ids: true,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            unknown_path: UnknownPath::Pass,
            balance_factor: None,
            hold: None,
            access_log: false,
            engine: ProxyEngine::Fast,
            client_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            tunnel_idle_timeout: Duration::from_secs(3600),
            http2: crate::manifest::Http2Limits::default(),
            redirect_http: false,
            upstream: crate::manifest::ReplicaProtocol::Http1,
        }
    }
}

/// The lifecycle state of a replica, as the status API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Started, waiting for its first good heartbeat; not in the ring.
    Starting,
    /// In the ring.
    Ready,
    /// Failing heartbeats; out of the ring until it answers again or is replaced.
    Failing,
    /// Leaving: out of the ring, finishing its in-flight requests before it is stopped.
    Draining,
    /// Its process or container is gone; about to be cleaned up and replaced.
    Exited,
}

/// One replica as the status API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaStatus {
    /// Hostname.
    pub name: String,
    /// The runtime's id of this instance (container id, `pid-<n>`).
    pub instance: String,
    /// Exercise id.
    pub id: u32,
    /// Where it listens, if known.
    pub address: Option<SocketAddr>,
    /// Lifecycle state.
    pub state: ReplicaState,
    /// When it was started (Unix seconds).
    pub started_at: u64,
    /// True if its spec matches the manifest (false while a rolling replacement is due).
    pub current_spec: bool,
}

/// The last reconcile pass that did something.
#[derive(Clone, Debug, Serialize)]
pub struct LastReconcile {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// What it did, in sentences.
    pub actions: Vec<String>,
}

/// A replica that cannot be started.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The replica's name.
    pub replica: String,
    /// The last error starting it.
    pub error: String,
}

/// Everything a request needs, built whole by the controller.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every published snapshot.
    pub generation: u64,
    /// The manifest version this snapshot implements.
    pub manifest_version: u64,
    /// The desired replica names, in manifest order (what `/rep` lists).
    pub replica_names: Vec<String>,
    /// Every name in use, desired or still running; a generated name must avoid them.
    pub taken_names: Vec<String>,
    /// Ring members, in the order the ring was built with (its indices point here).
    pub members: Vec<Arc<Backend>>,
    /// The hash ring over `members`.
    pub ring: Arc<Ring>,
    /// Per-request settings.
    pub routing: Routing,
    /// Every replica the controller tracks, for the status API.
    pub replicas: Vec<ReplicaStatus>,
    /// Replicas that cannot be started, and why (a missing image, a name held by a foreign
    /// container); retried with backoff.
    pub problems: Vec<Problem>,
    /// The last reconcile pass that did something.
    pub last_reconcile: Option<LastReconcile>,
    /// When this snapshot was built.
    pub built_at: SystemTime,
}

impl Snapshot {
    /// An empty snapshot: no replicas, default settings (what serves before the first pass).
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            manifest_version: 0,
            replica_names: Vec::new(),
            taken_names: Vec::new(),
            members: Vec::new(),
            ring: Arc::new(Ring::empty()),
            // Requests that come before the controller's first pass wait for it.
            routing: Routing {
                hold: Some(Hold { queue: 1000, timeout: Duration::from_secs(5) }),
                ..Routing::default()
            },
            replicas: Vec::new(),
            problems: Vec::new(),
            last_reconcile: None,
            built_at: SystemTime::now(),
        }
    }

    /// The ring's members for `key` in order of preference, skipping ejected ones.
    pub fn candidates(&self, key: u64) -> impl Iterator<Item = &Arc<Backend>> + '_ {
        self.ring.candidates(key).filter_map(|i| self.members.get(i)).filter(|backend| !backend.is_ejected())
    }
}

/// The shared, lock-free slot holding the current [`Snapshot`], plus a way to wait for a manifest
/// version to be in effect.
#[derive(Debug)]
pub struct Snapshots {
    current: ArcSwap<Snapshot>,
    /// The manifest version of the current snapshot (admin edits wait on it).
    version: watch::Sender<u64>,
    /// The generation of the current snapshot (held requests wait on it).
    generation: watch::Sender<u64>,
    /// Set by the proxy when a request waits with no replica; taken by the controller.
    demand: AtomicBool,
    /// The exercise ids of the replicas that answered the last requests (a ring of slots; 0 is
    /// empty), for the dashboard. One atomic add and one store per request.
    recent: Box<[AtomicU32]>,
    recent_next: AtomicUsize,
}

/// How many answers [`Snapshots::recent_answers`] remembers.
pub const RECENT_ANSWERS: usize = 64;

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            version: watch::channel(0).0,
            generation: watch::channel(0).0,
            demand: AtomicBool::new(false),
            recent: (0..RECENT_ANSWERS).map(|_| AtomicU32::new(0)).collect(),
            recent_next: AtomicUsize::new(0),
        }
    }
}

impl Snapshots {
    /// The current snapshot (one atomic load; hold it for the whole request).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot; only the controller calls this.
    pub fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.manifest_version;
        let generation = snapshot.generation;
        self.current.store(Arc::new(snapshot));
        self.generation.send_replace(generation);
        self.version.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
    }

    /// Notes that the replica with exercise id `id` answered a request.
    pub fn record_answer(&self, id: u32) {
        let slot = self.recent_next.fetch_add(1, Ordering::Relaxed) % self.recent.len();
        self.recent[slot].store(id, Ordering::Relaxed);
    }

    /// The exercise ids of the replicas that answered the last requests, oldest first.
    pub fn recent_answers(&self) -> Vec<u32> {
        let next = self.recent_next.load(Ordering::Relaxed);
        let n = self.recent.len();
        (0..n).map(|i| self.recent[(next + i) % n].load(Ordering::Relaxed)).filter(|id| *id != 0).collect()
    }

    /// Says a request is waiting with no replica to serve it (scale to zero).
    pub fn signal_demand(&self) {
        self.demand.store(true, Ordering::Relaxed);
    }

    /// Takes the demand signal: true if a request asked for a replica since the last call.
    pub fn take_demand(&self) -> bool {
        self.demand.swap(false, Ordering::Relaxed)
    }

    /// Waits until a snapshot with at least one ring member is published, up to `timeout`.
    pub async fn wait_for_members(&self, timeout: Duration) -> Option<Arc<Snapshot>> {
        self.wait_until(timeout, |s| !s.members.is_empty()).await
    }

    /// Waits until the ring holds `wanted` members, or every desired replica when fewer are
    /// desired, up to `timeout`. Returns that snapshot, or `None` on timeout.
    pub async fn wait_for_ring(&self, wanted: usize, timeout: Duration) -> Option<Arc<Snapshot>> {
        self.wait_until(timeout, |s| s.members.len() >= wanted.min(s.replica_names.len())).await
    }

    /// Waits until a published snapshot satisfies `done`, up to `timeout`.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Snapshot) -> bool) -> Option<Arc<Snapshot>> {
        let mut rx = self.generation.subscribe();
        let wait = async {
            loop {
                let snapshot = self.load();
                if done(&snapshot) {
                    return Some(snapshot);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Waits until a snapshot for manifest `version` (or later) is published, up to `timeout`.
    /// Returns that snapshot, or `None` on timeout.
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> Option<Arc<Snapshot>> {
        let mut rx = self.version.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|v| *v >= version)).await;
        match reached {
            Ok(Ok(_)) => Some(self.load()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inflight_guard_counts_until_dropped() {
        let backend = Arc::new(Backend::new("s", "a", 1, "127.0.0.1:1".parse().unwrap()));
        let guard = backend.begin_request();
        assert_eq!((backend.inflight(), backend.requests()), (1, 1));
        drop(guard);
        assert_eq!((backend.inflight(), backend.requests()), (0, 1));
    }

    #[test]
    fn ejection_flips_once() {
        let backend = Backend::new("s", "a", 1, "127.0.0.1:1".parse().unwrap());
        assert!(backend.eject());
        assert!(!backend.eject());
        assert!(backend.is_ejected());
        assert!(backend.restore());
        assert!(!backend.is_ejected());
    }

    #[tokio::test]
    async fn waiting_for_a_version_returns_once_it_is_published() {
        let snapshots = Arc::new(Snapshots::default());
        let waiter = {
            let snapshots = Arc::clone(&snapshots);
            tokio::spawn(async move { snapshots.wait_for_version(2, Duration::from_secs(5)).await })
        };
        let mut snapshot = Snapshot::empty();
        snapshot.manifest_version = 2;
        snapshots.publish(snapshot);
        assert_eq!(waiter.await.unwrap().unwrap().manifest_version, 2);
        assert!(snapshots.wait_for_version(3, Duration::from_millis(10)).await.is_none());
    }

    #[tokio::test]
    async fn waiting_for_a_ring_wants_the_members_asked_for_or_every_desired_replica() {
        let snapshots = Arc::new(Snapshots::default());
        let publish = |names: &[&str], members: usize| {
            let mut snapshot = Snapshot::empty();
            snapshot.generation = snapshots.load().generation + 1;
            snapshot.replica_names = names.iter().map(|n| n.to_string()).collect();
            snapshot.members = (0..members)
                .map(|i| Arc::new(Backend::new("s", names[i], i as u32 + 1, "127.0.0.1:1".parse().unwrap())))
                .collect();
            snapshots.publish(snapshot);
        };
        let short = Duration::from_millis(10);
        publish(&["a", "b", "c"], 2);
        assert!(snapshots.wait_for_ring(3, short).await.is_none(), "two of three");
        assert!(snapshots.wait_for_ring(2, short).await.is_some(), "the two the old ring had");
        let waiter = {
            let snapshots = Arc::clone(&snapshots);
            tokio::spawn(async move { snapshots.wait_for_ring(3, Duration::from_secs(5)).await })
        };
        publish(&["a", "b", "c"], 3);
        assert_eq!(waiter.await.unwrap().unwrap().members.len(), 3);
        // Fewer desired than the old ring held (scaled down meanwhile): every desired one will do.
        publish(&["a"], 1);
        assert!(snapshots.wait_for_ring(3, short).await.is_some());
    }
}
