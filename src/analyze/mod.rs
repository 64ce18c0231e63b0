//! `ringlb analyze`: the exercise's performance analysis (A-1 to A-4), reproducible.
//!
//! Every live measurement starts a real cluster (a load balancer in this process, replicas as
//! processes or containers), sends seeded request ids through the load balancer asynchronously,
//! and counts which replica answered each from the answer's body. The same ids are used for every
//! algorithm and every N, so the comparisons are fair, and with a fixed seed the exercise's mode
//! gives the same counts run after run. `--offline` computes the distributions from the ring
//! alone. The results go to `<out>/results.json`, the charts to SVG files, and the report to
//! `<out>/README.md` (`report.rs`).
//!
//! - A-1: counts per replica at N = 3 (table, bar chart).
//! - A-2: N = 2..6: mean, min, max and standard deviation per replica (table, line chart with the
//!   spread).
//! - A-3: every endpoint with its exact answer, and a replica killed during a steady stream: when it
//!   was killed, left the ring, and was replaced, and how many requests failed (timeline).
//! - A-4: A-1 and A-2 for the exercise's hash functions and for maglev side by side, and how many of
//!   the 512 slots H reaches.

pub mod autoscale_demo;
pub mod charts;
pub mod cluster;
pub mod load;
pub mod report;
pub mod stats;

use crate::manifest::{Hashing, Manifest};
use crate::ring::{Algorithm, HashFunction, Probing};
use crate::runtime::{AnyRuntime, InstanceId, Runtime, Setup};
use crate::trigger::Trigger;
use cluster::Cluster;
use load::{Exchange, Load, Sample};
use serde::Serialize;
use stats::{Distribution, replica_names};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The N of A-1 and of the failure experiment.
pub const A1_REPLICAS: usize = 3;
/// The Ns of A-2.
pub const A2_REPLICAS: std::ops::RangeInclusive<usize> = 2..=6;

/// Why the analysis stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// A file or directory could not be made or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "create").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manifest given with `--manifest`, or a generated one, was refused.
    #[error("{}: {source}", path.display())]
    Manifest {
        /// The manifest's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::manifest::ManifestError,
    },
    /// The manifest the analysis wrote for one of its clusters was refused (a bug of the analysis).
    #[error("the analysis manifest: {0}")]
    GeneratedManifest(#[source] crate::manifest::ManifestError),
    /// An analysis cluster's load balancer could not start.
    #[error(transparent)]
    Start(#[from] crate::balancer::StartError),
    /// The runtime of an analysis cluster failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A ring could not be built for the distributions computed offline.
    #[error(transparent)]
    Ring(#[from] crate::ring::RingError),
    /// A cluster did not get its replicas ready in time.
    #[error("the analysis cluster did not get {wanted} ready replicas within {within:?}: {problems}")]
    NotReady {
        /// How many were wanted.
        wanted: usize,
        /// How long it waited.
        within: std::time::Duration,
        /// The problems the controller reported.
        problems: String,
    },
    /// The failover experiment was asked to kill a replica that does not run.
    #[error("no replica named {0}")]
    NoReplica(String),
    /// The task that sent the failover experiment's requests failed.
    #[error("the stream failed: {0}")]
    Stream(#[source] tokio::task::JoinError),
    /// The running executable (which the process runtime starts as replicas) cannot be found.
    #[error("cannot find ringlb: {0}")]
    Executable(#[source] std::io::Error),
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] charts::ChartError),
    /// `results.json` could not be encoded.
    #[error("cannot encode results.json: {0}")]
    Json(#[source] serde_json::Error),
}

impl AnalyzeError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AnalyzeError {
        let path = path.to_path_buf();
        move |source| AnalyzeError::Io { action, path, source }
    }
}

/// What runs the analysis clusters' replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// `ringlb server` processes on 127.0.0.1.
    Process,
    /// Containers of `ringlb:latest` (build it with `make image`).
    Docker,
}

/// The experiments to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Experiment {
    /// Counts per replica at N = 3.
    A1,
    /// N = 2..6.
    A2,
    /// Endpoints and a killed replica.
    A3,
    /// The exercise's hashing beside maglev.
    A4,
}

