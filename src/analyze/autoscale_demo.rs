//! `ringlb demo-autoscale`: a fixed-rate load ramp against an autoscaled cluster, printed per
//! second (offered rate, answers, failures, replicas in the ring, p99 latency) and written as a
//! CSV and an SVG chart.
//!
//! The load is open-loop: requests leave on a fixed schedule whether or not earlier ones were
//! answered, so a slow cluster shows up as latency, not as a politely slower client. Every request
//! is `GET /work?ms=<work>`, so the concurrency a rate creates is known: rate x work.

use super::AnalyzeError;
use super::charts::{self, ChartError};
use super::cluster::Cluster;
use super::load::Load;
use crate::manifest::Manifest;
use crate::runtime::{AnyRuntime, Setup};
use crate::trigger::Trigger;
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The demo's options (`ringlb demo-autoscale --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Where the CSV, the chart and the table go.
    #[arg(long, default_value = "docs/autoscale")]
    pub out: PathBuf,
    /// Milliseconds each request keeps its replica busy (GET /work?ms=...).
    #[arg(long, default_value_t = 200)]
    pub work_ms: u64,
    /// Seconds per step of the ramp (10, 40, 80, 160, 240, 160, 80, 10, 0 requests/s).
    #[arg(long, default_value_t = 8)]
    pub step_seconds: u64,
}

/// `/work` workers per replica, equal to `target_inflight`.
pub const WORK_SLOTS: usize = 5;

/// The ramp: requests per second for each step; the last steps are quiet so that the cluster
/// shrinks back.
pub const RAMP: [u32; 9] = [10, 40, 80, 160, 240, 160, 80, 10, 0];

/// One request: the second it was sent in, and its latency if it was answered 200.
type Sent = (u64, Option<Duration>);

/// One second of the demo.
#[derive(Clone, Debug, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Requests sent in this second.
    pub offered: u32,
    /// Requests answered 200 that were sent in this second.
    pub answered: u32,
    /// Requests that failed that were sent in this second.
    pub failed: u32,
    /// Replicas in the ring at the end of the second.
    pub replicas: usize,
    /// 99th percentile latency of this second's requests (ms).
    pub p99_ms: f64,
}

/// The manifest of the demo cluster.
fn manifest() -> String {
    "name: demo-autoscale\nreplicas: 1\nlisten: 127.0.0.1:0\nreplica:\n  runtime: process\n  drain_timeout: 10s\n\
     autoscale:\n  min: 1\n  max: 8\n  target_inflight: 5\n  scale_up_window: 2s\n  scale_down_window: 10s\n  \
     max_step: 2\n  interval: 500ms\n"
        .to_string()
}

/// Runs the ramp and writes the results.
///
/// # Errors
/// The cluster cannot start, or the files cannot be written.
pub async fn run(options: &Options) -> Result<Vec<Second>, AnalyzeError> {
    let trigger = Trigger::new();
    let text = manifest();
    let setup = Setup {
        trigger: trigger.clone(),
        executable: std::env::current_exe().map_err(AnalyzeError::Executable)?,
        replica_args: vec!["--log-level".to_string(), "warn".to_string()],
        // Each replica has as many /work workers as the autoscaler's target: beyond that, requests
        // queue, as on a real server, and latency shows when the cluster is short of replicas.
        server_args: vec!["--work-slots".to_string(), WORK_SLOTS.to_string()],
    };
    let manifest = Manifest::parse(&text).map_err(AnalyzeError::GeneratedManifest)?;
    let runtime = Arc::new(AnyRuntime::for_manifest(&manifest, setup).await?);
    let cluster = Cluster::start(runtime, trigger, &text, 1).await?;
    let load = Load::new(&cluster.base());
    let path = format!("/work?ms={}", options.work_ms);
    let samples: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let origin = Instant::now();
    let mut ring_at_second = Vec::new();
    let mut offered_at_second = Vec::new();
    let mut sends = tokio::task::JoinSet::new();
    let mut second = 0u64;
    for &rate in &RAMP {
        for _ in 0..options.step_seconds {
            let start = origin + Duration::from_secs(second);
            for i in 0..rate {
                let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate.max(1)));
                let (load, path, samples) = (load.clone(), path.clone(), Arc::clone(&samples));
                sends.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let sent = Instant::now();
                    let exchange = load.exchange("GET", &path, "", None).await;
                    let latency = (exchange.status == 200).then(|| sent.elapsed());
                    samples.lock().unwrap_or_else(PoisonError::into_inner).push((second, latency));
                });
            }
            offered_at_second.push(rate);
            tokio::time::sleep_until((start + Duration::from_secs(1)).into()).await;
            ring_at_second.push(cluster.snapshots().load().members.len());
            // Reap finished sends so the set does not grow without bound.
            while sends.try_join_next().is_some() {}
            second += 1;
        }
    }
    while sends.join_next().await.is_some() {}
    cluster.stop().await;

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let seconds: Vec<Second> = (0..second)
        .map(|t| {
            let mine: Vec<&Option<Duration>> =
                samples.iter().filter(|(s, _)| *s == t).map(|(_, l)| l).collect();
            let mut latencies: Vec<f64> =
                mine.iter().filter_map(|l| l.map(|d| d.as_secs_f64() * 1000.0)).collect();
            latencies.sort_by(f64::total_cmp);
            let p99 = if latencies.is_empty() {
                0.0
            } else {
                latencies[((latencies.len() as f64 * 0.99).ceil() as usize)
                    .saturating_sub(1)
                    .min(latencies.len() - 1)]
            };
            Second {
                t,
                offered: offered_at_second[t as usize],
                answered: latencies.len() as u32,
                failed: (mine.len() - latencies.len()) as u32,
                replicas: ring_at_second[t as usize],
                p99_ms: p99,
            }
        })
        .collect();
    write(&options.out, options, &seconds)?;
    Ok(seconds)
}

