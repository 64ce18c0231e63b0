//! The hash rings (`ring::Ring`, Maglev and the slot ring) through their public API, on arbitrary
//! configurations, member lists and add/remove sequences.
//!
//! Checks:
//! - a configuration the manifest validator accepts for N replicas builds with N members; any
//!   other configuration builds or errors, never panics;
//! - every key gets candidates when there are members: distinct, every member exactly once, the
//!   first one the algorithm's primary; none without members;
//! - shares: one per member, summing to 1; Maglev gives every member floor(M/N) or ceil(M/N) of the
//!   M table entries (its documented evenness); the slot ring places exactly K virtual nodes per
//!   member on distinct slots;
//! - the ring depends on the members, not on their order in the slice (unique names and ids);
//! - after adding or removing one member, a key's first candidate changes only to or from that
//!   member whenever no other member's virtual node moved (slot ring), which is always the case
//!   when the changed member is the last to be placed.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringlb::manifest::Manifest;
use ringlb::ring::{Algorithm, HashFunction, Member, Probing, Ring, RingConfig, Selector};
use std::collections::{BTreeMap, BTreeSet};

/// Tables and slot rings above this many entries are shrunk (below it) to keep runs fast; sizes
/// above the rings' own limits are kept, since those are refused before anything is allocated.
const FAST: u32 = 1 << 17;
/// The most members of one ring (beyond 128 the candidate walk switches to a heap bitset).
const MAX_MEMBERS: usize = 300;

#[derive(Arbitrary, Debug)]
struct Input {
    maglev: bool,
    table_size: TableSize,
    slots: u32,
    virtual_nodes: u8,
    assignment: bool,
    quadratic: bool,
    max_replicas: u16,
    members: Vec<(Name, u32)>,
    changes: Vec<Change>,
    keys: Vec<u64>,
}

#[derive(Arbitrary, Debug)]
enum TableSize {
    Default,
    Small(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Name {
    /// `s0` .. `s255`: short names, duplicates likely.
    Short(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Change {
    Add(Name, u32),
    Remove(u16),
}

const PRIMES: [u32; 16] = [2, 3, 5, 7, 11, 13, 17, 31, 101, 257, 509, 1021, 4093, 6007, 65_521, 65_537];

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Short(i) => format!("s{i}"),
            Name::Any(s) => s.clone(),
        }
    }
}

fn shrink(size: u32, limit: u32) -> u32 {
    if size > FAST && size <= limit { size % FAST } else { size }
}

fuzz_target!(|input: Input| {
    let default = RingConfig::default();
    let table_size = match input.table_size {
        TableSize::Default => default.table_size,
        TableSize::Small(i) => PRIMES[usize::from(i) % PRIMES.len()],
        TableSize::Any(n) => shrink(n, ringlb::ring::maglev::MAX_TABLE_SIZE),
    };
    let config = RingConfig {
        algorithm: if input.maglev { Algorithm::Maglev } else { Algorithm::Ring },
        slots: shrink(input.slots, ringlb::ring::slots::MAX_SLOTS),
        virtual_nodes: u32::from(input.virtual_nodes),
        function: if input.assignment { HashFunction::Assignment } else { HashFunction::Xxh3 },
        probing: if input.quadratic { Probing::Quadratic } else { Probing::Linear },
        table_size,
    };
    let mut members: Vec<Member> = input
        .members
        .iter()
        .take(MAX_MEMBERS)
        .map(|(name, id)| Member { name: name.text(), id: *id })
        .collect();
    let mut keys = input.keys.clone();
    keys.truncate(16);
    keys.extend([0, 1, 123_456, 999_999, u64::MAX]);

    let mut before = check(&config, &members, &keys, input.max_replicas);
    for change in input.changes.iter().take(8) {
        let old = members.clone();
        let changed = match change {
            Change::Add(name, id) => {
                if members.len() >= MAX_MEMBERS {
                    continue;
                }
                members.push(Member { name: name.text(), id: *id });
                members.len() - 1
            }
            Change::Remove(i) => {
                if members.is_empty() {
                    continue;
                }
                usize::from(*i) % members.len()
            }
        };
        if matches!(change, Change::Remove(_)) {
            members.remove(changed);
        }
        let after = check(&config, &members, &keys, input.max_replicas);
        if let (Some(a), Some(b)) = (&before, &after) {
            let (small, large) = if members.len() > old.len() {
                ((a, &old), (b, &members))
            } else {
                ((b, &members), (a, &old))
            };
            stable(&config, small, large, &large.1[changed], &keys);
        }
        before = after;
    }
});

/// Builds the ring and checks everything that holds for one ring; `None` if it does not build.
fn check(config: &RingConfig, members: &[Member], keys: &[u64], max_replicas: u16) -> Option<Ring> {
    // What the manifest validator says about this configuration with this many replicas.
    let mut manifest = Manifest::parse("name: fuzz\n").expect("a minimal manifest");
    manifest.replicas = u32::try_from(members.len()).expect("few members");
    manifest.limits.max_replicas = u32::from(max_replicas);
    manifest.hashing.algorithm = config.algorithm;
    manifest.hashing.slots = config.slots;
    manifest.hashing.virtual_nodes = config.virtual_nodes;
    manifest.hashing.function = config.function;
    manifest.hashing.probing = config.probing;
    manifest.hashing.table_size = Some(config.table_size);
    let valid = manifest.validate().is_empty();

    let ring = match Ring::build(config, members) {
        Ok(ring) => ring,
        Err(error) => {
            assert!(!valid, "the validator accepts {config:?} with {} replicas, but: {error}", members.len());
            let _ = error.to_string();
            return None;
        }
    };
    let n = members.len();
    assert_eq!(ring.len(), n);
    assert_eq!(ring.is_empty(), n == 0);
    assert_eq!(ring.config(), config);
    let shares = ring.shares();
    assert_eq!(shares.len(), n);
    if n > 0 {
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "shares {shares:?}");
    }
    if let Some(maglev) = ring.as_maglev() {
        let size = maglev.table().len() as u64;
        let mut counts = vec![0u64; n];
        for m in maglev.table() {
            counts[*m as usize] += 1;
        }
        if n > 0 {
            assert_eq!(size, u64::from(config.table_size));
            let (lo, hi) = (size / n as u64, size.div_ceil(n as u64));
            assert!(counts.iter().all(|c| *c == lo || *c == hi), "uneven Maglev table: {counts:?}");
        }
    }
    if let Some(slots) = ring.as_slots() {
        let mut per_member = vec![0u32; n];
        let mut used = BTreeSet::new();
        for v in slots.virtual_nodes() {
            per_member[v.member] += 1;
            assert!(v.slot < config.slots && v.home < config.slots, "{v:?}");
            assert!(used.insert(v.slot), "two virtual nodes on slot {}", v.slot);
        }
        assert!(per_member.iter().all(|k| *k == config.virtual_nodes), "{per_member:?}");
        for key in keys {
            let slot = (*key % u64::from(u32::MAX)) as u32;
            let at: Vec<usize> = slots.candidates_at(slot).collect();
            every_member_once(&at, n);
        }
    }
    for key in keys {
        let got: Vec<usize> = ring.candidates(*key).collect();
        every_member_once(&got, n);
        let primary = match (ring.as_maglev(), ring.as_slots()) {
            (Some(m), _) => m.primary(*key),
            (_, Some(s)) => s.primary(*key),
            _ => unreachable!("a ring is one of the two"),
        };
        assert_eq!(got.first().copied(), primary, "first candidate vs primary for {key}");
    }
    order_independent(config, members, &ring, keys);
    Some(ring)
}

