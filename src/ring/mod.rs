//! Consistent hashing: for a request key, the replicas in order of preference.
//!
//! One trait, [`Selector`], and one file per algorithm: [`maglev`] (Maglev's lookup table, the
//! default: even to within 1% and minimal disruption) and [`slots`] (M slots with K virtual nodes
//! per replica: the exercise's H and Phi, or xxh3 of the replica's name). Both reduce lookup to a
//! *walk*: an array of member indices that a key enters at one position and follows forward,
//! wrapping. The first member met serves the key; the next distinct ones are its fallbacks, so the
//! proxy can fall through when the first is down. A [`Ring`] is built whole from its members and
//! never changes afterwards; the controller builds a new one off the request path.
//!
//! Candidates are indices into the member slice given to [`Ring::build`]; where a member's
//! positions come from its name (maglev, xxh3) the ring does not depend on that slice's order.

pub mod hash;
pub mod maglev;
pub mod slots;

use serde::{Deserialize, Serialize};

/// Which algorithm spreads keys over replicas (`hashing.algorithm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Maglev lookup table (`maglev`).
    #[default]
    Maglev,
    /// Slots with virtual nodes (`ring`).
    Ring,
}

/// How the slot ring places virtual nodes and keys (`hashing.function`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashFunction {
    /// The exercise's H for keys and Phi for virtual nodes from integer server ids (`assignment`).
    Assignment,
    /// xxh3 of the replica's name for virtual nodes, mixed keys (`xxh3`).
    #[default]
    Xxh3,
}

/// How the slot ring resolves virtual node collisions (`hashing.probing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probing {
    /// s + 1, s + 2, ... (mod M) (`linear`).
    #[default]
    Linear,
    /// s + 1, s + 4, s + 9, ... (mod M); a linear scan if that finds nothing in M tries (`quadratic`).
    Quadratic,
}

/// Everything a ring is built from besides its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Slot ring: M, the number of slots.
    pub slots: u32,
    /// Slot ring: K, virtual nodes per member.
    pub virtual_nodes: u32,
    /// Slot ring: how virtual nodes and keys are hashed.
    pub function: HashFunction,
    /// Slot ring: how virtual node collisions are resolved.
    pub probing: Probing,
    /// Maglev: the lookup table's size, a prime at least the member count.
    pub table_size: u32,
}

impl Default for RingConfig {
    /// Maglev with a 65537-entry table; for the slot ring the exercise's M = 512, K = 9, with xxh3
    /// and linear probing.
    fn default() -> Self {
        RingConfig {
            algorithm: Algorithm::Maglev,
            slots: 512,
            virtual_nodes: 9,
            function: HashFunction::Xxh3,
            probing: Probing::Linear,
            table_size: 65_537,
        }
    }
}

/// One replica as the ring knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// The replica's hostname: maglev and xxh3 positions derive from it.
    pub name: String,
    /// The exercise's server id, 1-based: assignment positions derive from it.
    pub id: u32,
}

/// Why a ring cannot be built. Messages name the manifest field and the numbers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// M = 0.
    #[error("hashing.slots must be at least 1, found 0")]
    ZeroSlots,
    /// K = 0.
    #[error("hashing.virtual_nodes must be at least 1, found 0")]
    ZeroVirtualNodes,
    /// M above [`slots::MAX_SLOTS`] (the ring keeps a per-slot index).
    #[error("hashing.slots must be at most {max}, found {slots}")]
    TooManySlots {
        /// M.
        slots: u32,
        /// The limit.
        max: u32,
    },
    /// N x K > M: the virtual nodes do not fit.
    #[error(
        "{members} replicas x {virtual_nodes} virtual nodes (hashing.virtual_nodes) need {} slots, \
         more than the {slots} of hashing.slots",
        *members as u64 * u64::from(*virtual_nodes)
    )]
    Full {
        /// N.
        members: usize,
        /// K.
        virtual_nodes: u32,
        /// M.
        slots: u32,
    },
    /// A Maglev table size that is not prime.
    #[error("hashing.table_size must be a prime, found {0}")]
    TableSizeNotPrime(u32),
    /// A Maglev table smaller than the member count.
    #[error("hashing.table_size ({table_size}) must be at least the replica count ({members})")]
    TableTooSmall {
        /// The table size.
        table_size: u32,
        /// N.
        members: usize,
    },
    /// A Maglev table above [`maglev::MAX_TABLE_SIZE`].
    #[error("hashing.table_size must be at most {max}, found {table_size}")]
    TableTooLarge {
        /// The table size.
        table_size: u32,
        /// The limit.
        max: u32,
    },
}

