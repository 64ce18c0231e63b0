//! The `ringlb` command: `run` (load balancer + controller), `server` (a replica), `check`
//! (validate a manifest).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ringlb::admin::{self, AdminState};
use ringlb::controller::Controller;
use ringlb::logging::{self, LogFormat};
use ringlb::manifest::source::ManifestSource;
use ringlb::manifest::{Manifest, ManifestError, RuntimeKind, watch};
use ringlb::proxy::Proxy;
use ringlb::runtime::docker::DockerRuntime;
use ringlb::runtime::process::ProcessRuntime;
use ringlb::runtime::{NameCheck, Runtime};
use ringlb::snapshot::Snapshots;
use ringlb::trigger::Trigger;
use ringlb::{listener, replica};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

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
    if let Command::Check { manifest } = &cli.command {
        return check(manifest);
    }
    logging::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
            Command::Server { port, host, id, announce, exit_with_parent } => {
                server(host, port, id, announce, exit_with_parent).await
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
            Command::Check { .. } => Ok(()),
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

/// `ringlb check`.
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
    let trigger = Trigger::new();
    match manifest.replica.runtime {
        RuntimeKind::Process => {
            let exe = std::env::current_exe().context("cannot find the ringlb executable")?;
            let runtime = Arc::new(ProcessRuntime::new(exe, child_args, trigger.clone()));
            serve(runtime, source, trigger, ready_file, termination).await
        }
        RuntimeKind::Docker => {
            let runtime = DockerRuntime::connect(&manifest.name, trigger.clone()).await?;
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
    let manifest = source.current().manifest;
    let listener = TcpListener::bind(manifest.listen)
        .await
        .with_context(|| format!("cannot listen on {} (the manifest's `listen`)", manifest.listen))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    let snapshots = Arc::new(Snapshots::default());
    let shutdown = CancellationToken::new();

    let controller =
        Controller::new(Arc::clone(&runtime), Arc::clone(&source), Arc::clone(&snapshots), trigger.clone());
    let controller = tokio::spawn(controller.run(shutdown.child_token()));
    let watcher = tokio::spawn(watch::run(Arc::clone(&source), shutdown.child_token()));
    if snapshots.wait_for_version(1, Duration::from_secs(30)).await.is_none() {
        tracing::warn!("the first reconcile pass is slow; serving anyway");
    }

    let token = std::env::var(admin::TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let admin_state = Arc::new(AdminState {
        source: Arc::clone(&source),
        snapshots: Arc::clone(&snapshots),
        edits: tokio::sync::Mutex::new(()),
        token,
        names: Arc::clone(&runtime) as Arc<dyn NameCheck>,
    });
    let proxy = Arc::new(Proxy::new(Arc::clone(&snapshots), trigger));
    let front = tokio::spawn(listener::serve(
        listener,
        proxy,
        admin::router(admin_state),
        shutdown.child_token(),
        SHUTDOWN_DRAIN,
    ));
    tracing::info!(event = "listening", address = %local, "load balancer listening on http://{local}");
    if let Some(path) = ready_file {
        std::fs::write(path, local.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    termination.received().await;
    tracing::info!("shutting down: finishing requests in flight, then stopping replicas");
    shutdown.cancel();
    let _ = front.await;
    let _ = controller.await;
    let _ = watcher.await;
    runtime.shutdown(manifest.replica.stop_timeout.get()).await;
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
    replica::serve(listener, &id, stop, SHUTDOWN_DRAIN).await.context("replica server failed")
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
