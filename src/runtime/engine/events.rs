//! Following the engine's event stream: the filters the runtimes watch, and the follower that
//! fires the controller's trigger when something that runs changes (a `docker kill` is noticed at
//! once). A broken stream is reopened with backoff; the controller's periodic pass covers the gap.

use super::describe;
use super::labels::LABEL_CLUSTER;
use crate::trigger::Trigger;
use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::StreamExt;

/// The first wait before reopening a broken event stream.
const EVENTS_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between two attempts to reopen the event stream.
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// An event filter: the engine's `filters` query.
pub(crate) type EventFilter = HashMap<String, Vec<String>>;

/// The event filter for the cluster's containers (Swarm tasks' containers carry the label too).
pub(crate) fn container_events(cluster: &str) -> EventFilter {
    HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_CLUSTER}={cluster}")]),
    ])
}

/// The event filter for every service (service events carry no labels to filter by).
pub(crate) fn service_events() -> EventFilter {
    HashMap::from([("type".to_string(), vec!["service".to_string()])])
}

/// Follows the engine's events that `filters` select and fires `trigger` on those that change
/// what runs (container deaths, starts, pauses; any service event); reopens the stream with
/// backoff when it breaks. Runs until aborted.
pub(crate) async fn follow_events(docker: Docker, filters: EventFilter, trigger: Trigger) {
    let mut backoff = EVENTS_BACKOFF_MIN;
    loop {
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let mut stream = docker.events(Some(options));
        while let Some(event) = stream.next().await {
            match event {
                Ok(message) => {
                    backoff = EVENTS_BACKOFF_MIN;
                    let action = message.action.unwrap_or_default();
                    let service = matches!(message.typ, Some(bollard::models::EventMessageTypeEnum::SERVICE));
                    if service || changes_what_runs(&action) {
                        tracing::debug!(action, "container event");
                        trigger.fire();
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %describe(&error), "Docker event stream broke; reopening in {backoff:?}");
                    break;
                }
            }
        }
        // A closed stream (engine restart) also lands here.
        trigger.fire();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(EVENTS_BACKOFF_MAX);
    }
}

/// True for a container event after which the controller should look again.
fn changes_what_runs(action: &str) -> bool {
    matches!(action, "die" | "stop" | "kill" | "oom" | "destroy" | "pause" | "unpause" | "start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_events_select_the_clusters_containers() {
        let filter = container_events("demo");
        assert_eq!(filter.get("type"), Some(&vec!["container".to_string()]));
        assert_eq!(filter.get("label"), Some(&vec!["ringlb.cluster=demo".to_string()]));
        assert_eq!(service_events().get("type"), Some(&vec!["service".to_string()]));
    }

    #[test]
    fn deaths_and_starts_change_what_runs_but_execs_do_not() {
        for action in ["die", "stop", "kill", "oom", "destroy", "pause", "unpause", "start"] {
            assert!(changes_what_runs(action), "{action}");
        }
        for action in ["exec_start: /ringlb probe", "health_status: healthy", "create", "attach"] {
            assert!(!changes_what_runs(action), "{action}");
        }
    }
}