/// True if `n` is prime (trial division; at most 2^16 / 2 divisions for any `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// One algorithm, built once from the whole member list, immutable afterwards.
pub trait Selector: Send + Sync {
    /// Replicas for `key` in order of preference: the first choice, then distinct fallbacks; every
    /// member at most once; ends after all members were yielded (bounded); empty ring -> empty
    /// iterator. Items are indices into the member slice the selector was built from.
    fn candidates(&self, key: u64) -> Candidates<'_>;
    /// Each member's share of the key space, in the order of the members given to build; sums to
    /// 1.0 for a non-empty ring.
    fn shares(&self) -> Vec<f64>;
    /// The member count.
    fn len(&self) -> usize;
    /// True for a ring without members.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The members a [`Candidates`] walk has yielded, from its second item on.
#[derive(Clone, Debug)]
enum Seen {
    /// A bitset for rings of up to 128 members.
    Inline(u128),
    /// A bitset on the heap beyond 128 members.
    Heap(Box<[u64]>),
}

impl Seen {
    /// The set holding just `first`, for a ring of `members`.
    fn with(first: u32, members: u32) -> Seen {
        let mut seen = if members <= 128 {
            Seen::Inline(0)
        } else {
            Seen::Heap(vec![0; members.div_ceil(64) as usize].into_boxed_slice())
        };
        seen.insert(first);
        seen
    }

    /// Marks `member`; false if it was marked already (or is out of range, which a ring's walk
    /// never holds).
    #[inline]
    fn insert(&mut self, member: u32) -> bool {
        match self {
            Seen::Inline(bits) => {
                let Some(bit) = 1u128.checked_shl(member) else {
                    return false;
                };
                let fresh = *bits & bit == 0;
                *bits |= bit;
                fresh
            }
            Seen::Heap(words) => {
                let Some(word) = words.get_mut((member / 64) as usize) else {
                    return false;
                };
                let bit = 1u64 << (member % 64);
                let fresh = *word & bit == 0;
                *word |= bit;
                fresh
            }
        }
    }
}

/// How far a [`Candidates`] walk has got.
#[derive(Clone, Debug)]
enum State {
    /// Nothing yielded: the first item needs no set at all.
    Fresh,
    /// Only the first item, kept without a set until a second is asked for.
    One(u32),
    /// Later items: the set of members yielded.
    Set(Seen),
}

/// Replicas for one key in order of preference (an iterator of member indices).
///
/// A walk over a ring's array of member indices from the key's position, forward and wrapping,
/// skipping members already yielded. It ends once every member was yielded or after one full turn,
/// whichever comes first. The first item costs one array read and allocates nothing; from the
/// second on the walk keeps a bitset (inline up to 128 members, on the heap beyond).
#[derive(Clone, Debug)]
pub struct Candidates<'a> {
    walk: &'a [u32],
    /// The next index of `walk` to read.
    position: usize,
    /// Entries of `walk` not read yet in this turn.
    steps_left: usize,
    /// Members not yielded yet.
    members_left: u32,
    members: u32,
    state: State,
}

