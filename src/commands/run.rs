//! `ringlb run`: the load balancer and its controller over the runtime the manifest names, until
//! SIGTERM or SIGINT; then requests in flight finish and the runtime stops what must not outlive it.

use super::termination::Termination;
use crate::cli::RunArgs;
use anyhow::{Context, Result};
use ringlb::manifest::source::ManifestSource;
use ringlb::runtime::{AnyRuntime, Runtime, Setup};
use ringlb::trigger::Trigger;
use ringlb::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE_ENV, Balancer};
use std::path::Path;
use std::sync::Arc;

/// `ringlb run`: `child_args` are the options a replica started by the process runtime gets (so
/// that it logs like the load balancer).
pub async fn run(args: RunArgs, child_args: Vec<String>) -> Result<()> {
    let (manifest_path, ready_file) = (args.manifest.as_path(), args.ready_file.as_deref());
    let termination = Termination::catch()?;
    let admin_token =
        ringlb::admin_token(std::env::var(ADMIN_TOKEN_ENV).ok(), std::env::var(ADMIN_TOKEN_FILE_ENV).ok())?;
    let source = ManifestSource::open_as(manifest_path, args.runtime).map_err(|e| match e.position() {
        Some(p) => anyhow::anyhow!("{}:{}:{}: {e}", manifest_path.display(), p.line, p.column),
        None => anyhow::anyhow!("{}: {e}", manifest_path.display()),
    })?;
    let manifest = source.current().manifest;
    tracing::info!(manifest = %manifest_path.display(), "{}", manifest.summary());
    match ringlb::manifest::file::remove_stale_temporaries(manifest_path) {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} temporary file(s) left by an interrupted manifest edit"),
        Err(error) => tracing::warn!(%error, "cannot look for temporary files left next to the manifest"),
    }
    let trigger = Trigger::new();
    let setup = Setup {
        trigger: trigger.clone(),
        executable: std::env::current_exe().context("cannot find the ringlb executable")?,
        replica_args: child_args,
        server_args: Vec::new(),
    };
    let runtime = Arc::new(AnyRuntime::for_manifest(&manifest, setup).await?);
    serve(runtime, source, trigger, ready_file, termination, admin_token).await
}

/// Runs the load balancer over `runtime` until SIGTERM or SIGINT.
async fn serve(
    runtime: Arc<AnyRuntime>,
    source: Arc<ManifestSource>,
    trigger: Trigger,
    ready_file: Option<&Path>,
    termination: Termination,
    admin_token: Option<String>,
) -> Result<()> {
    let stop_timeout = source.current().manifest.replica.stop_timeout.get();
    let metrics = match ringlb::telemetry::install() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "metrics are off: cannot install the Prometheus recorder");
            None
        }
    };
    let options = ringlb::BalancerOptions { admin_token, drain: super::SHUTDOWN_DRAIN, metrics };
    let balancer = Balancer::start(Arc::clone(&runtime), source, trigger, options).await?;
    if let Some(path) = ready_file {
        std::fs::write(path, balancer.addr.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    termination.received().await;
    tracing::info!("shutting down: finishing requests in flight, then stopping replicas");
    balancer.stop().await;
    runtime.shutdown(stop_timeout).await;
    tracing::info!("stopped");
    Ok(())
}
