//! Timeouts on the fast path without a timer operation per read: one [`Deadline`] per direction
//! of a connection, re-armed coarsely.

use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Runs `work` until `deadline` on `timer`; `None` if the deadline came first.
pub async fn before<T>(timer: &mut Deadline, deadline: Instant, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        out = work => Some(out),
        () = timer.until(deadline) => None,
    }
}

/// Re-arms one timer coarsely: waiting for a later deadline than the armed one does not touch
/// the timer; when it fires early, it is re-armed once. So a connection costs about one timer
/// operation per timeout period, not one per request.
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
}

/// How much later than asked a [`Deadline`] may be re-armed without resetting it.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

impl Default for Deadline {
    fn default() -> Self {
        // Far off until first used.
        Deadline { sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))) }
    }
}

impl Deadline {
    /// Completes at `deadline` (or up to [`DEADLINE_SLACK`] after it).
    pub async fn until(&mut self, deadline: Instant) {
        if self.sleep.deadline() > deadline + DEADLINE_SLACK {
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}
