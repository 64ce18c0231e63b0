//! The signals of the long-running commands (`run`, `server`): SIGTERM and SIGINT, and for `run`
//! SIGUSR2 (an in-place upgrade); caught from the start, so that a signal before anyone waits for
//! it is neither lost nor fatal.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

/// SIGTERM and SIGINT, caught from the moment this is created (so a signal that arrives before
/// anyone waits is not lost, nor fatal).
pub struct Termination {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    pub fn catch() -> Result<Termination> {
        Ok(Termination {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// SIGUSR2, the request for an in-place upgrade, caught from the moment this is created.
pub struct UpgradeRequests(tokio::signal::unix::Signal);

impl UpgradeRequests {
    pub fn catch() -> Result<UpgradeRequests> {
        Ok(UpgradeRequests(signal(SignalKind::user_defined2()).context("cannot catch SIGUSR2")?))
    }

    /// Resolves on the next SIGUSR2.
    pub async fn received(&mut self) {
        self.0.recv().await;
    }
}
