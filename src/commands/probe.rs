//! `ringlb probe`: one heartbeat to a replica on this host, as a container health check.

use crate::cli::ProbeArgs;
use std::process::ExitCode;
use std::time::Duration;

/// `ringlb probe`: exit 0 when the replica answered its heartbeat, else 1 with the reason.
pub fn run(args: &ProbeArgs) -> ExitCode {
    let ProbeArgs { port, path, timeout_ms, status, tcp, grpc } = args;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
    let timeout = Duration::from_millis(*timeout_ms);
    let result = if *tcp {
        ringlb::probe::connect(addr, timeout)
    } else if *grpc {
        ringlb::probe::grpc(addr, timeout)
    } else {
        ringlb::probe::heartbeat(addr, path, timeout, status).map(drop)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("ringlb probe: {why}");
            ExitCode::FAILURE
        }
    }
}
