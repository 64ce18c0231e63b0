//! The autoscaler's rule, as a pure function of recorded load: how many replicas the cluster
//! should have now.
//!
//! The signal is concurrency: requests in flight, averaged over the sampling period (with at least
//! one request's worth when requests arrived in it, so short requests still count as activity).
//! The rule is Kubernetes HPA's, `desired = ceil(current x observed / target)` where `observed`
//! is the average concurrency per replica, with its tolerance band: within `tolerance` of the
//! target nothing changes. Against flapping, every raw recommendation is kept for a while and the
//! decision is, when scaling up, the *lowest* recommendation of the short scale-up window (a spike
//! shorter than the window is ignored) and, when scaling down, the *highest* of the scale-down
//! window (the default 60 s). One decision adds at most `max_step` replicas, and the result stays in
//! `[min, max]`. With `min: 0`, an idle window scales to zero, and a request that arrives then
//! ("demand") asks for one replica at once, past every window.

use crate::manifest::Autoscale;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// The autoscaler's knobs (from the manifest's `autoscale:` section).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Fewest replicas (0: scale to zero).
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Requests in flight per replica the cluster aims at.
    pub target_inflight: f64,
    /// Relative band around the target within which nothing changes (0.1 = 10 %).
    pub tolerance: f64,
    /// Scaling up follows the lowest recommendation of this window.
    pub scale_up_window: Duration,
    /// Scaling down follows the highest recommendation of this window (also the idle time before
    /// scaling to zero).
    pub scale_down_window: Duration,
    /// The most replicas one decision may add.
    pub max_step: u32,
}

impl From<&Autoscale> for Policy {
    fn from(settings: &Autoscale) -> Policy {
        Policy {
            min: settings.min,
            max: settings.max,
            target_inflight: settings.target_inflight,
            tolerance: settings.tolerance,
            scale_up_window: settings.scale_up_window.get(),
            scale_down_window: settings.scale_down_window.get(),
            max_step: settings.max_step,
        }
    }
}

/// One decision with the numbers behind it, for the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Replicas before.
    pub current: u32,
    /// Replicas after (what the controller should run).
    pub desired: u32,
    /// Average concurrency per replica observed.
    pub observed_per_replica: f64,
    /// The total concurrency observed.
    pub observed_total: f64,
    /// The HPA rule's answer before windows, step and bounds.
    pub raw: u32,
    /// Why `desired` is what it is.
    pub reason: Reason,
}

/// Why a decision came out as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Load is within the tolerance band: nothing to do.
    WithinTolerance,
    /// Following the rule (after the windows).
    Rule,
    /// Held back by the scale-up window (a shorter spike is ignored).
    ScaleUpWindow,
    /// Held back by the scale-down window.
    ScaleDownWindow,
    /// Limited by `max_step`.
    StepCap,
    /// Limited by `min` or `max`.
    Bounds,
    /// A request arrived with no replica: one now.
    Demand,
}

/// The autoscaler's memory: raw recommendations of the recent past.
#[derive(Debug)]
pub struct Autoscaler {
    policy: Policy,
    history: VecDeque<(Instant, u32)>,
    /// When the current evidence began (the first decision since a reset): a window counts only
    /// once this long ago.
    since: Option<Instant>,
}

