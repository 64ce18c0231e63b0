//! The Swarm runtime on a real single-node swarm: the exercise's API, `docker kill` of a task, a
//! rolling spec change, a hung task force-updated, a foreign service, and teardown.
//!
//! The load balancer runs as a container of `ringlb:latest` (which `make test` builds) attached to
//! the test's overlay network, publishing its port on 127.0.0.1, as it must to reach the tasks'
//! overlay addresses. When the engine is not in a swarm, a test makes a single-node one
//! (`docker swarm init --advertise-addr 127.0.0.1`) and leaves it at the end; a swarm that was
//! there is used and left as it was. Each test checks that nothing labelled with its cluster is
//! left and that the swarm's state is what it was. Tests run one at a time (a lock here and a
//! nextest test group): they share the engine's swarm state. Every test here needs a Docker engine
//! (and all but one the image and a swarm it can make or manage), so each is `#[ignore]`d:
//! `make test` runs them where an engine answers, CI always. A test that is run without what it
//! needs fails, saying what is missing.

mod common;

use common::{Lb, Load, eventually, free_port, until};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

const IMAGE: &str = "ringlb:latest";

/// One swarm test at a time, also under `cargo test` (threads of one process).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `docker args...` and returns its stdout (trimmed); panics with its stderr on failure.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker args...`, ignoring failure; returns stdout.
fn docker_quiet(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The engine's swarm state and whether it is a manager, as `docker info` says.
fn swarm_state() -> String {
    docker_quiet(&["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"])
}

/// Whether the engine has the `docker_gwbridge` network (made by `docker swarm init`).
fn gwbridge_exists() -> bool {
    Command::new("docker")
        .args(["network", "inspect", "docker_gwbridge"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Fails the test: what it needs is missing (a test that is run must not pass without it).
fn missing(why: &str) -> ! {
    panic!("{why}: this Swarm test cannot run here");
}

/// How soon a killed or hung task must be out of the ring: at its first failed heartbeat, which
/// the manifests here send every 200 ms with a 150 ms timeout, so within 350 ms and the test's
/// next look at the ring. Measured 0.25-0.45 s; the bound leaves a loaded 2-core machine more than
/// six times that.
const OUT_OF_RING_WITHIN: Duration = Duration::from_secs(3);

/// How soon Swarm's new task for a killed one must be in the ring: the service's restart delay
/// (200 ms, `RESTART_DELAY` in `src/runtime/swarm.rs`), a container start (about a second), the
/// next poll of the task list (every 500 ms) and heartbeats every 50 ms until it answers: about
/// 2 s (measured 1.8-2.05 s). The bound leaves a loaded machine and a busy engine seven times that.
const RESTARTED_WITHIN: Duration = Duration::from_secs(15);

/// How soon a hung task's replacement must be in the ring: ringlb force-updates its service after
/// `health.replace_after` (3) failed heartbeats in a row, each at most 200 ms apart plus its
/// 150 ms timeout, and Swarm's fresh task then joins as after a restart ([`RESTARTED_WITHIN`]).
/// Measured 1.85-2.5 s.
const FORCE_UPDATED_WITHIN: Duration =
    Duration::from_millis(3 * (200 + 150)).saturating_add(RESTARTED_WITHIN);

/// Where a test that made a swarm notes its cluster ID and whether it made `docker_gwbridge`, so
/// that a later test leaves that swarm if this one was killed before it could (a timeout).
fn created_marker() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("swarm-created-by-tests")
}

/// The engine's swarm cluster ID (empty outside a swarm).
fn cluster_id() -> String {
    docker_quiet(&["info", "--format", "{{.Swarm.Cluster.ID}}"])
}

/// What a test in a swarm that was there must leave as it found: the state, the cluster, its
/// nodes, and the services and swarm networks in it.
fn swarm_snapshot() -> String {
    [
        swarm_state(),
        cluster_id(),
        docker_quiet(&["node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.Status}} {{.ManagerStatus}}"]),
        docker_quiet(&["service", "ls", "--format", "{{.ID}} {{.Name}}"]),
        docker_quiet(&["network", "ls", "--filter", "scope=swarm", "--format", "{{.ID}} {{.Name}}"]),
    ]
    .join("\n")
}

/// The swarm a test runs in, and what to restore.
struct Swarm {
    /// The swarm before the test ([`swarm_snapshot`]), to compare with after it; `None` when the
    /// engine was in no swarm.
    before: Option<String>,
    /// True when this test ran `docker swarm init` and must leave.
    created: bool,
    /// True when `docker swarm init` made the `docker_gwbridge` network (which leaving keeps).
    made_gwbridge: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Swarm {
    /// Joins the swarm there is (as a manager), or makes a single-node one; fails the test when
    /// there is no engine, no image, or a swarm this engine cannot manage.
    fn enter() -> Swarm {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
            missing("no Docker engine answers (`docker info` fails)");
        }
        if !Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            missing("the image ringlb:latest is missing (`make image` builds it)");
        }
        let before = swarm_state();
        match before.as_str() {
            "active true" => {
                // Made by an earlier test that was killed before it could leave: ours to leave.
                let marker = std::fs::read_to_string(created_marker()).unwrap_or_default();
                let mut noted = marker.split_whitespace();
                if let (Some(id), Some(bridge)) = (noted.next(), noted.next())
                    && id == cluster_id()
                {
                    eprintln!("leaving the swarm {id} an earlier, interrupted test made, at the end");
                    let made_gwbridge = bridge == "made";
                    return Swarm { before: None, created: true, made_gwbridge, _one_at_a_time: guard };
                }
                let before = Some(swarm_snapshot());
                Swarm { before, created: false, made_gwbridge: false, _one_at_a_time: guard }
            }
            "inactive false" => {
                let made_gwbridge = !gwbridge_exists();
                let init = Command::new("docker")
                    .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
                    .output()
                    .expect("run docker");
                if !init.status.success() {
                    missing(&format!(
                        "`docker swarm init` failed: {}",
                        String::from_utf8_lossy(&init.stderr).trim()
                    ));
                }
                let bridge = if made_gwbridge { "made" } else { "kept" };
                let noted = std::fs::write(created_marker(), format!("{} {bridge}\n", cluster_id()));
                if let Err(error) = noted {
                    eprintln!("cannot note the swarm this test made: {error}");
                }
                Swarm { before: None, created: true, made_gwbridge, _one_at_a_time: guard }
            }
            other => missing(&format!("this engine's swarm state is {other:?}, not a manager nor inactive")),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.created {
            docker_quiet(&["swarm", "leave", "--force"]);
            if self.made_gwbridge {
                docker_quiet(&["network", "rm", "docker_gwbridge"]);
            }
            let _ = std::fs::remove_file(created_marker());
        }
    }
}

/// A cluster of the test: its name, its network, and its removal (also when the test fails).
struct Cluster {
    name: String,
    network: String,
    tags: Vec<String>,
    foreign: Vec<String>,
}

impl Cluster {
    /// A unique cluster with its attachable overlay network (labelled, so it is removed with it).
    fn new(test: &str) -> Cluster {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("w{:05x}-{test}", (nanos ^ std::process::id()) & 0xfffff);
        let network = format!("{name}-net");
        let label = format!("ringlb.cluster={name}");
        docker(&["network", "create", "--driver", "overlay", "--attachable", "--label", &label, &network]);
        Cluster { name, network, tags: Vec::new(), foreign: Vec::new() }
    }

    fn label(&self) -> String {
        format!("label=ringlb.cluster={}", self.name)
    }

    /// Tags an image of the test whose containers cannot start (its entrypoint is missing):
    /// Swarm retries their tasks for ever, none runs. Removed with the cluster.
    fn broken_image(&mut self) -> String {
        let broken = format!("ringlb:{}-broken", self.name);
        let context = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            context.path().join("Dockerfile"),
            format!("FROM {IMAGE}\nENTRYPOINT [\"/missing\"]\n"),
        )
        .expect("write Dockerfile");
        docker(&["build", "-q", "-t", &broken, &context.path().display().to_string()]);
        self.tags.push(broken.clone());
        broken
    }

    /// Removes the load balancer, the services, the containers and the network of the cluster
    /// (by label), the extra tags and foreign services the test made.
    fn remove(&self) {
        let lb = format!("label=ringlb.load-balancer={}", self.name);
        let ids: Vec<String> =
            docker_quiet(&["ps", "-aq", "--filter", &lb]).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            docker_quiet(&args);
        }
        for service in docker_quiet(&["service", "ls", "-q", "--filter", &lb]).split_whitespace() {
            docker_quiet(&["service", "rm", service]);
        }
        for service in docker_quiet(&["service", "ls", "-q", "--filter", &self.label()]).split_whitespace() {
            docker_quiet(&["service", "rm", service]);
        }
        for service in &self.foreign {
            docker_quiet(&["service", "rm", service]);
        }
        // Task containers go with their services; wait for them before removing the network.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !docker_quiet(&["ps", "-aq", "--filter", &self.label()]).is_empty() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let networks = docker_quiet(&["network", "ls", "-q", "--filter", &self.label()]);
            if networks.is_empty() || Instant::now() > deadline {
                break;
            }
            for network in networks.split_whitespace() {
                docker_quiet(&["network", "rm", network]);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for tag in &self.tags {
            docker_quiet(&["rmi", tag]);
        }
    }

    /// What is left of the cluster: services, containers, networks and tasks with its label.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let lb = format!("label=ringlb.load-balancer={}", self.name);
        for (what, args) in [
            ("load balancer service", vec!["service", "ls", "-q", "--filter", &lb]),
            ("load balancer container", vec!["ps", "-aq", "--filter", &lb]),
            ("service", vec!["service", "ls", "-q", "--filter", &self.label()]),
            ("container", vec!["ps", "-aq", "--filter", &self.label()]),
            ("network", vec!["network", "ls", "-q", "--filter", &self.label()]),
        ] {
            left.extend(docker_quiet(&args).split_whitespace().map(|id| format!("{what} {id}")));
        }
        left
    }

    /// A manifest: swarm runtime, this network, fast heartbeats, the given names.
    fn manifest(&self, replicas: u32, names: &[&str], image: &str) -> String {
        let c = &self.name;
        let hostnames: Vec<String> = names.iter().map(|n| format!("{c}-{n}")).collect();
        format!(
            "# swarm test manifest\nname: {c}\nreplicas: {replicas}   # N\nhostnames: [{}]\nlisten: 0.0.0.0:5000\n\
             replica:\n  runtime: swarm\n  image: {image}\n  network: {}\n  port: 5000\n  drain_timeout: 5s\n  \
             stop_timeout: 2s\n  start_timeout: 60s\nhealth:\n  interval: 200ms\n  timeout: 150ms\n",
            hostnames.join(", "),
            self.network
        )
    }

    /// Starts the load balancer as a container on the cluster's network and waits until every
    /// replica is ready.
    async fn start_lb(&self, manifest_text: &str) -> Lb {
        let lb = self.start_lb_unready(manifest_text).await;
        lb.wait_ready(Duration::from_secs(90)).await;
        lb
    }

    /// Starts the load balancer as a container on the cluster's network; waits until it answers.
    async fn start_lb_unready(&self, manifest_text: &str) -> Lb {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifest = dir.path().join("cluster.yaml");
        std::fs::write(&manifest, manifest_text).expect("write manifest");
        let port = free_port();
        let mount = format!("{}:/manifests", dir.path().display());
        let child = Command::new("docker")
            .args(["run", "--rm", "--name", &format!("{}-lb", self.name)])
            .args(["--label", &format!("ringlb.load-balancer={}", self.name)])
            .args(["--network", &self.network, "-p", &format!("127.0.0.1:{port}:5000")])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", &mount])
            .args([
                "-e",
                &format!("RUST_LOG={}", std::env::var("RINGLB_TEST_LOG").unwrap_or_else(|_| "info".into())),
            ])
            .args([IMAGE, "run", "--manifest", "/manifests/cluster.yaml"])
            .stdin(Stdio::null())
            .spawn()
            .expect("docker run");
        let addr = format!("127.0.0.1:{port}").parse().expect("address");
        Lb::adopt(child, dir, manifest, addr).await
    }

    /// (container id, replica name) of the cluster's running task containers on this node.
    fn containers(&self) -> Vec<(String, String)> {
        docker(&["ps", "--filter", &self.label(), "--format", "{{.ID}} {{.Label \"ringlb.hostname\"}}"])
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect()
    }

    /// The names of the cluster's services.
    fn services(&self) -> BTreeSet<String> {
        docker(&["service", "ls", "--filter", &self.label(), "--format", "{{.Name}}"])
            .lines()
            .map(String::from)
            .collect()
    }
}

/// The ids of the cluster's services.
fn service_ids(cluster: &Cluster) -> BTreeSet<String> {
    docker(&["service", "ls", "-q", "--filter", &cluster.label()]).lines().map(String::from).collect()
}

/// Watches the load balancer's ring every 10 ms: the smallest it was, and how often it looked.
struct RingWatch {
    smallest: Arc<Mutex<(usize, Vec<String>, u32)>>,
    task: tokio::task::JoinHandle<()>,
}

impl RingWatch {
    fn start(lb: &Arc<Lb>) -> RingWatch {
        let smallest = Arc::new(Mutex::new((usize::MAX, Vec::new(), 0_u32)));
        let task = {
            let (lb, smallest) = (Arc::clone(lb), Arc::clone(&smallest));
            tokio::spawn(async move {
                loop {
                    let ring = lb.ring().await;
                    {
                        let mut smallest = smallest.lock().unwrap_or_else(PoisonError::into_inner);
                        smallest.2 += 1;
                        if ring.len() < smallest.0 {
                            (smallest.0, smallest.1) = (ring.len(), ring);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        RingWatch { smallest, task }
    }

    /// (the smallest ring's size, that ring, how many looks).
    async fn finish(self) -> (usize, Vec<String>, u32) {
        self.task.abort();
        let _ = self.task.await;
        self.smallest.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Tears down at the end of a test that got there: nothing left, swarm as before.
fn teardown(cluster: &Cluster, swarm: Swarm, lb: Lb) {
    drop(lb);
    cluster.remove();
    let left = cluster.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    let (before, gwbridge_before) = (swarm.before.clone(), !swarm.made_gwbridge);
    drop(swarm);
    match before {
        Some(snapshot) => assert_eq!(swarm_snapshot(), snapshot, "the swarm is not as it was"),
        None => {
            assert_eq!(swarm_state(), "inactive false", "the engine is still in the swarm the test made");
            let networks = docker_quiet(&["network", "ls", "--filter", "scope=swarm", "-q"]);
            assert!(networks.is_empty(), "swarm networks left: {networks}");
        }
    }
    assert_eq!(gwbridge_exists(), gwbridge_before, "docker_gwbridge is not as it was");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.remove();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn the_exercise_on_a_swarm() {
    let swarm = Swarm::enter();
    let cluster = Cluster::new("exercise");
    let c = cluster.name.clone();
    let lb = cluster.start_lb(&cluster.manifest(3, &["s1", "s2", "s3"], IMAGE)).await;
    let names = |list: &[&str]| list.iter().map(|n| format!("\"{c}-{n}\"")).collect::<Vec<_>>().join(", ");
    assert_eq!(
        lb.get("/rep").await.body,
        format!(
            r#"{{"message": {{"N": 3, "replicas": [{}]}}, "status": "successful"}}"#,
            names(&["s1", "s2", "s3"])
        )
    );
    let expected: BTreeSet<String> = ["s1", "s2", "s3"].iter().map(|n| format!("{c}-{n}")).collect();
    assert_eq!(cluster.services(), expected, "one service per replica, named after it");
    // /add with fewer names than n: the rest are generated.
    let add = lb.request("POST", "/add", &format!(r#"{{"n": 2, "hostnames": ["{c}-s5"]}}"#), &[]).await;
    assert_eq!(add.status, 200, "{}", add.body);
    assert_eq!(
        add.body,
        format!(
            r#"{{"message": {{"N": 5, "replicas": [{}, "{c}-1"]}}, "status": "successful"}}"#,
            names(&["s1", "s2", "s3", "s5"])
        )
    );
    lb.wait_ready(Duration::from_secs(90)).await;
    assert_eq!(cluster.services().len(), 5);
    let too_many = lb.request("POST", "/add", r#"{"n": 1, "hostnames": ["a", "b"]}"#, &[]).await;
    assert_eq!(
        too_many.body,
        r#"{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}"#
    );
    let too_many = lb.request("DELETE", "/rm", r#"{"n": 1, "hostnames": ["a", "b"]}"#, &[]).await;
    assert_eq!(
        too_many.body,
        r#"{"message": "<Error> Length of hostname list is more than removable instances", "status": "failure"}"#
    );
    let rm = lb.request("DELETE", "/rm", &format!(r#"{{"n": 2, "hostnames": ["{c}-s5"]}}"#), &[]).await;
    assert_eq!(rm.status, 200, "{}", rm.body);
    // The second replica to go is the load balancer's choice; the answer is the exercise's.
    let kept: Vec<String> = rm.json()["message"]["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let quoted = kept.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    assert_eq!(
        rm.body,
        format!(r#"{{"message": {{"N": 3, "replicas": [{quoted}]}}, "status": "successful"}}"#)
    );
    let left: BTreeSet<String> = kept.into_iter().collect();
    let before: BTreeSet<String> = ["s1", "s2", "s3", "s5", "1"].iter().map(|n| format!("{c}-{n}")).collect();
    assert_eq!(left.len(), 3);
    assert!(left.is_subset(&before) && !left.contains(&format!("{c}-s5")), "{left:?}");
    until!(
        Duration::from_secs(60),
        || async {
            cluster.services() == left && lb.ring().await.into_iter().collect::<BTreeSet<_>>() == left
        },
        "services {:?} != {left:?}",
        cluster.services()
    );
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let answer = lb.get("/home").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["message"], format!("Hello from Server: {}", answer.replica()));
        seen.insert(answer.replica());
    }
    assert_eq!(seen, left, "GETs reach every replica");
    // A replica's service scaled by hand is set back to one task.
    let scaled = left.iter().next().expect("a replica").clone();
    docker(&["service", "scale", "--detach", &format!("{scaled}=3")]);
    let replicas =
        || docker(&["service", "inspect", &scaled, "--format", "{{.Spec.Mode.Replicated.Replicas}}"]);
    until!(
        Duration::from_secs(10),
        || async { replicas() == "3" },
        "docker service scale did not take: {}",
        replicas()
    );
    until!(
        Duration::from_secs(60),
        || async {
            let running = docker(&["service", "ps", &scaled, "-q", "--filter", "desired-state=running"]);
            replicas() == "1" && running.lines().count() == 1
        },
        "service {scaled} has {} replicas",
        replicas()
    );
    until!(
        Duration::from_secs(30),
        || async { lb.ring().await.into_iter().collect::<BTreeSet<_>>() == left },
        "ring {:?} != {left:?}",
        lb.ring().await
    );
    teardown(&cluster, swarm, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn docker_kill_of_a_task_costs_no_request_and_swarm_brings_it_back() {
    let swarm = Swarm::enter();
    let cluster = Cluster::new("kill");
    let c = cluster.name.clone();
    let lb = Arc::new(cluster.start_lb(&cluster.manifest(3, &["s1", "s2", "s3"], IMAGE)).await);
    let load = Load::start(&lb, 4, "/home");
    load.after_more(200).await;
    let victim_name = format!("{c}-s2");
    let (victim, _) = cluster.containers().into_iter().find(|(_, n)| *n == victim_name).expect("s2 runs");
    let services_before = service_ids(&cluster);
    let killed_at = Instant::now();
    docker(&["kill", &victim]);
    let out = eventually(Duration::from_secs(5), || async { !lb.ring().await.contains(&victim_name) }).await;
    let out_after = out.then(|| killed_at.elapsed());
    let back = eventually(Duration::from_secs(60), || async {
        let replaced = cluster.containers().iter().any(|(id, n)| *n == victim_name && *id != victim);
        replaced && lb.ring().await.contains(&victim_name)
    })
    .await;
    let back_after = back.then(|| killed_at.elapsed());
    load.after_more(200).await;
    let (sent, failures) = load.finish().await;
    println!(
        "swarm: docker kill {victim_name}: out of the ring after {out_after:?}, Swarm's new task in the ring after \
         {back_after:?}; {sent} requests, {} failed",
        failures.len()
    );
    assert!(back_after.is_some(), "not back: {}", lb.status().await);
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(out_after.is_some_and(|t| t < OUT_OF_RING_WITHIN), "left the ring after {out_after:?}");
    assert!(back_after.is_some_and(|t| t < RESTARTED_WITHIN), "back in the ring after {back_after:?}");
    assert_eq!(
        service_ids(&cluster),
        services_before,
        "the same services: Swarm replaced the task, ringlb created none"
    );
    let lb = Arc::into_inner(lb).expect("the load is finished");
    teardown(&cluster, swarm, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn a_spec_change_rolls_every_service_without_a_failed_request() {
    let swarm = Swarm::enter();
    let mut cluster = Cluster::new("roll");
    let c = cluster.name.clone();
    let tag = format!("ringlb:{c}");
    docker(&["tag", IMAGE, &tag]);
    cluster.tags.push(tag.clone());
    let text = cluster.manifest(3, &["s1", "s2", "s3"], IMAGE);
    let lb = Arc::new(cluster.start_lb(&text).await);
    let before: BTreeSet<String> = cluster.containers().into_iter().map(|(id, _)| id).collect();
    assert_eq!(before.len(), 3);
    let load = Load::start(&lb, 4, "/home");
    load.after_more(100).await;
    // Every name stays in the ring throughout: a new task is in it before its old one leaves.
    let watch = RingWatch::start(&lb);
    let started = Instant::now();
    lb.write_manifest(&text.replace(&format!("image: {IMAGE}"), &format!("image: {tag}")));
    let rolled = eventually(Duration::from_secs(120), || async {
        let now = cluster.containers();
        now.len() == 3
            && now.iter().all(|(id, _)| !before.contains(id))
            && lb.status().await["replicas"].as_array().is_some_and(|r| {
                r.len() == 3 && r.iter().all(|x| x["state"] == "ready" && x["current_spec"] == true)
            })
    })
    .await;
    let took = started.elapsed();
    let (smallest, at, looks) = watch.finish().await;
    load.after_more(100).await;
    let (sent, failures) = load.finish().await;
    println!(
        "swarm: rolled 3 services to {tag} in {took:?}: {sent} requests, {} failed; smallest ring of {looks} looks: \
         {at:?}",
        failures.len()
    );
    assert!(rolled, "not rolled: {:?} {}", cluster.containers(), lb.status().await);
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(looks > 20, "the ring was looked at only {looks} times");
    assert_eq!(smallest, 3, "a name left the ring during the roll: {at:?}");
    assert_eq!(cluster.services().len(), 3, "the same services, updated in place");
    let lb = Arc::into_inner(lb).expect("the load is finished");
    teardown(&cluster, swarm, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn a_roll_to_an_image_that_cannot_start_stops_at_the_first_replica() {
    let swarm = Swarm::enter();
    let mut cluster = Cluster::new("badroll");
    let broken = cluster.broken_image();
    let text = cluster.manifest(3, &["s1", "s2", "s3"], IMAGE);
    let lb = Arc::new(cluster.start_lb(&text).await);
    let before: BTreeSet<String> = cluster.containers().into_iter().map(|(id, _)| id).collect();
    assert_eq!(before.len(), 3);
    let load = Load::start(&lb, 4, "/home");
    load.after_more(100).await;
    let watch = RingWatch::start(&lb);
    lb.write_manifest(&text.replace(&format!("image: {IMAGE}"), &format!("image: {broken}")));
    // Under Swarm, the old task of the first replica goes when its new one fails (Swarm puts a
    // fresh task in its place); the failure is reported, and the roll goes no further.
    until!(
        Duration::from_secs(60),
        || async { lb.status().await["problems"].as_array().is_some_and(|p| !p.is_empty()) },
        "no problem reported: {}",
        lb.status().await
    );
    let problems = lb.status().await["problems"].clone();
    // Watched for 20 s (several rounds of the failed replica's retries): the two others keep
    // their old tasks, and no other service gets the new spec.
    let window = Instant::now() + Duration::from_secs(20);
    while Instant::now() < window {
        let kept = cluster.containers().into_iter().filter(|(id, _)| before.contains(id)).count();
        assert!(kept >= 2, "the roll went on to a second replica: {:?}", cluster.containers());
        let outdated: Vec<String> = cluster
            .services()
            .into_iter()
            .filter(|s| {
                docker(&["service", "inspect", s, "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}"])
                    == docker(&["image", "inspect", "--format", "{{.Id}}", &broken])
            })
            .collect();
        assert!(outdated.len() <= 1, "more than one service got the broken image: {outdated:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Fixed: the replica comes back, the others were never touched.
    lb.write_manifest(&text);
    lb.wait_ready(Duration::from_secs(60)).await;
    let (smallest, at, looks) = watch.finish().await;
    load.after_more(100).await;
    let (sent, failures) = load.finish().await;
    println!(
        "swarm: roll to {broken}: stopped at one replica ({problems}); smallest ring of {looks} looks: {at:?}; \
         {sent} requests, {} failed",
        failures.len()
    );
    assert!(smallest >= 2, "more than one replica left the ring: {at:?}");
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    let kept = cluster.containers().into_iter().filter(|(id, _)| before.contains(id)).count();
    assert_eq!(kept, 2, "the two replicas the roll did not reach keep their tasks");
    let lb = Arc::into_inner(lb).expect("the load is finished");
    teardown(&cluster, swarm, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn a_hung_task_leaves_the_ring_and_is_force_updated() {
    let swarm = Swarm::enter();
    let cluster = Cluster::new("hung");
    let c = cluster.name.clone();
    let lb = Arc::new(cluster.start_lb(&cluster.manifest(3, &["s1", "s2", "s3"], IMAGE)).await);
    let load = Load::start(&lb, 4, "/home");
    load.after_more(100).await;
    let victim_name = format!("{c}-s3");
    let (victim, _) = cluster.containers().into_iter().find(|(_, n)| *n == victim_name).expect("s3 runs");
    let paused_at = Instant::now();
    docker(&["pause", &victim]);
    let out = eventually(Duration::from_secs(5), || async { !lb.ring().await.contains(&victim_name) }).await;
    let out_after = out.then(|| paused_at.elapsed());
    let back = eventually(Duration::from_secs(60), || async {
        let replaced = cluster.containers().iter().any(|(id, n)| *n == victim_name && *id != victim);
        replaced && lb.ring().await.contains(&victim_name)
    })
    .await;
    let back_after = back.then(|| paused_at.elapsed());
    load.after_more(100).await;
    let (sent, failures) = load.finish().await;
    println!(
        "swarm: docker pause {victim_name}: out of the ring after {out_after:?}, a fresh task in the ring after \
         {back_after:?}; {sent} requests, {} failed",
        failures.len()
    );
    // Unpause it whatever happened, so that its removal cannot hang.
    docker_quiet(&["unpause", &victim]);
    assert!(back_after.is_some(), "not force-updated: {}", lb.status().await);
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(out_after.is_some_and(|t| t < OUT_OF_RING_WITHIN), "left the ring after {out_after:?}");
    assert!(back_after.is_some_and(|t| t < FORCE_UPDATED_WITHIN), "force-updated after {back_after:?}");
    let lb = Arc::into_inner(lb).expect("the load is finished");
    teardown(&cluster, swarm, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn a_foreign_service_with_a_desired_name_is_left_alone_and_reported() {
    let swarm = Swarm::enter();
    let mut cluster = Cluster::new("foreign");
    let c = cluster.name.clone();
    let name = format!("{c}-s2");
    let image_id = docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    // Zero replicas: a service that exists and runs nothing.
    let foreign =
        docker(&["service", "create", "-d", "--name", &name, "--replicas", "0", &image_id, "server"]);
    cluster.foreign.push(foreign.clone());
    let version =
        |id: &str| docker(&["service", "inspect", "--format", "{{.Version.Index}} {{.Spec.Labels}}", id]);
    let before = version(&foreign);
    let lb = cluster.start_lb(&cluster.manifest(1, &["s1"], IMAGE)).await;
    let add = lb.request("POST", "/add", &format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#), &[]).await;
    assert_eq!(add.status, 409, "{}", add.body);
    assert!(add.body.contains("does not manage"), "{}", add.body);
    lb.write_manifest(&cluster.manifest(2, &["s1", "s2"], IMAGE));
    until!(
        Duration::from_secs(30),
        || async {
            lb.status().await["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["replica"] == name.as_str()))
        },
        "not reported: {}",
        lb.status().await
    );
    let problem = lb.status().await["problems"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(problem.contains("not managed by ringlb"), "{problem}");
    assert_eq!(lb.ring().await, [format!("{c}-s1")]);
    assert_eq!(version(&foreign), before, "the foreign service was not touched");
    teardown(&cluster, swarm, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn make_run_swarm_serves_and_make_stop_swarm_leaves_nothing_behind() {
    // Not `Swarm::enter`: `make run-swarm` makes the swarm itself when there is none, and
    // `make stop-swarm` must leave it then, and only then.
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    if !Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success()) {
        missing("no Docker engine answers, or the image ringlb:latest is missing (`make image` builds it)");
    }
    let before = swarm_state();
    let gwbridge_before = gwbridge_exists();
    if before != "inactive false" && before != "active true" {
        missing(&format!("this engine's swarm state is {before:?}, not a manager nor inactive"));
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("w{:05x}-make", (nanos ^ std::process::id()) & 0xfffff);
    let cluster =
        Cluster { name: name.clone(), network: format!("{name}-net"), tags: vec![], foreign: vec![] };
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("swarm.yaml");
    let text = std::fs::read_to_string(format!("{repo}/manifests/swarm.yaml")).expect("manifests/swarm.yaml");
    let text = text
        .replace("name: swarm ", &format!("name: {name} "))
        .replace("[server1, server2, server3]", &format!("[{name}-s1, {name}-s2, {name}-s3]"))
        .replace("network: ringlb-overlay", &format!("network: {}", cluster.network))
        .replace("interval: 1s", "interval: 200ms")
        .replace("timeout: 500ms", "timeout: 150ms");
    std::fs::write(&manifest, &text).expect("write manifest");
    let port = free_port().to_string();
    let make = |target: &str| {
        Command::new("make")
            .args([
                "-C",
                repo,
                target,
                &format!("PORT={port}"),
                &format!("SWARM_MANIFEST={}", manifest.display()),
            ])
            // Its own record of a swarm it creates, so a developer's `make run-swarm` is not touched.
            .arg(format!("SWARM_CREATED={}", dir.path().join("swarm-created").display()))
            .output()
            .expect("run make")
    };
    let run = make("run-swarm");
    let status = Command::new(common::bin())
        .args(["status", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let services = cluster.services();
    let stop = make("stop-swarm");
    let left = cluster.leftovers();
    let after = swarm_state();
    let gwbridge_after = gwbridge_exists();
    drop(cluster);
    drop(guard);
    assert!(
        run.status.success(),
        "make run-swarm failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(status.contains("3/3 replicas ready"), "{status}");
    assert_eq!(services.len(), 3, "{services:?}");
    assert!(stop.status.success(), "make stop-swarm: {}", String::from_utf8_lossy(&stop.stderr));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(after, before, "the swarm's state changed");
    assert_eq!(gwbridge_after, gwbridge_before, "docker_gwbridge is not as it was");
}

/// Runs `ringlb run` on a swarm manifest against `docker_host` (the default engine when `None`) and
/// returns its exit success and stderr; it must exit by itself.
fn run_expecting_exit(docker_host: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("cluster.yaml");
    std::fs::write(&manifest, "name: refused\nlisten: 127.0.0.1:0\nreplica:\n  runtime: swarm\n")
        .expect("write manifest");
    let mut command = Command::new(common::bin());
    command.args(["run", "--manifest"]).arg(&manifest).stdin(Stdio::null()).stdout(Stdio::null());
    if let Some(host) = docker_host {
        command.env("DOCKER_HOST", host);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().expect("spawn ringlb");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringlb kept running against an engine that is not a swarm manager");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
#[ignore = "needs a Docker engine in no swarm"]
fn outside_a_swarm_ringlb_refuses_to_start_and_says_why() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        missing("no Docker engine answers (`docker info` fails)");
    }
    let state = swarm_state();
    if state != "inactive false" {
        missing(&format!(
            "this engine is in a swarm ({state:?}); the refusal outside one cannot be seen here"
        ));
    }
    let (success, stderr) = run_expecting_exit(None);
    assert!(!success, "ringlb started outside a swarm");
    assert!(
        stderr.contains("not part of an active swarm") && stderr.contains("docker swarm init"),
        "{stderr}"
    );
    assert_eq!(swarm_state(), state, "ringlb changed the engine's swarm state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, and the image ringlb:latest"]
async fn a_replica_whose_task_never_runs_is_removed_when_it_is_no_longer_wanted() {
    let swarm = Swarm::enter();
    let mut cluster = Cluster::new("broken");
    let c = cluster.name.clone();
    let broken = cluster.broken_image();
    let lb = cluster.start_lb_unready(&cluster.manifest(2, &["s1", "s2"], &broken)).await;
    let both = [format!("{c}-s1"), format!("{c}-s2")].into_iter().collect::<BTreeSet<_>>();
    until!(
        Duration::from_secs(30),
        || async { cluster.services() == both },
        "services: {:?}",
        cluster.services()
    );
    let rm = lb.request("DELETE", "/rm", &format!(r#"{{"n": 1, "hostnames": ["{c}-s2"]}}"#), &[]).await;
    assert_eq!(rm.status, 200, "{}", rm.body);
    until!(
        Duration::from_secs(30),
        || async { cluster.services() == [format!("{c}-s1")].into() },
        "the idle service of s2 is still there: {:?}",
        cluster.services()
    );
    assert!(lb.ring().await.is_empty());
    teardown(&cluster, swarm, lb);
}

impl Cluster {
    /// The busybox image of the test (`common::build_busybox_image`): no `/ringlb` in it, so no
    /// `ringlb probe` health check. Removed with the cluster.
    fn busybox_image(&mut self) -> String {
        let tag = format!("ringlb-test-busybox:{}", self.name);
        common::build_busybox_image(&tag);
        self.tags.push(tag.clone());
        tag
    }

    /// A manifest of 3 busybox httpd replicas from `replica.command`, with env and limits.
    fn busybox_manifest(&self, image: &str, greeting: &str) -> String {
        self.manifest(3, &["s1", "s2", "s3"], image)
            .replace("port: 5000", "port: 8080")
            .replace(
                "  drain_timeout: 5s\n",
                &format!(
                    "  drain_timeout: 5s\n  command: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n  \
                     env: {{WHO: '{{name}}', GREETING: {greeting}}}\n  resources: {{cpus: 0.5, memory: 64MiB}}\n"
                ),
            )
            .replace("health:\n", "health:\n  path: /index.html\n")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine in no swarm or a swarm manager, the image ringlb:latest and busybox-static"]
async fn a_foreign_image_on_a_swarm_is_served_killed_and_rolled_without_a_failed_request() {
    let swarm = Swarm::enter();
    let mut cluster = Cluster::new("busybox");
    let c = cluster.name.clone();
    let image = cluster.busybox_image();
    let text = cluster.busybox_manifest(&image, "hello");
    let lb = Arc::new(cluster.start_lb(&text).await);
    let page = lb.get("/index.html").await;
    assert_eq!((page.status, page.body.as_str()), (200, "hello from busybox\n"), "{page:?}");
    let service =
        docker(&["service", "inspect", &format!("{c}-s1"), "--format", "{{json .Spec.TaskTemplate}}"]);
    let task: serde_json::Value = serde_json::from_str(&service).expect("service spec");
    assert_eq!(task["ContainerSpec"]["Args"][1], "httpd");
    assert!(task["ContainerSpec"]["Env"].to_string().contains(&format!("WHO={c}-s1")), "{task}");
    assert!(task["ContainerSpec"]["HealthCheck"].is_null(), "no ringlb probe in a foreign image: {task}");
    assert_eq!(task["Resources"]["Limits"]["MemoryBytes"], 67_108_864);
    assert_eq!(task["Resources"]["Limits"]["NanoCPUs"], 500_000_000);

    // docker kill of a task under load: Swarm brings it back, nothing lost.
    let load = Load::start(&lb, 4, "/index.html");
    load.after_more(200).await;
    let victim_name = format!("{c}-s2");
    let (victim, _) = cluster.containers().into_iter().find(|(_, n)| *n == victim_name).expect("s2 runs");
    let killed_at = Instant::now();
    docker(&["kill", &victim]);
    let back = eventually(Duration::from_secs(60), || async {
        let replaced = cluster.containers().iter().any(|(id, n)| *n == victim_name && *id != victim);
        replaced && lb.ring().await.contains(&victim_name)
    })
    .await;
    let back_after = back.then(|| killed_at.elapsed());
    load.after_more(200).await;
    let (sent, failures) = load.finish().await;
    println!(
        "swarm, foreign image: docker kill {victim_name}: back in the ring after {back_after:?}; {sent} requests, {} failed",
        failures.len()
    );
    assert!(
        back_after.is_some_and(|t| t < RESTARTED_WITHIN),
        "back after {back_after:?}: {}",
        lb.status().await
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );

    // A change of env rolls the 3 services with nothing lost.
    let before: BTreeSet<String> = cluster.containers().into_iter().map(|(id, _)| id).collect();
    let load = Load::start(&lb, 4, "/index.html");
    load.after_more(100).await;
    let started = Instant::now();
    lb.write_manifest(&cluster.busybox_manifest(&image, "bonjour"));
    let rolled = eventually(Duration::from_secs(120), || async {
        let now = cluster.containers();
        now.len() == 3
            && now.iter().all(|(id, _)| !before.contains(id))
            && lb.status().await["replicas"].as_array().is_some_and(|r| {
                r.len() == 3 && r.iter().all(|x| x["state"] == "ready" && x["current_spec"] == true)
            })
    })
    .await;
    let took = started.elapsed();
    load.after_more(100).await;
    let (sent, failures) = load.finish().await;
    println!(
        "swarm, foreign image: env change rolled 3 services in {took:?}; {sent} requests, {} failed",
        failures.len()
    );
    assert!(rolled, "not rolled: {:?} {}", cluster.containers(), lb.status().await);
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let lb = Arc::into_inner(lb).expect("the load is finished");
    teardown(&cluster, swarm, lb);
}
