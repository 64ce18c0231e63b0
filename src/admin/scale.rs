//! The exercise's scaling API: `GET /rep`, `POST /add` and `DELETE /rm` (POST accepted too).
//!
//! `/add` and `/rm` change the desired state by rewriting the manifest file, never by touching
//! replicas: the manifest stays the single source of truth, so a restart comes back with the same
//! replicas. One edit at a time (a mutex serialises them); each edit first applies what is on disk,
//! validates the whole new manifest before it writes anything, writes atomically, and answers once
//! the controller has taken the new version, with the `/rep` body of that version. Bad input gets a
//! 4xx in the exercise's error shape and changes nothing.

use super::AdminState;
use super::auth::refuse_unauthorized;
use crate::json;
use crate::manifest::edit::rewrite_scale;
use crate::manifest::{Manifest, NAME_RULE, file, is_valid_name};
use crate::snapshot::Snapshot;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The largest admin request body.
pub const MAX_BODY: usize = 64 * 1024;

/// How long an edit waits for the controller to take the new manifest.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `/rep` payload.
#[derive(Serialize)]
struct Replicas<'a> {
    #[serde(rename = "N")]
    n: usize,
    replicas: &'a [String],
}

fn rep_body(snapshot: &Snapshot) -> Response {
    json::success(Replicas { n: snapshot.replica_names.len(), replicas: &snapshot.replica_names })
}

pub(super) async fn rep(State(state): State<Arc<AdminState>>) -> Response {
    rep_body(&state.snapshots.load())
}

/// A parsed `/add` or `/rm` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleRequest {
    /// How many replicas to add or remove: at least 1.
    pub n: u32,
    /// The names to add or remove first (the rest are generated or chosen at random).
    pub hostnames: Vec<String>,
}

/// An admin error: status and sentence (rendered as `<Error> <sentence>`).
struct Refusal(StatusCode, String);

impl From<Refusal> for Response {
    fn from(Refusal(code, text): Refusal) -> Response {
        json::failure(code, text)
    }
}

fn bad(text: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, text.into())
}

/// Reads and checks the JSON body `{"n": <positive integer>, "hostnames": [<names>]}`.
async fn scale_request(body: Body) -> Result<ScaleRequest, Refusal> {
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} KiB", MAX_BODY / 1024),
        )
    })?;
    parse_scale_body(&bytes).map_err(|e| bad(e.to_string()))
}

/// What a body of `/add` or `/rm` should look like, for the 400's sentence.
const EXAMPLE: &str = r#"expected a JSON object like {"n": 2, "hostnames": ["S1"]}"#;

/// Why a body of `/add` or `/rm` is refused; its text is the sentence of the 400 answer.
#[derive(Debug, thiserror::Error)]
pub enum ScaleBodyError {
    /// Not JSON.
    #[error("malformed JSON ({0}); {EXAMPLE}")]
    Malformed(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("{EXAMPLE}")]
    NotAnObject,
    /// A field other than `n` and `hostnames`.
    #[error("unknown field '{0}'; {EXAMPLE}")]
    UnknownField(String),
    /// No `n`.
    #[error("'n' is missing; {EXAMPLE}")]
    MissingN,
    /// `n` is not a positive `u32`.
    #[error("'n' must be a positive integer, found {0}")]
    BadN(Value),
    /// `hostnames` is not a list of strings.
    #[error("'hostnames' must be a list of strings")]
    BadHostnames,
}

/// Why a well-formed body of `/add` or `/rm` is refused; its text is the sentence of the 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScaleCheckError {
    /// More names than `n`: the exercise's own sentence, which differs for `/add` and `/rm`.
    #[error("{0}")]
    TooManyNames(&'static str),
    /// A name that cannot be a hostname.
    #[error("'{0}' is not a valid hostname ({NAME_RULE})")]
    InvalidName(String),
    /// A name given twice.
    #[error("'{0}' is listed twice")]
    ListedTwice(String),
}

/// Parses the JSON body of `/add` or `/rm`, `{"n": <positive integer>, "hostnames": [<names>]}`
/// (`hostnames` optional). Pure: what the handlers do with the bytes they read (at most 64 KiB).
///
/// # Errors
/// Not JSON, not an object, an unknown field, `n` missing or not a positive `u32`, `hostnames`
/// not a list of strings.
pub fn parse_scale_body(bytes: &[u8]) -> Result<ScaleRequest, ScaleBodyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(ScaleBodyError::Malformed)?;
    let Value::Object(fields) = value else {
        return Err(ScaleBodyError::NotAnObject);
    };
    if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "n" | "hostnames")) {
        return Err(ScaleBodyError::UnknownField(unknown.clone()));
    }
    let n = match fields.get("n") {
        None => return Err(ScaleBodyError::MissingN),
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0).and_then(|n| u32::try_from(n).ok()),
        Some(_) => None,
    };
    let n = n.ok_or_else(|| ScaleBodyError::BadN(fields["n"].clone()))?;
    let hostnames = match fields.get("hostnames") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(ScaleBodyError::BadHostnames)?,
        Some(_) => return Err(ScaleBodyError::BadHostnames),
    };
    Ok(ScaleRequest { n, hostnames })
}