impl<'a> Candidates<'a> {
    /// A walk over `walk` (member indices below `members`, each member present at least once)
    /// entering at `start`.
    #[inline]
    pub(crate) fn new(walk: &'a [u32], start: usize, members: usize) -> Candidates<'a> {
        let members = if walk.is_empty() { 0 } else { u32::try_from(members).unwrap_or(u32::MAX) };
        let position = if walk.is_empty() { 0 } else { start % walk.len() };
        Candidates {
            walk,
            position,
            steps_left: walk.len(),
            members_left: members,
            members,
            state: State::Fresh,
        }
    }

    /// Reads the entry at the current position and moves on, wrapping.
    #[inline]
    fn step(&mut self) -> u32 {
        let member = self.walk[self.position];
        self.position += 1;
        if self.position == self.walk.len() {
            self.position = 0;
        }
        self.steps_left -= 1;
        member
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.members_left == 0 || self.steps_left == 0 {
            return None;
        }
        match self.state {
            State::Fresh => {
                let member = self.step();
                self.state = State::One(member);
                self.members_left -= 1;
                return Some(member as usize);
            }
            State::One(first) => self.state = State::Set(Seen::with(first, self.members)),
            State::Set(_) => {}
        }
        let State::Set(seen) = &mut self.state else {
            return None;
        };
        while self.steps_left > 0 {
            let member = self.walk[self.position];
            self.position += 1;
            if self.position == self.walk.len() {
                self.position = 0;
            }
            self.steps_left -= 1;
            if seen.insert(member) {
                self.members_left -= 1;
                return Some(member as usize);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // A walk over a valid ring yields every member left, but a bound must not rely on that.
        (0, Some((self.members_left as usize).min(self.steps_left)))
    }
}

impl std::iter::FusedIterator for Candidates<'_> {}

/// The algorithm inside a [`Ring`].
#[derive(Clone, Debug)]
enum Inner {
    Maglev(maglev::Maglev),
    Slots(slots::SlotRing),
}

/// The built selector for a [`RingConfig`]: Maglev or the slot ring, immutable once built.
#[derive(Clone, Debug)]
pub struct Ring {
    config: RingConfig,
    inner: Inner,
}

impl Ring {
    /// Builds the ring of `config` over `members`; candidates are indices into `members`.
    ///
    /// # Errors
    /// A configuration that cannot hold the members (see [`RingError`]); checked also when
    /// `members` is empty.
    pub fn build(config: &RingConfig, members: &[Member]) -> Result<Ring, RingError> {
        let inner = match config.algorithm {
            Algorithm::Maglev => Inner::Maglev(maglev::Maglev::build(config.table_size, members)?),
            Algorithm::Ring => Inner::Slots(slots::SlotRing::build(config, members)?),
        };
        Ok(Ring { config: *config, inner })
    }

    /// A ring without members and the default configuration: every key gets no candidate (what
    /// serves before the first replica is ready).
    pub fn empty() -> Ring {
        Ring { config: RingConfig::default(), inner: Inner::Maglev(maglev::Maglev::empty()) }
    }

    /// The configuration the ring was built with.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The Maglev table, when the algorithm is Maglev.
    pub fn as_maglev(&self) -> Option<&maglev::Maglev> {
        match &self.inner {
            Inner::Maglev(m) => Some(m),
            Inner::Slots(_) => None,
        }
    }

    /// The slot ring, when the algorithm is the slot ring.
    pub fn as_slots(&self) -> Option<&slots::SlotRing> {
        match &self.inner {
            Inner::Maglev(_) => None,
            Inner::Slots(s) => Some(s),
        }
    }
}

impl Selector for Ring {
    #[inline]
    fn candidates(&self, key: u64) -> Candidates<'_> {
        match &self.inner {
            Inner::Maglev(m) => m.candidates(key),
            Inner::Slots(s) => s.candidates(key),
        }
    }

    fn shares(&self) -> Vec<f64> {
        match &self.inner {
            Inner::Maglev(m) => m.shares(),
            Inner::Slots(s) => s.shares(),
        }
    }

    fn len(&self) -> usize {
        match &self.inner {
            Inner::Maglev(m) => m.len(),
            Inner::Slots(s) => s.len(),
        }
    }
}

/// Shares from per-member counts out of `total`.
fn shares_from_counts(counts: &[u64], total: u64) -> Vec<f64> {
    counts.iter().map(|c| if total == 0 { 0.0 } else { *c as f64 / total as f64 }).collect()
}

/// Member indices sorted by name, then id, then slice position: an order that does not depend on
/// the slice's order (except between exact duplicates, which are interchangeable).
fn name_order(members: &[Member]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|a, b| (&members[*a].name, members[*a].id, a).cmp(&(&members[*b].name, members[*b].id, b)));
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `server1` .. `serverN` with ids 1 .. N.
    pub(crate) fn members(n: usize) -> Vec<Member> {
        (1..=n).map(|i| Member { name: format!("server{i}"), id: i as u32 }).collect()
    }

    /// Every kind of ring, with enough slots for `n` members.
    pub(crate) fn configs(n: usize) -> Vec<RingConfig> {
        let slots = if n * 9 <= 512 { 512 } else { (n as u32 * 9).next_power_of_two() };
        let ring = RingConfig { algorithm: Algorithm::Ring, slots, ..RingConfig::default() };
        let mut all = vec![RingConfig::default()];
        for function in [HashFunction::Xxh3, HashFunction::Assignment] {
            for probing in [Probing::Linear, Probing::Quadratic] {
                all.push(RingConfig { function, probing, ..ring });
            }
        }
        all
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..60).filter(|n| is_prime(*n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]);
        let naive = |n: u32| n >= 2 && (2..n).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d));
        assert!((0..5000).all(|n| is_prime(n) == naive(n)));
        assert!(is_prime(65_537) && is_prime(131_071) && is_prime(4_294_967_291));
        assert!(!is_prime(65_536) && !is_prime(65_535) && !is_prime(u32::MAX) && !is_prime(4_294_836_225));
    }

    #[test]
    fn config_names_and_defaults() {
        let c = RingConfig::default();
        assert_eq!(
            (c.algorithm, c.slots, c.virtual_nodes, c.function, c.probing, c.table_size),
            (Algorithm::Maglev, 512, 9, HashFunction::Xxh3, Probing::Linear, 65_537)
        );
        assert_eq!(Algorithm::default(), Algorithm::Maglev);
        assert_eq!(HashFunction::default(), HashFunction::Xxh3);
        assert_eq!(Probing::default(), Probing::Linear);
    }

    #[test]
    fn manifest_names_deserialize() {
        use serde::de::value::{Error, StrDeserializer};
        fn parse<T: for<'de> Deserialize<'de>>(name: &str) -> Result<T, Error> {
            T::deserialize(StrDeserializer::<Error>::new(name))
        }
        assert_eq!(parse::<Algorithm>("maglev"), Ok(Algorithm::Maglev));
        assert_eq!(parse::<Algorithm>("ring"), Ok(Algorithm::Ring));
        assert_eq!(parse::<HashFunction>("assignment"), Ok(HashFunction::Assignment));
        assert_eq!(parse::<HashFunction>("xxh3"), Ok(HashFunction::Xxh3));
        assert_eq!(parse::<Probing>("linear"), Ok(Probing::Linear));
        assert_eq!(parse::<Probing>("quadratic"), Ok(Probing::Quadratic));
        assert!(parse::<Algorithm>("Maglev").is_err());
        assert!(parse::<Probing>("cuckoo").is_err());
    }

    #[test]
    fn errors_name_the_manifest_field_and_the_numbers() {
        let full = RingError::Full { members: 60, virtual_nodes: 9, slots: 512 };
        assert_eq!(
            full.to_string(),
            "60 replicas x 9 virtual nodes (hashing.virtual_nodes) need 540 slots, more than the 512 of hashing.slots"
        );
        assert!(RingError::ZeroSlots.to_string().contains("hashing.slots"));
        assert!(RingError::ZeroVirtualNodes.to_string().contains("hashing.virtual_nodes"));
        assert_eq!(
            RingError::TableTooSmall { table_size: 5, members: 7 }.to_string(),
            "hashing.table_size (5) must be at least the replica count (7)"
        );
        assert_eq!(
            RingError::TableSizeNotPrime(65_536).to_string(),
            "hashing.table_size must be a prime, found 65536"
        );
    }

    #[test]
    fn candidates_walk_distinct_members_and_stop() {
        let walk = [0, 0, 1, 0, 2, 1];
        assert_eq!(Candidates::new(&walk, 3, 3).collect::<Vec<_>>(), [0, 2, 1]);
        assert_eq!(Candidates::new(&walk, 5, 3).collect::<Vec<_>>(), [1, 0, 2]);
        assert_eq!(Candidates::new(&walk, 6 + 4, 3).collect::<Vec<_>>(), [2, 1, 0]);
        // Stops after every member although the turn is not over, and stays stopped.
        let mut c = Candidates::new(&walk, 0, 3);
        assert_eq!(c.by_ref().take(3).count(), 3);
        assert_eq!((c.next(), c.next()), (None, None));
        // A member missing from the walk ends the walk after one turn, not in a loop.
        assert_eq!(Candidates::new(&[0, 0, 1], 2, 3).collect::<Vec<_>>(), [1, 0]);
        assert_eq!(Candidates::new(&[], 0, 0).count(), 0);
        assert_eq!(Candidates::new(&[], 7, 5).count(), 0);
    }

    #[test]
    fn the_seen_set_works_past_128_members() {
        for n in [127u32, 128, 129, 200, 300] {
            let walk: Vec<u32> = (0..n).chain(0..n).rev().collect();
            let got: Vec<usize> = Candidates::new(&walk, 7, n as usize).collect();
            assert_eq!(got.len(), n as usize);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n as usize).collect::<Vec<_>>());
        }
    }

    #[test]
    fn every_algorithm_yields_every_member_once_and_an_empty_ring_nothing() {
        for n in [1usize, 2, 7, 60, 130] {
            for config in configs(n) {
                let ring = Ring::build(&config, &members(n)).unwrap();
                assert_eq!((ring.len(), ring.is_empty(), ring.config()), (n, false, &config));
                for key in [0u64, 1, 123_456, 999_999, u64::MAX] {
                    let got: Vec<usize> = ring.candidates(key).collect();
                    let mut sorted = got.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "{config:?} key {key}");
                    if n == 1 {
                        assert_eq!(got, [0]);
                    }
                }
                let shares = ring.shares();
                assert_eq!(shares.len(), n);
                assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{config:?}");
                let empty = Ring::build(&config, &[]).unwrap();
                assert!(empty.is_empty());
                assert_eq!(empty.candidates(42).count(), 0);
                assert!(empty.shares().is_empty());
            }
        }
        let empty = Ring::empty();
        assert_eq!((empty.len(), empty.candidates(1).next()), (0, None));
        assert_eq!(empty.config(), &RingConfig::default());
    }

    #[test]
    fn bad_configs_are_errors_even_without_members() {
        let ring = RingConfig { algorithm: Algorithm::Ring, ..RingConfig::default() };
        let cases = [
            (RingConfig { slots: 0, ..ring }, RingError::ZeroSlots),
            (RingConfig { virtual_nodes: 0, ..ring }, RingError::ZeroVirtualNodes),
            (
                RingConfig { table_size: 65_536, ..RingConfig::default() },
                RingError::TableSizeNotPrime(65_536),
            ),
        ];
        for (config, error) in cases {
            assert_eq!(Ring::build(&config, &[]).unwrap_err(), error);
            assert_eq!(Ring::build(&config, &members(3)).unwrap_err(), error);
        }
    }

    fn names_of(list: &[Member], ring: &Ring, key: u64) -> Vec<String> {
        ring.candidates(key).map(|i| list[i].name.clone()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Same config and members -> same candidates; reordering the slice changes nothing but
        /// the indices (maglev and xxh3 place by name, assignment by id: the pairs move together).
        #[test]
        fn candidates_are_deterministic_and_ignore_slice_order(
            names in proptest::collection::btree_set("[a-z0-9-]{1,12}", 1..40),
            shuffle in any::<proptest::sample::Index>(),
            keys in proptest::collection::vec(any::<u64>(), 20),
        ) {
            let list: Vec<Member> =
                names.iter().enumerate().map(|(i, n)| Member { name: n.clone(), id: i as u32 + 1 }).collect();
            let mut other = list.clone();
            let pivot = shuffle.index(list.len());
            other.rotate_left(pivot);
            other.reverse();
            for config in configs(list.len()) {
                let a = Ring::build(&config, &list).unwrap();
                let b = Ring::build(&config, &list).unwrap();
                let c = Ring::build(&config, &other).unwrap();
                for key in &keys {
                    let first = names_of(&list, &a, *key);
                    prop_assert_eq!(&first, &names_of(&list, &b, *key));
                    prop_assert_eq!(&first, &names_of(&other, &c, *key), "{:?}", config);
                }
            }
        }

        /// Candidates are distinct, cover every member exactly once, and the first one is what the
        /// algorithm's own primary lookup gives.
        #[test]
        fn candidates_cover_every_member_once(n in 1usize..150, key: u64) {
            let list = members(n);
            for config in configs(n) {
                let ring = Ring::build(&config, &list).unwrap();
                let got: Vec<usize> = ring.candidates(key).collect();
                let mut sorted = got.clone();
                sorted.sort_unstable();
                prop_assert_eq!(&sorted, &(0..n).collect::<Vec<_>>());
                let primary = match (ring.as_maglev(), ring.as_slots()) {
                    (Some(m), _) => m.primary(key),
                    (_, Some(s)) => s.primary(key),
                    _ => unreachable!(),
                };
                prop_assert_eq!(Some(got[0]), primary);
            }
        }

        /// For assignment the ids decide: renaming every member changes no candidate.
        #[test]
        fn assignment_ignores_names(n in 1usize..50, key: u64, probing in prop_oneof![Just(Probing::Linear), Just(Probing::Quadratic)]) {
            let config = RingConfig { algorithm: Algorithm::Ring, function: HashFunction::Assignment, probing, slots: 512, ..RingConfig::default() };
            let list = members(n);
            let renamed: Vec<Member> = list.iter().map(|m| Member { name: format!("x{}", 1000 - m.id), id: m.id }).collect();
            let a = Ring::build(&config, &list).unwrap();
            let b = Ring::build(&config, &renamed).unwrap();
            prop_assert_eq!(a.candidates(key).collect::<Vec<_>>(), b.candidates(key).collect::<Vec<_>>());
        }
    }
}
