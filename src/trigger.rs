//! "Reconcile now": the one signal that events (a replica exited, the proxy saw a refused
//! connection, a drain finished) send to the controller.
//!
//! It carries no data on purpose: the controller is level-triggered and looks at the whole picture
//! on every pass, so a burst of signals collapses into one pass and a lost one is healed by the
//! periodic pass.

use std::sync::Arc;
use tokio::sync::Notify;

/// A cloneable handle that wakes the controller.
#[derive(Clone, Debug, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    /// A new trigger, not yet fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a reconcile pass. Never blocks; several calls before the pass make one pass.
    pub fn fire(&self) {
        self.0.notify_one();
    }

    /// Waits until [`Trigger::fire`] was called (returns at once if it was called since the last
    /// wait).
    pub async fn fired(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fire_before_the_wait_is_not_lost() {
        let trigger = Trigger::new();
        trigger.fire();
        trigger.fire();
        tokio::time::timeout(std::time::Duration::from_secs(1), trigger.fired()).await.unwrap();
    }
}
