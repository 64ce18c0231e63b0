//! The slot ring: M slots, K virtual nodes per member; a key is served by the first occupied slot
//! clockwise from its own slot, inclusive, wrapping.
//!
//! With `function: assignment` this is the exercise exactly: virtual node j of server i (the
//! member's 1-based `id`) goes to Phi(i, j) = i^2 + j^2 + 2j + 25 (mod M), servers placed in
//! ascending id and j ascending within a server; a taken slot is resolved by linear probing
//! (s + 1, s + 2, ...) or quadratic probing (s + 1, s + 4, s + 9, ..., then a linear scan if M tries
//! found nothing); request id i starts at H(i) = i^2 + 2i + 17 (mod M).
//!
//! With `function: xxh3` virtual node j of a member goes to `xxh3_64_with_seed(name, j) mod M`,
//! members placed in name order, so a replica keeps its slots across restarts and reorderings of
//! the member list; a key starts at `mix64(key) mod M`.
//!
//! Lookup is O(1): the occupied slots are compacted into an array of owners in slot order, and a
//! per-slot index gives the first occupied slot at or after each slot. Fallbacks walk that array on.

use super::hash::{assignment_request_slot, assignment_virtual_node_slot, mix64, name_hash, narrow};
use super::{
    Candidates, HashFunction, Member, Probing, RingConfig, RingError, Selector, name_order,
    shares_from_counts,
};

/// The largest accepted M (the ring keeps a 4-byte index per slot: 16 MiB at most).
pub const MAX_SLOTS: u32 = 1 << 22;

/// A free slot in the occupancy table used while building.
const FREE: u32 = u32::MAX;

/// One placed virtual node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualNode {
    /// The member's index in the slice the ring was built from.
    pub member: usize,
    /// Which of the member's K virtual nodes (0-based).
    pub j: u32,
    /// The slot its hash gave (Phi or xxh3).
    pub home: u32,
    /// The slot it got after probing (`home` unless that was taken).
    pub slot: u32,
}

/// A built slot ring.
#[derive(Clone, Debug)]
pub struct SlotRing {
    slots: u32,
    function: HashFunction,
    members: usize,
    /// Member index of each occupied slot, in slot order.
    owners: Vec<u32>,
    /// Per slot: the index in `owners` of the first occupied slot at or after it, wrapping (empty
    /// without members).
    next: Vec<u32>,
    /// Every virtual node in placement order.
    placed: Vec<VirtualNode>,
    shares: Vec<f64>,
}

impl SlotRing {
    /// Builds the ring of `config.slots`, `config.virtual_nodes`, `config.function` and
    /// `config.probing` over `members` (candidates index `members`).
    ///
    /// # Errors
    /// [`RingError::ZeroSlots`], [`RingError::ZeroVirtualNodes`], [`RingError::TooManySlots`] above
    /// [`MAX_SLOTS`], and [`RingError::Full`] when N x K > M.
    pub fn build(config: &RingConfig, members: &[Member]) -> Result<SlotRing, RingError> {
        let (m, k) = (config.slots, config.virtual_nodes);
        if m == 0 {
            return Err(RingError::ZeroSlots);
        }
        if k == 0 {
            return Err(RingError::ZeroVirtualNodes);
        }
        if m > MAX_SLOTS {
            return Err(RingError::TooManySlots { slots: m, max: MAX_SLOTS });
        }
        let full = RingError::Full { members: members.len(), virtual_nodes: k, slots: m };
        if members.len() as u64 * u64::from(k) > u64::from(m) {
            return Err(full);
        }
        let order = match config.function {
            HashFunction::Assignment => {
                let mut order: Vec<usize> = (0..members.len()).collect();
                order.sort_by(|a, b| {
                    (members[*a].id, &members[*a].name, a).cmp(&(members[*b].id, &members[*b].name, b))
                });
                order
            }
            HashFunction::Xxh3 => name_order(members),
        };
        let mut occupancy = vec![FREE; m as usize];
        let mut placed = Vec::with_capacity(members.len() * k as usize);
        for member in order {
            // N x K <= M <= 2^22, so member indices fit.
            let index = u32::try_from(member).map_err(|_| full.clone())?;
            for j in 0..k {
                let home = match config.function {
                    HashFunction::Assignment => {
                        assignment_virtual_node_slot(u64::from(members[member].id), u64::from(j), m)
                    }
                    HashFunction::Xxh3 => {
                        narrow(name_hash(&members[member].name, u64::from(j)) % u64::from(m))
                    }
                };
                // Never None: fewer than M virtual nodes are placed before this one, and the
                // linear scan visits every slot.
                let slot = probe(&occupancy, home, config.probing).ok_or_else(|| full.clone())?;
                occupancy[slot as usize] = index;
                placed.push(VirtualNode { member, j, home, slot });
            }
        }
        let owners: Vec<u32> = occupancy.iter().copied().filter(|o| *o != FREE).collect();
        let mut next = Vec::new();
        if !owners.is_empty() {
            next = vec![0u32; m as usize];
            // Backwards: each slot gets the index of the next occupied one; the slots after the
            // last occupied one wrap to index 0.
            let mut index = narrow(owners.len() as u64);
            let mut upcoming = 0;
            for (slot, owner) in occupancy.iter().enumerate().rev() {
                if *owner != FREE {
                    index -= 1;
                    upcoming = index;
                }
                next[slot] = upcoming;
            }
        }
        let mut ring = SlotRing {
            slots: m,
            function: config.function,
            members: members.len(),
            owners,
            next,
            placed,
            shares: vec![],
        };
        ring.shares = ring.count_shares();
        Ok(ring)
    }

