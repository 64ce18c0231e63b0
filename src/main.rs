//! The `ringlb` command: `run` (load balancer + controller), `server` (a replica), `check`
//! (validate a manifest), `probe` (a replica's health check), `status`, and, with the `analyze`
//! feature, `analyze` and `demo-autoscale`. The arguments are in `cli.rs`, each command in
//! `commands/`.

mod cli;
mod commands;

use clap::Parser;
use cli::{Cli, Command, Scheduler};
use ringlb::logging::{self, LogFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that run once and exit need no logging and no async runtime.
    match &cli.command {
        Command::Check(args) => return commands::check::run(args),
        Command::Probe(args) => return commands::probe::run(args),
        _ => {}
    }
    // What a previous process passed on in an upgrade, taken while this process has one thread.
    let predecessor = match &cli.command {
        // SAFETY: no thread has been started yet (no logging, no async runtime).
        Command::Run(_) => match unsafe { commands::upgrade::Predecessor::take_from_env() } {
            Ok(predecessor) => predecessor,
            Err(error) => {
                eprintln!("ringlb: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => commands::upgrade::Predecessor::default(),
    };
    logging::init(cli.log_format, &cli.log_level);
    // One CPU (a container limit, or taskset): one thread runs everything, with no work-stealing
    // and no cross-thread wake-ups. More CPUs: `run` serves connections on one single-threaded
    // runtime per CPU and runs the controller on this one (`--scheduler per-core`), or everything
    // on tokio's multi-thread scheduler (`--scheduler shared`, and every other command).
    let cpus = cli
        .threads
        .map(usize::from)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let per_core = matches!(&cli.command, Command::Run(args) if args.scheduler == Scheduler::PerCore);
    let (built, proxy_workers) = if cpus <= 1 || per_core {
        (tokio::runtime::Builder::new_current_thread().enable_all().build(), cpus)
    } else {
        (tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).enable_all().build(), 1)
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
            Command::Run(args) => {
                // Replicas log like the load balancer.
                let format = match cli.log_format {
                    LogFormat::Human => "human",
                    LogFormat::Json => "json",
                };
                let child_args =
                    vec!["--log-format".into(), format.into(), "--log-level".into(), cli.log_level.clone()];
                commands::run::run(args, child_args, predecessor, proxy_workers).await
            }
            Command::Server(args) => commands::server::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            #[cfg(feature = "analyze")]
            Command::Analyze(args) => commands::analyze::run(args).await,
            #[cfg(feature = "analyze")]
            Command::DemoAutoscale(args) => commands::analyze::demo_autoscale(args).await,
            Command::Check(_) | Command::Probe(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", ringlb::error_chain(&*error));
            ExitCode::FAILURE
        }
    }
}
