//! `ringlb status`: a running load balancer's state in one line; with `--wait`, once every
//! desired replica is in the ring (what `make run` waits for).

use crate::cli::StatusArgs;
use anyhow::Result;
use std::time::Duration;

/// `ringlb status`.
pub async fn run(args: StatusArgs) -> Result<()> {
    let StatusArgs { url, wait, timeout } = args;
    let summary = if wait {
        ringlb::status::wait_ready(&url, Duration::from_secs(timeout)).await?
    } else {
        ringlb::status::fetch(&url).await?
    };
    println!("ringlb at {url}: {summary}");
    Ok(())
}
