//! The pure core of reconciliation: desired state + observed state + a clock value in, a list of
//! actions out.
//!
//! No I/O, no clock of its own, no randomness; maps are ordered, so the same input always gives the
//! same plan, and planning a converged state gives an empty one. Two steps:
//! [`resolve_names`] turns the manifest's `replicas:` and `hostnames:` into the exact list of
//! replica names wanted now, and [`plan`] diffs that list against the instances that exist.
//!
//! Rules, per wanted name:
//! - an instance that exited, failed `replace_after` heartbeats in a row, or never answered a
//!   heartbeat within the start timeout is stopped at once;
//! - no live instance: start one (unless its start is backing off after an error); in the
//!   exercise's naming mode a failed replica's name is retired instead, and the next pass starts
//!   a replacement under a new name;
//! - an instance started from an outdated spec is replaced by a rolling update, one name at a
//!   time: the successor starts beside it, and the old one is drained once the successor is ready.
//!
//! Instances whose name is not wanted are drained (stopped after their in-flight requests).

use crate::ids::InstanceId;
use crate::manifest::ReplacementName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// An instance's lifecycle state as the controller knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Started at `since`, no good heartbeat yet.
    Starting {
        /// When it was started (or adopted).
        since: Instant,
    },
    /// Answering heartbeats; in the ring.
    Ready,
    /// Was ready; the last `failures` heartbeats failed.
    Failing {
        /// Consecutive failed heartbeats.
        failures: u32,
    },
    /// Its process or container is gone.
    Exited,
    /// Leaving; the controller is already stopping it.
    Draining,
}

impl InstanceState {
    /// Rank for choosing among several instances of one name: higher is better.
    fn rank(self) -> u8 {
        match self {
            InstanceState::Ready => 3,
            InstanceState::Failing { .. } => 2,
            InstanceState::Starting { .. } => 1,
            InstanceState::Exited | InstanceState::Draining => 0,
        }
    }
}

/// One instance as `plan` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The runtime's id.
    pub id: InstanceId,
    /// Replica name.
    pub name: String,
    /// Exercise id.
    pub replica_id: u32,
    /// The spec hash it was started with.
    pub spec_hash: u64,
    /// Lifecycle state.
    pub state: InstanceState,
}

/// The desired state, resolved, with the policy knobs `plan` needs.
#[derive(Clone, Debug)]
pub struct Desired<'a> {
    /// The wanted replica names (from [`resolve_names`]).
    pub names: &'a [String],
    /// The spec hash every instance should have.
    pub spec_hash: u64,
    /// Consecutive failed heartbeats before a running replica is replaced.
    pub replace_after: u32,
    /// How long a new replica may take to answer its first heartbeat.
    pub start_timeout: Duration,
    /// Whether a replacement keeps the failed replica's name.
    pub replacement: ReplacementName,
    /// Names whose start is backing off after an error, until the given time.
    pub backoff: &'a BTreeMap<String, Instant>,
    /// Names held by something the runtime does not own (a foreign container or service): they
    /// cannot have a replica until it is gone, so a roll does not wait for them.
    pub held_by_others: &'a BTreeSet<String>,
}

/// Why an instance is stopped or drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Its name is no longer wanted.
    NotDesired,
    /// Its process or container exited.
    Exited,
    /// It failed this many heartbeats in a row.
    Unhealthy(u32),
    /// It never answered a heartbeat within the start timeout.
    StartTimedOut,
    /// A successor with the current spec is ready.
    Superseded,
    /// Another instance with the same name is preferred.
    Duplicate,
}

/// One step for the controller to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a replica.
    Start {
        /// Its name.
        name: String,
        /// Its exercise id.
        replica_id: u32,
    },
    /// Take it out of the ring, let its in-flight requests finish (bounded), then stop it.
    Drain {
        /// The instance.
        id: InstanceId,
        /// Its name, for the log.
        name: String,
        /// Why.
        reason: Reason,
    },
    /// Stop it now: it is dead, hung or never came up.
    Stop {
        /// The instance.
        id: InstanceId,
        /// Its name, for the log.
        name: String,
        /// Why.
        reason: Reason,
    },
    /// Exercise naming: this name failed and its replacement must get a new one.
    Retire {
        /// The failed name.
        name: String,
    },
}

