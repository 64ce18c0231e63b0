//! Bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads",
//! 2017; HAProxy's `hash-balance-factor`): with a factor c, no replica takes a request while it
//! already has `ceil(c x mean)` in flight, the mean counting the new request; the request goes to
//! the next candidate of the ring instead. Keys keep their replica while load is fair, and a hot key
//! spills over to its fallbacks instead of overloading one replica.

/// The most requests a replica may have in flight for a new one to be sent to it:
/// `ceil(factor x (total + 1) / members)`.
pub fn capacity(factor: f64, total_inflight: u64, members: usize) -> u64 {
    if members == 0 {
        return u64::MAX;
    }
    (factor * (total_inflight + 1) as f64 / members as f64).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Member, Ring, RingConfig, Selector};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn capacity_counts_the_new_request() {
        assert_eq!(capacity(1.25, 0, 4), 1);
        assert_eq!(capacity(1.25, 15, 4), 5);
        assert_eq!(capacity(2.0, 9, 5), 4);
        assert_eq!(capacity(1.25, 3, 0), u64::MAX);
    }

    /// A closed-loop simulation: `inflight` requests are always outstanding; each step one
    /// finishes (chosen at random) and a new one is placed with bounded loads. Returns, per new
    /// request, the replica it went to and whether that was its key's first choice, checking the
    /// bound as it goes.
    fn simulate(
        factor: f64,
        members: usize,
        inflight: usize,
        steps: usize,
        hot_share: f64,
    ) -> (Vec<(usize, bool)>, u64) {
        let list: Vec<Member> =
            (1..=members).map(|i| Member { name: format!("r{i}"), id: i as u32 }).collect();
        let ring = Ring::build(&RingConfig::default(), &list).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let mut load = vec![0u64; members];
        let mut outstanding: Vec<usize> = Vec::new();
        let mut placed = Vec::new();
        let mut worst_excess = 0u64;
        for step in 0..steps + inflight {
            if outstanding.len() >= inflight {
                let done = outstanding.swap_remove(rng.random_range(0..outstanding.len()));
                load[done] -= 1;
            }
            let key: u64 = if rng.random_bool(hot_share) { 42 } else { rng.random() };
            let total: u64 = load.iter().sum();
            let cap = capacity(factor, total, members);
            let first = ring.candidates(key).next().unwrap();
            let chosen = ring.candidates(key).find(|r| load[*r] < cap).unwrap_or(first);
            load[chosen] += 1;
            worst_excess = worst_excess.max(load[chosen].saturating_sub(cap));
            outstanding.push(chosen);
            if step >= inflight {
                placed.push((chosen, chosen == first));
            }
        }
        (placed, worst_excess)
    }

    #[test]
    fn a_hot_key_with_half_the_requests_never_overloads_a_replica() {
        for members in [3, 5, 8] {
            let (placed, worst_excess) = simulate(1.25, members, 64, 20_000, 0.5);
            assert!(worst_excess <= 1, "N={members}: a replica exceeded the bound by {worst_excess}");
            let mut per = vec![0usize; members];
            for (r, _) in &placed {
                per[*r] += 1;
            }
            let max = *per.iter().max().unwrap() as f64 / placed.len() as f64;
            // Unbounded, the hot key's replica would take at least half of all requests.
            assert!(max < 0.45, "N={members}: busiest replica took {max:.2} of the requests");
        }
    }

    /// Key stability depends on concurrency: the bound ceil(1.25 x mean) leaves little room when
    /// the mean is small. Measured (printed): 8 in flight per replica on average keeps 82-90 % of
    /// requests on their first choice (N = 8..3), 20 per replica 94-97 %, 40 per replica 98-99 %.
    /// Asserted: at least 95 % at 40 per replica.
    #[test]
    fn with_even_keys_almost_every_key_keeps_its_first_choice() {
        for per_replica in [8, 20, 40] {
            for members in [3, 5, 8] {
                let inflight = per_replica * members;
                let (placed, _) = simulate(1.25, members, inflight, 20_000, 0.0);
                let kept = placed.iter().filter(|(_, first)| *first).count() as f64 / placed.len() as f64;
                println!(
                    "N={members}, {per_replica} in flight per replica: {:.1} % on their first choice",
                    kept * 100.0
                );
                if per_replica >= 40 {
                    assert!(kept >= 0.95, "N={members}: only {:.1} % kept their first choice", kept * 100.0);
                }
            }
        }
    }
}
