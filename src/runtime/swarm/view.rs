//! The engine's task list as ringlb reads it: `GET /tasks` with only the fields it needs,
//! `NetworksAttachments` included (bollard's task type lacks it), and Docker's RFC 3339 times.
//! Reading only: what to do with a task is [`observe`](super::observe)'s business.

use bollard::models::Task;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::net::IpAddr;

/// A task as `GET /tasks` gives it: only what ringlb reads, `NetworksAttachments` included.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct TaskView {
    #[serde(rename = "ID", deserialize_with = "null_as_default")]
    pub(super) id: String,
    #[serde(rename = "ServiceID", deserialize_with = "null_as_default")]
    pub(super) service_id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(super) created_at: String,
    #[serde(deserialize_with = "null_as_default")]
    desired_state: String,
    #[serde(deserialize_with = "null_as_default")]
    status: TaskStatusView,
    #[serde(deserialize_with = "null_as_default")]
    pub(super) spec: TaskSpecView,
    #[serde(deserialize_with = "null_as_default")]
    networks_attachments: Vec<AttachmentView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TaskStatusView {
    #[serde(deserialize_with = "null_as_default")]
    state: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct TaskSpecView {
    #[serde(deserialize_with = "null_as_default")]
    pub(super) container_spec: ContainerSpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct ContainerSpecView {
    /// The labels its container was given: they carry the spec the task was made from, which
    /// differs from its service's while an update rolls.
    #[serde(deserialize_with = "null_as_default")]
    pub(super) labels: HashMap<String, String>,
}

/// One network a task is attached to, with the addresses Swarm gave it there (`10.0.1.5/24`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AttachmentView {
    #[serde(deserialize_with = "null_as_default")]
    network: NetworkView,
    #[serde(deserialize_with = "null_as_default")]
    addresses: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkView {
    #[serde(deserialize_with = "null_as_default")]
    spec: NetworkSpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkSpecView {
    #[serde(deserialize_with = "null_as_default")]
    name: String,
}

/// A JSON `null` (which the engine writes for empty lists and maps) as the type's default.
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

impl TaskView {
    /// Swarm wants it running and its container runs: `starting` until its health check first
    /// passes, then `running`.
    pub(super) fn is_live(&self) -> bool {
        self.desired_state == "running" && matches!(self.status.state.as_str(), "starting" | "running")
    }

    /// Its address on the network named `network`.
    pub(super) fn address_on(&self, network: &str) -> Option<IpAddr> {
        let attachment = self.networks_attachments.iter().find(|a| a.network.spec.name == network)?;
        attachment.addresses.iter().find_map(|a| a.split('/').next()?.parse().ok())
    }
}

/// Seconds since the epoch of an RFC 3339 time as Docker writes it (`2026-11-25T12:00:00.5Z`);
/// `None` if it is not one. Fractions and offsets other than `Z` are ignored.
pub(super) fn parse_rfc3339_seconds(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = crate::calendar::days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

/// The labels a task's container was given (see [`ContainerSpecView::labels`]).
pub(super) fn task_labels(task: &Task) -> HashMap<String, String> {
    task.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_as_docker_writes_them() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_seconds("2000-03-01T00:00:00.123456789Z"), Some(951_868_800));
        assert_eq!(parse_rfc3339_seconds("2026-11-25T12:05:20.5Z"), Some(1_795_608_320));
        assert_eq!(parse_rfc3339_seconds("not a time"), None);
        assert_eq!(parse_rfc3339_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_seconds(""), None);
    }

    #[test]
    fn a_task_parses_with_its_network_attachments() {
        // Trimmed from `GET /v1.41/tasks` of engine 20.10 (a task whose health check has not
        // passed yet, and nulls where the engine writes them).
        let value = serde_json::json!({
            "ID": "vh7d92yffhxpqa7lgw9oeavhu", "Version": {"Index": 12},
            "CreatedAt": "2026-12-02T01:31:22.5Z", "Labels": {},
            "Spec": {"ContainerSpec": {"Image": "sha256:33aa", "Labels": {"ringlb.hostname": "s1", "ringlb.network": "net"},
                     "Args": ["server"], "Healthcheck": {"Test": ["CMD", "/ringlb", "probe"]}},
                     "Networks": [{"Target": "k1"}], "ForceUpdate": 0},
            "ServiceID": "v60x89dqjw1gn7i635bdhghlu", "Slot": 1, "NodeID": "n1",
            "Status": {"Timestamp": "2026-12-02T01:31:23Z", "State": "starting", "Message": "starting",
                       "ContainerStatus": {"ContainerID": "6b36", "PID": 4242, "ExitCode": 0}, "PortStatus": {}},
            "DesiredState": "running",
            "NetworksAttachments": [
                {"Network": {"ID": "i0", "Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.7/24"]},
                {"Network": {"ID": "k1", "Spec": {"Name": "net", "Labels": null}}, "Addresses": ["10.0.1.2/24"]}
            ]
        });
        let task: TaskView = serde_json::from_value(value).unwrap();
        assert!(task.is_live());
        assert_eq!(task.address_on("net"), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(task.address_on("other"), None);
        assert_eq!(task.spec.container_spec.labels.get("ringlb.hostname").map(String::as_str), Some("s1"));
        assert_eq!(parse_rfc3339_seconds(&task.created_at), Some(1_796_175_082));
        let bare: TaskView = serde_json::from_value(serde_json::json!({
            "ID": "t", "Spec": {"ContainerSpec": {"Labels": null}}, "NetworksAttachments": null,
            "Status": {"State": "running"}, "DesiredState": "shutdown"
        }))
        .unwrap();
        assert!(!bare.is_live(), "a task Swarm is stopping is not routed to");
        assert!(bare.spec.container_spec.labels.is_empty() && bare.address_on("net").is_none());
    }
}
