//! Hash rings: for a request key, the replicas in order of preference.
//!
//! One trait, [`Selector`], one file per algorithm: [`maglev`] (Google's Maglev lookup table, the
//! default: even to within 1% and minimal disruption) and [`slots`] (M slots with K virtual nodes
//! per replica: the exercise's H and Phi, or xxh3 of the replica's name). Both reduce to a *walk*:
//! an array of member indices that a key enters at one position and follows forward, wrapping.
//! The first member met is the key's replica; the next distinct ones are its fallbacks, so the proxy
//! can fall through when the first is down. A ring is built whole from its members and never
//! changes; the controller builds a new one off the request path.

pub mod hash;
pub mod maglev;
pub mod slots;

use serde::{Deserialize, Serialize};

/// Which algorithm spreads keys (`hashing.algorithm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Maglev lookup table.
    #[default]
    Maglev,
    /// Slots with virtual nodes.
    Ring,
}

/// How the slot ring places virtual nodes and keys (`hashing.function`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashFunction {
    /// The exercise's H (keys) and Phi (virtual nodes, from integer server ids).
    Assignment,
    /// xxh3: virtual nodes from the replica's name, keys mixed.
    #[default]
    Xxh3,
}

/// How the slot ring resolves virtual node collisions (`hashing.probing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probing {
    /// Next slot: s + 1, s + 2, ...
    #[default]
    Linear,
    /// s + 1, s + 4, s + 9, ...; a linear scan if that finds nothing in M tries.
    Quadratic,
}

/// Everything a ring is built from besides its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Slot ring: M.
    pub slots: u32,
    /// Slot ring: K per member.
    pub virtual_nodes: u32,
    /// Slot ring: hash function.
    pub function: HashFunction,
    /// Slot ring: collision resolution.
    pub probing: Probing,
    /// Maglev: table size, a prime.
    pub table_size: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            algorithm: Algorithm::Maglev,
            slots: 512,
            virtual_nodes: 9,
            function: HashFunction::Xxh3,
            probing: Probing::Linear,
            table_size: 65537,
        }
    }
}

/// One replica as the ring knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name: positions derive from it (maglev, xxh3).
    pub name: String,
    /// Its exercise server id, 1-based: positions derive from it (assignment).
    pub id: u32,
}

/// Why a ring cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// More virtual nodes than slots.
    #[error("{members} replicas x {virtual_nodes} virtual nodes do not fit in {slots} slots (hashing.slots)")]
    Full {
        /// Members.
        members: usize,
        /// K.
        virtual_nodes: u32,
        /// M.
        slots: u32,
    },
    /// A zero size.
    #[error("hashing.slots and hashing.virtual_nodes must be at least 1")]
    Empty,
    /// A Maglev table size that is not prime or not larger than the member count.
    #[error("hashing.table_size must be a prime larger than the replica count, found {0}")]
    TableSize(u32),
}

/// True if `n` is prime.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let n = u64::from(n);
    (3..).step_by(2).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// A built, immutable selector: replicas for a key, best first.
pub trait Selector: Send + Sync {
    /// The members for `key` in order of preference: the first choice, then distinct fallbacks;
    /// each member once; empty for an empty ring.
    fn candidates(&self, key: u64) -> Candidates<'_>;
    /// Each member's share of the key space, in member order (sums to 1 unless empty).
    fn shares(&self) -> Vec<f64>;
    /// The number of members.
    fn len(&self) -> usize;
    /// True without members.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The members already yielded by a [`Candidates`] walk: inline for up to 128, on the heap beyond.
enum Seen {
    Inline(u128),
    Heap(Vec<u64>),
}

impl Seen {
    fn new(members: usize) -> Seen {
        if members <= 128 { Seen::Inline(0) } else { Seen::Heap(vec![0; members.div_ceil(64)]) }
    }

    /// Marks `i`; false if it was marked already.
    fn insert(&mut self, i: u32) -> bool {
        match self {
            Seen::Inline(bits) => {
                let bit = 1u128 << i;
                let fresh = *bits & bit == 0;
                *bits |= bit;
                fresh
            }
            Seen::Heap(words) => {
                let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
                let Some(slot) = words.get_mut(word) else {
                    return false;
                };
                let fresh = *slot & bit == 0;
                *slot |= bit;
                fresh
            }
        }
    }
}

/// Members in order of preference for one key: a walk over a ring's entries from the key's
/// position, skipping members already yielded. Ends after every member or one full turn.
pub struct Candidates<'a> {
    walk: &'a [u32],
    position: usize,
    steps_left: usize,
    members: usize,
    yielded: usize,
    /// Created on the second call, so the common case (the first candidate) does no set work.
    seen: Option<Seen>,
    first: Option<u32>,
}

