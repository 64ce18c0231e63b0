//! Distributions of requests over replicas, and the offline computation of one from the ring
//! alone (what `ringlb analyze --offline` prints in milliseconds).

use crate::manifest::Hashing;
use crate::ring::hash::assignment_request_slot;
use crate::ring::{Member, Ring, RingError, Selector};
use serde::Serialize;
use std::collections::BTreeSet;

/// How many requests each replica answered, with summary figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    /// Replica names, in order (server1, server2, ...).
    pub replicas: Vec<String>,
    /// Requests per replica, same order.
    pub counts: Vec<u64>,
    /// Requests that got no answer from a replica.
    pub failed: u64,
}

impl Distribution {
    /// Counts of `answers` (replica names) over `replicas`; names outside the list are ignored.
    pub fn from_answers<'a>(
        replicas: &[String],
        answers: impl IntoIterator<Item = &'a str>,
        failed: u64,
    ) -> Self {
        let mut counts = vec![0u64; replicas.len()];
        for answer in answers {
            if let Some(i) = replicas.iter().position(|r| r == answer) {
                counts[i] += 1;
            }
        }
        Distribution { replicas: replicas.to_vec(), counts, failed }
    }

    /// Total requests answered.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Mean requests per replica.
    pub fn mean(&self) -> f64 {
        if self.counts.is_empty() { 0.0 } else { self.total() as f64 / self.counts.len() as f64 }
    }

    /// Fewest requests of any replica.
    pub fn min(&self) -> u64 {
        self.counts.iter().copied().min().unwrap_or(0)
    }

    /// Most requests of any replica.
    pub fn max(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }

    /// Population standard deviation of the counts.
    pub fn std_dev(&self) -> f64 {
        let mean = self.mean();
        if self.counts.is_empty() {
            return 0.0;
        }
        let var =
            self.counts.iter().map(|c| (*c as f64 - mean).powi(2)).sum::<f64>() / self.counts.len() as f64;
        var.sqrt()
    }

    /// The busiest replica's load relative to the mean (1.0 is perfectly even).
    pub fn max_over_mean(&self) -> f64 {
        let mean = self.mean();
        if mean == 0.0 { 0.0 } else { self.max() as f64 / mean }
    }
}

/// The replica names of an N-replica analysis cluster: `<prefix>server1` .. `<prefix>serverN`.
pub fn replica_names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}server{i}")).collect()
}

/// The ring a cluster of `names` (exercise ids 1..N in order) builds with `hashing`.
///
/// # Errors
/// The hashing cannot hold N replicas.
pub fn ring_for(hashing: &Hashing, names: &[String]) -> Result<Ring, RingError> {
    let members: Vec<Member> =
        names.iter().enumerate().map(|(i, name)| Member { name: name.clone(), id: i as u32 + 1 }).collect();
    Ring::build(&hashing.ring_config(64), &members)
}

/// The distribution the ring alone predicts for `ids` (every replica ready, no retries).
///
/// # Errors
/// The hashing cannot hold N replicas.
pub fn offline(hashing: &Hashing, names: &[String], ids: &[u32]) -> Result<Distribution, RingError> {
    let ring = ring_for(hashing, names)?;
    let answers =
        ids.iter().filter_map(|id| ring.candidates(u64::from(*id)).next()).map(|i| names[i].as_str());
    Ok(Distribution::from_answers(names, answers, 0))
}

/// How many of the M slots the exercise's H reaches, over all 6-digit ids and over `ids`.
pub fn h_reach(slots: u32, ids: &[u32]) -> (usize, usize) {
    let all: BTreeSet<u32> = (100_000u64..=999_999).map(|i| assignment_request_slot(i, slots)).collect();
    let used: BTreeSet<u32> = ids.iter().map(|i| assignment_request_slot(u64::from(*i), slots)).collect();
    (all.len(), used.len())
}

/// For each replica, how many of the slots H can reach it serves (the reason for the skew).
///
/// # Errors
/// The hashing cannot hold N replicas.
pub fn reachable_slots_per_replica(hashing: &Hashing, names: &[String]) -> Result<Vec<usize>, RingError> {
    let ring = ring_for(hashing, names)?;
    let reachable: BTreeSet<u32> =
        (0..hashing.slots).map(|i| assignment_request_slot(u64::from(i), hashing.slots)).collect();
    let mut per = vec![0usize; names.len()];
    for slot in reachable {
        // A slot's owner is what a key landing on it gets: the first candidate of a key whose
        // H is that slot. H(i) = slot for i = slot - ... is not invertible in general, so walk
        // the ring directly through a key known to land there.
        if let Some(i) =
            (0..u64::from(hashing.slots)).find(|i| assignment_request_slot(*i, hashing.slots) == slot)
            && let Some(owner) = ring.candidates(i).next()
        {
            per[owner] += 1;
        }
    }
    Ok(per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_figures() {
        let names = replica_names("", 3);
        let d = Distribution::from_answers(&names, ["server1", "server1", "server2", "x"], 1);
        assert_eq!(d.counts, [2, 1, 0]);
        assert_eq!((d.total(), d.min(), d.max(), d.failed), (3, 0, 2, 1));
        assert!((d.mean() - 1.0).abs() < 1e-12);
        assert!((d.std_dev() - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((d.max_over_mean() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn h_reaches_87_slots() {
        assert_eq!(h_reach(512, &[100_000, 100_001]).0, 87);
        assert_eq!(h_reach(512, &[100_000, 100_001]).1, 2);
    }

    #[test]
    fn reachable_slots_add_up_to_the_reach() {
        let hashing = Hashing {
            algorithm: crate::ring::Algorithm::Ring,
            function: crate::ring::HashFunction::Assignment,
            ..Hashing::default()
        };
        let per = reachable_slots_per_replica(&hashing, &replica_names("", 3)).unwrap();
        assert_eq!(per.iter().sum::<usize>(), 87);
    }
}
