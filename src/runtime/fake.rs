//! A runtime for tests: replicas are real replica servers on 127.0.0.1 inside the test's own
//! process, so heartbeats and proxying are real while every call is recorded and failures can be
//! injected (`crash`: the replica is gone; `hang`: it still "runs" but answers nothing;
//! `set_retire_later`: a stop succeeds but the replica stays listed and serving until
//! `retire_stopped`, like a task that Swarm's scheduler retires in its own time).

use super::{Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use crate::trigger::Trigger;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// A call the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `start` with this name and id.
    Start(String, u32),
    /// `stop` of the instance that had this name.
    Stop(String),
}

struct Replica {
    instance: Instance,
    server: Option<JoinHandle<()>>,
}

/// In-process replicas with recorded calls.
pub struct FakeRuntime {
    trigger: Trigger,
    /// The spec hash of the manifest, as far as the fake is concerned (see [`FakeRuntime::set_spec_hash`]).
    spec_hash: std::sync::atomic::AtomicU64,
    replicas: Mutex<BTreeMap<InstanceId, Replica>>,
    calls: Mutex<Vec<Call>>,
    next: Mutex<u64>,
    /// Names whose next start fails.
    failing_starts: Mutex<Vec<String>>,
    /// While true, `list` fails as if the engine were unreachable.
    unreachable: std::sync::atomic::AtomicBool,
    /// While true, a stopped replica stays listed (and serving) until `retire_stopped`.
    retire_later: std::sync::atomic::AtomicBool,
    /// Replicas stopped while `retire_later` was set.
    retiring: Mutex<Vec<InstanceId>>,
}

impl FakeRuntime {
    /// A fake that fires `trigger` on injected crashes.
    pub fn new(trigger: Trigger) -> FakeRuntime {
        FakeRuntime {
            trigger,
            spec_hash: std::sync::atomic::AtomicU64::new(1),
            replicas: Mutex::default(),
            calls: Mutex::default(),
            next: Mutex::new(0),
            failing_starts: Mutex::default(),
            unreachable: std::sync::atomic::AtomicBool::new(false),
            retire_later: std::sync::atomic::AtomicBool::new(false),
            retiring: Mutex::default(),
        }
    }

    /// Makes stops succeed at once while the replica goes only at [`retire_stopped`](Self::retire_stopped).
    pub fn set_retire_later(&self, later: bool) {
        self.retire_later.store(later, std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes the replicas stopped under [`set_retire_later`](Self::set_retire_later).
    pub fn retire_stopped(&self) {
        let ids = std::mem::take(&mut *self.retiring.lock().unwrap_or_else(PoisonError::into_inner));
        let mut replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if let Some(server) = replicas.remove(&id).and_then(|mut r| r.server.take()) {
                server.abort();
            }
        }
        drop(replicas);
        self.trigger.fire();
    }

    /// Changes the spec every replica should have (as a manifest edit of the image would): the
    /// replicas running now become outdated and are rolled.
    pub fn set_spec_hash(&self, hash: u64) {
        self.spec_hash.store(hash, std::sync::atomic::Ordering::Relaxed);
        self.trigger.fire();
    }

    /// Makes `list` fail (true) or work again (false), like an engine that went away.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Names of running instances, sorted.
    pub fn running(&self) -> Vec<String> {
        let replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> =
            replicas.values().filter(|r| r.instance.running).map(|r| r.instance.name.clone()).collect();
        names.sort();
        names
    }

    /// Kills the replica named `name`: its server stops and it is reported as exited.
    pub fn crash(&self, name: &str) {
        self.with(name, |r| {
            if let Some(server) = r.server.take() {
                server.abort();
            }
            r.instance.running = false;
        });
        self.trigger.fire();
    }

    /// Makes the replica named `name` stop answering while it is still reported as running.
    pub fn hang(&self, name: &str) {
        self.with(name, |r| {
            if let Some(server) = r.server.take() {
                server.abort();
            }
        });
    }

    /// Makes the next start of `name` fail.
    pub fn fail_next_start(&self, name: &str) {
        self.failing_starts.lock().unwrap_or_else(PoisonError::into_inner).push(name.to_owned());
    }

    fn with(&self, name: &str, f: impl FnOnce(&mut Replica)) {
        let mut replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = replicas.values_mut().find(|r| r.instance.name == name && r.instance.running) {
            f(r);
        }
    }

    fn name_of(&self, id: &InstanceId) -> Option<String> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner).get(id).map(|r| r.instance.name.clone())
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }
}

impl Runtime for FakeRuntime {
    fn spec_hash(&self, _manifest: &Manifest) -> u64 {
        self.spec_hash.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        if self.unreachable.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RuntimeError::unavailable("injected: the engine is unreachable"));
        }
        let replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(replicas.values().map(|r| r.instance.clone()).collect())
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        self.record(Call::Start(request.name.clone(), request.replica_id));
        {
            let mut failing = self.failing_starts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = failing.iter().position(|n| *n == request.name) {
                failing.remove(i);
                return Err(RuntimeError::start(&request.name, "injected failure"));
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RuntimeError::start(&request.name, e.to_string()))?;
        let addr = listener.local_addr().ok();
        let id_text = request.name.clone();
        let server = tokio::spawn(async move {
            let _ = crate::replica::serve(
                listener,
                &id_text,
                None,
                std::future::pending(),
                Duration::from_secs(1),
            )
            .await;
        });
        let id = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            InstanceId(format!("fake-{next}"))
        };
        let instance = Instance {
            id: id.clone(),
            name: request.name,
            replica_id: request.replica_id,
            addr,
            spec_hash: request.spec_hash,
            running: true,
            started_at: SystemTime::now(),
        };
        let replica = Replica { instance: instance.clone(), server: Some(server) };
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner).insert(id, replica);
        Ok(Some(instance))
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        if self.retire_later.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(name) = self.name_of(id) {
                self.record(Call::Stop(name));
                self.retiring.lock().unwrap_or_else(PoisonError::into_inner).push(id.clone());
            }
            return Ok(());
        }
        let removed = self.replicas.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        if let Some(mut replica) = removed {
            self.record(Call::Stop(replica.instance.name.clone()));
            if let Some(server) = replica.server.take() {
                server.abort();
            }
        }
        Ok(())
    }

    async fn kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        if let Some(name) = self.name_of(id) {
            self.crash(&name);
        }
        Ok(())
    }

    async fn shutdown(&self, _grace: Duration) {
        let mut replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        for replica in replicas.values_mut() {
            if let Some(server) = replica.server.take() {
                server.abort();
            }
        }
        replicas.clear();
    }
}
