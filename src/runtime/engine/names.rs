//! Whose a container or service is: ringlb touches only what carries its cluster's label, and a
//! replica name held by something else is an error that names it and says what to do. The
//! foreign holder is left as it is.

use super::labels::LABEL_CLUSTER;
use std::collections::HashMap;

/// What can hold a replica's name in the engine's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A container (the Docker runtime).
    Container,
    /// A Swarm service (the Swarm runtime).
    Service,
}

/// A replica's name is held by a container or service that is not the cluster's.
#[derive(Debug, thiserror::Error)]
#[error(
    "a {} named {name} exists and is not managed by ringlb (no label {LABEL_CLUSTER}={cluster}); \
     ringlb leaves it alone: {}, or choose another name",
    holder.noun(),
    holder.remedy()
)]
pub struct ForeignName {
    /// What holds it.
    pub holder: Holder,
    /// The replica name.
    pub name: String,
    /// The cluster whose label it lacks.
    pub cluster: String,
}

impl Holder {
    /// How the message names it.
    fn noun(self) -> &'static str {
        match self {
            Holder::Container => "container",
            Holder::Service => "Swarm service",
        }
    }

    /// What a user can do about it (a foreign service can be renamed only by removing it).
    fn remedy(self) -> &'static str {
        match self {
            Holder::Container => "rename or remove it",
            Holder::Service => "remove it",
        }
    }
}

/// True if `labels` (of a container or service; `None` when it has none) say it is `cluster`'s.
pub(crate) fn is_ours(labels: Option<&HashMap<String, String>>, cluster: &str) -> bool {
    labels.and_then(|l| l.get(LABEL_CLUSTER)).map(String::as_str) == Some(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_container_or_service_error_says_what_to_do() {
        let container =
            ForeignName { holder: Holder::Container, name: "server1".into(), cluster: "demo".into() };
        assert_eq!(
            container.to_string(),
            "a container named server1 exists and is not managed by ringlb (no label ringlb.cluster=demo); \
             ringlb leaves it alone: rename or remove it, or choose another name"
        );
        let service = ForeignName { holder: Holder::Service, ..container };
        assert_eq!(
            service.to_string(),
            "a Swarm service named server1 exists and is not managed by ringlb (no label ringlb.cluster=demo); \
             ringlb leaves it alone: remove it, or choose another name"
        );
    }

    #[test]
    fn only_the_clusters_label_makes_it_ours() {
        let labels = |value: &str| HashMap::from([(LABEL_CLUSTER.to_string(), value.to_string())]);
        assert!(is_ours(Some(&labels("demo")), "demo"));
        assert!(!is_ours(Some(&labels("other")), "demo"));
        assert!(!is_ours(Some(&HashMap::new()), "demo"));
        assert!(!is_ours(None, "demo"));
    }
}