/// The command's options (`ringlb analyze --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Requests per measurement.
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
    /// Seed of the request ids (the same seed gives the same ids, and the same counts).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the report (README.md), the charts (SVG) and results.json go.
    #[arg(long, default_value = "docs/analysis")]
    pub out: PathBuf,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Compute the distributions from the ring alone, in milliseconds; start nothing.
    #[arg(long)]
    pub offline: bool,
    /// What runs the analysis clusters' replicas.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Process)]
    pub runtime: RuntimeChoice,
    /// Analyse this manifest's hashing instead of the exercise's (maglev stays the comparison).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Run only these experiments [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub experiments: Vec<Experiment>,
    /// Override M (the ring's slots) of the first hashing, e.g. with --offline.
    #[arg(long)]
    pub slots: Option<u32>,
    /// Override K (virtual nodes per replica) of the first hashing.
    #[arg(long)]
    pub virtual_nodes: Option<u32>,
    /// Override the probing of the first hashing.
    #[arg(long, value_parser = by_manifest_name::<Probing>)]
    pub probing: Option<Probing>,
    /// Override the hash function of the first hashing.
    #[arg(long, value_parser = by_manifest_name::<HashFunction>)]
    pub function: Option<HashFunction>,
}

/// Parses a command-line value by the name the manifest uses for it (`linear`, `xxh3`, ...).
fn by_manifest_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
}

/// One hashing configuration under test.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Short name in tables and legends.
    pub label: String,
    /// One sentence.
    pub description: String,
    /// The hashing.
    #[serde(skip)]
    pub hashing: Hashing,
    /// Whether this is the exercise's mode (new names for replacements, its 400).
    pub exercise: bool,
}

/// One measurement at one N.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Replica count.
    pub n: usize,
    /// Through the load balancer (absent offline).
    pub live: Option<Distribution>,
    /// From the ring alone.
    pub offline: Distribution,
    /// How long the live requests took.
    pub elapsed_ms: Option<f64>,
}

/// All measurements of one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigResults {
    /// The configuration.
    pub config: Config,
    /// One per N (N = 3 always first: A-1).
    pub measurements: Vec<Measurement>,
}

/// The failure experiment's timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    /// The replica killed.
    pub victim: String,
    /// Its replacement.
    pub replacement: String,
    /// When it was killed, since the stream started (ms).
    pub killed_ms: f64,
    /// When the load balancer took it out of the ring (ms).
    pub out_of_ring_ms: Option<f64>,
    /// When its replacement was in the ring (ms).
    pub replaced_ms: Option<f64>,
    /// How long the stream ran (ms).
    pub duration_ms: f64,
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Answers per 100 ms per replica, for the chart.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// A-3's results.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointsAndFailover {
    /// Each endpoint's request and exact answer.
    pub endpoints: Vec<Exchange>,
    /// The killed replica's timeline.
    pub failover: Failover,
}

/// Everything the report is made of.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// Seed of the request ids.
    pub seed: u64,
    /// Requests per measurement.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// What ran the replicas (`offline`: nothing).
    pub runtime: String,
    /// Per configuration: A-1, A-2, A-4.
    pub configs: Vec<ConfigResults>,
    /// A-3.
    pub a3: Option<EndpointsAndFailover>,
    /// Slots H reaches of 512 over all 6-digit ids, and over the ids used.
    pub h_reach: (usize, usize),
    /// Per replica at N = 3 (exercise), how many of the reachable slots it serves.
    pub h_slots_per_replica: Vec<usize>,
}

/// The exercise's hashing: M = 512, K = 9, H and Phi, linear probing.
pub fn exercise_hashing() -> Hashing {
    Hashing {
        algorithm: Algorithm::Ring,
        slots: 512,
        virtual_nodes: 9,
        function: HashFunction::Assignment,
        probing: Probing::Linear,
        ..Hashing::default()
    }
}

fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default().trim_matches('"').to_string()
}

