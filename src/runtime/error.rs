//! Why a runtime call failed: [`RuntimeError`] says which call and for which replica, its
//! [`Cause`] what lies under it (the engine's error with its chain, an I/O error, or a runtime's
//! own sentence).
//!
//! Every message reads as it did when causes were strings: the controller logs and the status API
//! report them by their `Display` alone, which ends with the cause's text. A printer of the whole
//! chain ([`crate::error_chain`]) skips a cause the message already ends with.

use super::InstanceId;
use super::engine::EngineError;
use super::engine::names::ForeignName;
use super::exit::Exited;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A replica could not be started.
    #[error("cannot start replica {name}: {source}")]
    Start {
        /// The replica.
        name: String,
        /// What went wrong.
        #[source]
        source: Cause,
    },
    /// A replica could not be stopped.
    #[error("cannot stop replica instance {id}: {source}")]
    Stop {
        /// The instance.
        id: InstanceId,
        /// What went wrong.
        #[source]
        source: Cause,
    },
    /// The runtime cannot be reached or listed.
    #[error("the runtime is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The name belongs to something ringlb does not own; it is left alone.
    #[error("cannot start replica {name}: {source}")]
    NameTaken {
        /// The replica name.
        name: String,
        /// What holds it (or why that cannot be told).
        #[source]
        source: Cause,
    },
}

impl RuntimeError {
    /// Replica `name` could not be started because of `cause`.
    pub(crate) fn start(name: &str, cause: impl Into<Cause>) -> RuntimeError {
        RuntimeError::Start { name: name.to_owned(), source: cause.into() }
    }

    /// Instance `id` could not be stopped because of `cause`.
    pub(crate) fn stop(id: &InstanceId, cause: impl Into<Cause>) -> RuntimeError {
        RuntimeError::Stop { id: id.clone(), source: cause.into() }
    }

    /// The runtime cannot be reached or listed because of `cause`.
    pub(crate) fn unavailable(cause: impl Into<Cause>) -> RuntimeError {
        RuntimeError::Unavailable(cause.into())
    }

    /// Replica `name` cannot take its name because of `cause`.
    pub(crate) fn name_taken(name: &str, cause: impl Into<Cause>) -> RuntimeError {
        RuntimeError::NameTaken { name: name.to_owned(), source: cause.into() }
    }
}

/// What lies under a [`RuntimeError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The Docker engine failed or refused (the Docker and Swarm runtimes).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The replica's name is held by a container or service that is not the cluster's.
    #[error(transparent)]
    Foreign(#[from] ForeignName),
    /// An I/O call failed (the process runtime spawning a replica).
    #[error("{doing}: {source}")]
    Io {
        /// Which call, as the start of a sentence (`cannot run /usr/bin/ringlb`).
        doing: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The replica's program ended before it served (process, Docker).
    #[error(transparent)]
    Exited(#[from] Exited),
    /// A reason with no error under it, in the runtime's words.
    #[error("{0}")]
    Message(String),
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause::Message(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::Message(message.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_they_did_when_causes_were_strings() {
        let start = RuntimeError::start("s1", "injected failure");
        assert_eq!(start.to_string(), "cannot start replica s1: injected failure");
        let stop = RuntimeError::stop(&InstanceId("pid-7".into()), "still running after SIGKILL");
        assert_eq!(stop.to_string(), "cannot stop replica instance pid-7: still running after SIGKILL");
        let unavailable = RuntimeError::unavailable("injected: the engine is unreachable");
        assert_eq!(
            unavailable.to_string(),
            "the runtime is unavailable: injected: the engine is unreachable"
        );
        let taken = RuntimeError::name_taken("s1", "a container named s1 exists");
        assert_eq!(taken.to_string(), "cannot start replica s1: a container named s1 exists");
    }

    #[test]
    fn the_cause_is_the_source_and_a_chain_prints_it_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = RuntimeError::start("s1", Cause::Io { doing: "cannot run /bin/x".into(), source: io });
        assert_eq!(error.to_string(), "cannot start replica s1: cannot run /bin/x: no such file");
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("cannot run /bin/x: no such file"));
        assert_eq!(crate::error_chain(&error), error.to_string());
    }
}