/// The name given to the `k`th generated replica of cluster `cluster`.
fn generated(cluster: &str, k: u32) -> String {
    format!("{cluster}-{k}")
}

/// A generated name (`<cluster>-<k>`, smallest k >= 1) that is not in `taken`.
pub fn generate_name(cluster: &str, taken: &BTreeSet<String>) -> String {
    (1..=u32::MAX)
        .map(|k| generated(cluster, k))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| format!("{cluster}-overflow"))
}

/// The exact list of replica names wanted now, in order.
///
/// The first `replicas` names of `listed` that are not `retired` come first. Remaining places go
/// to live instances with names not listed (ordered by exercise id, then name), so a replica that
/// already runs keeps its name across restarts and edits; the rest get generated names that no
/// instance, listed or retired name uses.
pub fn resolve_names(
    cluster: &str,
    replicas: u32,
    listed: &[String],
    retired: &BTreeSet<String>,
    observed: &[Observed],
) -> Vec<String> {
    let want = usize::try_from(replicas).unwrap_or(usize::MAX);
    let mut names: Vec<String> = Vec::with_capacity(want.min(1024));
    let mut chosen = BTreeSet::new();
    for name in listed.iter().filter(|n| !retired.contains(*n)) {
        if names.len() == want {
            break;
        }
        if chosen.insert(name.clone()) {
            names.push(name.clone());
        }
    }
    let listed_set: BTreeSet<&String> = listed.iter().collect();
    let mut unlisted: Vec<&Observed> = observed
        .iter()
        .filter(|o| !matches!(o.state, InstanceState::Draining))
        .filter(|o| !listed_set.contains(&o.name) && !retired.contains(&o.name))
        .collect();
    unlisted.sort_by(|a, b| (a.replica_id, &a.name).cmp(&(b.replica_id, &b.name)));
    for o in unlisted {
        if names.len() == want {
            break;
        }
        if chosen.insert(o.name.clone()) {
            names.push(o.name.clone());
        }
    }
    let mut taken: BTreeSet<String> = observed.iter().map(|o| o.name.clone()).collect();
    taken.extend(listed.iter().cloned());
    taken.extend(retired.iter().cloned());
    taken.extend(chosen);
    while names.len() < want {
        let name = generate_name(cluster, &taken);
        taken.insert(name.clone());
        names.push(name);
    }
    names
}

