//! Which replicas a request may go to, best first: the ring's candidates for its key that are not
//! ejected and, with bounded loads (`hashing.balance_factor`, `balance.rs`), under the bound; if
//! every one is over the bound, all of them in ring order, so a request is never refused for load.

use super::balance;
use crate::snapshot::{Backend, Snapshot};
use std::sync::Arc;

/// The replicas to try for `key`, best first.
pub fn choices(snapshot: &Snapshot, key: u64) -> impl Iterator<Item = &Arc<Backend>> + '_ {
    let bound = snapshot.routing.balance_factor.map(|factor| {
        let total: u64 = snapshot.members.iter().map(|b| b.inflight()).sum();
        balance::capacity(factor, total, snapshot.members.len())
    });
    let mut under =
        snapshot.candidates(key).filter(move |b| bound.is_none_or(|cap| b.inflight() < cap)).peekable();
    let all_over = bound.is_some() && under.peek().is_none();
    under.chain(all_over.then(|| snapshot.candidates(key)).into_iter().flatten())
}
