//! The Docker engine as both container runtimes ([`docker`](super::docker) and
//! [`swarm`](super::swarm)) speak to it: connecting, the engine's errors in ringlb's words, the
//! `ringlb.*` labels, the event follower, networks, the foreign-name check, and the plain API
//! call for what bollard's types leave out.
//!
//! It decides nothing about replicas: what to run and how is each runtime's business. Neither
//! runtime imports the other; what they share lives here.

pub mod api;
pub(crate) mod events;
pub mod labels;
pub mod names;
pub(crate) mod network;

use bollard::Docker;
use bollard::errors::Error as DockerError;

/// What to check when the engine cannot be reached.
const UNREACHABLE_HINT: &str =
    "is the Docker engine running, and may this user use its socket (DOCKER_HOST, or /var/run/docker.sock)?";

/// A call to the Docker engine that failed, worded as ringlb reports it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A bollard call failed or the engine refused it.
    #[error("{doing}: {}", describe(source))]
    Call {
        /// Which call, as the start of a sentence (`cannot inspect network blue`).
        doing: String,
        /// What bollard reported.
        #[source]
        source: DockerError,
    },
    /// A bollard call failed that the message around it already names (a retry).
    #[error("{}", describe(.0))]
    Docker(#[source] DockerError),
    /// A plain API call (for what bollard's types leave out, see [`api`]) failed.
    #[error("{doing}: {source}")]
    Api {
        /// Which call, as the start of a sentence (`cannot list tasks`).
        doing: String,
        /// Why it failed.
        #[source]
        source: api::ApiError,
    },
    /// `DOCKER_HOST` names an engine ringlb's own API calls cannot reach.
    #[error(transparent)]
    Host(#[from] api::HostError),
    /// The engine does not answer at all: what to check follows what bollard said.
    ///
    /// The hint comes after the cause, so the cause is kept as a field and not as the error's
    /// source: a printer of the source chain would repeat it after the hint.
    #[error("{doing}: {}; {UNREACHABLE_HINT}", describe(cause))]
    Unreachable {
        /// What failed (`cannot connect to Docker`, `Docker does not answer`).
        doing: &'static str,
        /// What bollard reported.
        cause: DockerError,
    },
    /// The engine, or what it holds, does not suit what ringlb asks of it (a network of another
    /// driver, a missing image, an engine outside a swarm): a sentence saying what to do.
    #[error("{0}")]
    Unsuitable(String),
}

impl EngineError {
    /// A failed bollard call: `doing` names it, as the start of a sentence.
    pub(crate) fn call(doing: impl Into<String>, source: DockerError) -> EngineError {
        EngineError::Call { doing: doing.into(), source }
    }

    /// A failed plain API call: `doing` names it.
    pub(crate) fn api(doing: impl Into<String>, source: api::ApiError) -> EngineError {
        EngineError::Api { doing: doing.into(), source }
    }

    /// The HTTP status the engine answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Call { source, .. } | EngineError::Docker(source) => status_of(source),
            EngineError::Unreachable { cause, .. } => status_of(cause),
            EngineError::Api { source, .. } => source.status(),
            EngineError::Host(_) | EngineError::Unsuitable(_) => None,
        }
    }
}

/// Connects to the engine `DOCKER_HOST` names (`unix://...`, or `tcp://...` for a socket proxy;
/// `/var/run/docker.sock` without it), agrees on an API version it speaks (so engines from API
/// 1.41 work), and checks that it answers.
///
/// # Errors
/// [`EngineError::Unreachable`], saying what to check.
pub(crate) async fn connect() -> Result<Docker, EngineError> {
    let docker = Docker::connect_with_defaults()
        .map_err(|cause| EngineError::Unreachable { doing: "cannot connect to Docker", cause })?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|cause| EngineError::Unreachable { doing: "Docker does not answer", cause })?;
    docker
        .ping()
        .await
        .map_err(|cause| EngineError::Unreachable { doing: "Docker does not answer", cause })?;
    Ok(docker)
}

/// Turns a bollard error into a sentence, with the status code when the engine answered.
pub(crate) fn describe(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { status_code, message } => {
            format!("{message} ({status_code})")
        }
        other => crate::error_chain(other),
    }
}

/// The HTTP status the engine answered with, if it answered.
pub(crate) fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status_code: u16, message: &str) -> DockerError {
        DockerError::DockerResponseServerError { status_code, message: message.into() }
    }

    #[test]
    fn an_engine_answer_reads_as_its_message_and_status() {
        let error = EngineError::call("cannot inspect network blue", answered(500, "boom"));
        assert_eq!(error.to_string(), "cannot inspect network blue: boom (500)");
        assert_eq!(error.status(), Some(500));
        assert!(std::error::Error::source(&error).is_some(), "the bollard error stays the source");
        assert_eq!(EngineError::Docker(answered(409, "taken")).to_string(), "taken (409)");
    }

    #[test]
    fn an_unreachable_engine_says_what_to_check() {
        let error =
            EngineError::Unreachable { doing: "Docker does not answer", cause: answered(502, "down") };
        assert_eq!(
            error.to_string(),
            "Docker does not answer: down (502); is the Docker engine running, and may this user use its \
             socket (DOCKER_HOST, or /var/run/docker.sock)?"
        );
        // The cause is in the message already, before the hint: a chain printer must not repeat it.
        assert_eq!(crate::error_chain(&error), error.to_string());
    }
}
