//! Recent events for the status API and the dashboard: a tracing layer that keeps the last 100 log
//! events carrying an `event` field (replica started, ready, failing, replaced, removed; manifest
//! applied or rejected; autoscaling decisions), so every event is written once, as a log line, and
//! the dashboard shows the same sentence.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// How many events are kept.
const KEEP: usize = 100;

static RECENT: Mutex<VecDeque<Recorded>> = Mutex::new(VecDeque::new());

/// One recorded event.
#[derive(Clone, Debug, Serialize)]
pub struct Recorded {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The event's kind (`replica_ready`, `manifest_rejected`, ...).
    pub event: String,
    /// The replica it is about, if any.
    pub replica: Option<String>,
    /// The log line's message.
    pub message: String,
}

/// The recorded events, oldest first.
pub fn recent() -> Vec<Recorded> {
    RECENT.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
}

/// The layer that records events; add it to the subscriber.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventLayer;

#[derive(Default)]
struct Fields {
    event: Option<String>,
    replica: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "event" => self.event = Some(value.trim_matches('"').to_owned()),
            "replica" => self.replica = Some(value.trim_matches('"').to_owned()),
            "message" => self.message = Some(value),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(kind) = fields.event else { return };
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let recorded = Recorded {
            at_ms,
            level: event.metadata().level().as_str().to_lowercase(),
            event: kind,
            replica: fields.replica,
            message: fields.message.unwrap_or_default(),
        };
        let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(recorded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_with_an_event_field_are_kept_and_others_are_not() {
        let subscriber = tracing_subscriber::registry().with(EventLayer);
        tracing::subscriber::with_default(subscriber, || {
            let name = "server9";
            tracing::info!(event = "replica_ready", replica = %name, "replica {name} is ready");
            tracing::info!("not an event");
        });
        let mine: Vec<Recorded> =
            recent().into_iter().filter(|e| e.replica.as_deref() == Some("server9")).collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].event, "replica_ready");
        assert_eq!(mine[0].message, "replica server9 is ready");
        assert_eq!(mine[0].level, "info");
    }
}
