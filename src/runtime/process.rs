//! Replicas as child processes of `ringlb run` on 127.0.0.1 (`replica.runtime: process`).
//!
//! Without `replica.command`, each replica is this same binary running `ringlb server` on a port
//! the kernel picks; the child prints the address it bound on its first stdout line, so there is
//! no race for free ports. With `replica.command`, each replica is that program (any local
//! server), with `replica.env`, and `{port}` replaced by a free port picked here (bound and
//! released just before the spawn); a program that exits within its first second is an error
//! with its exit status and last lines of output ([`super::exit`]), which the controller backs
//! off and reports.
//!
//! The children die with the load balancer even when it is SIGKILLed: each asks the kernel for
//! a signal when its parent dies (`PR_SET_PDEATHSIG`; `ringlb server` does it itself, see
//! `commands/server.rs`, and a command gets it set between fork and exec). A waiter task per
//! child records its exit and fires the reconcile trigger, so a crash is noticed at once.

use super::exit::{EARLY_EXIT_WINDOW, Exited, OutputTail, describe_status};
use super::launch::{self, Launch};
use super::{Cause, Instance, InstanceId, Runtime, RuntimeError, StartRequest};
use crate::manifest::Manifest;
use crate::manifest::template::Values;
use crate::replica::ANNOUNCE_PREFIX;
use crate::trigger::Trigger;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
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
/// How often a starting command's port is tried within [`EARLY_EXIT_WINDOW`].
const LISTEN_POLL: Duration = Duration::from_millis(25);
/// How long the output of an exited command may take to reach its end.
const OUTPUT_DRAIN: Duration = Duration::from_millis(300);

/// One child process.
struct Child {
    /// What `list` reports.
    instance: Instance,
    /// Its process id, for signals (only sent while it has not been reaped).
    pid: Pid,
    /// Turns true when the waiter task reaped it.
    exited: watch::Receiver<bool>,
    /// What asks it to stop (`replica.stop_signal`, SIGTERM by default).
    stop_signal: Signal,
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
    fn spec_hash(&self, manifest: &Manifest) -> u64 {
        // This binary, and what the launch keys make it run (nothing for `ringlb server`, so the
        // hash of a manifest without them is what it always was).
        let mut bytes = self.exe.as_os_str().as_encoded_bytes().to_vec();
        bytes.extend_from_slice(launch::hash_text(&manifest.replica).as_bytes());
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        Ok(self.children().values().map(|c| c.instance.clone()).collect())
    }

    async fn start(&self, request: StartRequest) -> Result<Option<Instance>, RuntimeError> {
        let stop_signal = stop_signal_of(&request);
        let spawned = if request.spec.command.is_some() {
            spawn_command(&request, stop_signal).await?
        } else {
            self.spawn_server(&request).await?
        };
        Ok(Some(self.watch_child(request, spawned, stop_signal)))
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

impl ProcessRuntime {
    /// Spawns `ringlb server` and waits for the address it announces.
    async fn spawn_server(&self, request: &StartRequest) -> Result<Spawned, RuntimeError> {
        let fail = |reason: String| RuntimeError::start(&request.name, reason);
        // The environment the launch rule gives ringlb's server (SERVER_ID=<name> unless the
        // manifest sets it, as the exercise's `{id}`); its port is picked by the child itself.
        let launch =
            Launch::of(&request.spec, Values { name: &request.name, id: request.replica_id, port: 0 });
        let server_id = launch.var("SERVER_ID").unwrap_or(&request.name);
        let mut child = tokio::process::Command::new(&self.exe)
            .args(&self.global_args)
            .args(["server", "--host", "127.0.0.1", "--port", "0", "--announce"])
            .args(["--id", server_id, "--exit-with-parent", &std::process::id().to_string()])
            .args(&self.server_args)
            .envs(launch.env.iter().map(|(name, value)| (name, value)))
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
        let pid = pid_of(&child, &request.name)?;
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
        Ok(Spawned { child, pid, addr, tail: None })
    }

    /// Records a spawned child and starts the task that waits for its exit.
    fn watch_child(&self, request: StartRequest, spawned: Spawned, stop_signal: Signal) -> Instance {
        let Spawned { mut child, pid, addr, tail } = spawned;
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
        self.children().insert(id.clone(), Child { instance: instance.clone(), pid, exited, stop_signal });

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
                Ok(status) => match tail.map(|t| t.lines()).filter(|lines| !lines.is_empty()) {
                    Some(lines) => tracing::info!(replica = %name, instance = %id, %status,
                        "replica process exited; its last output: {}", lines.join(" | ")),
                    None => {
                        tracing::info!(replica = %name, instance = %id, %status, "replica process exited")
                    }
                },
                Err(error) => {
                    tracing::warn!(replica = %name, instance = %id, %error, "cannot wait for replica process")
                }
            }
            trigger.fire();
        });
        instance
    }
}