impl Autoscaler {
    /// An autoscaler with no history.
    pub fn new(policy: Policy) -> Autoscaler {
        Autoscaler { policy, history: VecDeque::new(), since: None }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Changes the policy (a manifest edit); the history stays.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Forgets the history (the count was set by hand: windows start afresh from it).
    pub fn reset(&mut self) {
        self.history.clear();
        self.since = None;
    }

    /// `current` clamped to the policy's bounds.
    pub fn clamp(&self, current: u32) -> u32 {
        current.clamp(self.policy.min, self.policy.max.max(self.policy.min))
    }

    /// Decides at `now` with `current` replicas, `concurrency` requests in flight on average over
    /// the last sampling period across the cluster, and `demand` set when a request waits with no
    /// replica to serve it.
    pub fn decide(&mut self, now: Instant, current: u32, concurrency: f64, demand: bool) -> Decision {
        let p = self.policy;
        let observed_total = concurrency.max(0.0);
        let observed_per_replica =
            if current == 0 { observed_total } else { observed_total / f64::from(current) };
        let raw = if current == 0 {
            (observed_total / p.target_inflight).ceil() as u32
        } else {
            let ratio = observed_per_replica / p.target_inflight;
            if (ratio - 1.0).abs() <= p.tolerance && observed_total > 0.0 {
                current
            } else {
                (f64::from(current) * ratio).ceil() as u32
            }
        };
        let within_tolerance = raw == current && current > 0 && observed_total > 0.0;
        let evidence = now.saturating_duration_since(*self.since.get_or_insert(now));
        self.history.push_back((now, raw));
        let keep = p.scale_up_window.max(p.scale_down_window);
        while self.history.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > keep) {
            self.history.pop_front();
        }
        let window =
            |w: Duration| self.history.iter().filter(move |(t, _)| now.saturating_duration_since(*t) <= w);

        let decision = |desired: u32, reason: Reason| Decision {
            current,
            desired,
            observed_per_replica,
            observed_total,
            raw,
            reason,
        };
        if demand && current == 0 {
            // A cold start is a new starting point: the idle evidence that scaled the cluster to
            // zero must not take the new replica away before its requests are served.
            self.reset();
            self.since = Some(now);
            return decision(p.min.max(1).min(p.max.max(1)), Reason::Demand);
        }
        // A window decides only once it is full of evidence: a spike right after a reset is as
        // short as any other.
        let (mut desired, mut reason) = if raw > current {
            let lowest = window(p.scale_up_window).map(|(_, r)| *r).min().unwrap_or(raw);
            if evidence < p.scale_up_window {
                (current, Reason::ScaleUpWindow)
            } else if lowest < raw {
                (lowest.max(current), Reason::ScaleUpWindow)
            } else {
                (raw, Reason::Rule)
            }
        } else if raw < current {
            let highest = window(p.scale_down_window).map(|(_, r)| *r).max().unwrap_or(raw);
            if evidence < p.scale_down_window {
                (current, Reason::ScaleDownWindow)
            } else if highest > raw {
                (highest.min(current), Reason::ScaleDownWindow)
            } else {
                (raw, Reason::Rule)
            }
        } else if within_tolerance {
            (current, Reason::WithinTolerance)
        } else {
            (current, Reason::Rule)
        };
        if desired > current.saturating_add(p.max_step) {
            desired = current.saturating_add(p.max_step);
            reason = Reason::StepCap;
        }
        let bounded = self.clamp(desired);
        if bounded != desired {
            desired = bounded;
            reason = Reason::Bounds;
        }
        decision(desired, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            target_inflight: 10.0,
            tolerance: 0.1,
            scale_up_window: Duration::from_secs(3),
            scale_down_window: Duration::from_secs(60),
            max_step: 4,
        }
    }

    /// Runs a load series (total concurrency per second) through the autoscaler, applying each
    /// decision; returns the replica count after each second.
    fn replay(policy: Policy, start: u32, series: &[f64]) -> Vec<u32> {
        let mut scaler = Autoscaler::new(policy);
        let t0 = Instant::now();
        let mut current = start;
        series
            .iter()
            .enumerate()
            .map(|(s, load)| {
                current = scaler.decide(t0 + Duration::from_secs(s as u64), current, *load, false).desired;
                current
            })
            .collect()
    }