    /// The slot a key starts from: H(key) for assignment, `mix64(key) mod M` for xxh3.
    #[inline]
    pub fn key_slot(&self, key: u64) -> u32 {
        match self.function {
            HashFunction::Assignment => assignment_request_slot(key, self.slots),
            HashFunction::Xxh3 => narrow(mix64(key) % u64::from(self.slots)),
        }
    }

    /// The candidates of a key whose slot is `slot` (taken mod M): the owners of the occupied
    /// slots from `slot` on, clockwise, each member once.
    #[inline]
    pub fn candidates_at(&self, slot: u32) -> Candidates<'_> {
        let start = self.next.get((slot % self.slots) as usize).map_or(0, |i| *i as usize);
        Candidates::new(&self.owners, start, self.members)
    }

    /// The member serving `key`: the owner of the first occupied slot at or after its slot.
    #[inline]
    pub fn primary(&self, key: u64) -> Option<usize> {
        let index = self.next.get(self.key_slot(key) as usize)?;
        self.owners.get(*index as usize).map(|m| *m as usize)
    }

    /// Every virtual node in placement order (members by id or by name, j ascending).
    pub fn virtual_nodes(&self) -> &[VirtualNode] {
        &self.placed
    }

    /// Per-slot owner counts: how many keys' slots each member serves, out of M.
    ///
    /// For xxh3 a key's slot is uniform over the M slots, so a member counts the slots from just
    /// after the previous virtual node to its own (its arc). For assignment a key's slot is H(key),
    /// which depends on `key mod M` only, and integer keys are uniform over those residues, so a
    /// member counts the residues r whose H(r) lands in its arcs: this shows H's skew (it reaches
    /// only a few slots) where the arcs alone would hide it.
    fn count_shares(&self) -> Vec<f64> {
        let mut counts = vec![0u64; self.members];
        if self.owners.is_empty() {
            return shares_from_counts(&counts, 0);
        }
        for r in 0..self.slots {
            let slot = match self.function {
                HashFunction::Assignment => assignment_request_slot(u64::from(r), self.slots),
                HashFunction::Xxh3 => r,
            };
            counts[self.owners[self.next[slot as usize] as usize] as usize] += 1;
        }
        shares_from_counts(&counts, u64::from(self.slots))
    }
}