/// A child just spawned, that listens (or is about to) on `addr`.
struct Spawned {
    child: tokio::process::Child,
    pid: Pid,
    addr: std::net::SocketAddr,
    /// A command's last lines of output, for the log when it exits.
    tail: Option<OutputTail>,
}

/// The process id of a child not yet waited for.
fn pid_of(child: &tokio::process::Child, name: &str) -> Result<Pid, RuntimeError> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| RuntimeError::start(name, "the child exited at once"))
}

/// `replica.stop_signal` (validated by the manifest), else SIGTERM.
fn stop_signal_of(request: &StartRequest) -> Signal {
    request.spec.stop_signal.as_deref().and_then(|s| s.parse().ok()).unwrap_or(Signal::SIGTERM)
}

/// A port on 127.0.0.1 that nothing listens on now (the kernel's pick, released at once).
fn free_port(name: &str) -> Result<u16, RuntimeError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| {
            RuntimeError::start(name, Cause::Io { doing: "cannot pick a free port".into(), source })
        })
}

/// Spawns `replica.command` with `{port}` a free port, and waits until it listens there, exits,
/// or has run for [`EARLY_EXIT_WINDOW`]; an exit in that time is an error with its output.
async fn spawn_command(request: &StartRequest, stop_signal: Signal) -> Result<Spawned, RuntimeError> {
    let name = &request.name;
    let port = free_port(name)?;
    let launch = Launch::of(&request.spec, Values { name, id: request.replica_id, port });
    let argv = launch.argv();
    let Some((program, args)) = argv.split_first() else {
        return Err(RuntimeError::start(name, "replica.command is empty"));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(launch.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl and
    // getppid, which are async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(stop_signal).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                // The load balancer died before the request for a signal was in place.
                return Err(std::io::Error::other("the load balancer is gone"));
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| {
        RuntimeError::start(
            name,
            Cause::Io { doing: format!("cannot run {program:?} (replica.command)"), source },
        )
    })?;
    let pid = pid_of(&child, name)?;
    let tail = OutputTail::default();
    let readers = [
        child.stdout.take().map(|out| follow_output(out, name.clone(), tail.clone())),
        child.stderr.take().map(|err| follow_output(err, name.clone(), tail.clone())),
    ];
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let early_exit = tokio::time::timeout(EARLY_EXIT_WINDOW, async {
        loop {
            tokio::select! {
                status = child.wait() => return Some(status),
                () = tokio::time::sleep(LISTEN_POLL) => {
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        return None;
                    }
                }
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some(status) = early_exit else { return Ok(Spawned { child, pid, addr, tail: Some(tail) }) };
    // Let the readers reach the end of what it printed.
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, reader).await;
    }
    let status = match status {
        Ok(status) => describe_status(status.code().map(i64::from), status.signal()),
        Err(error) => format!("exit status unknown: {error}"),
    };
    Err(RuntimeError::start(name, Exited { status, last_output: tail.lines() }))
}

/// Reads a command's output line by line until it ends: keeps the last lines for an exit report,
/// and passes each to the log at debug level (a server's access log would flood it otherwise).
fn follow_output(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    name: String,
    tail: OutputTail,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(output).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(replica = %name, "{line}");
            tail.push(&line);
        }
    })
}

/// SIGTERM, SIGKILL after `grace`, then forget the child.
async fn stop_child(
    children: &Mutex<BTreeMap<InstanceId, Child>>,
    id: &InstanceId,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let found = children
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(id)
        .map(|c| (c.pid, c.exited.clone(), c.stop_signal));
    let Some((pid, mut exited, signal)) = found else { return Ok(()) };
    // Signals go only to a child not yet reaped, so the pid cannot have been reused.
    if !*exited.borrow() {
        let _ = kill(pid, signal);
        if tokio::time::timeout(grace, exited.wait_for(|e| *e)).await.is_err() {
            tracing::warn!(instance = %id, "replica did not stop within {grace:?} of {signal}; sending SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e)).await.is_err() {
                return Err(RuntimeError::stop(id, "still running after SIGKILL"));
            }
        }
    }
    children.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    Ok(())
}
