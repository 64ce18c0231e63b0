//! How the listener stops: first it stops accepting and every answer from then on closes its
//! connection (`Connection: close` on HTTP/1.1, GOAWAY on HTTP/2); then, at once on shutdown or at
//! the end of the drain time when another process took over the sockets, connections that sit idle
//! between requests are closed too.
//!
//! The second step is separate because an idle keep-alive connection closed by the server races
//! with the request its client may be sending at that very moment: when another process serves the
//! same listening socket (an upgrade), waiting for that next request and answering it with
//! `Connection: close` loses nothing, where closing the idle connection may lose the request.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// The drain state every connection of a listener shares.
#[derive(Debug, Default)]
pub struct Drain {
    /// Set when the drain begins: read once per request, so a plain flag.
    closing: AtomicBool,
    /// Cancelled when the drain begins (wakes the accept loops and HTTP/2 connections).
    began: CancellationToken,
    /// Cancelled when idle connections must close.
    idle: CancellationToken,
}

impl Drain {
    /// Stops accepting; every answer from now on closes its connection.
    pub fn begin(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.began.cancel();
    }

    /// Closes the connections that wait between requests (and begins the drain, if it has not).
    pub fn close_idle(&self) {
        self.begin();
        self.idle.cancel();
    }

    /// True once the drain began: the answer being written must close its connection.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Resolves when the drain begins.
    pub fn began(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.began.cancelled()
    }

    /// Resolves when idle connections must close.
    pub fn idle_closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.idle.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closing_idle_connections_begins_the_drain_and_beginning_does_not_close_them() {
        let drain = Drain::default();
        assert!(!drain.is_closing());
        drain.begin();
        assert!(drain.is_closing());
        drain.began().await;
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), drain.idle_closed()).await;
        assert!(idle.is_err(), "beginning the drain must not close idle connections");

        let drain = Drain::default();
        drain.close_idle();
        assert!(drain.is_closing());
        drain.began().await;
        drain.idle_closed().await;
    }
}
