//! The `ringlb` command line: the global options and one set of arguments per command (clap).
//! What each command does is in `commands/`.

use clap::{Args, Parser, Subcommand};
#[cfg(feature = "analyze")]
use ringlb::analyze::{Experiment, RuntimeChoice};
use ringlb::logging::LogFormat;
#[cfg(feature = "analyze")]
use ringlb::ring::{HashFunction, Probing};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ringlb", version, about = "A self-managing consistent-hashing HTTP load balancer")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format (to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives. RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Worker threads [default: the CPUs this process may use; 1 runs everything on one thread].
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the load balancer and the controller that keeps the manifest's replicas alive.
    Run(RunArgs),
    /// Run one replica server (GET /home, GET /heartbeat).
    Server(ServerArgs),
    /// Reproduce the exercise's analysis on real clusters and write a report with charts.
    #[cfg(feature = "analyze")]
    Analyze(AnalyzeArgs),
    /// Run a fixed-rate load ramp against an autoscaled cluster of local processes; print per second
    /// the offered rate, replicas and p99 latency, and write ramp.csv, ramp.svg and README.md.
    #[cfg(feature = "analyze")]
    DemoAutoscale(DemoAutoscaleArgs),
    /// Show a running load balancer's state in one line; optionally wait until it is ready.
    Status(StatusArgs),
    /// One heartbeat to a replica on this host (a container health check): exit 0 when
    /// `GET <path>` answers 2xx within the timeout, else 1 with the reason.
    Probe(ProbeArgs),
    /// Validate a manifest (like `nginx -t`): exit 0 with a summary, or 1 with the error's line
    /// and column.
    Check(CheckArgs),
}

/// The arguments of `ringlb run`.
#[derive(Args)]
pub struct RunArgs {
    /// The cluster manifest; it is watched, and /add and /rm rewrite it.
    #[arg(long, short, default_value = "manifests/cluster.yaml")]
    pub manifest: PathBuf,
    /// Write the address the load balancer listens on to this file once it serves (for
    /// scripts and tests that listen on port 0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// The arguments of `ringlb server`.
#[derive(Args)]
pub struct ServerArgs {
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// The id in "Hello from Server: <id>" [default: $SERVER_ID, else the hostname].
    #[arg(long, env = "SERVER_ID")]
    pub id: Option<String>,
    /// Print "ringlb-replica listening on <address>" on stdout once listening.
    #[arg(long, hide = true)]
    pub announce: bool,
    /// Exit when this process (the load balancer that started us) exits.
    #[arg(long, hide = true)]
    pub exit_with_parent: Option<i32>,
    /// How many GET /work requests run at once; the rest queue (0: no limit).
    #[arg(long, env = "RINGLB_WORK_SLOTS", default_value_t = 0)]
    pub work_slots: usize,
}

/// The arguments of `ringlb analyze`.
#[cfg(feature = "analyze")]
#[derive(Args)]
pub struct AnalyzeArgs {
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

/// The arguments of `ringlb demo-autoscale`.
#[cfg(feature = "analyze")]
#[derive(Args)]
pub struct DemoAutoscaleArgs {
    /// Where the CSV, the chart and the table go.
    #[arg(long, default_value = "docs/autoscale")]
    pub out: PathBuf,
    /// Milliseconds each request keeps its replica busy (GET /work?ms=...).
    #[arg(long, default_value_t = 200)]
    pub work_ms: u64,
    /// Seconds per step of the ramp (10, 40, 80, 160, 240, 160, 80, 10, 0 requests/s).
    #[arg(long, default_value_t = 8)]
    pub step_seconds: u64,
}

/// The arguments of `ringlb status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The load balancer's address.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub url: String,
    /// Wait until every desired replica is in the ring (exit 1 if that takes too long).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The arguments of `ringlb probe`.
#[derive(Args)]
pub struct ProbeArgs {
    /// The replica's port on 127.0.0.1.
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// The path to GET.
    #[arg(long, default_value = "/heartbeat")]
    pub path: String,
    /// How long the whole heartbeat may take, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

/// The arguments of `ringlb check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The manifest to check.
    #[arg(long, short, default_value = "manifests/cluster.yaml")]
    pub manifest: PathBuf,
}

/// Parses a CLI value by the name the manifest uses for it (`linear`, `xxh3`, ...).
#[cfg(feature = "analyze")]
fn by_manifest_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| e.to_string())
}