impl<'a> Candidates<'a> {
    /// A walk over `walk` (member indices) starting at `start`, for a ring of `members` members.
    pub fn new(walk: &'a [u32], start: usize, members: usize) -> Candidates<'a> {
        let position = if walk.is_empty() { 0 } else { start % walk.len() };
        Candidates { walk, position, steps_left: walk.len(), members, yielded: 0, seen: None, first: None }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.yielded < self.members && self.steps_left > 0 {
            let member = self.walk[self.position];
            self.position += 1;
            if self.position == self.walk.len() {
                self.position = 0;
            }
            self.steps_left -= 1;
            let fresh = match (self.first, &mut self.seen) {
                (None, _) => {
                    self.first = Some(member);
                    true
                }
                (Some(first), None) => {
                    let mut seen = Seen::new(self.members);
                    seen.insert(first);
                    let fresh = seen.insert(member);
                    self.seen = Some(seen);
                    fresh
                }
                (Some(_), Some(seen)) => seen.insert(member),
            };
            if fresh {
                self.yielded += 1;
                return Some(member as usize);
            }
        }
        None
    }
}

/// The ring for a [`RingConfig`]: one of the algorithms.
#[derive(Debug)]
pub enum Ring {
    /// Maglev.
    Maglev(maglev::Maglev),
    /// Slots with virtual nodes.
    Slots(slots::SlotRing),
}

impl Ring {
    /// Builds the ring of `config` over `members` (in this order: candidates are indices into it).
    ///
    /// # Errors
    /// Sizes that cannot hold the members.
    pub fn build(config: &RingConfig, members: &[Member]) -> Result<Ring, RingError> {
        match config.algorithm {
            Algorithm::Maglev => maglev::Maglev::build(config.table_size, members).map(Ring::Maglev),
            Algorithm::Ring => slots::SlotRing::build(config, members).map(Ring::Slots),
        }
    }

    /// A ring without members (what serves before the first reconcile pass).
    pub fn empty() -> Ring {
        Ring::Maglev(maglev::Maglev::empty())
    }

    fn selector(&self) -> &dyn Selector {
        match self {
            Ring::Maglev(m) => m,
            Ring::Slots(s) => s,
        }
    }
}

impl Selector for Ring {
    fn candidates(&self, key: u64) -> Candidates<'_> {
        match self {
            Ring::Maglev(m) => m.candidates(key),
            Ring::Slots(s) => s.candidates(key),
        }
    }

    fn shares(&self) -> Vec<f64> {
        self.selector().shares()
    }

    fn len(&self) -> usize {
        self.selector().len()
    }
}

/// Counts of walk entries per member, as shares.
fn shares_of(walk: impl Iterator<Item = u32>, members: usize) -> Vec<f64> {
    let mut counts = vec![0u64; members];
    let mut total = 0u64;
    for m in walk {
        if let Some(c) = counts.get_mut(m as usize) {
            *c += 1;
            total += 1;
        }
    }
    counts.into_iter().map(|c| if total == 0 { 0.0 } else { c as f64 / total as f64 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn members(n: usize) -> Vec<Member> {
        (1..=n).map(|i| Member { name: format!("server{i}"), id: i as u32 }).collect()
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(4_294_967_291));
    }

    #[test]
    fn candidates_walk_distinct_members_and_stop() {
        let walk = [0, 0, 1, 0, 2, 1];
        let got: Vec<usize> = Candidates::new(&walk, 3, 3).collect();
        assert_eq!(got, [0, 2, 1]);
        let got: Vec<usize> = Candidates::new(&walk, 5, 3).collect();
        assert_eq!(got, [1, 0, 2]);
        assert_eq!(Candidates::new(&[], 0, 0).count(), 0);
    }

    #[test]
    fn the_seen_set_works_past_128_members() {
        let walk: Vec<u32> = (0..300).chain(0..300).collect();
        let got: Vec<usize> = Candidates::new(&walk, 250, 300).collect();
        assert_eq!(got.len(), 300);
        assert_eq!(got[0], 250);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn every_algorithm_yields_every_member_once_and_an_empty_ring_nothing() {
        let configs = [
            RingConfig::default(),
            RingConfig { algorithm: Algorithm::Ring, ..RingConfig::default() },
            RingConfig {
                algorithm: Algorithm::Ring,
                function: HashFunction::Assignment,
                ..RingConfig::default()
            },
            RingConfig {
                algorithm: Algorithm::Ring,
                function: HashFunction::Assignment,
                probing: Probing::Quadratic,
                ..RingConfig::default()
            },
        ];
        for config in configs {
            let ring = Ring::build(&config, &members(7)).unwrap();
            for key in [0u64, 1, 123_456, u64::MAX] {
                let mut got: Vec<usize> = ring.candidates(key).collect();
                got.sort_unstable();
                assert_eq!(got, (0..7).collect::<Vec<_>>(), "{config:?}");
            }
            let shares: f64 = ring.shares().iter().sum();
            assert!((shares - 1.0).abs() < 1e-9);
            let empty = Ring::build(&config, &[]).unwrap();
            assert!(empty.is_empty());
            assert_eq!(empty.candidates(42).count(), 0);
            assert!(empty.shares().is_empty());
        }
    }
}
