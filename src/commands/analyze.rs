//! `ringlb analyze` and `ringlb demo-autoscale`: the exercise's analysis and an autoscaling ramp,
//! with their tables on stdout (the `analyze` feature; the image is built without it).

use anyhow::Result;
use ringlb::analyze;

/// `ringlb analyze`.
pub async fn run(options: analyze::Options) -> Result<()> {
    let started = std::time::Instant::now();
    let results = analyze::run(&options).await?;
    print_summary(&results);
    println!(
        "report written to {}/README.md in {:.1} s",
        options.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `ringlb demo-autoscale`.
pub async fn demo_autoscale(options: analyze::autoscale_demo::Options) -> Result<()> {
    let seconds = analyze::autoscale_demo::run(&options).await?;
    println!("second  offered/s  answered  failed  replicas  p99 ms");
    for s in &seconds {
        println!(
            "{:>6}  {:>9}  {:>8}  {:>6}  {:>8}  {:>6.0}",
            s.t, s.offered, s.answered, s.failed, s.replicas, s.p99_ms
        );
    }
    println!("written to {}/ (ramp.csv, ramp.svg, README.md)", options.out.display());
    Ok(())
}

/// The analysis's tables on stdout, one line per N and algorithm.
fn print_summary(results: &analyze::Results) {
    for config in &results.configs {
        for m in &config.measurements {
            let d = analyze::report::shown(m);
            println!(
                "{:<10} N={} counts={:?} mean={:.1} min={} max={} std={:.1} max/mean={:.2}{}",
                config.config.label,
                m.n,
                d.counts,
                d.mean(),
                d.min(),
                d.max(),
                d.std_dev(),
                d.max_over_mean(),
                m.elapsed_ms.map(|ms| format!(" ({:.2} s live)", ms / 1000.0)).unwrap_or_default()
            );
        }
    }
    if let Some(a3) = &results.a3 {
        let f = &a3.failover;
        println!(
            "A-3: killed {} at {:.0} ms; out of the ring at {:?} ms; replacement {} in the ring at {:?} ms; {} requests, {} failed",
            f.victim,
            f.killed_ms,
            f.out_of_ring_ms.map(|t| t.round()),
            f.replacement,
            f.replaced_ms.map(|t| t.round()),
            f.requests,
            f.failed
        );
    }
    println!("H reaches {} of 512 slots ({} with these ids)", results.h_reach.0, results.h_reach.1);
}