/// The slot a virtual node whose hash is `home` takes, given the slots taken so far (`FREE` where
/// not): `home` if free, else the first free one of the probe sequence; `None` if every slot is
/// taken.
///
/// Quadratic probing tries home + t^2 (mod M) for t = 1, 2, ...; since (M - t)^2 = t^2 (mod M), the
/// tries t <= M/2 reach every slot that M tries reach, in the same order of first visit, so they
/// find the same slot. If none is free (the squares mod M are few, e.g. 3 of 8 for M = 8), the
/// linear scan home + 1, home + 2, ... decides.
fn probe(taken: &[u32], home: u32, probing: Probing) -> Option<u32> {
    let m = taken.len() as u64;
    let home = u64::from(home) % m.max(1);
    let free = |slot: &u64| taken[*slot as usize] == FREE;
    let linear = || (0..m).map(|t| (home + t) % m).find(free);
    let slot = match probing {
        Probing::Linear => linear(),
        // t <= M/2 < 2^31, so t * t < 2^62.
        Probing::Quadratic => (0..=m / 2).map(|t| (home + t * t % m) % m).find(free).or_else(linear),
    };
    slot.map(narrow)
}

impl Selector for SlotRing {
    #[inline]
    fn candidates(&self, key: u64) -> Candidates<'_> {
        if self.owners.is_empty() {
            return Candidates::new(&[], 0, 0);
        }
        self.candidates_at(self.key_slot(key))
    }

    /// For xxh3, the slots each member serves (its arcs) over M: a key's slot is uniform. For
    /// assignment, the residues r mod M whose H(r) lands in the member's arcs, over M: a key's slot
    /// depends on `key mod M` only, so this is the share of integer keys, skew of H included.
    fn shares(&self) -> Vec<f64> {
        self.shares.clone()
    }

    fn len(&self) -> usize {
        self.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Algorithm;
    use crate::ring::tests::members;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn config(function: HashFunction, probing: Probing) -> RingConfig {
        RingConfig { algorithm: Algorithm::Ring, function, probing, ..RingConfig::default() }
    }

    fn exercise(probing: Probing) -> RingConfig {
        config(HashFunction::Assignment, probing)
    }

    /// The slots of the member with `id`, in j order.
    fn slots_of(ring: &SlotRing, list: &[Member], id: u32) -> Vec<u32> {
        ring.virtual_nodes().iter().filter(|v| list[v.member].id == id).map(|v| v.slot).collect()
    }

    /// The server id serving request `i`.
    fn server(ring: &SlotRing, list: &[Member], i: u64) -> u32 {
        list[ring.candidates(i).next().unwrap()].id
    }

    /// Slot -> owner by brute force: scan clockwise from `slot` for a virtual node.
    fn owner_by_scan(ring: &SlotRing, slot: u32) -> usize {
        let by_slot: BTreeMap<u32, usize> = ring.virtual_nodes().iter().map(|v| (v.slot, v.member)).collect();
        let (_, owner) = by_slot.range(slot..).next().or_else(|| by_slot.iter().next()).unwrap();
        *owner
    }

    #[test]
    fn the_exercise_at_n3_matches_hand_computation_for_both_probings() {
        // Phi(i, j) = i^2 + 25 + (j^2 + 2j), and j^2 + 2j = 0 3 8 15 24 35 48 63 80:
        //   server 1: 26 29 34 41 50 61 74 89 106 (no collisions)
        //   server 2: 29 32 37 44 53 64 77 92 109: 29 is server 1's -> 30 (linear: 29 + 1;
        //             quadratic: 29 + 1^2, the same)
        //   server 3: 34 37 42 49 58 69 82 97 114: 34 is server 1's -> 35, 37 server 2's -> 38
        //             (both probings take the +1 slot: free)
        let list = members(3);
        for probing in [Probing::Linear, Probing::Quadratic] {
            let ring = SlotRing::build(&exercise(probing), &list).unwrap();
            assert_eq!(slots_of(&ring, &list, 1), [26, 29, 34, 41, 50, 61, 74, 89, 106]);
            assert_eq!(slots_of(&ring, &list, 2), [30, 32, 37, 44, 53, 64, 77, 92, 109]);
            assert_eq!(slots_of(&ring, &list, 3), [35, 38, 42, 49, 58, 69, 82, 97, 114]);
            // Requests, H(i) = i^2 + 2i + 17 -> first virtual node at or after it:
            //   H(0) = 17 -> 26 (1); H(3) = 32 -> 32 (2); H(5) = 52 -> 53 (2); H(6) = 65 -> 69 (3)
            //   H(7) = 80 -> 82 (3); H(8) = 97 -> 97 (3); H(9) = 116 -> past 114, wraps to 26 (1)
            //   H(123456) = 145 -> wraps (1); H(100000) = 337 -> wraps (1)
            //   100355 = 3 (mod 512) -> H = 32 (2); 100358 = 6 -> 65 (3); 100360 = 8 -> 97 (3)
            let ids = [0u64, 3, 5, 6, 7, 8, 9, 123_456, 100_000, 100_355, 100_358, 100_360];
            let got: Vec<u32> = ids.iter().map(|i| server(&ring, &list, *i)).collect();
            assert_eq!(got, [1, 2, 2, 3, 3, 3, 1, 1, 1, 2, 3, 3], "{probing:?}");
            // Fallbacks continue clockwise: H(6) = 65 -> 69 (3), 74 (1), 77 (2).
            let order: Vec<u32> = ring.candidates(6).map(|m| list[m].id).collect();
            assert_eq!(order, [3, 1, 2]);
        }
    }

    #[test]
    fn the_exercise_at_n4_differs_between_linear_and_quadratic_probing() {
        // Server 4: Phi(4, j) = 41 44 49 56 65 76 89 104 121, with servers 1-3 as above.
        //   linear:    41 taken, 42 taken (3) -> 43; 44 (2) -> 45; 49 (3), 50 (1) -> 51; 56; 65; 76;
        //              89 (1) -> 90; 104; 121
        //   quadratic: 41, 41+1 taken -> 41+4 = 45; 44 (2), 45 (4, just placed) -> 44+4 = 48;
        //              49, 50, 53 (2), 58 (3) taken -> 49+16 = 65; 56; 65 (4) -> 66; 76; 89 -> 90;
        //              104; 121
        let list = members(4);
        let linear = SlotRing::build(&exercise(Probing::Linear), &list).unwrap();
        let quadratic = SlotRing::build(&exercise(Probing::Quadratic), &list).unwrap();
        assert_eq!(slots_of(&linear, &list, 4), [43, 45, 51, 56, 65, 76, 90, 104, 121]);
        assert_eq!(slots_of(&quadratic, &list, 4), [45, 48, 65, 56, 66, 76, 90, 104, 121]);
        // The other servers are placed first, so they are where they were at N = 3.
        for id in 1..=3 {
            assert_eq!(slots_of(&linear, &list, id), slots_of(&quadratic, &list, id));
        }
        // H(9) = 116 -> 121 (4) now, no longer wrapping to server 1; H(6) = 65 -> server 4 either way.
        let ids = [0u64, 3, 5, 6, 7, 8, 9, 123_456];
        for ring in [&linear, &quadratic] {
            let got: Vec<u32> = ids.iter().map(|i| server(ring, &list, *i)).collect();
            assert_eq!(got, [1, 2, 2, 4, 3, 3, 4, 1]);
        }
        // Where the owners differ: 43 (linear: 4 at 43; quadratic: 2 at 44), 46-48 (linear: 3 at
        // 49; quadratic: 4 at 48), 51 (4 at 51; 2 at 53) and 66 (3 at 69; 4 at 66).
        let at = |ring: &SlotRing, slot| list[ring.candidates_at(slot).next().unwrap()].id;
        let differ: Vec<u32> = (0..512).filter(|s| at(&linear, *s) != at(&quadratic, *s)).collect();
        assert_eq!(differ, [43, 46, 47, 48, 51, 66]);
        assert_eq!(
            [43, 46, 51, 66].map(|s| (at(&linear, s), at(&quadratic, s))),
            [(4, 2), (3, 4), (4, 2), (3, 4)]
        );
        // None of them is a square + 16 mod 512, so H never starts a request there: at N = 4 no
        // request id at all sees the difference between the probings.
        assert!(differ.iter().all(|s| (0..512u64).all(|i| assignment_request_slot(i, 512) != *s)));
        assert!((0..512u64).all(|i| server(&linear, &list, i) == server(&quadratic, &list, i)));
    }

    #[test]
    fn quadratic_probing_falls_back_to_a_linear_scan_and_terminates() {
        // M = 8, one server with K = 8 (a full ring). Phi(1, j) = 26 + j^2 + 2j mod 8:
        // 2 5 2 1 2 5 2 1. The squares mod 8 are 0, 1, 4, so quadratic probing from s only ever
        // tries s, s + 1, s + 4:
        //   j0: 2. j1: 5. j2: 2 taken -> 3. j3: 1. j4: 2, 3 taken -> 6.
        //   j5: 5, 6, 1 taken -> linear 6, 7 -> 7. j6: 2, 3, 6 taken -> linear 3, 4 -> 4.
        //   j7: 1, 2, 5 taken -> linear 2, 3, ..., 7, 0 -> 0.
        let cfg = RingConfig { slots: 8, virtual_nodes: 8, ..exercise(Probing::Quadratic) };
        let ring = SlotRing::build(&cfg, &members(1)).unwrap();
        let got: Vec<(u32, u32)> = ring.virtual_nodes().iter().map(|v| (v.home, v.slot)).collect();
        assert_eq!(got, [(2, 2), (5, 5), (2, 3), (1, 1), (2, 6), (5, 7), (2, 4), (1, 0)]);
        // Full rings of every shape terminate with every slot taken, for both probings.
        for m in [1u32, 2, 3, 8, 16, 17, 512] {
            for k in [1, m / 2, m].into_iter().filter(|k| *k > 0 && m % k == 0) {
                for probing in [Probing::Linear, Probing::Quadratic] {
                    for function in [HashFunction::Assignment, HashFunction::Xxh3] {
                        let cfg = RingConfig { slots: m, virtual_nodes: k, ..config(function, probing) };
                        let ring = SlotRing::build(&cfg, &members((m / k) as usize)).unwrap();
                        let slots: BTreeSet<u32> = ring.virtual_nodes().iter().map(|v| v.slot).collect();
                        assert_eq!(slots.len(), m as usize, "M={m} K={k} {probing:?} {function:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_full_ring_and_zero_or_huge_sizes_are_errors() {
        // 57 x 9 = 513 > 512, quadratic or not: an error, not a hang.
        for probing in [Probing::Linear, Probing::Quadratic] {
            let cfg = exercise(probing);
            assert!(SlotRing::build(&cfg, &members(56)).is_ok());
            assert_eq!(
                SlotRing::build(&cfg, &members(57)).unwrap_err(),
                RingError::Full { members: 57, virtual_nodes: 9, slots: 512 }
            );
        }
        let cfg = config(HashFunction::Xxh3, Probing::Linear);
        assert_eq!(SlotRing::build(&RingConfig { slots: 0, ..cfg }, &[]).unwrap_err(), RingError::ZeroSlots);
        assert_eq!(
            SlotRing::build(&RingConfig { virtual_nodes: 0, ..cfg }, &members(1)).unwrap_err(),
            RingError::ZeroVirtualNodes
        );
        assert_eq!(
            SlotRing::build(&RingConfig { slots: MAX_SLOTS + 1, ..cfg }, &members(1)).unwrap_err(),
            RingError::TooManySlots { slots: MAX_SLOTS + 1, max: MAX_SLOTS }
        );
    }

    #[test]
    fn assignment_shares_count_key_residues_through_h() {
        // N = 3, M = 512: of the 512 residues r, H(r) = (r + 1)^2 + 16 lands on 87 slots; count
        // where each residue's key is served.
        let list = members(3);
        let ring = SlotRing::build(&exercise(Probing::Linear), &list).unwrap();
        let mut counts = [0u32; 3];
        for r in 0..512u64 {
            counts[ring.candidates(r).next().unwrap()] += 1;
        }
        let expected: Vec<f64> = counts.iter().map(|c| f64::from(*c) / 512.0).collect();
        assert_eq!(ring.shares(), expected);
        // The skew: server 1 serves every key whose H wraps past 114, most of them.
        assert!(counts[0] > counts[1] + counts[2], "{counts:?}");
    }

    /// The slots a virtual node with `home` tried before taking `slot`, in order.
    fn probe_path(home: u32, slot: u32, m: u32, probing: Probing) -> Vec<u32> {
        let (home, m64) = (u64::from(home), u64::from(m));
        let tries = if probing == Probing::Quadratic { m64 / 2 + 1 } else { 0 };
        let quadratic = (0..tries).map(|t| (home + t * t) % m64);
        let linear = (0..m64).map(|t| (home + t) % m64);
        let mut path = vec![];
        for s in quadratic.chain(linear) {
            path.push(s as u32);
            if s as u32 == slot {
                return path;
            }
        }
        panic!("slot {slot} is not on the probe path from {home}");
    }

    /// What removing member `removed` from `all` does to an xxh3 ring, checked exhaustively over
    /// the M start slots: (remaining members' virtual nodes all stayed, slots whose owner changed
    /// although it was not the removed member).
    fn remove_and_compare(cfg: &RingConfig, all: &[Member], removed: usize) -> (bool, usize) {
        let rest: Vec<Member> =
            all.iter().enumerate().filter(|(i, _)| *i != removed).map(|(_, m)| m.clone()).collect();
        let full = SlotRing::build(cfg, all).unwrap();
        let less = SlotRing::build(cfg, &rest).unwrap();
        let nodes = |ring: &SlotRing, list: &[Member]| -> BTreeSet<(String, u32, u32)> {
            ring.virtual_nodes()
                .iter()
                .filter(|v| list[v.member].name != all[removed].name)
                .map(|v| (list[v.member].name.clone(), v.j, v.slot))
                .collect()
        };
        let stayed = nodes(&full, all) == nodes(&less, &rest);
        // The sufficient condition: no remaining virtual node's probe path crossed a slot of the
        // removed member. It implies that everything stayed.
        let removed_slots: BTreeSet<u32> =
            full.virtual_nodes().iter().filter(|v| v.member == removed).map(|v| v.slot).collect();
        let untouched = full.virtual_nodes().iter().filter(|v| v.member != removed).all(|v| {
            probe_path(v.home, v.slot, cfg.slots, cfg.probing).iter().all(|s| !removed_slots.contains(s))
        });
        assert!(!untouched || stayed, "no probe crossed the removed member, yet a virtual node moved");
        let mut moved_others = 0;
        for slot in 0..cfg.slots {
            let before: Vec<&str> = full.candidates_at(slot).take(2).map(|m| all[m].name.as_str()).collect();
            let after = rest[less.candidates_at(slot).next().unwrap()].name.as_str();
            if before[0] != all[removed].name {
                if before[0] != after {
                    moved_others += 1;
                }
            } else if stayed {
                // A removed member's key goes to its old second candidate.
                assert_eq!(before[1], after, "slot {slot}");
            }
        }
        if stayed {
            assert_eq!(moved_others, 0, "virtual nodes stayed, so only the removed member's keys move");
        }
        (stayed, moved_others)
    }

    /// Removing a member from an xxh3 ring, for every member of rings of 2 to 56 members, both
    /// probings, M = 512 and 4096 with K = 9. Exact, always: when the other members' virtual nodes
    /// all stay where they were (guaranteed when no probe of theirs crossed a slot of the removed
    /// member), only the removed member's keys move, each to its old second candidate.
    ///
    /// Otherwise probing shifts cascade, and more the fuller the ring: measured with M = 512,
    /// linear probing, the other members' slots that change owner average 0.2% of M at N = 10,
    /// 1.6% at N = 30 and 12% at N = 56 (98% full, worst 18.6%); quadratic 0.4%, 1.4%, 5.1% (worst
    /// 8.4%). With M = 4096 the worst is 0.05%. Asserted: those figures as regression bounds.
    #[test]
    fn removing_an_xxh3_member_moves_only_its_keys_unless_a_probe_crossed_it() {
        for (slots, ns, worst_bound, mean_bound) in [
            (512u32, &[2usize, 3, 5, 10, 20, 30, 40, 50, 56][..], 0.20, 0.13),
            (4096, &[10, 30, 56][..], 0.001, 0.0005),
        ] {
            for probing in [Probing::Linear, Probing::Quadratic] {
                let cfg = RingConfig { slots, ..config(HashFunction::Xxh3, probing) };
                let (mut cases, mut stayed) = (0, 0);
                for &n in ns {
                    let all: Vec<Member> =
                        (1..=n).map(|i| Member { name: format!("web-{i}"), id: i as u32 }).collect();
                    let (mut worst, mut total) = (0, 0);
                    for removed in 0..n {
                        let (s, moved) = remove_and_compare(&cfg, &all, removed);
                        cases += 1;
                        stayed += usize::from(s);
                        worst = worst.max(moved);
                        total += moved;
                    }
                    let (worst, mean) =
                        (worst as f64 / f64::from(slots), total as f64 / (n as f64 * f64::from(slots)));
                    println!(
                        "M={slots} {probing:?} N={n}: other members' slots moved: worst {worst:.4}, mean {mean:.4}"
                    );
                    assert!(worst <= worst_bound && mean <= mean_bound, "M={slots} {probing:?} N={n}");
                    if n * 9 * 3 <= slots as usize {
                        // A third full or less.
                        assert!(worst <= 0.03, "M={slots} {probing:?} N={n}");
                    }
                }
                println!(
                    "M={slots} {probing:?}: {stayed} of {cases} removals left every other virtual node in place"
                );
            }
        }
    }

    #[test]
    fn slot_order_of_members_does_not_matter_for_xxh3() {
        let cfg =
            RingConfig { slots: 4096, virtual_nodes: 64, ..config(HashFunction::Xxh3, Probing::Quadratic) };
        let list = members(20);
        let mut shuffled = list.clone();
        shuffled.rotate_left(7);
        shuffled.swap(0, 5);
        let (a, b) = (SlotRing::build(&cfg, &list).unwrap(), SlotRing::build(&cfg, &shuffled).unwrap());
        for slot in 0..4096 {
            let x: Vec<&str> = a.candidates_at(slot).map(|m| list[m].name.as_str()).collect();
            let y: Vec<&str> = b.candidates_at(slot).map(|m| shuffled[m].name.as_str()).collect();
            assert_eq!(x, y);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Removal with few collisions (M = 65536): whenever the remaining virtual nodes stay put
        /// (always when no probe crossed the removed member), exactly the removed member's keys
        /// move, each to its old second candidate (checked in `remove_and_compare` over all M).
        #[test]
        fn removing_a_member_of_a_sparse_xxh3_ring(n in 2usize..10, removed: proptest::sample::Index, k in 1u32..24, quadratic: bool) {
            let probing = if quadratic { Probing::Quadratic } else { Probing::Linear };
            let cfg = RingConfig { slots: 65_536, virtual_nodes: k, ..config(HashFunction::Xxh3, probing) };
            let all = members(n);
            let (_, moved) = remove_and_compare(&cfg, &all, removed.index(n));
            prop_assert!(moved <= 64);
        }

        /// The first candidate is the owner of the first virtual node at or after the key's slot,
        /// and the shares are that count over the key space.
        #[test]
        fn lookups_and_shares_match_a_brute_force_scan(
            n in 1usize..20,
            k in 1u32..12,
            assignment: bool,
            quadratic: bool,
            keys in proptest::collection::vec(any::<u64>(), 16),
        ) {
            let function = if assignment { HashFunction::Assignment } else { HashFunction::Xxh3 };
            let probing = if quadratic { Probing::Quadratic } else { Probing::Linear };
            let cfg = RingConfig { slots: 512, virtual_nodes: k, ..config(function, probing) };
            let list = members(n);
            let ring = SlotRing::build(&cfg, &list).unwrap();
            for key in keys {
                let slot = ring.key_slot(key);
                let expected = match function {
                    HashFunction::Assignment => assignment_request_slot(key, 512),
                    HashFunction::Xxh3 => (mix64(key) % 512) as u32,
                };
                prop_assert_eq!(slot, expected);
                prop_assert_eq!(ring.primary(key), Some(owner_by_scan(&ring, slot)));
                prop_assert_eq!(ring.candidates(key).next(), ring.primary(key));
            }
            let mut counts = vec![0u32; n];
            for r in 0..512u32 {
                let slot = if assignment { assignment_request_slot(u64::from(r), 512) } else { r };
                counts[owner_by_scan(&ring, slot)] += 1;
            }
            let shares = ring.shares();
            prop_assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            for (share, count) in shares.iter().zip(&counts) {
                prop_assert_eq!(*share, f64::from(*count) / 512.0);
            }
        }
    }
}