/// The checks of a parsed body that `/add` and `/rm` share, in the exercise's order: no more names
/// than `n` (else `too_many_names`, the exercise's sentence), then every name valid and listed once.
///
/// # Errors
/// Too many names, an invalid name, a name listed twice.
pub fn check_scale_request(
    request: &ScaleRequest,
    too_many_names: &'static str,
) -> Result<(), ScaleCheckError> {
    if request.hostnames.len() > request.n as usize {
        return Err(ScaleCheckError::TooManyNames(too_many_names));
    }
    let mut seen = BTreeSet::new();
    for name in &request.hostnames {
        if !is_valid_name(name) {
            return Err(ScaleCheckError::InvalidName(name.clone()));
        }
        if !seen.insert(name) {
            return Err(ScaleCheckError::ListedTwice(name.clone()));
        }
    }
    Ok(())
}

/// Holds the edit lock with the on-disk manifest applied and in effect.
struct Editing<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    text: String,
    manifest: Arc<Manifest>,
    snapshot: Arc<Snapshot>,
}

/// Takes the edit lock and makes sure the state being edited is the file on disk.
async fn begin_edit(state: &AdminState) -> Result<Editing<'_>, Refusal> {
    let lock = state.edits.lock().await;
    let path = state.source.path();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the manifest {}: {e}", path.display()),
        )
    })?;
    let applied = state.source.apply_text(&text).map_err(|e| {
        Refusal(
            StatusCode::CONFLICT,
            format!("the manifest file is invalid; fix it before scaling through the API: {e}"),
        )
    })?;
    let snapshot =
        state.snapshots.wait_for_version(applied.version(), APPLY_TIMEOUT).await.ok_or_else(|| {
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the controller has not applied the manifest yet; try again".into(),
            )
        })?;
    Ok(Editing { _lock: lock, text, manifest: state.source.current().manifest, snapshot })
}

/// Writes the edit and waits until the controller has taken it.
async fn commit(state: &AdminState, editing: Editing<'_>, names: Vec<String>) -> Result<Response, Refusal> {
    let count = u32::try_from(names.len()).map_err(|_| bad("too many replicas"))?;
    let text = rewrite_scale(&editing.text, count, &names)
        .map_err(|e| Refusal(StatusCode::CONFLICT, format!("cannot rewrite the manifest: {e}")))?;
    // Validate the whole result before anything is written.
    Manifest::parse(&text).map_err(|e| bad(format!("the result would be an invalid manifest: {e}")))?;
    file::write_atomic(state.source.path(), &text).map_err(|e| {
        Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the manifest {}: {e}", state.source.path().display()),
        )
    })?;
    let applied = state.source.apply_text(&text).map_err(|e| {
        Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("the written manifest was refused: {e}"))
    })?;
    tracing::info!(event = "manifest_edited", version = applied.version(), replicas = count, hostnames = ?names,
        "the admin API set {count} replicas");
    let snapshot =
        state.snapshots.wait_for_version(applied.version(), APPLY_TIMEOUT).await.ok_or_else(|| {
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the manifest was written but the controller has not applied it yet".into(),
            )
        })?;
    drop(editing);
    Ok(rep_body(&snapshot))
}

/// Runs a scaling handler after the token check, rendering its refusal.
async fn guarded<'a, F, Fut>(state: &'a AdminState, request: Request, handler: F) -> Response
where
    F: FnOnce(&'a AdminState, Body) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Refusal>>,
{
    if let Some(denied) = refuse_unauthorized(state, request.headers()) {
        return denied;
    }
    handler(state, request.into_body()).await.unwrap_or_else(Response::from)
}

pub(super) async fn add(State(state): State<Arc<AdminState>>, request: Request) -> Response {
    guarded(&state, request, add_replicas).await
}

/// The checks `/add` and `/rm` share, in the exercise's order (its sentence for too many names
/// first), then the edit lock.
async fn begin_scaling<'a>(
    state: &'a AdminState,
    body: Body,
    too_many_names: &'static str,
) -> Result<(ScaleRequest, Editing<'a>), Refusal> {
    let request = scale_request(body).await?;
    check_scale_request(&request, too_many_names).map_err(|e| bad(e.to_string()))?;
    Ok((request, begin_edit(state).await?))
}

