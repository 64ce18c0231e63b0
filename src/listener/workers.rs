//! Thread per core: with more than one worker, each worker is an OS thread running a
//! single-threaded tokio runtime of its own. Every worker accepts on sockets of its own (one
//! member each of the `SO_REUSEPORT` group `bind.rs` made, so the kernel spreads new connections
//! over the workers) and serves its connections to the end with engines of its own, so with its
//! own idle replica connections: a connection never moves between threads, and serving a request
//! wakes no other thread. The workers share the routing snapshots, the counters, the admin router,
//! the open-connection count and the drain; the controller runs on the runtime that called
//! [`serve`].
//!
//! Every socket of a group is served by some worker (a socket nobody accepts on would hold the
//! connections the kernel gives it). With fewer sockets than workers (a lone socket passed on by a
//! process of one worker), the workers share descriptors of the same socket and race to accept.

use super::{Listening, Shared, serve_here};
use std::io;
use std::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The sockets one runtime accepts on: each with the TLS acceptor of its address, if any.
type Sockets = Vec<(TcpListener, Option<TlsAcceptor>)>;

/// Every socket of `listening`, for one runtime that serves them all.
pub(super) fn every_socket(listening: Listening) -> Sockets {
    let mut sockets: Sockets = listening.plain.into_iter().map(|socket| (socket, None)).collect();
    if let Some((tls, acceptor)) = listening.tls {
        sockets.extend(tls.into_iter().map(|socket| (socket, Some(acceptor.clone()))));
    }
    sockets
}

/// The sockets of worker `index` of `workers` among `group` (one address's): with a socket per
/// worker or more, its own (every `workers`-th); with fewer, a second descriptor of one of them,
/// which it shares with the other workers that got it.
fn share_of(
    group: &[TcpListener],
    index: usize,
    workers: usize,
    acceptor: Option<&TlsAcceptor>,
) -> io::Result<Sockets> {
    let mut sockets = Vec::new();
    if group.is_empty() {
        return Ok(sockets);
    }
    if group.len() >= workers {
        for socket in group.iter().skip(index).step_by(workers) {
            sockets.push((socket.try_clone()?, acceptor.cloned()));
        }
    } else {
        sockets.push((group[index % group.len()].try_clone()?, acceptor.cloned()));
    }
    Ok(sockets)
}

/// Serves with `workers` threads until the drain begins and each worker's connections are done
/// (bounded by the drain time). Fewer runtimes than asked for, when some cannot be built, serve
/// every socket between them; a worker whose thread cannot start is served on the calling runtime.
pub(super) async fn serve(shared: Shared, listening: Listening, workers: usize) {
    let mut runtimes = Vec::with_capacity(workers);
    while runtimes.len() < workers {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtimes.push(runtime),
            Err(error) => {
                tracing::warn!(%error, "cannot build a runtime for proxy worker {}; serving with {}", runtimes.len(), runtimes.len());
                break;
            }
        }
    }
    let started = runtimes.len();
    if started == 0 {
        serve_here(shared, every_socket(listening)).await;
        return;
    }
    let mut finished = Vec::with_capacity(started);
    for (index, runtime) in runtimes.into_iter().enumerate() {
        let sockets = match worker_sockets(&listening, index, started) {
            Ok(sockets) => sockets,
            Err(error) => {
                tracing::error!(%error, "cannot give proxy worker {index} its listening sockets");
                continue;
            }
        };
        let (done, finished_one) = oneshot::channel();
        let worker_shared = shared.clone();
        let spawned = std::thread::Builder::new().name(format!("ringlb-proxy-{index}")).spawn(move || {
            runtime.block_on(serve_here(worker_shared, sockets));
            let _ = done.send(());
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the thread of proxy worker {index}; serving its sockets here");
            match worker_sockets(&listening, index, started) {
                Ok(sockets) => {
                    let (done, here) = oneshot::channel();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve_here(shared, sockets).await;
                        let _ = done.send(());
                    });
                    finished.push(here);
                }
                Err(error) => tracing::error!(%error, "cannot serve the sockets of proxy worker {index}"),
            }
            continue;
        }
        finished.push(finished_one);
    }
    drop(listening);
    tracing::debug!(workers = finished.len(), "proxy workers serving");
    for done in finished {
        if done.await.is_err() {
            tracing::error!("a proxy worker ended abnormally (a panic); its connections were closed");
        }
    }
}

/// The sockets of worker `index` of `workers`, for both addresses.
fn worker_sockets(listening: &Listening, index: usize, workers: usize) -> io::Result<Sockets> {
    let mut sockets = share_of(&listening.plain, index, workers, None)?;
    if let Some((tls, acceptor)) = &listening.tls {
        sockets.extend(share_of(tls, index, workers, Some(acceptor))?);
    }
    Ok(sockets)
}
