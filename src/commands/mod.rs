//! One file per command of the `ringlb` binary; `main.rs` picks one, `cli.rs` defines their
//! arguments. The commands are the binary's edge: they turn the library's typed errors into
//! `anyhow` reports and exit codes.

#[cfg(feature = "analyze")]
pub mod analyze;
pub mod check;
pub mod probe;
pub mod run;
pub mod server;
pub mod status;
mod termination;
pub mod upgrade;

use std::time::Duration;

/// How long in-flight requests may take to finish when ringlb or a replica stops.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
