//! Replicas that ringlb balances but does not run (`replica.runtime: static`): the `host:port`
//! endpoints of `replica.endpoints`, health-checked, hashed and listed by `/rep` like any other
//! replica. This is how ringlb sits in front of servers it does not manage, and how the benchmark
//! puts every proxy in front of the very same backends.
//!
//! The endpoints follow the manifest ([`Runtime::follow`]): an added endpoint is listed at once
//! and joins the ring at its first good heartbeat; a removed one stays listed until the
//! controller has drained it and calls [`Runtime::stop`], so its in-flight requests finish.
//!
//! An endpoint is an IP address or a host name with a port. A name is resolved when it appears
//! and again every `health.interval`, in a task of its own (never on the controller's or the
//! proxy's path). A replica is one endpoint: a name that resolves to several addresses is served
//! at the first of them (IPv4 first); when its address changes, the new address is a new instance
//! (it joins at its first heartbeat, the old one drains). A name that does not resolve (yet, or
//! any more) keeps its last address, and a start of its replica fails with the resolver's error,
//! which the status reports as a problem.
//!
//! Replica names: `hostnames[i]` for endpoint `i`, else `<cluster>-<i+1>`; ids are `i+1`.
//! Nothing is ever started or stopped; a failing endpoint leaves the ring and comes back at its
//! next good heartbeat (the controller never replaces a static replica).

use super::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// The longest a name's resolution may take before it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One endpoint of the manifest and what is known of it.
#[derive(Clone, Debug)]
struct Endpoint {
    /// As written (`10.0.0.5:8080`, `web:8080`).
    text: String,
    /// The replica it is.
    name: String,
    replica_id: u32,
    /// Its last address, once it resolved.
    addr: Option<SocketAddr>,
    /// When that address was first seen.
    since: SystemTime,
    /// Why the last resolution failed, while it fails.
    error: Option<String>,
}

impl Endpoint {
    fn instance(&self) -> Option<Instance> {
        let addr = self.addr?;
        Some(Instance {
            id: instance_id(&self.text, addr),
            name: self.name.clone(),
            replica_id: self.replica_id,
            addr: Some(addr),
            spec_hash: 0,
            running: true,
            started_at: self.since,
        })
    }
}

/// `static-<endpoint>` for an IP endpoint (as before names were allowed), else
/// `static-<endpoint>@<address>`, so that a name's new address is a new instance.
fn instance_id(text: &str, addr: SocketAddr) -> InstanceId {
    if text.parse::<SocketAddr>().is_ok() {
        InstanceId(format!("static-{text}"))
    } else {
        InstanceId(format!("static-{text}@{addr}"))
    }
}

/// What the runtime knows, behind one lock that is never held across an await.
#[derive(Default)]
struct State {
    /// The manifest's endpoints, in order.
    endpoints: Vec<Endpoint>,
    /// Instances of endpoints (or of addresses) no longer current, listed until stopped.
    leaving: BTreeMap<InstanceId, Instance>,
    /// How often names are resolved again.
    interval: Duration,
}

/// The endpoints of the manifest, kept up to date.
pub struct StaticRuntime {
    state: Arc<Mutex<State>>,
    /// Resolves the names again every `health.interval`; aborted on drop.
    resolver: JoinHandle<()>,
}

impl Drop for StaticRuntime {
    fn drop(&mut self) {
        self.resolver.abort();
    }
}

impl StaticRuntime {
    /// The endpoints of `manifest`, with its names resolved once before it returns (bounded by
    /// a timeout each), and a task that resolves them again every `health.interval`.
    ///
    /// # Errors
    /// None today: a name that does not resolve is reported by the replica's start instead.
    pub async fn new(manifest: &Manifest) -> Result<StaticRuntime, RuntimeError> {
        let state = Arc::new(Mutex::new(State::default()));
        follow(&state, manifest);
        resolve_all(&state).await;
        let resolver = tokio::spawn(resolve_forever(Arc::clone(&state)));
        Ok(StaticRuntime { state, resolver })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes the endpoints of `manifest`: known ones keep what is known of them, new ones are
/// added (an IP address at once), and the instances of removed ones are kept as leaving.
fn follow(state: &Mutex<State>, manifest: &Manifest) {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.interval = manifest.health.interval.get();
    let mut old: BTreeMap<String, Endpoint> =
        std::mem::take(&mut state.endpoints).into_iter().map(|e| (e.text.clone(), e)).collect();
    let now = SystemTime::now();
    let mut endpoints = Vec::with_capacity(manifest.replica.endpoints.len());
    for (i, text) in manifest.replica.endpoints.iter().enumerate() {
        let name =
            manifest.hostnames.get(i).cloned().unwrap_or_else(|| format!("{}-{}", manifest.name, i + 1));
        let replica_id = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let endpoint = match old.remove(text) {
            Some(known) if known.name == name => known,
            Some(known) => {
                // Same endpoint, another name: the old instance leaves, a new one joins.
                if let Some(instance) = known.instance() {
                    state.leaving.insert(instance.id.clone(), instance);
                }
                Endpoint { name, replica_id, since: now, ..known }
            }
            None => Endpoint {
                text: text.clone(),
                name,
                replica_id,
                addr: text.parse().ok(),
                since: now,
                error: None,
            },
        };
        endpoints.push(endpoint);
    }
    for gone in old.into_values() {
        if let Some(instance) = gone.instance() {
            state.leaving.insert(instance.id.clone(), instance);
        }
    }
    // An instance that is current again is no longer leaving.
    for endpoint in &endpoints {
        if let Some(instance) = endpoint.instance() {
            state.leaving.remove(&instance.id);
        }
    }
    state.endpoints = endpoints;
}

/// Resolves every endpoint that is a name, each bounded by [`RESOLVE_TIMEOUT`].
async fn resolve_all(state: &Mutex<State>) {
    let names: Vec<String> = {
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .endpoints
            .iter()
            .filter(|e| e.text.parse::<SocketAddr>().is_err())
            .map(|e| e.text.clone())
            .collect()
    };
    for text in names {
        let result = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(text.as_str())).await
        {
            Err(_) => Err(format!("no answer from the resolver within {RESOLVE_TIMEOUT:?}")),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(addrs)) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort_by_key(|a| (a.is_ipv6(), *a));
                addrs.first().copied().ok_or_else(|| "it resolves to no address".to_owned())
            }
        };
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { endpoints, leaving, .. } = &mut *state;
        let Some(endpoint) = endpoints.iter_mut().find(|e| e.text == text) else { continue };
        match result {
            Ok(addr) if endpoint.addr == Some(addr) => endpoint.error = None,
            Ok(addr) => {
                if let Some(instance) = endpoint.instance() {
                    tracing::info!(endpoint = %text, from = %instance.addr.map(|a| a.to_string()).unwrap_or_default(),
                        to = %addr, "endpoint {text} resolves to a new address");
                    leaving.insert(instance.id.clone(), instance);
                }
                endpoint.addr = Some(addr);
                endpoint.since = SystemTime::now();
                endpoint.error = None;
            }
            Err(error) => {
                if endpoint.error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(endpoint = %text, %error, "cannot resolve endpoint {text}; keeping its last address");
                }
                endpoint.error = Some(error);
            }
        }
    }
}