/// The configurations to compare: the exercise's (or the given manifest's, or the offline
/// overrides') first, maglev second.
pub fn configs(options: &Options) -> Result<Vec<Config>, AnalyzeError> {
    let mut first = match &options.manifest {
        Some(path) => {
            let (manifest, _) = Manifest::load(path)
                .map_err(|source| AnalyzeError::Manifest { path: path.clone(), source })?;
            Config {
                label: manifest.name.clone(),
                description: format!("the hashing of {}", path.display()),
                hashing: manifest.hashing.clone(),
                exercise: manifest.hashing.uses_assignment_ids(),
            }
        }
        None => Config {
            label: "exercise".into(),
            description: "the exercise's ring: M = 512 slots, K = 9 virtual nodes, H and Phi, linear probing"
                .into(),
            hashing: exercise_hashing(),
            exercise: true,
        },
    };
    let h = &mut first.hashing;
    let overridden = options.slots.is_some()
        || options.virtual_nodes.is_some()
        || options.probing.is_some()
        || options.function.is_some();
    h.slots = options.slots.unwrap_or(h.slots);
    h.virtual_nodes = options.virtual_nodes.unwrap_or(h.virtual_nodes);
    h.probing = options.probing.unwrap_or(h.probing);
    h.function = options.function.unwrap_or(h.function);
    if overridden {
        first.label = format!("{}-custom", first.label);
        first.description = format!(
            "ring: M = {}, K = {}, {} function, {} probing",
            h.slots,
            h.virtual_nodes,
            name_of(&h.function),
            name_of(&h.probing)
        );
        first.exercise = h.function == HashFunction::Assignment;
    }
    let maglev = Config {
        label: "maglev".into(),
        description: "ringlb's default: Maglev, table of 65537 entries".into(),
        hashing: Hashing::default(),
        exercise: false,
    };
    Ok(vec![first, maglev])
}

/// The manifest of an analysis cluster.
fn manifest_text(cluster: &str, config: &Config, names: &[String], runtime: RuntimeChoice) -> String {
    let h = &config.hashing;
    let hashing = format!(
        "hashing:\n  algorithm: {}\n  slots: {}\n  virtual_nodes: {}\n  function: {}\n  probing: {}\n  key: request-id\n",
        name_of(&h.algorithm),
        h.slots,
        h.virtual_nodes,
        name_of(&h.function),
        name_of(&h.probing)
    );
    let (replacement, unknown) = if config.exercise { ("new", "exercise") } else { ("same", "pass") };
    let runtime = match runtime {
        RuntimeChoice::Process => "  runtime: process\n".to_string(),
        RuntimeChoice::Docker => {
            format!("  runtime: docker\n  image: ringlb:latest\n  network: {cluster}-net\n")
        }
    };
    format!(
        "name: {cluster}\nreplicas: {}\nhostnames: [{}]\nlisten: 127.0.0.1:0\nreplica:\n{runtime}  replacement_name: {replacement}\n  \
         drain_timeout: 2s\n  stop_timeout: 2s\n{hashing}proxy:\n  unknown_path: {unknown}\n",
        names.len(),
        names.join(", ")
    )
}

/// Runs the experiments and writes the report; returns the results.
///
/// # Errors
/// A cluster cannot start, a chart or a file cannot be written.
pub async fn run(options: &Options) -> Result<Results, AnalyzeError> {
    let configs = configs(options)?;
    let ids = load::request_ids(options.seed, options.requests);
    let wanted = |e: Experiment| options.experiments.is_empty() || options.experiments.contains(&e);
    let ns: Vec<usize> = if wanted(Experiment::A2) || wanted(Experiment::A4) {
        std::iter::once(A1_REPLICAS).chain(A2_REPLICAS.filter(|n| *n != A1_REPLICAS)).collect()
    } else {
        vec![A1_REPLICAS]
    };
    let configs: Vec<Config> = if wanted(Experiment::A4) || wanted(Experiment::A2) {
        configs
    } else {
        configs.into_iter().take(1).collect()
    };
    let prefix = match options.runtime {
        RuntimeChoice::Docker if !options.offline => format!("analysis{}-", std::process::id()),
        _ => String::new(),
    };

    let mut results = Vec::new();
    for config in &configs {
        let mut measurements = Vec::new();
        for &n in &ns {
            let names = replica_names(&prefix, n);
            let offline = stats::offline(&config.hashing, &names, &ids)?;
            let (live, elapsed_ms) = if options.offline {
                (None, None)
            } else {
                let (distribution, elapsed) = measure(options, config, &names, &ids).await?;
                tracing::info!(config = %config.label, n, elapsed_ms = elapsed.as_millis() as u64,
                    "{} requests in {:.2} s ({:.0}/s); {:?}", ids.len(), elapsed.as_secs_f64(),
                    ids.len() as f64 / elapsed.as_secs_f64().max(1e-9), distribution.counts);
                (Some(distribution), Some(elapsed.as_secs_f64() * 1000.0))
            };
            measurements.push(Measurement { n, live, offline, elapsed_ms });
        }
        results.push(ConfigResults { config: config.clone(), measurements });
    }

    let a3 = if wanted(Experiment::A3) && !options.offline {
        Some(endpoints_and_failover(options, &configs[0], &prefix).await?)
    } else {
        None
    };
    let exercise = exercise_hashing();
    let results = Results {
        seed: options.seed,
        requests: options.requests,
        concurrency: options.concurrency,
        runtime: if options.offline { "offline".into() } else { name_of(&options.runtime) },
        configs: results,
        a3,
        h_reach: stats::h_reach(512, &ids),
        h_slots_per_replica: stats::reachable_slots_per_replica(
            &exercise,
            &replica_names(&prefix, A1_REPLICAS),
        )?,
    };
    report::write(&options.out, &results)?;
    Ok(results)
}

