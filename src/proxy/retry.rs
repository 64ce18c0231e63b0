//! The forwarding policy both engines drive: what becomes of a request after each attempt to get
//! it answered by a replica. An attempt's [`Outcome`] goes in, a [`Decision`] comes out; the rules
//! on idempotency and on a body that was already sent live here and nowhere else.
//!
//! An answer ends the attempts: it goes to the client. Otherwise:
//! - Refused (the connection could not be made, so nothing was sent): the next candidate, whatever
//!   the method. These do not count against the retries below; the ring's candidates bound them.
//! - Failed (connected, then reset, closed, or garbage before a complete answer head): the request
//!   may have reached the replica. It is sent again only if its method is idempotent (RFC 9110
//!   section 9.2.2: "A proxy MUST NOT automatically retry non-idempotent requests") and its body
//!   can be sent again (the whole of it is still at hand). Then: over a new connection to the same
//!   replica if the failed connection was a pooled one (most such failures are a pooled connection
//!   the replica closed while it was idle; a replica that is really gone refuses the new
//!   connection, which moves the request on), and otherwise once on the next candidate. So a
//!   request reaches at most two replicas, each over at most two connections.
//! - Timed out (no answer head within `proxy.timeout`): a 504; the time is spent.
//! - No candidate left: a 503 if nothing was tried, else a 502 naming the last failure.

use http::{Method, StatusCode};

/// How one attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No connection (refused, unreachable, or not within `proxy.connect_timeout`): nothing was
    /// sent.
    Refused,
    /// The connection failed after the request was (perhaps partly) sent and before a complete
    /// answer head: reset, closed, or a head that is not HTTP.
    Failed {
        /// The connection came from the pool (it served an earlier request), so the failure may be
        /// the replica closing it while it was idle.
        pooled: bool,
    },
    /// No answer head within `proxy.timeout`.
    TimedOut,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the request again to the same replica, over a new connection.
    SameReplica,
    /// Send the request to the next candidate (if there is none: [`Retry::exhausted`]).
    NextCandidate,
    /// Answer the client with this status: the request cannot be sent again.
    GiveUp(StatusCode),
}

/// The retry state of one request.
#[derive(Clone, Debug)]
pub struct Retry {
    /// The method may be sent twice (RFC 9110 section 9.2.2).
    idempotent: bool,
    /// The current replica was already tried again over a new connection.
    retried_here: bool,
    /// The request already moved on to a second replica after a failure.
    moved_on: bool,
    /// Some attempt was made (refused or failed), so running out of candidates is a 502.
    tried: bool,
}

impl Retry {
    /// The state of a request with `method`, before its first attempt.
    pub fn new(method: &Method) -> Retry {
        Retry { idempotent: is_idempotent(method), retried_here: false, moved_on: false, tried: false }
    }

    /// The decision after an attempt ended with `outcome`; `replayable` says whether the request's
    /// body can still be sent whole (it has none, or all of it is buffered, or no attempt read any).
    pub fn decide(&mut self, outcome: Outcome, replayable: bool) -> Decision {
        match outcome {
            Outcome::TimedOut => Decision::GiveUp(StatusCode::GATEWAY_TIMEOUT),
            Outcome::Refused => {
                self.tried = true;
                self.retried_here = false;
                Decision::NextCandidate
            }
            Outcome::Failed { pooled } => {
                self.tried = true;
                if !(self.idempotent && replayable) {
                    Decision::GiveUp(StatusCode::BAD_GATEWAY)
                } else if pooled && !self.retried_here {
                    self.retried_here = true;
                    Decision::SameReplica
                } else if !self.moved_on {
                    self.moved_on = true;
                    self.retried_here = false;
                    Decision::NextCandidate
                } else {
                    Decision::GiveUp(StatusCode::BAD_GATEWAY)
                }
            }
        }
    }

    /// The status when no candidate is left: 503 if no replica could be tried at all, else 502.
    pub fn exhausted(&self) -> StatusCode {
        if self.tried { StatusCode::BAD_GATEWAY } else { StatusCode::SERVICE_UNAVAILABLE }
    }
}

