//! Hash functions of the rings: the exercise's H (request slot) and Phi (virtual node slot), exact
//! for any input and deliberately not "fixed"; xxh3 for request keys and replica names; and a 64-bit
//! finalizer that turns integer keys (consecutive request ids) into well-spread positions.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The hash of a request key's bytes (a client address, a header value, a path): xxh3-64.
#[inline]
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The hash of a replica name under `seed`: xxh3-64 seeded (distinct seeds give unrelated hashes).
#[inline]
pub fn name_hash(name: &str, seed: u64) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), seed)
}

/// MurmurHash3's 64-bit finalizer (fmix64): a bijection on u64 with full avalanche, so keys that
/// differ in one bit (request ids 100000, 100001, ...) land far apart.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The exercise's request slot H(i) = i^2 + 2i + 17 (mod `slots`), exact for every `i`.
///
/// Computed on `i mod slots` with every intermediate below 2^64, so it never overflows and equals
/// the value over the integers reduced mod `slots`. `slots == 0` is treated as 1 (always slot 0).
#[inline]
pub fn assignment_request_slot(i: u64, slots: u32) -> u32 {
    let m = u64::from(slots.max(1));
    let a = i % m; // < 2^32, so a * a < 2^64
    let sum = a * a % m + 2 * a + 17; // < 2^32 + 2^33 + 17
    narrow(sum % m)
}

/// The exercise's virtual node slot Phi(i, j) = i^2 + j^2 + 2j + 25 (mod `slots`) for server id `i`
/// (1-based) and virtual node `j`, exact for every input. `slots == 0` is treated as 1.
#[inline]
pub fn assignment_virtual_node_slot(server_id: u64, j: u64, slots: u32) -> u32 {
    let m = u64::from(slots.max(1));
    let (a, b) = (server_id % m, j % m);
    let sum = a * a % m + b * b % m + 2 * b + 25; // < 2^32 + 2^32 + 2^33 + 25
    narrow(sum % m)
}

/// A value already reduced modulo a `u32` back to `u32`.
#[inline]
pub(crate) fn narrow(reduced: u64) -> u32 {
    u32::try_from(reduced).expect("a value reduced modulo a u32 fits in a u32")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn h_reference(i: u64, m: u32) -> u32 {
        // i^2 < 2^128, but i^2 + 2i + 17 may not be: reduce the square first.
        let (i, m) = (u128::from(i), u128::from(m));
        ((i * i % m + 2 * i + 17) % m) as u32
    }

    fn phi_reference(i: u64, j: u64, m: u32) -> u32 {
        let (i, j, m) = (u128::from(i), u128::from(j), u128::from(m));
        ((i * i % m + j * j % m + 2 * j + 25) % m) as u32
    }

    #[test]
    fn h_matches_hand_computed_values() {
        assert_eq!(assignment_request_slot(0, 512), 17);
        assert_eq!(assignment_request_slot(1, 512), 20); // 1 + 2 + 17
        assert_eq!(assignment_request_slot(2, 512), 25); // 4 + 4 + 17
        assert_eq!(assignment_request_slot(3, 512), 32); // 9 + 6 + 17
        assert_eq!(assignment_request_slot(9, 512), 116); // 81 + 18 + 17
        // 123456 = 241 * 512 + 64: 64^2 = 4096 = 8 * 512 = 0, 2 * 64 + 17 = 145.
        assert_eq!(assignment_request_slot(123_456, 512), 145);
        // 100000 = 195 * 512 + 160: 160^2 = 25600 = 50 * 512 = 0, 320 + 17 = 337.
        assert_eq!(assignment_request_slot(100_000, 512), 337);
        // 100001 = ... + 161: 161^2 = 25921 = 50 * 512 + 321, 321 + 322 + 17 = 660 = 512 + 148.
        assert_eq!(assignment_request_slot(100_001, 512), 148);
    }

    #[test]
    fn phi_matches_hand_computed_values() {
        let server1: Vec<u32> = (0..9).map(|j| assignment_virtual_node_slot(1, j, 512)).collect();
        assert_eq!(server1, [26, 29, 34, 41, 50, 61, 74, 89, 106]);
        let server2: Vec<u32> = (0..9).map(|j| assignment_virtual_node_slot(2, j, 512)).collect();
        assert_eq!(server2, [29, 32, 37, 44, 53, 64, 77, 92, 109]);
        let server3: Vec<u32> = (0..9).map(|j| assignment_virtual_node_slot(3, j, 512)).collect();
        assert_eq!(server3, [34, 37, 42, 49, 58, 69, 82, 97, 114]);
    }

    #[test]
    fn huge_inputs_do_not_overflow() {
        // The largest M: a = M - 1 makes a^2 + 2a + 17 exceed 2^64 over the integers.
        let m = u32::MAX;
        for i in [u64::MAX, u64::MAX - 1, u64::from(m) - 1, u64::from(m) * 3 - 1, 1 << 40] {
            assert_eq!(assignment_request_slot(i, m), h_reference(i, m), "H({i})");
            assert_eq!(assignment_virtual_node_slot(i, i, m), phi_reference(i, i, m), "Phi({i})");
        }
        assert_eq!(assignment_request_slot(7, 0), 0);
        assert_eq!(assignment_virtual_node_slot(7, 7, 0), 0);
    }

    #[test]
    fn h_reaches_87_of_512_slots_over_all_six_digit_ids() {
        // H(i) = (i + 1)^2 + 16 (mod 512), and i + 1 runs through every residue, so H reaches
        // exactly the squares mod 512 shifted by 16: there are (2^8 + 5) / 3 = 87 squares mod 2^9.
        let reached: BTreeSet<u32> =
            (100_000u64..=999_999).map(|i| assignment_request_slot(i, 512)).collect();
        let squares: BTreeSet<u32> = (0u32..512).map(|x| (x * x + 16) % 512).collect();
        assert_eq!(reached, squares);
        assert_eq!(reached.len(), 87);
        assert!(reached.contains(&16) && reached.contains(&17)); // (i + 1) = 0 and 1 mod 512
    }

    #[test]
    fn mix64_spreads_consecutive_integers() {
        let mut counts = [0u32; 16];
        for i in 100_000..116_000u64 {
            counts[(mix64(i) % 16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (900..1100).contains(c)), "{counts:?}");
        assert_ne!(mix64(1), 1);
    }

    #[test]
    fn key_and_name_hashes_are_xxh3() {
        assert_eq!(key_hash(b"10.0.0.1"), xxh3_64(b"10.0.0.1"));
        assert_eq!(name_hash("web-1", 0), xxh3_64(b"web-1"));
        assert_ne!(name_hash("web-1", 1), name_hash("web-1", 2));
    }

    proptest! {
        #[test]
        fn h_and_phi_equal_the_u128_formula(i: u64, j: u64, m in 1u32..) {
            prop_assert_eq!(assignment_request_slot(i, m), h_reference(i, m));
            prop_assert_eq!(assignment_virtual_node_slot(i, j, m), phi_reference(i, j, m));
        }

        #[test]
        fn h_depends_only_on_the_id_mod_m(i: u64, m in 1u32..4096) {
            prop_assert_eq!(assignment_request_slot(i, m), assignment_request_slot(i % u64::from(m), m));
        }
    }
}
