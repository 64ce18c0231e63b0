//! Thread per core: with more than one worker, each worker is an OS thread running a
//! single-threaded tokio runtime of its own. Every worker accepts on sockets of its own (one
//! member each of the `SO_REUSEPORT` group `bind.rs` made, so the kernel spreads new connections
//! over the workers) and serves its connections to the end with engines of its own, so with its
//! own idle replica connections: a connection never moves between threads, and serving a request
//! wakes no other thread. The workers share the routing snapshots, the counters, the admin router,
//! the open-connection count and the drain; the controller runs on the runtime that called
//! [`Prepared::serve`].
//!
//! Everything that can fail happens in [`prepare`], before the load balancer says it serves:
//! building the runtimes and registering every socket with the runtime that will accept on it.
//! So a socket is never left open with nobody accepting on it (the kernel would go on queueing
//! connections there), and an upgrade whose new process cannot serve fails while the old one still
//! does. With fewer sockets than workers (a lone socket passed on by a process of one worker), the
//! workers share descriptors of the same socket and race to accept.

use super::{Accepting, Listening, Shared, serve_here};
use std::io;
use std::net::TcpListener as StdListener;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The sockets one runtime accepts on (not registered yet), each with its TLS acceptor, if any.
type Sockets = Vec<(StdListener, Option<TlsAcceptor>)>;

/// The listening sockets, registered with the runtimes that will accept on them.
pub struct Prepared {
    kind: Kind,
}

enum Kind {
    /// Served on the runtime that calls [`Prepared::serve`].
    Here(Vec<Accepting>),
    /// Served by worker threads.
    Workers(Vec<Worker>),
}

