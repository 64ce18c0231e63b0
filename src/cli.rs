//! The `ringlb` command line: the global options and one set of arguments per command (clap).
//! What each command does is in `commands/`.

use clap::{Args, Parser, Subcommand};
use ringlb::logging::LogFormat;
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
    /// Threads [default: the CPUs this process may use, cgroup quota and affinity included; 1 runs
    /// everything on one thread]. `run` serves connections on this many threads of their own.
    #[arg(long, global = true, env = "RINGLB_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
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
    Analyze(ringlb::analyze::Options),
    /// Run a fixed-rate load ramp against an autoscaled cluster of local processes; print per second
    /// the offered rate, replicas and p99 latency, and write ramp.csv, ramp.svg and README.md.
    #[cfg(feature = "analyze")]
    DemoAutoscale(ringlb::analyze::autoscale_demo::Options),
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
    /// Write this process's id to this file once it serves (and remove it on exit). `kill -USR2`
    /// of that id upgrades in place: the binary on disk starts with the same arguments, takes
    /// over the listening sockets and the replicas, rewrites the file, and this process drains
    /// and exits; no request is refused.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Run the replicas on this runtime whatever `replica.runtime` says (docker, process,
    /// static, swarm): `--runtime process` runs a manifest written for Docker as local
    /// processes (`make local MANIFEST=...`). The file itself is not changed.
    #[arg(long)]
    pub runtime: Option<ringlb::manifest::RuntimeKind>,
    /// How connections are spread over the threads: `per-core` (each thread a single-threaded
    /// runtime that accepts and serves its own connections; the controller on a thread of its
    /// own) or `shared` (one work-stealing runtime for everything, tokio's multi-thread scheduler).
    #[arg(long, env = "RINGLB_SCHEDULER", value_enum, default_value_t = Scheduler::PerCore)]
    pub scheduler: Scheduler,
}

/// How `ringlb run` uses its threads (`--scheduler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// Thread per core.
    PerCore,
    /// tokio's work-stealing multi-thread runtime.
    Shared,
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
    /// The statuses that count as healthy (`200`, `200-399`, `200,204`), as `health.status`.
    #[arg(long, default_value = "200-399", value_parser = ringlb::manifest::StatusSet::parse)]
    pub status: ringlb::manifest::StatusSet,
    /// A connect is the heartbeat (`health.kind: tcp`); no request is sent.
    #[arg(long, conflicts_with = "grpc")]
    pub tcp: bool,
    /// The standard gRPC health check is the heartbeat (`health.kind: grpc`), over h2c.
    #[arg(long)]
    pub grpc: bool,
}

/// The arguments of `ringlb check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The manifest to check.
    #[arg(long, short, default_value = "manifests/cluster.yaml")]
    pub manifest: PathBuf,
}