/// Diffs `desired` against `observed` at time `now`; see the module docs for the rules.
pub fn plan(desired: &Desired<'_>, observed: &[Observed], now: Instant) -> Vec<Action> {
    let wanted: BTreeSet<&str> = desired.names.iter().map(String::as_str).collect();
    let mut by_name: BTreeMap<&str, Vec<&Observed>> = BTreeMap::new();
    for o in observed.iter().filter(|o| o.state != InstanceState::Draining) {
        by_name.entry(o.name.as_str()).or_default().push(o);
    }

    let mut stops = Vec::new();
    let mut drains = Vec::new();
    let mut retires = Vec::new();
    let mut starts: Vec<(&str, Option<u32>)> = Vec::new();
    // Ids held by instances that stay: a new replica must not take one of them.
    let mut kept_ids = BTreeSet::new();

    // A rolling replacement waits until the cluster is whole on the current spec: no replica of
    // the current spec still starting or failing, and no wanted name without a live instance (a
    // successor being placed by the runtime's scheduler, a crash, or a new spec whose start fails:
    // under Swarm that replica's old task is gone too). So a bad spec stops the roll after the
    // first replica instead of taking every one down. A name held by a foreign container or
    // service is reported, not waited for: the roll of the others goes on.
    let instances_of = |name: &String| by_name.get(name.as_str()).map(Vec::as_slice).unwrap_or_default();
    let live = |o: &&&Observed| live_state(o.state);
    let backing_off = |name: &String| desired.backoff.get(name).is_some_and(|until| *until > now);
    let any_stale = desired
        .names
        .iter()
        .any(|name| instances_of(name).iter().filter(live).any(|o| o.spec_hash != desired.spec_hash));
    let degraded = desired.names.iter().any(|name| {
        let list = instances_of(name);
        (!list.iter().any(|o| live_state(o.state)) && !desired.held_by_others.contains(name))
            || list
                .iter()
                .filter(live)
                .any(|o| o.spec_hash == desired.spec_hash && o.state != InstanceState::Ready)
    });
    let mut rolling = any_stale && degraded;

    for name in desired.names {
        let instances = by_name.remove(name.as_str()).unwrap_or_default();
        let mut live = Vec::new();
        let mut failed = false;
        for o in instances {
            match failure(desired, o, now) {
                Some(reason) => {
                    failed = true;
                    stops.push(Action::Stop { id: o.id.clone(), name: o.name.clone(), reason });
                }
                None => live.push(o),
            }
        }
        if live.is_empty() && failed && desired.replacement == ReplacementName::New {
            retires.push(Action::Retire { name: name.clone() });
            continue;
        }
        // Best first: current spec, then state, then the oldest-looking id for stability.
        live.sort_by(|a, b| {
            let key = |o: &Observed| (o.spec_hash == desired.spec_hash, o.state.rank());
            key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
        });
        let (current, stale): (Vec<&Observed>, Vec<&Observed>) =
            live.iter().partition(|o| o.spec_hash == desired.spec_hash);
        for extra in current.iter().skip(1) {
            drains.push(Action::Drain {
                id: extra.id.clone(),
                name: extra.name.clone(),
                reason: Reason::Duplicate,
            });
        }
        for extra in stale.iter().skip(1) {
            drains.push(Action::Drain {
                id: extra.id.clone(),
                name: extra.name.clone(),
                reason: Reason::Duplicate,
            });
        }
        let backing_off = backing_off(name);
        match (current.first(), stale.first()) {
            (Some(cur), old) => {
                kept_ids.insert(cur.replica_id);
                if let Some(old) = old {
                    if cur.state == InstanceState::Ready {
                        drains.push(Action::Drain {
                            id: old.id.clone(),
                            name: old.name.clone(),
                            reason: Reason::Superseded,
                        });
                    } else {
                        kept_ids.insert(old.replica_id);
                    }
                }
            }
            (None, Some(old)) => {
                kept_ids.insert(old.replica_id);
                if !rolling && !backing_off && old.state == InstanceState::Ready {
                    rolling = true;
                    starts.push((name, Some(old.replica_id)));
                }
            }
            (None, None) => {
                if !backing_off {
                    starts.push((name, None));
                }
            }
        }
    }

    // Whatever is left is not wanted.
    for (_, list) in by_name {
        for o in list {
            let action = if o.state == InstanceState::Exited {
                Action::Stop { id: o.id.clone(), name: o.name.clone(), reason: Reason::Exited }
            } else {
                Action::Drain { id: o.id.clone(), name: o.name.clone(), reason: Reason::NotDesired }
            };
            debug_assert!(!wanted.contains(o.name.as_str()));
            if matches!(action, Action::Stop { .. }) { stops.push(action) } else { drains.push(action) }
        }
    }

    // Ids: a successor keeps its predecessor's; a replacement reuses the failed one's if free;
    // anything else takes the smallest free id.
    let previous_ids: BTreeMap<&str, u32> =
        observed.iter().map(|o| (o.name.as_str(), o.replica_id)).collect();
    let mut actions = stops;
    actions.extend(drains);
    actions.extend(retires);
    for (name, inherited) in starts {
        let reuse = inherited.or_else(|| previous_ids.get(name).copied().filter(|id| !kept_ids.contains(id)));
        let replica_id = match reuse {
            Some(id) if id > 0 => id,
            _ => (1..).find(|id| !kept_ids.contains(id)).unwrap_or(u32::MAX),
        };
        kept_ids.insert(replica_id);
        actions.push(Action::Start { name: name.to_owned(), replica_id });
    }
    actions
}

fn live_state(state: InstanceState) -> bool {
    !matches!(state, InstanceState::Exited | InstanceState::Draining)
}