/// A worker's runtime and its sockets, registered with it.
struct Worker {
    /// Taken when its thread runs it; otherwise shut down without blocking on drop (a runtime
    /// dropped the usual way inside another runtime panics).
    runtime: Option<Runtime>,
    accepting: Vec<Accepting>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The sockets first, while their runtime is still there to deregister them.
        self.accepting.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Registers the sockets of `listening`: with the calling runtime for one worker (or when no
/// worker runtime can be built), else with `workers` runtimes of their own (fewer, with a warning,
/// when not all can be built).
///
/// # Errors
/// A socket cannot be registered (the system is out of resources).
pub fn prepare(listening: Listening, workers: usize) -> io::Result<Prepared> {
    let mut runtimes = Vec::with_capacity(workers);
    while workers > 1 && runtimes.len() < workers {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtimes.push(runtime),
            Err(error) => {
                let built = runtimes.len();
                tracing::warn!(%error, "cannot build a runtime for proxy worker {built}; serving with {built}");
                break;
            }
        }
    }
    if runtimes.is_empty() {
        let accepting = register(every_socket(listening))?;
        return Ok(Prepared { kind: Kind::Here(accepting) });
    }
    let shares = split(listening, runtimes.len());
    let mut prepared = Vec::with_capacity(runtimes.len());
    for (runtime, sockets) in runtimes.into_iter().zip(shares) {
        let registered = {
            let _inside = runtime.enter();
            register(sockets)
        };
        match registered {
            Ok(accepting) => prepared.push(Worker { runtime: Some(runtime), accepting }),
            Err(error) => {
                // The workers of `prepared` shut down the same way when dropped.
                runtime.shutdown_background();
                return Err(error);
            }
        }
    }
    Ok(Prepared { kind: Kind::Workers(prepared) })
}

/// Every socket of `listening`, for one runtime that serves them all.
fn every_socket(listening: Listening) -> Sockets {
    let mut sockets: Sockets = listening.plain.into_iter().map(|socket| (socket, None)).collect();
    if let Some((tls, acceptor)) = listening.tls {
        sockets.extend(tls.into_iter().map(|socket| (socket, Some(acceptor.clone()))));
    }
    sockets
}

/// The sockets of each of `workers` workers. Every socket goes to one worker (every
/// `workers`-th to the same one); a worker left without a socket of an address gets a second
/// descriptor of one, when the system gives one.
fn split(listening: Listening, workers: usize) -> Vec<Sockets> {
    let mut shares: Vec<Sockets> = (0..workers).map(|_| Vec::new()).collect();
    let deal = |group: Vec<StdListener>, acceptor: Option<TlsAcceptor>, shares: &mut Vec<Sockets>| {
        let count = group.len();
        if count == 0 {
            return;
        }
        let first_copies: Vec<_> =
            (count..workers).map(|index| (index, group[index % count].try_clone())).collect();
        for (index, socket) in group.into_iter().enumerate() {
            shares[index % workers].push((socket, acceptor.clone()));
        }
        for (index, copy) in first_copies {
            match copy {
                Ok(socket) => shares[index].push((socket, acceptor.clone())),
                Err(error) => tracing::warn!(%error, "proxy worker {index} shares no listening socket"),
            }
        }
    };
    deal(listening.plain, None, &mut shares);
    if let Some((tls, acceptor)) = listening.tls {
        deal(tls, Some(acceptor), &mut shares);
    }
    shares
}

/// Registers `sockets` with the runtime this is called in.
fn register(sockets: Sockets) -> io::Result<Vec<Accepting>> {
    sockets
        .into_iter()
        .map(|(socket, acceptor)| Ok(Accepting { socket: TcpListener::from_std(socket)?, acceptor }))
        .collect()
}

/// Takes `accepting` off the runtime it was registered with and registers it with this one.
fn move_here(accepting: Vec<Accepting>) -> io::Result<Vec<Accepting>> {
    let sockets = accepting
        .into_iter()
        .map(|a| Ok((a.socket.into_std()?, a.acceptor)))
        .collect::<io::Result<Sockets>>()?;
    register(sockets)
}

impl Prepared {
    /// Serves until the drain begins and every worker's connections are done (bounded by the
    /// drain time). A worker whose thread cannot start is served on the calling runtime.
    pub(super) async fn serve(self, shared: Shared) {
        let workers = match self.kind {
            Kind::Here(accepting) => return serve_here(shared, accepting).await,
            Kind::Workers(workers) => workers,
        };
        let mut finished = Vec::with_capacity(workers.len());
        for (index, mut worker) in workers.into_iter().enumerate() {
            // The worker reaches its thread through a channel, so that a thread that cannot start
            // leaves it here rather than dropping its runtime inside this one.
            let (hand, take) = std::sync::mpsc::channel::<(Runtime, Vec<Accepting>)>();
            let (done, finished_one) = oneshot::channel();
            let worker_shared = shared.clone();
            let spawned =
                std::thread::Builder::new().name(format!("ringlb-proxy-{index}")).spawn(move || {
                    if let Ok((runtime, accepting)) = take.recv() {
                        runtime.block_on(serve_here(worker_shared, accepting));
                    }
                    let _ = done.send(());
                });
            let accepting = std::mem::take(&mut worker.accepting);
            match spawned {
                Ok(_) => {
                    if let Some(runtime) = worker.runtime.take() {
                        let _ = hand.send((runtime, accepting));
                    }
                    finished.push(finished_one);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot start the thread of proxy worker {index}; serving its sockets here");
                    // The worker's runtime is still there (dropped at the end of this turn) to
                    // deregister them.
                    match move_here(accepting) {
                        Ok(accepting) => {
                            let (done, here) = oneshot::channel();
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                serve_here(shared, accepting).await;
                                let _ = done.send(());
                            });
                            finished.push(here);
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot serve the sockets of proxy worker {index}")
                        }
                    }
                }
            }
        }
        tracing::debug!(workers = finished.len(), "proxy workers serving");
        for done in finished {
            if done.await.is_err() {
                tracing::error!("a proxy worker ended abnormally (a panic); its connections were closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::bind::bind;

    fn group(count: usize) -> Vec<StdListener> {
        bind("127.0.0.1:0".parse().expect("address"), "listen", count, Vec::new()).expect("bind").sockets
    }

    fn ports(share: &Sockets) -> Vec<u16> {
        share.iter().map(|(socket, _)| socket.local_addr().expect("address").port()).collect()
    }

    #[test]
    fn every_socket_of_a_group_goes_to_one_worker() {
        let shares = split(Listening { plain: group(3), tls: None }, 2);
        assert_eq!(shares.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        let shares = split(Listening { plain: group(2), tls: None }, 2);
        assert_eq!(shares.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn workers_beyond_the_sockets_share_them() {
        let lone = group(1);
        let port = lone[0].local_addr().expect("address").port();
        let shares = split(Listening { plain: lone, tls: None }, 3);
        for share in &shares {
            assert_eq!(ports(share), [port]);
        }
    }

    #[tokio::test]
    async fn prepared_workers_dropped_unserved_inside_a_runtime_shut_down_without_a_panic() {
        let prepared = prepare(Listening { plain: group(2), tls: None }, 2).expect("prepare");
        assert!(matches!(&prepared.kind, Kind::Workers(workers) if workers.len() == 2));
        drop(prepared);
    }
}