/// Resolves the names again every `health.interval`, for ever.
async fn resolve_forever(state: Arc<Mutex<State>>) {
    loop {
        let interval = state.lock().unwrap_or_else(PoisonError::into_inner).interval;
        tokio::time::sleep(interval.max(Duration::from_millis(100))).await;
        resolve_all(&state).await;
    }
}

impl Runtime for StaticRuntime {
    fn spec_hash(&self, _manifest: &Manifest) -> u64 {
        0
    }

    fn replaces_failed(&self) -> bool {
        false
    }

    fn follow(&self, manifest: &Manifest) {
        follow(&self.state, manifest);
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let state = self.state();
        let current = state.endpoints.iter().filter_map(Endpoint::instance);
        Ok(current.chain(state.leaving.values().cloned()).collect())
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        // The controller starts a wanted name that has no instance: its endpoint never resolved.
        let state = self.state();
        let found = state.endpoints.iter().find(|e| e.name == request.name);
        let reason = match found {
            Some(Endpoint { text, error: Some(error), .. }) => {
                format!("endpoint {text} does not resolve: {error}")
            }
            Some(Endpoint { text, .. }) => format!("endpoint {text} is being resolved"),
            None => format!("no endpoint of replica.endpoints is named {}", request.name),
        };
        Err(RuntimeError::start(&request.name, reason))
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        // Not ours to stop: it just leaves the ring, and the list once it is no longer current.
        self.state().leaving.remove(id);
        Ok(())
    }

    async fn kill(&self, _id: &InstanceId) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn shutdown(&self, _grace: Duration) {
        self.resolver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(endpoints: &[&str]) -> Manifest {
        let list = endpoints.iter().map(|e| format!("'{e}'")).collect::<Vec<_>>().join(", ");
        Manifest::parse(&format!("name: f\nreplica: {{runtime: static, endpoints: [{list}]}}\n")).unwrap()
    }

    #[tokio::test]
    async fn endpoints_follow_the_manifest_and_removed_ones_stay_until_stopped() {
        let runtime = StaticRuntime::new(&manifest(&["127.0.0.1:1"])).await.unwrap();
        let names = |list: Vec<Instance>| list.into_iter().map(|i| (i.id.0, i.name)).collect::<Vec<_>>();
        assert_eq!(names(runtime.list().await.unwrap()), [("static-127.0.0.1:1".into(), "f-1".into())]);
        runtime.follow(&manifest(&["127.0.0.1:1", "127.0.0.1:2"]));
        assert_eq!(runtime.list().await.unwrap().len(), 2);
        runtime.follow(&manifest(&["127.0.0.1:1"]));
        let listed = runtime.list().await.unwrap();
        assert_eq!(listed.len(), 2, "the removed one is listed until the controller stopped it");
        runtime.stop(&InstanceId("static-127.0.0.1:2".into()), Duration::ZERO).await.unwrap();
        assert_eq!(names(runtime.list().await.unwrap()), [("static-127.0.0.1:1".into(), "f-1".into())]);
    }

    #[tokio::test]
    async fn a_name_is_resolved_and_one_that_does_not_resolve_is_reported_by_its_start() {
        let runtime =
            StaticRuntime::new(&manifest(&["localhost:8080", "no-such-host.invalid:80"])).await.unwrap();
        let listed = runtime.list().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].addr.map(|a| a.port()), Some(8080));
        assert!(listed[0].id.0.starts_with("static-localhost:8080@"), "{}", listed[0].id);
        let request = StartRequest {
            name: "f-2".into(),
            replica_id: 2,
            spec_hash: 0,
            spec: manifest(&["127.0.0.1:1"]).replica,
            health: crate::manifest::Health::default(),
        };
        let error = runtime.start(request).await.unwrap_err().to_string();
        assert!(error.contains("endpoint no-such-host.invalid:80 does not resolve"), "{error}");
    }
}
