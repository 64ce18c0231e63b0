//! Replicas as child processes of `ringlb run` on 127.0.0.1 (`replica.runtime: process`).
//!
//! Each replica is this same binary running `ringlb server` on a port the kernel picks; the child
//! prints the address it bound on its first stdout line, so there is no race for free ports. The
//! children die with the load balancer even when it is SIGKILLed: each child asks the kernel for
//! SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, see `replica.rs`). A waiter task per child
//! records its exit and fires the reconcile trigger, so a crash is noticed at once.

use super::{Cause, Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use crate::replica::ANNOUNCE_PREFIX;
use crate::trigger::Trigger;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// How long a child may take to print its address.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a SIGKILLed child to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One child process.
struct Child {
    /// What `list` reports.
    instance: Instance,
    /// Its process id, for signals (only sent while it has not been reaped).
    pid: Pid,
    /// Turns true when the waiter task reaped it.
    exited: watch::Receiver<bool>,
}

/// Runs replicas as child processes.
pub struct ProcessRuntime {
    /// The `ringlb` executable to run as `ringlb server`.
    exe: PathBuf,
    /// Arguments every child gets before `server` (the load balancer's log format and level).
    global_args: Vec<String>,
    /// Arguments every child gets after `server` (for experiments: `--work-slots 5`).
    server_args: Vec<String>,
    /// Fired when a child exits.
    trigger: Trigger,
    /// Children by instance id; a plain mutex, never held across an await.
    children: Arc<Mutex<BTreeMap<InstanceId, Child>>>,
}

impl ProcessRuntime {
    /// A runtime that starts `exe <global_args> server ...` children and fires `trigger` when one
    /// exits.
    pub fn new(exe: PathBuf, global_args: Vec<String>, trigger: Trigger) -> ProcessRuntime {
        ProcessRuntime { exe, global_args, server_args: Vec::new(), trigger, children: Arc::default() }
    }

    /// The same runtime, giving every replica these `ringlb server` arguments too.
    pub fn with_server_args(mut self, args: Vec<String>) -> ProcessRuntime {
        self.server_args = args;
        self
    }

    fn children(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceId, Child>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Runtime for ProcessRuntime {
    fn spec_hash(&self, _manifest: &Manifest) -> u64 {
        // A process replica is always this binary; nothing in the manifest reshapes it.
        xxhash_rust::xxh3::xxh3_64(self.exe.as_os_str().as_encoded_bytes())
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        Ok(self.children().values().map(|c| c.instance.clone()).collect())
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        let fail = |reason: String| RuntimeError::start(&request.name, reason);
        let mut child = tokio::process::Command::new(&self.exe)
            .args(&self.global_args)
            .args(["server", "--host", "127.0.0.1", "--port", "0", "--announce"])
            .args(["--id", &request.name, "--exit-with-parent", &std::process::id().to_string()])
            .args(&self.server_args)
            .env("SERVER_ID", &request.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| {
                RuntimeError::start(
                    &request.name,
                    Cause::Io { doing: format!("cannot run {}", self.exe.display()), source },
                )
            })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| fail("the child exited at once".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                if let Some(addr) = line.strip_prefix(ANNOUNCE_PREFIX) {
                    return addr.trim().parse().map_err(|e| format!("bad address {addr:?}: {e}"));
                }
            }
            Err("it exited before it listened".to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("it did not listen within {ANNOUNCE_TIMEOUT:?}")));
        let addr = match announced {
            Ok(addr) => addr,
            Err(reason) => {
                let _ = child.start_kill();
                let status = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                return Err(fail(format!("{reason} (exit: {status:?})")));
            }
        };
        // Keep reading stdout so that the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let id = InstanceId(format!("pid-{pid}"));
        let instance = Instance {
            id: id.clone(),
            name: request.name.clone(),
            replica_id: request.replica_id,
            addr: Some(addr),
            spec_hash: request.spec_hash,
            running: true,
            started_at: SystemTime::now(),
        };
        let (exited_tx, exited) = watch::channel(false);
        self.children().insert(id.clone(), Child { instance: instance.clone(), pid, exited });

        let children = Arc::clone(&self.children);
        let trigger = self.trigger.clone();
        let name = request.name;
        tokio::spawn(async move {
            let status = child.wait().await;
            if let Some(entry) = children.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
                entry.instance.running = false;
            }
            let _ = exited_tx.send(true);
            match status {
                Ok(status) => {
                    tracing::info!(replica = %name, instance = %id, %status, "replica process exited")
                }
                Err(error) => {
                    tracing::warn!(replica = %name, instance = %id, %error, "cannot wait for replica process")
                }
            }
            trigger.fire();
        });
        Ok(Some(instance))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        stop_child(&self.children, id, grace).await
    }

    async fn kill(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let found = self.children().get(id).map(|c| (c.pid, *c.exited.borrow()));
        match found {
            Some((pid, false)) => kill(pid, Signal::SIGKILL)
                .map_err(|e| RuntimeError::stop(id, format!("cannot SIGKILL it: {e}"))),
            _ => Ok(()),
        }
    }

    async fn shutdown(&self, grace: Duration) {
        let ids: Vec<InstanceId> = self.children().keys().cloned().collect();
        let mut stops = tokio::task::JoinSet::new();
        for id in ids {
            let children = Arc::clone(&self.children);
            stops.spawn(async move {
                if let Err(error) = stop_child(&children, &id, grace).await {
                    tracing::error!(%error, "cannot stop a replica on shutdown");
                }
            });
        }
        while stops.join_next().await.is_some() {}
    }
}

/// SIGTERM, SIGKILL after `grace`, then forget the child.
async fn stop_child(
    children: &Mutex<BTreeMap<InstanceId, Child>>,
    id: &InstanceId,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let found =
        children.lock().unwrap_or_else(PoisonError::into_inner).get(id).map(|c| (c.pid, c.exited.clone()));
    let Some((pid, mut exited)) = found else { return Ok(()) };
    // Signals go only to a child not yet reaped, so the pid cannot have been reused.
    if !*exited.borrow() {
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, exited.wait_for(|e| *e)).await.is_err() {
            tracing::warn!(instance = %id, "replica did not stop within {grace:?} of SIGTERM; sending SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e)).await.is_err() {
                return Err(RuntimeError::stop(id, "still running after SIGKILL"));
            }
        }
    }
    children.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    Ok(())
}
