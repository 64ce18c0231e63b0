//! `ringlb status`: asks a running load balancer for its state (`GET /_ringlb/status`), prints a
//! one-line summary, and with `--wait` waits until every desired replica is in the ring (what
//! `make run` waits for).

use crate::cli::StatusArgs;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::time::Duration;

/// The part of the status JSON the summary needs.
#[derive(Debug, Deserialize)]
struct Summary {
    /// Desired replica count.
    pub desired: usize,
    /// Replicas in the ring.
    pub ready: usize,
    /// Names of the ring's members.
    pub ring: Vec<String>,
    /// Replicas that cannot be started, with why.
    #[serde(default)]
    pub problems: Vec<serde_json::Value>,
    /// Why the manifest on disk was refused, if it was.
    pub last_manifest_error: Option<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} replicas ready ({})", self.ready, self.desired, self.ring.join(", "))?;
        for problem in &self.problems {
            write!(f, "; problem: {}", problem["error"].as_str().unwrap_or_default())?;
        }
        if let Some(error) = &self.last_manifest_error {
            write!(f, "; manifest refused: {error}")?;
        }
        Ok(())
    }
}

/// Fetches the status from the load balancer at `base` (`http://host:port`): not reachable, not a
/// ringlb, or an unreadable answer is an error.
async fn fetch(base: &str) -> Result<Summary> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri =
        format!("{}/_ringlb/status", base.trim_end_matches('/')).parse().context("bad --url")?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .context("no answer within 5s")?
        .with_context(|| format!("cannot reach {base}"))?;
    if !response.status().is_success() {
        bail!("{base} answered {}", response.status());
    }
    let body = response.into_body().collect().await.context("cannot read the answer")?.to_bytes();
    serde_json::from_slice(&body).context("the answer is not ringlb's status")
}

/// Waits until every desired replica is in the ring, or fails after `timeout` with the last state
/// seen.
async fn wait_ready(base: &str, timeout: Duration) -> Result<Summary> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match fetch(base).await {
            Ok(summary) if summary.ready == summary.desired && summary.problems.is_empty() => {
                return Ok(summary);
            }
            Ok(summary) => summary.to_string(),
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("not ready after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `ringlb status`.
pub async fn run(args: StatusArgs) -> Result<()> {
    let StatusArgs { url, wait, timeout } = args;
    let summary =
        if wait { wait_ready(&url, Duration::from_secs(timeout)).await? } else { fetch(&url).await? };
    println!("ringlb at {url}: {summary}");
    Ok(())
}
