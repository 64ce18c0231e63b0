//! The `ringlb` command: `run` (load balancer + controller), `server` (a replica), `check`
//! (validate a manifest), `probe` (a replica's health check), and the tools around them.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ringlb::admin;
use ringlb::analyze::{self, Experiment, RuntimeChoice};
use ringlb::balancer::{self, Balancer};
use ringlb::logging::{self, LogFormat};
use ringlb::manifest::source::ManifestSource;
use ringlb::manifest::{Manifest, ManifestError, RuntimeKind};
use ringlb::replica;
use ringlb::ring::{HashFunction, Probing};
use ringlb::runtime::Runtime;
use ringlb::runtime::docker::DockerRuntime;
use ringlb::runtime::process::ProcessRuntime;
use ringlb::runtime::swarm::SwarmRuntime;
use ringlb::trigger::Trigger;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// How long in-flight requests may take to finish when ringlb or a replica stops.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "ringlb", version, about = "A self-managing consistent-hashing HTTP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format (to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives. RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Worker threads [default: the CPUs this process may use; 1 runs everything on one thread].
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load balancer and the controller that keeps the manifest's replicas alive.
    Run {
        /// The cluster manifest; it is watched, and /add and /rm rewrite it.
        #[arg(long, short, default_value = "manifests/cluster.yaml")]
        manifest: PathBuf,
        /// Write the address the load balancer listens on to this file once it serves (for
        /// scripts and tests that listen on port 0).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Run one replica server (GET /home, GET /heartbeat).
    Server {
        /// Port to listen on (0: any free port).
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        host: IpAddr,
        /// The id in "Hello from Server: <id>" [default: $SERVER_ID, else the hostname].
        #[arg(long, env = "SERVER_ID")]
        id: Option<String>,
        /// Print "ringlb-replica listening on <address>" on stdout once listening.
        #[arg(long, hide = true)]
        announce: bool,
        /// Exit when this process (the load balancer that started us) exits.
        #[arg(long, hide = true)]
        exit_with_parent: Option<i32>,
        /// How many GET /work requests run at once; the rest queue (0: no limit).
        #[arg(long, env = "RINGLB_WORK_SLOTS", default_value_t = 0)]
        work_slots: usize,
    },
    /// Reproduce the exercise's analysis on real clusters and write a report with charts.
    Analyze {
        /// Requests per measurement.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Seed of the request ids (the same seed gives the same ids, and the same counts).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where the report (README.md), the charts (SVG) and results.json go.
        #[arg(long, default_value = "docs/analysis")]
        out: PathBuf,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Compute the distributions from the ring alone, in milliseconds; start nothing.
        #[arg(long)]
        offline: bool,
        /// What runs the analysis clusters' replicas.
        #[arg(long, value_enum, default_value_t = RuntimeChoice::Process)]
        runtime: RuntimeChoice,
        /// Analyse this manifest's hashing instead of the exercise's (maglev stays the comparison).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Run only these experiments [default: all].
        #[arg(long, value_enum, value_delimiter = ',')]
        experiments: Vec<Experiment>,
        /// Override M (the ring's slots) of the first hashing, e.g. with --offline.
        #[arg(long)]
        slots: Option<u32>,
        /// Override K (virtual nodes per replica) of the first hashing.
        #[arg(long)]
        virtual_nodes: Option<u32>,
        /// Override the probing of the first hashing.
        #[arg(long, value_parser = by_manifest_name::<Probing>)]
        probing: Option<Probing>,
        /// Override the hash function of the first hashing.
        #[arg(long, value_parser = by_manifest_name::<HashFunction>)]
        function: Option<HashFunction>,
    },
    /// Run a fixed-rate load ramp against an autoscaled cluster of local processes; print per second
    /// the offered rate, replicas and p99 latency, and write ramp.csv, ramp.svg and README.md.
    DemoAutoscale {
        /// Where the CSV, the chart and the table go.
        #[arg(long, default_value = "docs/autoscale")]
        out: PathBuf,
        /// Milliseconds each request keeps its replica busy (GET /work?ms=...).
        #[arg(long, default_value_t = 200)]
        work_ms: u64,
        /// Seconds per step of the ramp (10, 40, 80, 160, 240, 160, 80, 10, 0 requests/s).
        #[arg(long, default_value_t = 8)]
        step_seconds: u64,
    },
    /// Show a running load balancer's state in one line; optionally wait until it is ready.
    Status {
        /// The load balancer's address.
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        url: String,
        /// Wait until every desired replica is in the ring (exit 1 if that takes too long).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// One heartbeat to a replica on this host (a container health check): exit 0 when
    /// `GET <path>` answers 2xx within the timeout, else 1 with the reason.
    Probe {
        /// The replica's port on 127.0.0.1.
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// The path to GET.
        #[arg(long, default_value = "/heartbeat")]
        path: String,
        /// How long the whole heartbeat may take, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Validate a manifest (like `nginx -t`): exit 0 with a summary, or 1 with the error's line
    /// and column.
    Check {
        /// The manifest to check.
        #[arg(long, short, default_value = "manifests/cluster.yaml")]
        manifest: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check { manifest } => return check(manifest),
        Command::Probe { port, path, timeout_ms } => return probe(*port, path, *timeout_ms),
        _ => {}
    }
    logging::init(cli.log_format, &cli.log_level);
    // One CPU (a container limit, or taskset): one thread runs everything, with no work-stealing
    // and no cross-thread wake-ups; more CPUs: tokio's multi-thread scheduler.
    let cpus =
        cli.threads.or_else(|| std::thread::available_parallelism().ok().map(|n| n.get())).unwrap_or(1);
    let built = if cpus <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).enable_all().build()
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ringlb: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { manifest, ready_file } => {
                // Replicas log like the load balancer.
                let format = match cli.log_format {
                    LogFormat::Human => "human",
                    LogFormat::Json => "json",
                };
                let child_args =
                    vec!["--log-format".into(), format.into(), "--log-level".into(), cli.log_level.clone()];
                run(&manifest, ready_file.as_deref(), child_args).await
            }
            Command::Server { port, host, id, announce, exit_with_parent, work_slots } => {
                server(host, port, id, announce, exit_with_parent, work_slots).await
            }
            Command::Status { url, wait, timeout } => {
                let summary = if wait {
                    ringlb::status::wait_ready(&url, Duration::from_secs(timeout)).await?
                } else {
                    ringlb::status::fetch(&url).await?
                };
                println!("ringlb at {url}: {summary}");
                Ok(())
            }
            Command::Analyze {
                requests,
                seed,
                out,
                concurrency,
                offline,
                runtime,
                manifest,
                experiments,
                slots,
                virtual_nodes,
                probing,
                function,
            } => {
                let options = analyze::Options {
                    requests,
                    seed,
                    out: out.clone(),
                    concurrency,
                    offline,
                    runtime,
                    manifest,
                    experiments,
                    slots,
                    virtual_nodes,
                    probing,
                    function,
                };
                let started = std::time::Instant::now();
                let results = analyze::run(&options).await?;
                print_summary(&results);
                println!(
                    "report written to {}/README.md in {:.1} s",
                    out.display(),
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Command::DemoAutoscale { out, work_ms, step_seconds } => {
                let options = analyze::autoscale_demo::Options { out: out.clone(), work_ms, step_seconds };
                let seconds = analyze::autoscale_demo::run(&options).await?;
                println!("second  offered/s  answered  failed  replicas  p99 ms");
                for s in &seconds {
                    println!(
                        "{:>6}  {:>9}  {:>8}  {:>6}  {:>8}  {:>6.0}",
                        s.t, s.offered, s.answered, s.failed, s.replicas, s.p99_ms
                    );
                }
                println!("written to {}/ (ramp.csv, ramp.svg, README.md)", out.display());
                Ok(())
            }
            Command::Check { .. } | Command::Probe { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a CLI value by the name the manifest uses for it (`linear`, `xxh3`, ...).
fn by_manifest_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| e.to_string())
}

/// The analysis's tables on stdout, one line per N and algorithm.
fn print_summary(results: &analyze::Results) {
    for config in &results.configs {
        for m in &config.measurements {
            let d = analyze::report::shown(m);
            println!(
                "{:<10} N={} counts={:?} mean={:.1} min={} max={} std={:.1} max/mean={:.2}{}",
                config.config.label,
                m.n,
                d.counts,
                d.mean(),
                d.min(),
                d.max(),
                d.std_dev(),
                d.max_over_mean(),
                m.elapsed_ms.map(|ms| format!(" ({:.2} s live)", ms / 1000.0)).unwrap_or_default()
            );
        }
    }
    if let Some(a3) = &results.a3 {
        let f = &a3.failover;
        println!(
            "A-3: killed {} at {:.0} ms; out of the ring at {:?} ms; replacement {} in the ring at {:?} ms; {} requests, {} failed",
            f.victim,
            f.killed_ms,
            f.out_of_ring_ms.map(|t| t.round()),
            f.replacement,
            f.replaced_ms.map(|t| t.round()),
            f.requests,
            f.failed
        );
    }
    println!("H reaches {} of 512 slots ({} with these ids)", results.h_reach.0, results.h_reach.1);
}

/// `ringlb check`.
fn probe(port: u16, path: &str, timeout_ms: u64) -> ExitCode {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match ringlb::probe::heartbeat(addr, path, Duration::from_millis(timeout_ms)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ringlb probe: {why}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Manifest::load(path) {
        Ok((manifest, _)) => {
            println!("{}: ok: {}", path.display(), manifest.summary());
            ExitCode::SUCCESS
        }
        Err(ManifestError::Invalid(errors)) => {
            for error in errors {
                match error.position {
                    Some(p) => eprintln!(
                        "{}:{}:{}: {}: {}",
                        path.display(),
                        p.line,
                        p.column,
                        error.field,
                        error.message
                    ),
                    None => eprintln!("{}: {}: {}", path.display(), error.field, error.message),
                }
            }
            ExitCode::FAILURE
        }
        Err(ManifestError::Syntax { message, position, snippet }) => {
            match position {
                Some(p) => eprintln!("{}:{}:{}: {message}", path.display(), p.line, p.column),
                None => eprintln!("{}: {message}", path.display()),
            }
            if !snippet.is_empty() {
                eprintln!("{snippet}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is created (so a signal that arrives before
/// anyone waits is not lost, nor fatal).
struct Termination {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    fn catch() -> Result<Termination> {
        Ok(Termination {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// `ringlb run`.
async fn run(manifest_path: &Path, ready_file: Option<&Path>, child_args: Vec<String>) -> Result<()> {
    let termination = Termination::catch()?;
    let source = ManifestSource::open(manifest_path).map_err(|e| match e.position() {
        Some(p) => anyhow::anyhow!("{}:{}:{}: {e}", manifest_path.display(), p.line, p.column),
        None => anyhow::anyhow!("{}: {e}", manifest_path.display()),
    })?;
    let manifest = source.current().manifest;
    tracing::info!(manifest = %manifest_path.display(), "{}", manifest.summary());
    match ringlb::manifest::file::remove_stale_temporaries(manifest_path) {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} temporary file(s) left by an interrupted manifest edit"),
        Err(error) => tracing::warn!(%error, "cannot look for temporary files left next to the manifest"),
    }
    let trigger = Trigger::new();
    match manifest.replica.runtime {
        RuntimeKind::Process => {
            let exe = std::env::current_exe().context("cannot find the ringlb executable")?;
            let runtime = Arc::new(ProcessRuntime::new(exe, child_args, trigger.clone()));
            serve(runtime, source, trigger, ready_file, termination).await
        }
        RuntimeKind::Static => {
            let runtime = ringlb::runtime::static_endpoints::StaticRuntime::new(&manifest)?;
            serve(Arc::new(runtime), source, trigger, ready_file, termination).await
        }
        RuntimeKind::Docker => {
            let runtime = DockerRuntime::connect(&manifest.name, trigger.clone()).await?;
            serve(Arc::new(runtime), source, trigger, ready_file, termination).await
        }
        RuntimeKind::Swarm => {
            let runtime = SwarmRuntime::connect(&manifest.name, trigger.clone()).await?;
            serve(Arc::new(runtime), source, trigger, ready_file, termination).await
        }
    }
}

/// Runs the load balancer over `runtime` until SIGTERM or SIGINT.
async fn serve<R: Runtime>(
    runtime: Arc<R>,
    source: Arc<ManifestSource>,
    trigger: Trigger,
    ready_file: Option<&Path>,
    termination: Termination,
) -> Result<()> {
    let stop_timeout = source.current().manifest.replica.stop_timeout.get();
    let metrics = match ringlb::telemetry::install() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "metrics are off: cannot install the Prometheus recorder");
            None
        }
    };
    let options = balancer::Options {
        admin_token: std::env::var(admin::TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        drain: SHUTDOWN_DRAIN,
        metrics,
    };
    let balancer = Balancer::start(Arc::clone(&runtime), source, trigger, options).await?;
    if let Some(path) = ready_file {
        std::fs::write(path, balancer.addr.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    termination.received().await;
    tracing::info!("shutting down: finishing requests in flight, then stopping replicas");
    balancer.stop().await;
    runtime.shutdown(stop_timeout).await;
    tracing::info!("stopped");
    Ok(())
}

/// `ringlb server`.
async fn server(
    host: IpAddr,
    port: u16,
    id: Option<String>,
    announce: bool,
    parent: Option<i32>,
    work_slots: usize,
) -> Result<()> {
    let termination = Termination::catch()?;
    if let Some(parent) = parent {
        exit_with_parent(parent)?;
    }
    let id = match id {
        Some(id) => id,
        None => nix::unistd::gethostname()
            .context("no --id, no SERVER_ID, and the hostname is unreadable")?
            .to_string_lossy()
            .into_owned(),
    };
    let listener =
        TcpListener::bind((host, port)).await.with_context(|| format!("cannot listen on {host}:{port}"))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    tracing::info!(id = %id, "replica {id} listening on http://{local}");
    if announce {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}{local}", replica::ANNOUNCE_PREFIX).and_then(|()| stdout.flush())?;
    }
    let stop = async {
        termination.received().await;
        tracing::info!("replica stopping: finishing requests in flight");
    };
    replica::serve(listener, &id, Some(work_slots), stop, SHUTDOWN_DRAIN)
        .await
        .context("replica server failed")
}

/// Asks the kernel to send SIGTERM when the parent dies, then checks the parent is still `parent`
/// (it may have died before the request).
fn exit_with_parent(parent: i32) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("cannot set the parent-death signal")?;
    if nix::unistd::getppid().as_raw() != parent {
        bail!("the load balancer that started this replica is gone");
    }
    Ok(())
}
