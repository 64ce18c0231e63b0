//! Requests that arrive while a cluster has no replica in its ring (scaled to zero, or a load
//! balancer that just started and is still finding its replicas' health) wait, bounded, for the
//! first one instead of getting a 503.

use super::Proxy;
use crate::snapshot::{Hold, Snapshot};
use crate::telemetry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a held request is let go without a replica; the text is the message of its 503 (with
/// `Retry-After`).
#[derive(Debug, thiserror::Error)]
pub enum Unheld {
    /// The queue of held requests is full.
    #[error("{0} requests are already waiting for a replica to start; try again shortly")]
    QueueFull(u32),
    /// No replica joined the ring within the wait.
    #[error("no replica started within {0:?}; try again shortly")]
    NoReplicaWithin(std::time::Duration),
}

impl Proxy {
    /// Asks the controller for a replica and waits (bounded) for it to join the ring.
    ///
    /// # Errors
    /// Over the queue or over the wait.
    pub async fn hold(&self, hold: Hold) -> Result<Arc<Snapshot>, Unheld> {
        if self.held.fetch_add(1, Ordering::Relaxed) >= hold.queue {
            self.held.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(telemetry::UNROUTED, "reason" => "hold_queue_full").increment(1);
            return Err(Unheld::QueueFull(hold.queue));
        }
        let _held = HeldGuard(&self.held);
        self.snapshots.signal_demand();
        self.trigger.fire();
        let started = tokio::time::Instant::now();
        match self.snapshots.wait_for_members(hold.timeout).await {
            Some(ready) => {
                tracing::debug!(waited_ms = started.elapsed().as_millis() as u64, "held request released");
                Ok(ready)
            }
            None => Err(Unheld::NoReplicaWithin(hold.timeout)),
        }
    }
}

/// Counts a held request until it stops waiting (answered, refused, or its client gone).
struct HeldGuard<'a>(&'a AtomicU32);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshots;
    use crate::trigger::Trigger;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_hold_queue_and_a_long_wait_are_refused() {
        let snapshots = Arc::new(Snapshots::default());
        let proxy = Arc::new(Proxy::new(Arc::clone(&snapshots), Trigger::new()));
        let hold = Hold { queue: 1, timeout: Duration::from_millis(300) };
        let waiting = {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move { proxy.hold(hold).await.map(|_| ()) })
        };
        while proxy.held.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = proxy.hold(hold).await.map(|_| ()).unwrap_err();
        assert!(matches!(refused, Unheld::QueueFull(1)), "{refused}");
        assert!(refused.to_string().contains("already waiting"), "{refused}");
        let timed_out = waiting.await.unwrap().unwrap_err();
        assert!(matches!(timed_out, Unheld::NoReplicaWithin(_)), "{timed_out}");
        assert!(timed_out.to_string().contains("no replica started within"), "{timed_out}");
        assert!(snapshots.take_demand(), "the controller was asked for a replica");
        assert_eq!(proxy.held.load(Ordering::Relaxed), 0, "nothing is counted as waiting any more");
    }
}
