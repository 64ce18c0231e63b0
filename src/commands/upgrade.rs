//! The in-place upgrade of `ringlb run` (SIGUSR2), both sides of it.
//!
//! The running process starts the binary on disk again with its own arguments and passes it, by
//! file descriptor, its listening sockets (the very same sockets: connections waiting to be
//! accepted are not lost) and the write end of a pipe. The new process takes the sockets instead
//! of binding, adopts the replicas, waits until its ring holds as many replicas as the old one's,
//! starts serving, and writes `ready` into the pipe. Only then does the old process hand over
//! (`Balancer::hand_over`): it stops its controller and accepting, and its connections end with
//! their next answer. A new process that exits or stays silent for [`READY_WITHIN`] is stopped
//! and the old one goes on serving, as if nothing had been asked.
//!
//! What passes is named in three environment variables, read and removed by the new process
//! before its async runtime starts.

use anyhow::{Context, Result, bail};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// `listen=FD,tls.listen=FD`: the listening sockets, by manifest key (a key once per socket of a
/// group: `listen=3,listen=4`).
const SOCKETS_ENV: &str = "RINGLB_UPGRADE_SOCKETS";
/// The descriptor the new process writes `ready` to once it serves.
const READY_FD_ENV: &str = "RINGLB_UPGRADE_READY_FD";
/// How many replicas the old process's ring held.
const RING_ENV: &str = "RINGLB_UPGRADE_RING";
/// What the new process writes once it serves.
const READY: &[u8] = b"ready\n";
/// How long the new process has to serve (its first reconcile pass and its ring are bounded by
/// 30 s each).
pub const READY_WITHIN: Duration = Duration::from_secs(75);

/// What the process this one replaces passed on (nothing, when it was started afresh).
#[derive(Debug, Default)]
pub struct Predecessor {
    /// The listening sockets.
    pub sockets: ringlb::InheritedSockets,
    /// How many replicas its ring held.
    pub ring: Option<usize>,
    ready: Option<OwnedFd>,
}

impl Predecessor {
    /// Takes what the previous process passed on from the environment and removes the variables
    /// (so that nothing this process starts sees them).
    ///
    /// # Safety
    /// Call while the process has one thread (before the async runtime starts): it changes the
    /// environment.
    pub unsafe fn take_from_env() -> Result<Predecessor> {
        let sockets = std::env::var(SOCKETS_ENV).ok();
        let ready = std::env::var(READY_FD_ENV).ok();
        let ring = std::env::var(RING_ENV).ok();
        for name in [SOCKETS_ENV, READY_FD_ENV, RING_ENV] {
            // SAFETY: one thread (the caller's promise).
            unsafe { std::env::remove_var(name) };
        }
        let mut predecessor = Predecessor::default();
        if let Some(list) = sockets {
            for entry in list.split(',').filter(|e| !e.is_empty()) {
                let (key, fd) = entry.split_once('=').with_context(|| format!("{SOCKETS_ENV}: {entry:?}"))?;
                let socket = std::net::TcpListener::from(take_fd(fd, SOCKETS_ENV)?);
                socket
                    .local_addr()
                    .with_context(|| format!("{SOCKETS_ENV}: {key} is not a listening socket"))?;
                match key {
                    "listen" => predecessor.sockets.listen.push(socket),
                    "tls.listen" => predecessor.sockets.tls.push(socket),
                    other => bail!("{SOCKETS_ENV}: unknown socket {other:?}"),
                }
            }
        }
        if let Some(fd) = ready {
            predecessor.ready = Some(take_fd(&fd, READY_FD_ENV)?);
        }
        predecessor.ring =
            ring.map(|n| n.parse().with_context(|| format!("{RING_ENV}: {n:?}"))).transpose()?;
        Ok(predecessor)
    }

    /// Tells the previous process this one serves (it then hands over). Idempotent.
    pub fn announce_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let mut pipe = std::fs::File::from(fd);
            if let Err(error) = pipe.write_all(READY) {
                tracing::warn!(%error, "cannot tell the previous process this one serves; it will stop it");
            }
        }
    }
}

/// Takes ownership of the descriptor number `text` (from `env`), and marks it close-on-exec.
fn take_fd(text: &str, env: &str) -> Result<OwnedFd> {
    let raw: RawFd = text.parse().with_context(|| format!("{env}: {text:?} is not a descriptor"))?;
    if raw <= 2 {
        bail!("{env}: {raw} is a standard stream, not a passed-on descriptor");
    }
    // SAFETY: the previous process opened this descriptor for this process alone (cleared
    // close-on-exec in the child only) and named it here; nothing else in this process owns it,
    // and the variable is removed so it is taken once. fcntl below fails on a closed descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Err(error) = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        // Not ours after all: do not close what we do not own.
        std::mem::forget(fd);
        bail!("{env}: descriptor {raw} is not open: {error}");
    }
    Ok(fd)
}

/// Starts `executable` with `args`, passing it `sockets` and the size of the ring, and waits until
/// it serves. Returns its process id; on failure the new process is gone and nothing changed.
pub async fn start_successor(
    executable: &Path,
    args: &[OsString],
    sockets: Vec<(&'static str, BorrowedFd<'_>)>,
    ring: usize,
) -> Result<u32> {
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot open a pipe")?;
    let listed: Vec<String> = sockets.iter().map(|(key, fd)| format!("{key}={}", fd.as_raw_fd())).collect();
    let mut passed: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    passed.push(ready_write.as_raw_fd());
    let mut command = tokio::process::Command::new(executable);
    command
        .args(args)
        .env(SOCKETS_ENV, listed.join(","))
        .env(READY_FD_ENV, ready_write.as_raw_fd().to_string())
        .env(RING_ENV, ring.to_string());
    // SAFETY: the closure runs in the child between fork and exec and only calls fcntl, which is
    // async-signal-safe; it allocates nothing and takes no lock. The descriptors stay open in
    // this process for as long as the closure may run (until spawn returns).
    unsafe {
        command.pre_exec(move || {
            for &raw in &passed {
                let fd = BorrowedFd::borrow_raw(raw);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| format!("cannot start {}", executable.display()))?;
    drop(ready_write);
    let pid = child.id().context("the new process is already gone")?;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_read)
        .context("cannot read the pipe from the new process")?;
    let mut answer = Vec::new();
    let waited = tokio::time::timeout(READY_WITHIN, async {
        let mut chunk = [0u8; 16];
        while answer.len() < READY.len() {
            match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if waited.is_ok() && answer == READY {
        return Ok(pid);
    }
    // It exited, or it is stuck: make sure it is gone (it serves nothing yet).
    let _ = child.start_kill();
    let status = child.wait().await;
    match (waited, status) {
        (Err(_), _) => bail!("the new process ({pid}) did not serve within {READY_WITHIN:?}; stopped it"),
        (Ok(()), Ok(status)) => {
            bail!("the new process ({pid}) exited before it served ({status}); see its log above")
        }
        (Ok(()), Err(error)) => bail!("the new process ({pid}) stopped before it served: {error}"),
    }
}