    #[test]
    fn a_sustained_rise_scales_up_after_the_short_window_and_step_by_step() {
        // 2 replicas at target, then 60 in flight (6 replicas' worth) for 20 s.
        let mut series = vec![20.0; 5];
        series.extend(vec![60.0; 20]);
        let counts = replay(policy(), 2, &series);
        assert_eq!(&counts[..5], &[2, 2, 2, 2, 2]);
        // The first 3 s of the rise are held by the scale-up window.
        assert_eq!(&counts[5..8], &[2, 2, 2]);
        assert_eq!(*counts.last().unwrap(), 6);
        assert!(counts.windows(2).all(|w| w[1] <= w[0] + 4), "no step adds more than 4: {counts:?}");
    }

    #[test]
    fn a_spike_shorter_than_the_scale_up_window_is_ignored() {
        let mut series = vec![20.0; 5];
        series.extend([200.0, 200.0]);
        series.extend(vec![20.0; 5]);
        assert!(replay(policy(), 2, &series).iter().all(|c| *c == 2));
    }

    #[test]
    fn scaling_down_waits_for_its_window_and_takes_the_highest_recommendation() {
        let mut series = vec![60.0; 10];
        series.extend(vec![10.0; 80]);
        let counts = replay(policy(), 6, &series);
        // Load dropped at t = 10 s; nothing shrinks before t = 10 + 60 s.
        assert!(counts[..70].iter().all(|c| *c == 6), "{counts:?}");
        assert_eq!(*counts.last().unwrap(), 1);
    }

    #[test]
    fn within_the_tolerance_band_nothing_changes() {
        let counts = replay(policy(), 4, &[43.0, 37.0, 41.0, 39.0, 44.0, 36.0]);
        assert!(counts.iter().all(|c| *c == 4), "{counts:?}");
    }

    #[test]
    fn scale_to_zero_after_an_idle_window_and_back_on_demand() {
        let p = Policy { min: 0, scale_down_window: Duration::from_secs(5), ..policy() };
        let mut series = vec![5.0; 3];
        series.extend(vec![0.0; 10]);
        let counts = replay(p, 1, &series);
        assert_eq!(*counts.last().unwrap(), 0);
        assert!(counts[..8].iter().all(|c| *c == 1), "idle for the whole window first: {counts:?}");
        let mut scaler = Autoscaler::new(p);
        let d = scaler.decide(Instant::now(), 0, 0.0, true);
        assert_eq!((d.desired, d.reason), (1, Reason::Demand));
    }

    #[test]
    fn a_cold_start_keeps_its_replica_for_a_whole_scale_down_window() {
        // Found in CI under load: the idle history from before the cold start scaled the new
        // replica away 0.7 s later, before the request that woke it was served.
        let p = Policy { min: 0, scale_down_window: Duration::from_secs(3), ..policy() };
        let mut scaler = Autoscaler::new(p);
        let start = Instant::now();
        for i in 0..10 {
            scaler.decide(start + Duration::from_millis(500 * i), 1, 0.0, false);
        }
        let woke = start + Duration::from_secs(6);
        assert_eq!(scaler.decide(woke, 0, 0.0, true).desired, 1);
        let soon = scaler.decide(woke + Duration::from_millis(700), 1, 0.0, false);
        assert_eq!((soon.desired, soon.reason), (1, Reason::ScaleDownWindow));
        let later = scaler.decide(woke + Duration::from_secs(4), 1, 0.0, false);
        assert_eq!(later.desired, 0, "idle for a whole window after the cold start: back to zero");
    }

    proptest! {
        /// Whatever the load, the count stays in [min, max], and a noisy but steady load (within
        /// +-8 % of the target per replica) never changes it.
        #[test]
        fn bounds_hold_and_steady_noise_never_flaps(
            series in proptest::collection::vec(0.0f64..400.0, 1..200),
            noise in proptest::collection::vec(-0.08f64..0.08, 120),
            start in 1u32..10,
        ) {
            let p = policy();
            for c in replay(p, start, &series) {
                prop_assert!((p.min..=p.max).contains(&c));
            }
            let steady: Vec<f64> = noise.iter().map(|n| 50.0 * (1.0 + n)).collect();
            prop_assert!(replay(p, 5, &steady).iter().all(|c| *c == 5));
        }
    }
}