/// One live measurement: a fresh cluster of `names`, every id through the load balancer.
async fn measure(
    options: &Options,
    config: &Config,
    names: &[String],
    ids: &[u32],
) -> Result<(Distribution, Duration), AnalyzeError> {
    with_cluster(options, config, names, async |cluster_base: String, _kill: Killer<'_>| {
        let load = Load::new(&cluster_base);
        let (answers, elapsed) = load.home_for_ids(ids, options.concurrency).await;
        let failed = answers.iter().filter(|a| a.is_none()).count() as u64;
        let distribution =
            Distribution::from_answers(names, answers.iter().flatten().map(String::as_str), failed);
        Ok((distribution, elapsed))
    })
    .await
}

/// Kills one instance (by its runtime id) of whatever runtime the cluster runs on.
type KillFn<'a> = Box<
    dyn Fn(
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), AnalyzeError>> + Send + 'a>>
        + Send
        + Sync
        + 'a,
>;

/// What an experiment may do to the running analysis cluster: kill a replica, look at the ring.
pub struct Killer<'a> {
    kill: KillFn<'a>,
    snapshots: Arc<crate::snapshot::Snapshots>,
}

impl Killer<'_> {
    /// SIGKILLs the replica named `name`.
    pub async fn kill(&self, name: &str) -> Result<(), AnalyzeError> {
        let snapshot = self.snapshots.load();
        let instance = snapshot
            .replicas
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.instance.clone())
            .ok_or_else(|| AnalyzeError::NoReplica(name.to_owned()))?;
        (self.kill)(instance).await
    }

    /// The ring's member names now.
    pub fn ring(&self) -> Vec<String> {
        self.snapshots.load().members.iter().map(|b| b.name.clone()).collect()
    }
}

