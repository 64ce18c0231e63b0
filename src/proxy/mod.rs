//! The data plane: forwards every request that is not ringlb's own to the replica the ring picks.
//!
//! Two engines serve client connections, as siblings over the same rules: `fast/` (ringlb's own
//! HTTP/1.1 framing, the default) and `hyper/` (the reference implementation, which also serves
//! what the fast path hands over). What they share is decided here, once:
//! - the request key (`key.rs`) and the header rules (`headers.rs`);
//! - which replicas to try, best first (`candidates.rs`): the ring's candidates, skipping ejected
//!   replicas and, with `hashing.balance_factor`, those over the bounded-load capacity
//!   (`balance.rs`);
//! - what happens after a failed attempt (`retry.rs`), and what it does to the replica: a refused
//!   connection ejects it at once (passive health, lifted by its next good heartbeat) and wakes
//!   the controller; every failure counts against it ([`Route`] drives both);
//! - the JSON errors (`errors.rs`): 503 when nothing can be tried, 502 when every attempt failed,
//!   504 when no answer came within `proxy.timeout`, the exercise's 400 for a replica's 404;
//! - a cluster scaled to zero holds the request (bounded queue, bounded wait) while the controller
//!   starts a replica (`hold.rs`);
//! - gRPC (`grpc.rs`): a call's `grpc-timeout` bounds its wait, and ringlb's own errors reach a
//!   gRPC client as a gRPC status (replicas' answers pass through untouched);
//! - an upgraded connection (WebSocket and the like) becomes a byte tunnel (`tunnel.rs`), counted
//!   in flight against its replica, closed when idle or when its replica's drain is over;
//! - how a listener's connections end when it stops (`drain.rs`): answers close their connection,
//!   idle ones close at once or, when another process took over the sockets, after the drain time.
//!
//! Per request an engine loads the routing [`Snapshot`](crate::snapshot::Snapshot) once
//! (lock-free) and works on it; the proxy never waits on the controller. Bodies stream both ways;
//! no engine holds a whole body.

mod balance;
pub mod candidates;
pub mod drain;
pub mod errors;
pub mod fast;
pub mod grpc;
pub mod headers;
mod hold;
pub mod hyper;
pub mod key;
mod redirect;
pub mod retry;
pub mod tunnel;

pub use drain::Drain;

use crate::snapshot::{Backend, Snapshots};
use crate::telemetry;
use crate::trigger::Trigger;
use axum::Router;
use http::{Method, StatusCode};
use retry::{Decision, Outcome, Retry};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// What the engines share: the routing state, the controller's trigger, the held requests.
pub struct Proxy {
    snapshots: Arc<Snapshots>,
    /// Woken when a replica is ejected, so the controller can look at once.
    trigger: Trigger,
    /// Requests waiting for a first replica (scale to zero).
    held: AtomicU32,
}

/// ringlb's own routes on the data path: which paths they are (the listener passes
/// [`crate::reserved::is_reserved`]) and the router that answers them.
#[derive(Clone)]
pub struct Local {
    /// True for a path ringlb answers itself.
    pub is_reserved: fn(&str) -> bool,
    /// Answers those paths.
    pub router: Router,
}

/// One request's way through its candidates: the replica to try next (and whether over a new
/// connection), the retry policy's state, and the last failure, which the client is told about if
/// the request cannot go on. Both engines drive it the same way: try [`Route::target`]; after a
/// failure, [`Route::failed`] says whether to go on; when no target is left, [`Route::exhausted`].
pub struct Route<'s, I> {
    candidates: I,
    current: Option<&'s Arc<Backend>>,
    /// The next attempt must use a new connection (a retry on the same replica).
    fresh: bool,
    retry: Retry,
    method: Method,
    last_failure: Option<String>,
}

