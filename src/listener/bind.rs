//! The listening sockets of one address (`listen` or `tls.listen`): one socket, or, for several
//! proxy workers, a `SO_REUSEPORT` group of one socket per worker (the kernel spreads new
//! connections over the group by their addresses, so every worker accepts its share and none
//! takes them all); or the sockets a previous process passed on in an upgrade, which keep
//! serving, so that no connection waiting to be accepted is lost.
//!
//! A group is only formed on a free address: a socket with `SO_REUSEPORT` would otherwise join
//! the group of another process listening there (another ringlb by mistake) and quietly take
//! half of its connections, where a user expects "address in use".

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// How many connections may wait to be accepted, per socket.
const BACKLOG: i32 = 1024;

/// The sockets that serve one address.
#[derive(Debug)]
pub struct Bound {
    /// One, or one per worker (a group); non-blocking.
    pub sockets: Vec<TcpListener>,
    /// Where they listen (the real port when port 0 was asked for).
    pub addr: SocketAddr,
}

/// Binds `addr` (the manifest's `key`) for `workers` proxy workers, taking the `inherited` sockets
/// that listen there instead (any port, for port 0) and as many more as the group needs.
///
/// # Errors
/// The address cannot be bound (in use, not local, not permitted).
pub fn bind(addr: SocketAddr, key: &str, workers: usize, inherited: Vec<TcpListener>) -> io::Result<Bound> {
    let mut sockets = Vec::new();
    // Where the first socket taken listens: the others must listen there too.
    let mut taken_at: Option<SocketAddr> = None;
    for socket in inherited {
        match socket.local_addr() {
            Ok(bound) if serves(addr, bound) && taken_at.is_none_or(|at| at == bound) => {
                taken_at = Some(bound);
                sockets.push(socket);
            }
            Ok(bound) => tracing::warn!(
                "a socket passed on for `{key}` listens on {bound}, not on {}; not serving it",
                taken_at.unwrap_or(addr)
            ),
            Err(error) => tracing::warn!(%error, "a socket passed on for `{key}` is unusable"),
        }
    }
    let bound = if let Some(first) = sockets.first() {
        let bound = first.local_addr()?;
        tracing::info!(address = %bound, sockets = sockets.len(), "`{key}`: serving the socket(s) the previous process passed on");
        // A group passed on grows to this process's workers; a lone socket without
        // `SO_REUSEPORT` (from a process with one worker) is shared by the workers instead.
        if sockets.len() < workers && SockRef::from(first).reuse_port().unwrap_or(false) {
            grow(&mut sockets, bound, workers, key);
        }
        bound
    } else if workers <= 1 {
        let socket = listening(addr, false)?;
        let bound = socket.local_addr()?;
        sockets.push(socket);
        bound
    } else {
        if addr.port() != 0 {
            // Fails with "address in use" when anything listens there, a group included.
            drop(listening(addr, false)?);
        }
        let first = listening(addr, true)?;
        let bound = first.local_addr()?;
        sockets.push(first);
        grow(&mut sockets, bound, workers, key);
        bound
    };
    for socket in &sockets {
        socket.set_nonblocking(true)?;
    }
    Ok(Bound { sockets, addr: bound })
}

/// True when a socket bound to `bound` serves the manifest's `wanted` address.
fn serves(wanted: SocketAddr, bound: SocketAddr) -> bool {
    wanted.ip() == bound.ip() && (wanted.port() == 0 || wanted.port() == bound.port())
}

/// Adds members to the group listening on `bound` until it has one per worker (fewer, with a
/// warning, when the kernel refuses one: the workers then share the sockets).
fn grow(sockets: &mut Vec<TcpListener>, bound: SocketAddr, workers: usize, key: &str) {
    while sockets.len() < workers {
        match listening(bound, true) {
            Ok(socket) => sockets.push(socket),
            Err(error) => {
                tracing::warn!(%error, "`{key}`: cannot add a socket to the group on {bound}; the workers share {}", sockets.len());
                return;
            }
        }
    }
}

/// A socket listening on `addr` (with `SO_REUSEADDR`, as usual for servers; and `SO_REUSEPORT`
/// when it is to join a group).
fn listening(addr: SocketAddr, group: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if group {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("address")
    }

    #[test]
    fn several_workers_get_a_group_on_one_port_and_one_worker_a_plain_socket() {
        let group = bind(loopback(), "listen", 3, Vec::new()).expect("bind");
        assert_eq!(group.sockets.len(), 3);
        for socket in &group.sockets {
            assert_eq!(socket.local_addr().expect("address"), group.addr);
            assert!(SockRef::from(socket).reuse_port().expect("option"));
        }
        let single = bind(loopback(), "listen", 1, Vec::new()).expect("bind");
        assert_eq!(single.sockets.len(), 1);
        assert!(!SockRef::from(&single.sockets[0]).reuse_port().expect("option"));
    }

    #[test]
    fn a_group_is_not_formed_on_an_address_another_socket_listens_on() {
        for taken in [bind(loopback(), "listen", 1, Vec::new()), bind(loopback(), "listen", 2, Vec::new())] {
            let taken = taken.expect("bind");
            let error = bind(taken.addr, "listen", 2, Vec::new()).expect_err("the address is in use");
            assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        }
    }

    #[test]
    fn inherited_sockets_serve_and_a_passed_on_group_grows_to_the_workers() {
        let old = bind(loopback(), "listen", 2, Vec::new()).expect("bind");
        let addr = old.addr;
        let new = bind(addr, "listen", 4, old.sockets).expect("take over");
        assert_eq!((new.addr, new.sockets.len()), (addr, 4));
        // A lone socket without SO_REUSEPORT is shared, not grown.
        let lone = bind(loopback(), "listen", 1, Vec::new()).expect("bind");
        let addr = lone.addr;
        let shared = bind(addr, "listen", 4, lone.sockets).expect("take over");
        assert_eq!((shared.addr, shared.sockets.len()), (addr, 1));
    }

    #[test]
    fn an_inherited_socket_on_another_address_is_left_and_the_manifests_is_bound() {
        let old = bind(loopback(), "listen", 1, Vec::new()).expect("bind");
        let elsewhere = bind(loopback(), "listen", 1, Vec::new()).expect("bind");
        let wanted = elsewhere.addr;
        drop(elsewhere);
        let new = bind(wanted, "listen", 1, old.sockets).expect("bind");
        assert_eq!(new.addr, wanted);
    }
}