fn write(out: &Path, options: &Options, seconds: &[Second]) -> Result<(), AnalyzeError> {
    std::fs::create_dir_all(out).map_err(AnalyzeError::io("create", out))?;
    let mut csv = String::from("second,offered_rps,answered,failed,replicas,p99_ms\n");
    for s in seconds {
        let _ =
            writeln!(csv, "{},{},{},{},{},{:.1}", s.t, s.offered, s.answered, s.failed, s.replicas, s.p99_ms);
    }
    let path = out.join("ramp.csv");
    std::fs::write(&path, csv).map_err(AnalyzeError::io("write", &path))?;
    chart(&out.join("ramp.svg"), options, seconds)?;
    let failed: u32 = seconds.iter().map(|s| s.failed).sum();
    let sent: u32 = seconds.iter().map(|s| s.offered).sum();
    let max_replicas = seconds.iter().map(|s| s.replicas).max().unwrap_or(0);
    let mut md = format!(
        "# Autoscaling under a load ramp\n\nGenerated by `make demo-autoscale` (`ringlb demo-autoscale --work-ms {} \
         --step-seconds {}`): an open-loop ramp of `GET /work?ms={}` (each request busy {} ms, so a rate of R \
         requests/s keeps about R x {:.2} requests in flight) against a cluster autoscaled on requests in flight \
         (`min: 1, max: 8, target_inflight: 5, scale_up_window: 2s, scale_down_window: 10s, max_step: 2`). Each \
         replica runs at most {WORK_SLOTS} `/work` requests at once (`ringlb server --work-slots {WORK_SLOTS}`), so a \
         replica saturates at {:.0} requests/s and requests queue beyond that. \
         {sent} requests, {failed} failed; at most {max_replicas} replicas.\n\n![ramp](ramp.svg)\n\n\
         | second | offered (req/s) | answered | failed | replicas | p99 (ms) |\n|---:|---:|---:|---:|---:|---:|\n",
        options.work_ms,
        options.step_seconds,
        options.work_ms,
        options.work_ms,
        options.work_ms as f64 / 1000.0,
        WORK_SLOTS as f64 * 1000.0 / options.work_ms.max(1) as f64
    );
    for s in seconds {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} |",
            s.t, s.offered, s.answered, s.failed, s.replicas, s.p99_ms
        );
    }
    let path = out.join("README.md");
    std::fs::write(&path, md).map_err(AnalyzeError::io("write", &path))
}

fn chart(path: &Path, options: &Options, seconds: &[Second]) -> Result<(), ChartError> {
    charts::register_bundled_font().map_err(ChartError::font(path))?;
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(400);
        let t_max = seconds.len() as f64;
        let rate_max = f64::from(seconds.iter().map(|s| s.offered).max().unwrap_or(1)) * 1.15;
        let replicas_max = seconds.iter().map(|s| s.replicas).max().unwrap_or(1) as f64 + 1.0;
        let mut upper = ChartBuilder::on(&top)
            .caption(
                format!("Autoscaling: offered load and replicas (work {} ms per request)", options.work_ms),
                (charts::FAMILY, 20),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..rate_max)?
            .set_secondary_coord(0.0..t_max, 0.0..replicas_max);
        upper
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("offered requests / s")
            .x_desc("seconds")
            .label_style((charts::FAMILY, 13))
            .axis_desc_style((charts::FAMILY, 14))
            .draw()?;
        upper
            .configure_secondary_axes()
            .y_desc("replicas in the ring")
            .label_style((charts::FAMILY, 13))
            .draw()?;
        let blue = charts::PALETTE[0];
        let orange = charts::PALETTE[1];
        upper
            .draw_series(LineSeries::new(
                seconds.iter().map(|s| (s.t as f64, f64::from(s.offered))),
                blue.stroke_width(2),
            ))?
            .label("offered requests / s")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue.stroke_width(2)));
        upper
            .draw_secondary_series(LineSeries::new(
                seconds.iter().map(|s| (s.t as f64, s.replicas as f64)),
                orange.stroke_width(3),
            ))?
            .label("replicas")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], orange.stroke_width(3)));
        upper
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((charts::FAMILY, 13))
            .draw()?;
        let p99_max = seconds.iter().map(|s| s.p99_ms).fold(1.0f64, f64::max) * 1.15;
        let mut lower = ChartBuilder::on(&bottom)
            .caption("p99 latency of the requests sent each second", (charts::FAMILY, 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..p99_max)?;
        lower
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("p99 (ms)")
            .x_desc("seconds")
            .label_style((charts::FAMILY, 13))
            .axis_desc_style((charts::FAMILY, 14))
            .draw()?;
        let green = charts::PALETTE[2];
        lower.draw_series(LineSeries::new(
            seconds.iter().map(|s| (s.t as f64, s.p99_ms)),
            green.stroke_width(2),
        ))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| ChartError::drawing(path)(&e))
}
