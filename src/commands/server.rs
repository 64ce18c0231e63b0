//! `ringlb server`: one replica (the exercise's server: `GET /home`, `GET /heartbeat`), until
//! SIGTERM or SIGINT, or until the load balancer that started it dies.

use super::termination::Termination;
use crate::cli::ServerArgs;
use anyhow::{Context, Result, bail};
use ringlb::replica;
use tokio::net::TcpListener;

/// `ringlb server`.
pub async fn run(args: ServerArgs) -> Result<()> {
    let ServerArgs { port, host, id, announce, exit_with_parent: parent, work_slots } = args;
    let mut termination = Termination::catch()?;
    if let Some(parent) = parent {
        exit_with_parent(parent)?;
    }
    let id = match id {
        Some(id) => id,
        None => nix::unistd::gethostname()
            .context("no --id, no SERVER_ID, and the hostname is unreadable")?
            .to_string_lossy()
            .into_owned(),
    };
    let listener =
        TcpListener::bind((host, port)).await.with_context(|| format!("cannot listen on {host}:{port}"))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    tracing::info!(id = %id, "replica {id} listening on http://{local}");
    if announce {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}{local}", replica::ANNOUNCE_PREFIX).and_then(|()| stdout.flush())?;
    }
    let stop = async move {
        termination.received().await;
        tracing::info!("replica stopping: finishing requests in flight");
    };
    replica::serve(listener, &id, Some(work_slots), stop, super::SHUTDOWN_DRAIN)
        .await
        .context("replica server failed")
}

/// Asks the kernel to send SIGTERM when the parent dies, then checks the parent is still `parent`
/// (it may have died before the request).
fn exit_with_parent(parent: i32) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("cannot set the parent-death signal")?;
    if nix::unistd::getppid().as_raw() != parent {
        bail!("the load balancer that started this replica is gone");
    }
    Ok(())
}