/// Starts a cluster for `config` and `names` on the chosen runtime, runs `body` against it, and
/// removes it whatever happened.
async fn with_cluster<T>(
    options: &Options,
    config: &Config,
    names: &[String],
    body: impl AsyncFnOnce(String, Killer<'_>) -> Result<T, AnalyzeError>,
) -> Result<T, AnalyzeError> {
    let cluster = match options.runtime {
        RuntimeChoice::Process => "analysis".to_owned(),
        RuntimeChoice::Docker => format!("analysis{}", std::process::id()),
    };
    let text = manifest_text(&cluster, config, names, options.runtime);
    let manifest = Manifest::parse(&text).map_err(AnalyzeError::GeneratedManifest)?;
    let trigger = Trigger::new();
    let setup = Setup {
        trigger: trigger.clone(),
        executable: std::env::current_exe().map_err(AnalyzeError::Executable)?,
        // Replicas log only their warnings: the analysis prints its own figures.
        replica_args: vec!["--log-level".to_string(), "warn".to_string()],
        server_args: Vec::new(),
    };
    let runtime = Arc::new(AnyRuntime::for_manifest(&manifest, setup).await?);
    let result = run_on(Arc::clone(&runtime), trigger, &text, names, body).await;
    runtime.remove_own_networks().await;
    result
}

async fn run_on<T>(
    runtime: Arc<AnyRuntime>,
    trigger: Trigger,
    text: &str,
    names: &[String],
    body: impl AsyncFnOnce(String, Killer<'_>) -> Result<T, AnalyzeError>,
) -> Result<T, AnalyzeError> {
    let cluster = Cluster::start(runtime, trigger, text, names.len()).await?;
    let runtime = Arc::clone(&cluster.runtime);
    let killer = Killer {
        kill: Box::new(move |instance: String| {
            let runtime = Arc::clone(&runtime);
            Box::pin(async move { Ok(runtime.kill(&InstanceId(instance)).await?) })
        }),
        snapshots: Arc::clone(cluster.snapshots()),
    };
    let result = body(cluster.base(), killer).await;
    cluster.stop().await;
    result
}

/// A-3: every endpoint, then a replica killed during a steady stream.
async fn endpoints_and_failover(
    options: &Options,
    config: &Config,
    prefix: &str,
) -> Result<EndpointsAndFailover, AnalyzeError> {
    let names = replica_names(prefix, A1_REPLICAS);
    let victim = names[1].clone();
    let seed = options.seed;
    with_cluster(options, config, &names, async |base: String, killer: Killer<'_>| {
        let load = Load::new(&base);
        let named = format!("{prefix}S5");
        let mut endpoints = Vec::new();
        let mut added: Vec<String> = Vec::new();
        for (method, path, body) in [
            ("GET", "/rep", String::new()),
            ("GET", "/home", String::new()),
            ("GET", "/heartbeat", String::new()),
            ("POST", "/add", format!(r#"{{"n": 2, "hostnames": ["{named}"]}}"#)),
            ("DELETE", "/rm", String::new()),
            ("GET", "/rep", String::new()),
            ("POST", "/add", r#"{"n": 1, "hostnames": ["S6", "S7"]}"#.to_string()),
            ("DELETE", "/rm", r#"{"n": 1, "hostnames": ["S6", "S7"]}"#.to_string()),
            ("GET", "/other", String::new()),
        ] {
            // The first /rm names exactly what the first /add added (one listed, one generated),
            // so the report does not depend on /rm's random choice.
            let body = if method == "DELETE" && body.is_empty() {
                let quoted: Vec<String> = added.iter().map(|n| format!("\"{n}\"")).collect();
                format!(r#"{{"n": {}, "hostnames": [{}]}}"#, added.len(), quoted.join(", "))
            } else {
                body
            };
            let exchange = load.exchange(method, path, &body, Some(123_456)).await;
            if method == "POST" && exchange.status == 200 && added.is_empty() {
                let now: serde_json::Value = serde_json::from_str(&exchange.response).unwrap_or_default();
                added = now["message"]["replicas"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|v| v.as_str())
                            .filter(|n| !names.contains(&n.to_string()))
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
            }
            endpoints.push(exchange);
            // Each scaling call answers once the controller took it; wait until it converged so
            // the next exchange sees a settled cluster.
            if path == "/add" || path == "/rm" {
                let deadline = Instant::now() + Duration::from_secs(60);
                while killer.ring().len() != killer.snapshots.load().replica_names.len()
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }

        // The failure experiment: 8 clients for 3 s, the victim killed after 1 s.
        let stop = Arc::new(AtomicBool::new(false));
        let origin = Instant::now();
        let stream = {
            let (load, stop) = (load.clone(), Arc::clone(&stop));
            tokio::spawn(async move { load.stream(8, seed, stop, origin).await })
        };
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let before: Vec<String> = killer.ring();
        let killed_ms = origin.elapsed().as_secs_f64() * 1000.0;
        killer.kill(&victim).await?;
        let mut out_of_ring_ms = None;
        let mut replaced_ms = None;
        let mut replacement = String::new();
        let watch_until = Instant::now() + Duration::from_secs(20);
        while replaced_ms.is_none() && Instant::now() < watch_until {
            let ring = killer.ring();
            let now_ms = origin.elapsed().as_secs_f64() * 1000.0;
            if out_of_ring_ms.is_none() && !ring.contains(&victim) {
                out_of_ring_ms = Some(now_ms);
            }
            if ring.len() == before.len() && (out_of_ring_ms.is_some() || !ring.contains(&victim)) {
                replacement =
                    ring.iter().find(|n| !before.contains(n)).cloned().unwrap_or_else(|| victim.clone());
                replaced_ms = Some(now_ms);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let stop_at = origin + Duration::from_millis(3000).max(origin.elapsed() + Duration::from_millis(500));
        tokio::time::sleep_until(stop_at.into()).await;
        stop.store(true, Ordering::Relaxed);
        let samples = stream.await.map_err(AnalyzeError::Stream)?;
        let failed = samples.iter().filter(|s| s.replica.is_none()).count();
        let failover = Failover {
            victim: victim.clone(),
            replacement,
            killed_ms,
            out_of_ring_ms,
            replaced_ms,
            duration_ms: origin.elapsed().as_secs_f64() * 1000.0,
            requests: samples.len(),
            failed,
            samples,
        };
        Ok(EndpointsAndFailover { endpoints, failover })
    })
    .await
}