/// `/add` and `/rm` cannot change what a static runtime runs.
fn refuse_static(state: &AdminState) -> Result<(), Refusal> {
    if state.source.current().manifest.replica.runtime == crate::manifest::RuntimeKind::Static {
        return Err(bad(
            "the static runtime's replicas are its endpoints; edit replica.endpoints in the manifest instead",
        ));
    }
    Ok(())
}

async fn add_replicas(state: &AdminState, body: Body) -> Result<Response, Refusal> {
    refuse_static(state)?;
    let (request, editing) =
        begin_scaling(state, body, "Length of hostname list is more than newly added instances").await?;
    let current = &editing.snapshot.replica_names;
    if let Some(used) = request.hostnames.iter().find(|n| editing.snapshot.taken_names.contains(n)) {
        return Err(Refusal(StatusCode::CONFLICT, format!("'{used}' is already a replica")));
    }
    for name in &request.hostnames {
        let held = state.names.held_by_other(name).await.map_err(|e| {
            Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("cannot check whether '{name}' is free: {e}"))
        })?;
        if held {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("'{name}' is the name of a container ringlb does not manage; it is left alone"),
            ));
        }
    }
    let total = current.len() + request.n as usize;
    let manifest = &editing.manifest;
    let cap = manifest.ring_capacity() as usize;
    if total > cap {
        return Err(bad(format!(
            "cannot grow to {total} replicas: the limit is {cap} (limits.max_replicas {}{})",
            manifest.limits.max_replicas,
            if cap < manifest.limits.max_replicas as usize {
                ", and the ring's slots / virtual_nodes"
            } else {
                ""
            }
        )));
    }
    let mut taken: BTreeSet<String> = editing.snapshot.taken_names.iter().cloned().collect();
    taken.extend(request.hostnames.iter().cloned());
    let mut names = current.clone();
    names.extend(request.hostnames.iter().cloned());
    while names.len() < total {
        let name = crate::controller::plan::generate_name(&manifest.name, &taken);
        taken.insert(name.clone());
        // A generated name skips names held by containers ringlb does not manage.
        if !state.names.held_by_other(&name).await.unwrap_or(false) {
            names.push(name);
        }
    }
    commit(state, editing, names).await
}

pub(super) async fn rm(State(state): State<Arc<AdminState>>, request: Request) -> Response {
    guarded(&state, request, remove_replicas).await
}

async fn remove_replicas(state: &AdminState, body: Body) -> Result<Response, Refusal> {
    refuse_static(state)?;
    let (request, editing) =
        begin_scaling(state, body, "Length of hostname list is more than removable instances").await?;
    let current = &editing.snapshot.replica_names;
    if request.n as usize > current.len() {
        return Err(bad(format!("cannot remove {} replicas: there are only {}", request.n, current.len())));
    }
    if let Some(missing) = request.hostnames.iter().find(|n| !current.contains(n)) {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("'{missing}' is not a replica")));
    }
    let mut removed: BTreeSet<String> = request.hostnames.iter().cloned().collect();
    let mut others: Vec<&String> = current.iter().filter(|n| !removed.contains(*n)).collect();
    others.shuffle(&mut rand::rng());
    removed.extend(others.into_iter().take(request.n as usize - request.hostnames.len()).cloned());
    let names: Vec<String> = current.iter().filter(|n| !removed.contains(*n)).cloned().collect();
    commit(state, editing, names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(body: &'static str) -> Result<(u32, Vec<String>), String> {
        scale_request(Body::from(body)).await.map(|r| (r.n, r.hostnames)).map_err(|Refusal(_, text)| text)
    }

    #[tokio::test]
    async fn scale_requests_accept_the_contract_and_refuse_the_rest() {
        assert_eq!(parse(r#"{"n": 2, "hostnames": ["a"]}"#).await, Ok((2, vec!["a".to_string()])));
        assert_eq!(parse(r#"{"n": 1}"#).await, Ok((1, vec![])));
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"hostnames": []}"#,
            r#"{"n": 0}"#,
            r#"{"n": -1}"#,
            r#"{"n": 1.5}"#,
            r#"{"n": "2"}"#,
            r#"{"n": 1, "hostnames": "a"}"#,
            r#"{"n": 1, "hostnames": [1]}"#,
            r#"{"n": 1, "extra": true}"#,
        ] {
            assert!(parse(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_body_over_64_kib_is_413() {
        let big = format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, "a".repeat(MAX_BODY));
        let Err(Refusal(code, _)) = scale_request(Body::from(big)).await else { panic!() };
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
