//! Why a reconcile pass runs: the wake-up reasons the loop's `select!` produces, and the channel
//! and timers it waits on.
//!
//! A reason changes nothing a pass does (every pass looks at the whole picture); it is carried
//! into the pass only so that the log lines the pass writes say what caused it.

use crate::manifest::source::Desired as DesiredManifest;
use std::fmt;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

/// The safety-net pass period.
pub(super) const RESYNC: Duration = Duration::from_secs(2);
/// How often the load is sampled for the autoscaler.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What woke the controller for a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The controller just started.
    Start,
    /// A new manifest version was published.
    Manifest {
        /// The version the watch channel held when it woke the loop.
        version: u64,
    },
    /// The shared trigger fired (the runtime saw a replica exit, the proxy a refused connection).
    Trigger,
    /// A drain-and-stop task finished.
    Stopped {
        /// The replica it stopped; empty when the task failed before it could say.
        name: String,
    },
    /// A heartbeat changed a replica's state.
    Health {
        /// The replica whose state changed.
        name: String,
    },
    /// The periodic resync, the safety net for a missed event.
    Resync,
    /// The autoscaler changed the replica count.
    Load,
}

impl fmt::Display for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wake::Start => f.write_str("start"),
            Wake::Manifest { version } => write!(f, "manifest version {version}"),
            Wake::Trigger => f.write_str("trigger"),
            Wake::Stopped { name } if name.is_empty() => f.write_str("a stop task ended"),
            Wake::Stopped { name } => write!(f, "replica {name} stopped"),
            Wake::Health { name } => write!(f, "heartbeat of {name}"),
            Wake::Resync => f.write_str("resync"),
            Wake::Load => f.write_str("autoscaler"),
        }
    }
}

/// The manifest channel and the timers the loop waits on besides the controller's own queues.
pub(super) struct WakeUps {
    /// Every published manifest version.
    pub(super) versions: watch::Receiver<DesiredManifest>,
    /// The safety-net pass.
    pub(super) resync: Interval,
    /// Load samples, taken while an autoscaler runs.
    pub(super) sample: Interval,
}

impl WakeUps {
    /// Wake-ups following `versions`; the timers delay (not burst) after a missed tick.
    pub(super) fn new(versions: watch::Receiver<DesiredManifest>) -> WakeUps {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
        WakeUps { versions, resync, sample }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_reads_as_a_phrase() {
        assert_eq!(Wake::Manifest { version: 3 }.to_string(), "manifest version 3");
        assert_eq!(Wake::Stopped { name: "b".into() }.to_string(), "replica b stopped");
        assert_eq!(Wake::Stopped { name: String::new() }.to_string(), "a stop task ended");
        assert_eq!(Wake::Health { name: "a".into() }.to_string(), "heartbeat of a");
    }
}
