//! `ringlb run`: the load balancer and its controller over the runtime the manifest names, until
//! SIGTERM or SIGINT (requests in flight finish, then the runtime stops what must not outlive it),
//! or until SIGUSR2 hands everything over to a new process of the binary on disk (`upgrade.rs`).

use super::termination::{Termination, UpgradeRequests};
use super::upgrade::{self, Predecessor};
use crate::cli::RunArgs;
use anyhow::{Context, Result};
use ringlb::manifest::source::ManifestSource;
use ringlb::runtime::{AnyRuntime, Runtime, Setup};
use ringlb::trigger::Trigger;
use ringlb::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE_ENV, Balancer};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `ringlb run`: `child_args` are the options a replica started by the process runtime gets (so
/// that it logs like the load balancer); `predecessor` is what the process this one replaces
/// passed on; `proxy_workers` threads serve the connections (1: this runtime does).
pub async fn run(
    args: RunArgs,
    child_args: Vec<String>,
    predecessor: Predecessor,
    proxy_workers: usize,
) -> Result<()> {
    let signals = Signals { termination: Termination::catch()?, upgrades: UpgradeRequests::catch()? };
    let manifest_path = args.manifest.as_path();
    let admin_token =
        ringlb::admin_token(std::env::var(ADMIN_TOKEN_ENV).ok(), std::env::var(ADMIN_TOKEN_FILE_ENV).ok())?;
    let source = ManifestSource::open_as(manifest_path, args.runtime).map_err(|e| match e.position() {
        Some(p) => anyhow::anyhow!("{}:{}:{}: {e}", manifest_path.display(), p.line, p.column),
        None => anyhow::anyhow!("{}: {e}", manifest_path.display()),
    })?;
    let manifest = source.current().manifest;
    if !manifest.services.is_empty() {
        anyhow::bail!(
            "{}: services: (several services behind one listener) is not served by this version yet: \
             `ringlb check` validates it; `ringlb run` serves a manifest without it",
            manifest_path.display()
        );
    }
    tracing::info!(manifest = %manifest_path.display(), "{}", manifest.summary());
    match ringlb::manifest::file::remove_stale_temporaries(manifest_path) {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} temporary file(s) left by an interrupted manifest edit"),
        Err(error) => tracing::warn!(%error, "cannot look for temporary files left next to the manifest"),
    }
    let trigger = Trigger::new();
    // Taken now: once the binary is replaced on disk, /proc/self/exe names the deleted file.
    let executable = std::env::current_exe().context("cannot find the ringlb executable")?;
    let setup = Setup {
        trigger: trigger.clone(),
        executable: executable.clone(),
        replica_args: child_args,
        server_args: Vec::new(),
    };
    let runtime = Arc::new(AnyRuntime::for_manifest(&manifest, setup).await?);
    let process = Process {
        executable,
        args: std::env::args_os().skip(1).collect(),
        ready_file: args.ready_file,
        pid_file: args.pid_file,
        proxy_workers,
    };
    serve(runtime, source, trigger, process, signals, admin_token, predecessor).await
}

/// The signals `run` acts on.
struct Signals {
    termination: Termination,
    upgrades: UpgradeRequests,
}

/// This process, as an upgrade starts it again.
struct Process {
    executable: PathBuf,
    args: Vec<OsString>,
    ready_file: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    /// Threads that serve connections.
    proxy_workers: usize,
}

/// How serving ended.
enum End {
    /// SIGTERM or SIGINT.
    Stop,
    /// The new process with this id serves now.
    HandedOver(u32),
}

/// Runs the load balancer over `runtime` until SIGTERM or SIGINT, or a successful upgrade.
async fn serve(
    runtime: Arc<AnyRuntime>,
    source: Arc<ManifestSource>,
    trigger: Trigger,
    process: Process,
    mut signals: Signals,
    admin_token: Option<String>,
    mut predecessor: Predecessor,
) -> Result<()> {
    let stop_timeout = source.current().manifest.replica.stop_timeout.get();
    let metrics = match ringlb::telemetry::install() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "metrics are off: cannot install the Prometheus recorder");
            None
        }
    };
    let options = ringlb::BalancerOptions {
        admin_token,
        drain: super::SHUTDOWN_DRAIN,
        metrics,
        inherited: std::mem::take(&mut predecessor.sockets),
        ring_before_serving: predecessor.ring,
        workers: process.proxy_workers,
    };
    let balancer = Balancer::start(Arc::clone(&runtime), source, trigger, options).await?;
    if let Some(path) = &process.ready_file {
        std::fs::write(path, balancer.addr.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let pid = std::process::id();
    if let Some(path) = &process.pid_file {
        write_pid_file(path, pid)?;
    }
    predecessor.announce_ready();
    let end = loop {
        tokio::select! {
            () = signals.termination.received() => break End::Stop,
            () = signals.upgrades.received() => {
                if std::process::id() == 1 {
                    // A container's first process: when it exits the container ends, and the
                    // new process with it.
                    tracing::error!(event = "upgrade_refused",
                        "SIGUSR2: no in-place upgrade as process 1 (a container's main process): the \
                         container would stop with this process; restart the container instead \
                         (docs/upgrades.md); serving on");
                    continue;
                }
                let ring = balancer.snapshots.load().members.len();
                tracing::info!(event = "upgrade_starting", executable = %process.executable.display(),
                    "SIGUSR2: starting {} to take over", process.executable.display());
                let sockets = balancer.sockets().collect();
                match upgrade::start_successor(&process.executable, &process.args, sockets, ring).await {
                    Ok(successor) => break End::HandedOver(successor),
                    Err(error) => tracing::error!(event = "upgrade_failed",
                        "upgrade failed, this process goes on serving: {}", ringlb::error_chain(&*error)),
                }
            }
        }
    };
    match end {
        End::Stop => {
            tracing::info!("shutting down: finishing requests in flight, then stopping replicas");
            balancer.stop().await;
            runtime.shutdown(stop_timeout).await;
            if let Some(path) = &process.pid_file {
                remove_pid_file(path, pid);
            }
        }
        End::HandedOver(successor) => {
            tracing::info!(
                event = "handed_over",
                successor,
                "process {successor} serves now; finishing requests in flight, then exiting"
            );
            balancer.hand_over().await;
            runtime.shutdown(stop_timeout).await;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes `pid` to `path` whole or not at all (a reader never sees half a number).
fn write_pid_file(path: &Path, pid: u32) -> Result<()> {
    let temporary = path.with_extension(format!("tmp-{pid}"));
    std::fs::write(&temporary, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// Removes `path` if it still holds `pid` (after an upgrade it holds the new process's).
fn remove_pid_file(path: &Path, pid: u32) {
    let holds_ours = std::fs::read_to_string(path).is_ok_and(|text| text.trim() == pid.to_string());
    if holds_ours && let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(%error, "cannot remove the pid file {}", path.display());
    }
}