/// Why an instance of a wanted name must be stopped now, if it must.
fn failure(desired: &Desired<'_>, o: &Observed, now: Instant) -> Option<Reason> {
    match o.state {
        InstanceState::Exited => Some(Reason::Exited),
        InstanceState::Failing { failures } if failures >= desired.replace_after => {
            Some(Reason::Unhealthy(failures))
        }
        InstanceState::Starting { since }
            if now.saturating_duration_since(since) >= desired.start_timeout =>
        {
            Some(Reason::StartTimedOut)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC: u64 = 7;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn inst(id: &str, name: &str, replica_id: u32, state: InstanceState) -> Observed {
        Observed { id: InstanceId(id.into()), name: name.into(), replica_id, spec_hash: SPEC, state }
    }

    fn ready(id: &str, name: &str, replica_id: u32) -> Observed {
        inst(id, name, replica_id, InstanceState::Ready)
    }

    fn run(wanted: &[&str], observed: &[Observed]) -> Vec<Action> {
        run_with(wanted, observed, ReplacementName::Same, &BTreeMap::new(), Instant::now())
    }

    fn run_with(
        wanted: &[&str],
        observed: &[Observed],
        replacement: ReplacementName,
        backoff: &BTreeMap<String, Instant>,
        now: Instant,
    ) -> Vec<Action> {
        run_held(wanted, observed, backoff, &BTreeSet::new(), now, replacement)
    }

    fn run_held(
        wanted: &[&str],
        observed: &[Observed],
        backoff: &BTreeMap<String, Instant>,
        held_by_others: &BTreeSet<String>,
        now: Instant,
        replacement: ReplacementName,
    ) -> Vec<Action> {
        let names = names(wanted);
        let desired = Desired {
            names: &names,
            spec_hash: SPEC,
            replace_after: 3,
            start_timeout: Duration::from_secs(30),
            replacement,
            backoff,
            held_by_others,
        };
        plan(&desired, observed, now)
    }

    fn start(name: &str, replica_id: u32) -> Action {
        Action::Start { name: name.into(), replica_id }
    }

    #[test]
    fn from_nothing_every_name_starts_with_ids_one_to_n() {
        assert_eq!(run(&["a", "b", "c"], &[]), vec![start("a", 1), start("b", 2), start("c", 3)]);
    }

    #[test]
    fn a_converged_state_plans_nothing() {
        let observed = [ready("i1", "a", 1), ready("i2", "b", 2)];
        assert!(run(&["a", "b"], &observed).is_empty());
        let starting = [inst("i1", "a", 1, InstanceState::Starting { since: Instant::now() })];
        assert!(run(&["a"], &starting).is_empty(), "a starting replica is waited for");
        let failing = [inst("i1", "a", 1, InstanceState::Failing { failures: 2 })];
        assert!(run(&["a"], &failing).is_empty(), "two failures are below replace_after");
    }

    #[test]
    fn scaling_up_takes_the_smallest_free_id() {
        let observed = [ready("i1", "a", 1), ready("i3", "c", 3)];
        assert_eq!(run(&["a", "c", "d", "e"], &observed), vec![start("d", 2), start("e", 4)]);
    }

    #[test]
    fn scaling_down_drains_the_names_no_longer_wanted() {
        let observed = [ready("i1", "a", 1), ready("i2", "b", 2), ready("i3", "c", 3)];
        assert_eq!(
            run(&["a"], &observed),
            vec![
                Action::Drain { id: InstanceId("i2".into()), name: "b".into(), reason: Reason::NotDesired },
                Action::Drain { id: InstanceId("i3".into()), name: "c".into(), reason: Reason::NotDesired },
            ]
        );
    }

    #[test]
    fn a_dead_replica_is_cleaned_up_and_restarted_under_its_name_and_id() {
        let observed = [ready("i1", "a", 1), inst("i2", "b", 2, InstanceState::Exited)];
        assert_eq!(
            run(&["a", "b"], &observed),
            vec![
                Action::Stop { id: InstanceId("i2".into()), name: "b".into(), reason: Reason::Exited },
                start("b", 2)
            ]
        );
    }

    #[test]
    fn a_hung_replica_is_replaced_after_replace_after_failures() {
        let observed = [inst("i1", "a", 1, InstanceState::Failing { failures: 3 })];
        assert_eq!(
            run(&["a"], &observed),
            vec![
                Action::Stop { id: InstanceId("i1".into()), name: "a".into(), reason: Reason::Unhealthy(3) },
                start("a", 1)
            ]
        );
    }

    #[test]
    fn a_replica_that_never_answers_is_replaced_after_the_start_timeout() {
        let t0 = Instant::now();
        let observed = [inst("i1", "a", 1, InstanceState::Starting { since: t0 })];
        let none = BTreeMap::new();
        assert!(
            run_with(&["a"], &observed, ReplacementName::Same, &none, t0 + Duration::from_secs(29))
                .is_empty()
        );
        let late = run_with(&["a"], &observed, ReplacementName::Same, &none, t0 + Duration::from_secs(30));
        assert_eq!(
            late[0],
            Action::Stop { id: InstanceId("i1".into()), name: "a".into(), reason: Reason::StartTimedOut }
        );
        assert_eq!(late[1], start("a", 1));
    }

    #[test]
    fn in_exercise_naming_a_failed_name_is_retired_not_restarted() {
        let observed = [ready("i1", "a", 1), inst("i2", "b", 2, InstanceState::Exited)];
        let actions =
            run_with(&["a", "b"], &observed, ReplacementName::New, &BTreeMap::new(), Instant::now());
        assert_eq!(
            actions,
            vec![
                Action::Stop { id: InstanceId("i2".into()), name: "b".into(), reason: Reason::Exited },
                Action::Retire { name: "b".into() },
            ]
        );
    }

    #[test]
    fn an_instance_nobody_asked_for_is_drained_and_a_dead_one_stopped() {
        let observed =
            [ready("i1", "a", 1), ready("x", "stray", 9), inst("y", "ghost", 8, InstanceState::Exited)];
        assert_eq!(
            run(&["a"], &observed),
            vec![
                Action::Stop { id: InstanceId("y".into()), name: "ghost".into(), reason: Reason::Exited },
                Action::Drain {
                    id: InstanceId("x".into()),
                    name: "stray".into(),
                    reason: Reason::NotDesired
                },
            ]
        );
    }

    #[test]
    fn draining_instances_are_left_to_finish() {
        let observed = [inst("old", "a", 1, InstanceState::Draining), ready("new", "a", 1)];
        assert!(run(&["a"], &observed).is_empty());
        let gone = [inst("old", "b", 2, InstanceState::Draining)];
        assert!(run(&[], &gone).is_empty());
        // A draining instance's id is free again.
        assert_eq!(run(&["c"], &gone), vec![start("c", 1)]);
    }

    #[test]
    fn a_start_that_is_backing_off_waits() {
        let now = Instant::now();
        let backoff = BTreeMap::from([("a".to_string(), now + Duration::from_secs(1))]);
        assert!(run_with(&["a"], &[], ReplacementName::Same, &backoff, now).is_empty());
        let later = now + Duration::from_secs(2);
        assert_eq!(run_with(&["a"], &[], ReplacementName::Same, &backoff, later), vec![start("a", 1)]);
    }

    #[test]
    fn a_spec_change_rolls_one_replica_at_a_time() {
        let old = |id: &str, name: &str, rid: u32| Observed { spec_hash: 1, ..ready(id, name, rid) };
        // Step 1: both old; only the first gets a successor (same id).
        let step1 = [old("o1", "a", 1), old("o2", "b", 2)];
        assert_eq!(run(&["a", "b"], &step1), vec![start("a", 1)]);
        // Step 2: a's successor is starting: nothing else happens.
        let starting = inst("n1", "a", 1, InstanceState::Starting { since: Instant::now() });
        let step2 = [old("o1", "a", 1), old("o2", "b", 2), starting];
        assert!(run(&["a", "b"], &step2).is_empty());
        // Step 3: a's successor is ready: drain a's old one and start b's successor.
        let step3 = [old("o1", "a", 1), old("o2", "b", 2), ready("n1", "a", 1)];
        assert_eq!(
            run(&["a", "b"], &step3),
            vec![
                Action::Drain { id: InstanceId("o1".into()), name: "a".into(), reason: Reason::Superseded },
                start("b", 2),
            ]
        );
    }

    #[test]
    fn a_roll_waits_while_a_rolled_replica_is_gone_or_not_ready() {
        // A runtime whose scheduler stops the old instance itself (Swarm, start-first) leaves a
        // rolled name with no instance, or with a successor that never answers: the next name
        // must not roll, or a bad spec takes every replica down.
        let old = |id: &str, name: &str, rid: u32| Observed { spec_hash: 1, ..ready(id, name, rid) };
        let gone = [old("o2", "b", 2), old("o3", "c", 3)];
        assert_eq!(run(&["a", "b", "c"], &gone), vec![start("a", 1)], "only a's start is asked for again");
        let failing = inst("n1", "a", 1, InstanceState::Failing { failures: 1 });
        assert!(run(&["a", "b", "c"], &[failing, old("o2", "b", 2), old("o3", "c", 3)]).is_empty());
        // Once a answers, the next one rolls.
        let whole = [ready("n1", "a", 1), old("o2", "b", 2), old("o3", "c", 3)];
        assert_eq!(run(&["a", "b", "c"], &whole), vec![start("b", 2)]);
    }

    #[test]
    fn a_name_held_by_others_does_not_hold_up_the_roll_but_a_failed_start_does() {
        let old = |id: &str, name: &str, rid: u32| Observed { spec_hash: 1, ..ready(id, name, rid) };
        let now = Instant::now();
        let observed = [old("o1", "a", 1), old("o2", "b", 2)];
        let backoff = BTreeMap::from([("c".to_string(), now + Duration::from_secs(5))]);
        // c's name is held by a foreign container: the others roll.
        let held = BTreeSet::from(["c".to_string()]);
        let plan = run_held(&["a", "b", "c"], &observed, &backoff, &held, now, ReplacementName::Same);
        assert_eq!(plan, vec![start("a", 1)]);
        // c's start of the current spec failed (under Swarm, the old task of a replica whose new
        // task fails is gone too): nothing else rolls, or a bad spec takes every replica down.
        let plan =
            run_held(&["a", "b", "c"], &observed, &backoff, &BTreeSet::new(), now, ReplacementName::Same);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn duplicates_of_one_name_keep_the_best() {
        let observed =
            [inst("i1", "a", 1, InstanceState::Starting { since: Instant::now() }), ready("i2", "a", 1)];
        assert_eq!(
            run(&["a"], &observed),
            vec![Action::Drain { id: InstanceId("i1".into()), name: "a".into(), reason: Reason::Duplicate }]
        );
    }

    #[test]
    fn names_resolve_listed_first_then_running_then_generated() {
        let none = BTreeSet::new();
        assert_eq!(resolve_names("demo", 2, &names(&["a", "b", "c"]), &none, &[]), names(&["a", "b"]));
        assert_eq!(resolve_names("demo", 3, &[], &none, &[]), names(&["demo-1", "demo-2", "demo-3"]));
        let observed = [ready("i1", "demo-2", 2), ready("i2", "zed", 1)];
        assert_eq!(
            resolve_names("demo", 4, &names(&["a"]), &none, &observed),
            names(&["a", "zed", "demo-2", "demo-1"]),
            "running unlisted replicas keep their names, ordered by id"
        );
        let retired = BTreeSet::from(["b".to_string(), "demo-1".to_string()]);
        assert_eq!(resolve_names("demo", 2, &names(&["a", "b"]), &retired, &[]), names(&["a", "demo-2"]));
    }

    /// Seen with a foreign image (issue 18): a generated name whose container was killed got a
    /// new name, though `replacement_name: same` keeps it.
    #[test]
    fn a_generated_name_whose_instance_exited_is_kept_for_its_replacement() {
        let none = BTreeSet::new();
        let observed = [
            inst("i1", "demo-1", 1, InstanceState::Exited),
            ready("i2", "demo-2", 2),
            ready("i3", "demo-3", 3),
        ];
        assert_eq!(resolve_names("demo", 3, &[], &none, &observed), names(&["demo-1", "demo-2", "demo-3"]));
        let draining = [inst("i1", "demo-1", 1, InstanceState::Draining), ready("i2", "demo-2", 2)];
        assert_eq!(
            resolve_names("demo", 1, &[], &none, &draining),
            names(&["demo-2"]),
            "a replica that leaves gives its name up"
        );
    }

    #[test]
    fn generated_names_skip_taken_ones() {
        let taken = BTreeSet::from(["demo-1".to_string(), "demo-3".to_string()]);
        assert_eq!(generate_name("demo", &taken), "demo-2");
    }

    fn arb_state() -> impl Strategy<Value = InstanceState> {
        prop_oneof![
            Just(InstanceState::Ready),
            Just(InstanceState::Exited),
            Just(InstanceState::Draining),
            (0u32..5).prop_map(|failures| InstanceState::Failing { failures }),
            Just(InstanceState::Starting { since: Instant::now() }),
        ]
    }

    proptest! {
        /// Whatever the mess, applying the plan in a healthy world (every live instance answers its
        /// next heartbeat) converges in a few passes to exactly one ready instance with the current
        /// spec per wanted name, and then plans nothing.
        #[test]
        fn repeated_planning_converges(
            wanted in proptest::sample::subsequence(vec!["a", "b", "c", "d", "e"], 0..=5),
            raw in proptest::collection::vec((0usize..7, 1u32..6, arb_state(), any::<bool>()), 0..8),
        ) {
            let pool = ["a", "b", "c", "d", "e", "f", "g"];
            let mut observed: Vec<Observed> = raw.iter().enumerate().map(|(i, (n, rid, state, current))| Observed {
                id: InstanceId(format!("i{i}")),
                name: pool[*n].to_string(),
                replica_id: *rid,
                spec_hash: if *current { SPEC } else { 1 },
                state: *state,
            }).collect();
            let mut next_id = 100;
            for _ in 0..12 {
                // Between passes, draining instances finish and live ones answer a heartbeat.
                observed.retain(|o| o.state != InstanceState::Draining);
                for o in &mut observed {
                    if matches!(o.state, InstanceState::Starting { .. } | InstanceState::Failing { .. }) {
                        o.state = InstanceState::Ready;
                    }
                }
                let actions = run(&wanted, &observed);
                if actions.is_empty() { break; }
                for action in actions {
                    match action {
                        Action::Start { name, replica_id } => {
                            next_id += 1;
                            observed.push(Observed { id: InstanceId(format!("i{next_id}")), name, replica_id, spec_hash: SPEC, state: InstanceState::Starting { since: Instant::now() } });
                        }
                        Action::Stop { id, .. } => observed.retain(|o| o.id != id),
                        Action::Drain { id, .. } => observed.iter_mut().filter(|o| o.id == id).for_each(|o| o.state = InstanceState::Draining),
                        Action::Retire { .. } => unreachable!("same-name mode never retires"),
                    }
                }
            }
            observed.retain(|o| o.state != InstanceState::Draining);
            prop_assert!(run(&wanted, &observed).is_empty(), "not converged: {observed:?}");
            let mut got: Vec<&str> = observed.iter().map(|o| o.name.as_str()).collect();
            got.sort_unstable();
            let mut want: Vec<&str> = wanted.clone();
            want.sort_unstable();
            prop_assert_eq!(got, want);
            prop_assert!(observed.iter().all(|o| o.spec_hash == SPEC && o.state == InstanceState::Ready));
        }

        /// Planning is deterministic.
        #[test]
        fn the_same_input_gives_the_same_plan(
            raw in proptest::collection::vec((0usize..4, 1u32..5, arb_state()), 0..6),
        ) {
            let pool = ["a", "b", "c", "d"];
            let observed: Vec<Observed> = raw.iter().enumerate()
                .map(|(i, (n, rid, state))| inst(&format!("i{i}"), pool[*n], *rid, *state)).collect();
            let now = Instant::now();
            let none = BTreeMap::new();
            prop_assert_eq!(
                run_with(&["a", "b"], &observed, ReplacementName::Same, &none, now),
                run_with(&["a", "b"], &observed, ReplacementName::Same, &none, now)
            );
        }
    }
}