fn every_member_once(got: &[usize], n: usize) {
    let mut sorted = got.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "candidates {got:?} of {n} members");
}

/// What decides a member's place: its name (maglev, xxh3) or its id (assignment).
fn identity(config: &RingConfig, member: &Member) -> String {
    if config.algorithm == Algorithm::Ring && config.function == HashFunction::Assignment {
        member.id.to_string()
    } else {
        member.name.clone()
    }
}

/// True when no two members share a name or an id (then a member is known by either).
fn unique(members: &[Member]) -> bool {
    let names: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let ids: BTreeSet<u32> = members.iter().map(|m| m.id).collect();
    names.len() == members.len() && ids.len() == members.len()
}

/// The same members in another order give the same candidates (by member).
fn order_independent(config: &RingConfig, members: &[Member], ring: &Ring, keys: &[u64]) {
    if members.len() < 2 || members.len() > 40 || !unique(members) {
        return;
    }
    let mut reversed = members.to_vec();
    reversed.reverse();
    let other = Ring::build(config, &reversed).expect("the same members build in another order");
    for key in keys {
        let a: Vec<&Member> = ring.candidates(*key).map(|i| &members[i]).collect();
        let b: Vec<&Member> = other.candidates(*key).map(|i| &reversed[i]).collect();
        assert_eq!(a, b, "key {key}: the order of the members changed the candidates");
    }
}

/// `large` is `small` plus `changed`: the slot ring moves keys only to or from `changed` when no
/// other member's virtual node moved, and that is so when `changed` is placed last.
fn stable(
    config: &RingConfig,
    small: (&Ring, &Vec<Member>),
    large: (&Ring, &Vec<Member>),
    changed: &Member,
    keys: &[u64],
) {
    if !unique(large.1) {
        return;
    }
    let (Some(a), Some(b)) = (small.0.as_slots(), large.0.as_slots()) else {
        return; // Maglev promises evenness and little disruption, not none: checked in its tests.
    };
    let slots_of = |ring: &ringlb::ring::slots::SlotRing, list: &[Member]| -> BTreeMap<(String, u32), u32> {
        ring.virtual_nodes()
            .iter()
            .filter(|v| list[v.member] != *changed)
            .map(|v| ((identity(config, &list[v.member]), v.j), v.slot))
            .collect()
    };
    let unmoved = slots_of(a, small.1) == slots_of(b, large.1);
    let placed_last = large.1.iter().all(|m| {
        m == changed
            || match config.function {
                HashFunction::Assignment => m.id < changed.id,
                HashFunction::Xxh3 => m.name < changed.name,
            }
    });
    assert!(unmoved || !placed_last, "adding the member placed last moved other virtual nodes");
    if !unmoved {
        return;
    }
    let name =
        |ring: &Ring, list: &[Member], key: u64| ring.candidates(key).next().map(|i| list[i].name.clone());
    for key in keys {
        let (x, y) = (name(small.0, small.1, *key), name(large.0, large.1, *key));
        assert!(
            x == y || y.as_deref() == Some(changed.name.as_str()),
            "key {key} moved from {x:?} to {y:?}, not to {}",
            changed.name
        );
    }
}
