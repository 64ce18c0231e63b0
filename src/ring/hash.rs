//! Hash functions of the rings: the exercise's H and Phi (exact, deliberately skewed), xxh3 for
//! request keys and replica names, and a 64-bit finalizer that spreads integer keys.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The hash of a request key's bytes (a client address, a header value, a path).
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The hash of a replica name under `seed` (distinct seeds give independent hashes).
pub fn name_hash(name: &str, seed: u64) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), seed)
}

/// MurmurHash3's 64-bit finalizer: a bijection that turns nearby integers (request ids
/// 100000, 100001, ...) into unrelated values.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The exercise's request slot: H(i) = i^2 + 2i + 17 mod M, exact for any `i`.
pub fn assignment_request_slot(i: u64, slots: u32) -> u32 {
    let m = u64::from(slots.max(1));
    let i = i % m;
    // i < 2^32, so i^2 + 2i + 17 fits in u64.
    ((i * i + 2 * i + 17) % m) as u32
}

/// The exercise's virtual node slot: Phi(i, j) = i^2 + j^2 + 2j + 25 mod M, exact for any input.
pub fn assignment_virtual_node_slot(server_id: u64, j: u64, slots: u32) -> u32 {
    let m = u64::from(slots.max(1));
    let (i, j) = (server_id % m, j % m);
    ((i * i + j * j + 2 * j + 25) % m) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h_matches_hand_computed_values() {
        assert_eq!(assignment_request_slot(0, 512), 17);
        assert_eq!(assignment_request_slot(1, 512), 20);
        assert_eq!(assignment_request_slot(2, 512), 25);
        // 123456^2 + 2*123456 + 17 = 15241383936 + 246912 + 17 = 15241630865 = 29768810 * 512 + 145
        assert_eq!(assignment_request_slot(123_456, 512), 145);
        // Reducing mod M first changes nothing, and huge ids do not overflow.
        assert_eq!(assignment_request_slot(u64::MAX, 512), assignment_request_slot(u64::MAX % 512, 512));
    }

    #[test]
    fn phi_matches_hand_computed_values() {
        let server1: Vec<u32> = (0..9).map(|j| assignment_virtual_node_slot(1, j, 512)).collect();
        assert_eq!(server1, [26, 29, 34, 41, 50, 61, 74, 89, 106]);
        assert_eq!(assignment_virtual_node_slot(2, 0, 512), 29);
        assert_eq!(assignment_virtual_node_slot(3, 0, 512), 34);
    }

    #[test]
    fn h_reaches_only_a_few_slots() {
        // H(i) = (i + 1)^2 + 16 mod 512: only the squares mod 512 shifted by 16 are reachable.
        let reached: std::collections::BTreeSet<u32> =
            (100_000u64..=999_999).map(|i| assignment_request_slot(i, 512)).collect();
        assert_eq!(reached.len(), 87);
    }

    #[test]
    fn mix64_spreads_consecutive_integers() {
        let buckets = 16u64;
        let mut counts = [0u32; 16];
        for i in 100_000..116_000u64 {
            counts[(mix64(i) % buckets) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (900..1100).contains(c)), "{counts:?}");
    }
}