/// Methods that may be sent twice (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{GiveUp, NextCandidate, SameReplica};

    const POOLED: Outcome = Outcome::Failed { pooled: true };
    const FRESH: Outcome = Outcome::Failed { pooled: false };
    const BAD_GATEWAY: Decision = GiveUp(StatusCode::BAD_GATEWAY);
    const TIMEOUT: Decision = GiveUp(StatusCode::GATEWAY_TIMEOUT);

    /// Runs a request with `method` through `outcomes` (each with the body's replayability after
    /// that attempt) and returns the decisions.
    fn run(method: Method, outcomes: &[(Outcome, bool)]) -> Vec<Decision> {
        let mut retry = Retry::new(&method);
        outcomes.iter().map(|(outcome, replayable)| retry.decide(*outcome, *replayable)).collect()
    }

    #[test]
    fn the_rules_as_a_table() {
        use Outcome::{Refused, TimedOut};
        // (method, the outcomes of its attempts with the body's replayability, the decisions)
        type Row<'a> = (Method, &'a [(Outcome, bool)], &'a [Decision]);
        let table: &[Row<'_>] = &[
            // A timeout is a 504, whatever came before.
            (Method::GET, &[(TimedOut, true)], &[TIMEOUT]),
            (Method::POST, &[(Refused, true), (TimedOut, true)], &[NextCandidate, TIMEOUT]),
            (Method::GET, &[(POOLED, true), (TimedOut, true)], &[SameReplica, TIMEOUT]),
            // Nothing was sent: any method, any body, moves on, as often as there are candidates.
            (Method::POST, &[(Refused, false), (Refused, false)], &[NextCandidate, NextCandidate]),
            // A stale pooled connection: the same replica over a new one, then the next candidate,
            // which gets its own second connection if its first was pooled too, then no more.
            (
                Method::GET,
                &[(POOLED, true), (FRESH, true), (POOLED, true), (FRESH, true)],
                &[SameReplica, NextCandidate, SameReplica, BAD_GATEWAY],
            ),
            // A new connection that fails: straight to the next candidate, once.
            (Method::GET, &[(FRESH, true), (FRESH, true)], &[NextCandidate, BAD_GATEWAY]),
            (
                Method::PUT,
                &[(FRESH, true), (POOLED, true), (FRESH, true)],
                &[NextCandidate, SameReplica, BAD_GATEWAY],
            ),
            // Refusals in between do not use up the retries.
            (
                Method::GET,
                &[(POOLED, true), (Refused, true), (POOLED, true), (FRESH, true)],
                &[SameReplica, NextCandidate, SameReplica, NextCandidate],
            ),
            // Not idempotent: never sent twice once it may have reached a replica, even on a
            // pooled connection that was reset.
            (Method::POST, &[(POOLED, true)], &[BAD_GATEWAY]),
            (Method::PATCH, &[(FRESH, true)], &[BAD_GATEWAY]),
            // A body that is gone (streamed to the failed attempt) cannot be sent again.
            (Method::PUT, &[(POOLED, false)], &[BAD_GATEWAY]),
            (Method::GET, &[(POOLED, true), (FRESH, false)], &[SameReplica, BAD_GATEWAY]),
        ];
        for (method, outcomes, expected) in table {
            assert_eq!(&run(method.clone(), outcomes), expected, "{method} {outcomes:?}");
        }
    }

    #[test]
    fn running_out_of_candidates_is_503_untried_and_502_after_a_failure() {
        assert_eq!(Retry::new(&Method::GET).exhausted(), StatusCode::SERVICE_UNAVAILABLE);
        let mut refused = Retry::new(&Method::GET);
        refused.decide(Outcome::Refused, true);
        assert_eq!(refused.exhausted(), StatusCode::BAD_GATEWAY);
        let mut failed = Retry::new(&Method::GET);
        failed.decide(FRESH, true);
        assert_eq!(failed.exhausted(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn only_safe_to_repeat_methods_are_idempotent() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