impl<'s, I: Iterator<Item = &'s Arc<Backend>>> Route<'s, I> {
    /// Before the first attempt of a request with `method` over `candidates` (best first).
    pub fn new(mut candidates: I, method: &Method) -> Self {
        let current = candidates.next();
        Route {
            candidates,
            current,
            fresh: false,
            retry: Retry::new(method),
            method: method.clone(),
            last_failure: None,
        }
    }

    /// The replica for the next attempt, and whether it must be a new connection; `None` when no
    /// candidate is left.
    pub fn target(&self) -> Option<(&'s Arc<Backend>, bool)> {
        self.current.map(|backend| (backend, self.fresh))
    }

    /// The attempt on [`Route::target`] ended with `outcome` (`why`: for the log and the client;
    /// `sent`: when the request went out; `replayable`: the request's body can still be sent
    /// whole). Records what that means for the replica, and decides: `Ok` to go on with the next
    /// target, `Err` with the status and message to answer the client with.
    pub fn failed(
        &mut self,
        proxy: &Proxy,
        outcome: Outcome,
        replayable: bool,
        why: &str,
        sent: Instant,
    ) -> Result<(), (StatusCode, String)> {
        let Some(backend) = self.current else { return Err(self.exhausted()) };
        let decision = self.retry.decide(outcome, replayable);
        self.last_failure = Some(proxy.record_failure(backend, &self.method, outcome, decision, why, sent));
        match decision {
            Decision::SameReplica => self.fresh = true,
            Decision::NextCandidate => {
                self.fresh = false;
                self.current = self.candidates.next();
            }
            Decision::GiveUp(status) => return Err(self.error(status)),
        }
        Ok(())
    }

    /// The answer when no candidate is left: a 503 if none could be tried, else a 502.
    pub fn exhausted(&self) -> (StatusCode, String) {
        self.error(self.retry.exhausted())
    }

    /// The error answer with `status`; counts the request as unrouted (but a 504's).
    fn error(&self, status: StatusCode) -> (StatusCode, String) {
        let message = match (status, &self.last_failure) {
            (StatusCode::GATEWAY_TIMEOUT, Some(why)) => why.clone(),
            (_, None) => errors::NO_REPLICA.to_owned(),
            (_, Some(why)) => errors::all_failed_message(why),
        };
        let reason = match status {
            StatusCode::SERVICE_UNAVAILABLE => Some("no_replica"),
            StatusCode::BAD_GATEWAY => Some("all_failed"),
            _ => None,
        };
        if let Some(reason) = reason {
            metrics::counter!(telemetry::UNROUTED, "reason" => reason).increment(1);
        }
        (status, message)
    }
}

impl Proxy {
    /// A proxy that routes by the snapshots in `snapshots` and fires `trigger` on ejections.
    pub fn new(snapshots: Arc<Snapshots>, trigger: Trigger) -> Proxy {
        Proxy { snapshots, trigger, held: AtomicU32::new(0) }
    }

    /// The routing state: what every engine reads once per request.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// `backend` answered with `status`, `sent` after the request went out: counts it.
    pub fn answered(&self, backend: &Backend, method: &Method, status: StatusCode, sent: Instant) {
        backend.metrics.record(method, status, sent.elapsed());
        self.snapshots.record_answer(backend.id);
    }

    /// What a failed attempt means for `backend` and the counters: every failure counts against
    /// it, a refused connection ejects it, a retry and a timeout are logged. Returns the failure
    /// as the client would be told it.
    fn record_failure(
        &self,
        backend: &Backend,
        method: &Method,
        outcome: Outcome,
        decision: Decision,
        why: &str,
        sent: Instant,
    ) -> String {
        backend.record_error();
        match outcome {
            Outcome::Refused => self.eject(backend, why),
            Outcome::TimedOut => {
                let timeout = self.snapshots.load().routing.timeout;
                backend.metrics.record(method, StatusCode::GATEWAY_TIMEOUT, sent.elapsed());
                tracing::warn!(event = "upstream_timeout", replica = %backend.name,
                    "replica {} did not answer within {timeout:?}", backend.name);
                return format!("replica {} did not answer within {timeout:?}", backend.name);
            }
            Outcome::Failed { .. } => {
                if matches!(decision, Decision::SameReplica | Decision::NextCandidate) {
                    tracing::info!(event = "request_retried", replica = %backend.name, reason = %why,
                        "request to replica {} failed before an answer ({why}); sending it again", backend.name);
                    metrics::counter!(telemetry::RETRIES).increment(1);
                }
            }
        }
        format!("replica {}: {why}", backend.name)
    }

    /// A connection to `backend` failed (refused, unreachable, timed out): the replica is ejected
    /// until its next good heartbeat, and the controller is woken to look at it.
    fn eject(&self, backend: &Backend, why: &str) {
        if backend.eject() {
            metrics::counter!(telemetry::EJECTIONS, "service" => backend.metrics.service().to_owned(), "replica" => backend.name.clone())
                .increment(1);
            tracing::warn!(event = "replica_ejected", replica = %backend.name, reason = %why,
                "cannot connect to replica {}: {why}; ejected until its next good heartbeat", backend.name);
            self.trigger.fire();
        }
    }
}
