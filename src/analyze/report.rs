//! The analysis report: `results.json` (every figure), the SVG charts, and `README.md` with the
//! tables inline and the charts linked, its sentences computed from the numbers.

use super::charts::{self, Bars, Line, Marker};
use super::stats::Distribution;
use super::{A1_REPLICAS, AnalyzeError, ConfigResults, Measurement, Results};
use std::fmt::Write as _;
use std::path::Path;

/// Chart file names, relative to the output directory.
pub const A1_SVG: &str = "a1-requests-per-replica.svg";
/// A-2's chart.
pub const A2_SVG: &str = "a2-load-per-replica-by-n.svg";
/// A-3's chart.
pub const A3_SVG: &str = "a3-failover-timeline.svg";
/// A-4's bar chart.
pub const A4_BARS_SVG: &str = "a4-requests-per-replica-side-by-side.svg";
/// A-4's line chart.
pub const A4_LINES_SVG: &str = "a4-imbalance-by-n.svg";

/// The distribution a measurement reports: live when there is one, else the ring's.
pub fn shown(m: &Measurement) -> &Distribution {
    m.live.as_ref().unwrap_or(&m.offline)
}

fn at(config: &ConfigResults, n: usize) -> Option<&Measurement> {
    config.measurements.iter().find(|m| m.n == n)
}

fn sorted(config: &ConfigResults) -> Vec<&Measurement> {
    let mut list: Vec<&Measurement> = config.measurements.iter().collect();
    list.sort_by_key(|m| m.n);
    list
}

/// Writes results.json, the charts and README.md into `out`.
///
/// # Errors
/// A file cannot be written.
pub fn write(out: &Path, results: &Results) -> Result<(), AnalyzeError> {
    std::fs::create_dir_all(out).map_err(AnalyzeError::io("create", out))?;
    let json = serde_json::to_string_pretty(results).map_err(AnalyzeError::Json)?;
    let path = out.join("results.json");
    std::fs::write(&path, json + "\n").map_err(AnalyzeError::io("write", &path))?;
    draw(out, results)?;
    let path = out.join("README.md");
    std::fs::write(&path, markdown(results)).map_err(AnalyzeError::io("write", &path))
}

fn draw(out: &Path, results: &Results) -> Result<(), charts::ChartError> {
    let source =
        if results.runtime == "offline" { "from the ring alone" } else { "through the load balancer" };
    if let Some(first) = results.configs.first()
        && let Some(m) = at(first, A1_REPLICAS)
    {
        let d = shown(m);
        charts::bar_chart(
            &out.join(A1_SVG),
            &format!(
                "A-1: {} requests at N = {A1_REPLICAS}, {} hashing",
                d.total() + d.failed,
                first.config.label
            ),
            "replica",
            &format!("requests answered ({source})"),
            &d.replicas,
            &[Bars { label: &first.config.label, values: &d.counts }],
        )?;
    }
    if let Some(first) = results.configs.first() {
        let points: Vec<(f64, f64, f64, f64, f64)> = sorted(first)
            .iter()
            .map(|m| {
                let d = shown(m);
                (m.n as f64, d.mean(), d.min() as f64, d.max() as f64, d.std_dev())
            })
            .collect();
        if points.len() > 1 {
            charts::spread_chart(
                &out.join(A2_SVG),
                &format!("A-2: requests per replica for N = 2..6, {} hashing", first.config.label),
                "N (replicas)",
                "requests per replica",
                &[Line { label: &first.config.label, points: &points }],
            )?;
        }
    }
    if let Some(a3) = &results.a3 {
        let f = &a3.failover;
        let bucket = 100.0;
        // Whole buckets only: the last, partial one would look like a drop.
        let buckets = (f.duration_ms / bucket).floor().max(1.0) as usize;
        let mut names: Vec<String> = f.samples.iter().filter_map(|s| s.replica.clone()).collect();
        names.sort();
        names.dedup();
        let mut series: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .map(|name| {
                let mut counts = vec![0.0; buckets];
                for s in f.samples.iter().filter(|s| s.replica.as_deref() == Some(name.as_str())) {
                    if let Some(c) = counts.get_mut(((s.done.as_secs_f64() * 1000.0) / bucket) as usize) {
                        *c += 1.0;
                    }
                }
                (name.clone(), counts.into_iter().enumerate().map(|(i, c)| (i as f64 * bucket, c)).collect())
            })
            .collect();
        if f.failed > 0 {
            let mut counts = vec![0.0; buckets];
            for s in f.samples.iter().filter(|s| s.replica.is_none()) {
                if let Some(c) = counts.get_mut(((s.done.as_secs_f64() * 1000.0) / bucket) as usize) {
                    *c += 1.0;
                }
            }
            series.push((
                "failed".into(),
                counts.into_iter().enumerate().map(|(i, c)| (i as f64 * bucket, c)).collect(),
            ));
        }
        let mut markers = vec![Marker { at_ms: f.killed_ms, label: "killed" }];
        if let Some(t) = f.out_of_ring_ms {
            markers.push(Marker { at_ms: t, label: "out of the ring" });
        }
        if let Some(t) = f.replaced_ms {
            markers.push(Marker { at_ms: t, label: "replacement in the ring" });
        }
        charts::timeline_chart(
            &out.join(A3_SVG),
            &format!(
                "A-3: {} killed during a steady stream ({} requests, {} failed)",
                f.victim, f.requests, f.failed
            ),
            bucket,
            &series,
            &markers,
        )?;
    }
    if results.configs.len() > 1 {
        let at3: Vec<(&ConfigResults, &Distribution)> =
            results.configs.iter().filter_map(|c| at(c, A1_REPLICAS).map(|m| (c, shown(m)))).collect();
        if let Some((_, first)) = at3.first() {
            let bars: Vec<Bars<'_>> =
                at3.iter().map(|(c, d)| Bars { label: &c.config.label, values: &d.counts }).collect();
            charts::bar_chart(
                &out.join(A4_BARS_SVG),
                &format!("A-4: requests per replica at N = {A1_REPLICAS}, by hashing"),
                "replica",
                &format!("requests answered ({source})"),
                &first.replicas,
                &bars,
            )?;
        }
        let lines: Vec<(&str, Vec<(f64, f64)>)> = results
            .configs
            .iter()
            .map(|c| {
                (
                    c.config.label.as_str(),
                    sorted(c).iter().map(|m| (m.n as f64, shown(m).max_over_mean())).collect(),
                )
            })
            .collect();
        if lines.iter().all(|(_, p)| p.len() > 1) {
            charts::line_chart(
                &out.join(A4_LINES_SVG),
                "A-4: busiest replica's load / mean load, by N (1.00 is perfectly even)",
                "N (replicas)",
                "max / mean",
                &lines,
            )?;
        }
    }
    Ok(())
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

fn distribution_table(out: &mut String, d: &Distribution) {
    let _ = writeln!(out, "| replica | requests | share |\n|---|---:|---:|");
    for (name, count) in d.replicas.iter().zip(&d.counts) {
        let _ = writeln!(out, "| {name} | {count} | {:.1} % |", pct(*count, d.total()));
    }
    let _ = writeln!(out, "| failed | {} | |", d.failed);
}

fn spread_table(out: &mut String, config: &ConfigResults) {
    let _ = writeln!(
        out,
        "| N | mean | min | max | std dev | max / mean | per replica |\n|---:|---:|---:|---:|---:|---:|---|"
    );
    for m in sorted(config) {
        let d = shown(m);
        let counts: Vec<String> = d.counts.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {:.1} | {:.2} | {} |",
            m.n,
            d.mean(),
            d.min(),
            d.max(),
            d.std_dev(),
            d.max_over_mean(),
            counts.join(" / ")
        );
    }
}

fn code(text: &str) -> String {
    if text.is_empty() {
        "(empty)".into()
    } else {
        format!("`{}`", text.replace('`', "'").replace('|', "\\|"))
    }
}

/// The report's Markdown.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let live = results.runtime != "offline";
    let _ = writeln!(out, "# The exercise's analysis, reproduced\n");
    let _ = writeln!(
        out,
        "Generated by `ringlb analyze --requests {} --seed {} --concurrency {}{}` (regenerate with `make analyze`). \
         {} Every figure is also in [results.json](results.json).\n",
        results.requests,
        results.seed,
        results.concurrency,
        if live { format!(" --runtime {}", results.runtime) } else { " --offline".into() },
        if live {
            format!(
                "Each measurement started a fresh cluster ({} replicas behind a real ringlb load balancer), sent the \
                 same {} seeded request ids through it as `X-Request-Id`, {} at a time, and counted which replica \
                 answered each from the answer's body.",
                results.runtime, results.requests, results.concurrency
            )
        } else {
            format!("Computed from the ring alone for the same {} seeded request ids.", results.requests)
        }
    );
    for c in &results.configs {
        let _ = writeln!(out, "- **{}**: {}.", c.config.label, c.config.description);
    }
    let Some(first) = results.configs.first() else { return out };

    let _ = writeln!(
        out,
        "\n## A-1: {} requests at N = {A1_REPLICAS} ({})\n",
        results.requests, first.config.label
    );
    if let Some(m) = at(first, A1_REPLICAS) {
        distribution_table(&mut out, shown(m));
        if let (Some(live), Some(ms)) = (&m.live, m.elapsed_ms) {
            let agree = if *live == m.offline {
                "exactly the counts the ring alone predicts"
            } else {
                "close to what the ring alone predicts"
            };
            let _ = writeln!(
                out,
                "\n{} requests took {:.2} s ({:.0} per second); the live counts are {agree} (`--offline`).",
                results.requests,
                ms / 1000.0,
                results.requests as f64 / (ms / 1000.0).max(1e-9)
            );
        }
        let _ = writeln!(out, "\n![A-1]({A1_SVG})");
    }

    if first.measurements.len() > 1 {
        let _ = writeln!(out, "\n## A-2: N = 2..6 ({})\n", first.config.label);
        spread_table(&mut out, first);
        let _ = writeln!(out, "\n![A-2]({A2_SVG})");
    }

    if let Some(a3) = &results.a3 {
        let _ = writeln!(out, "\n## A-3: the endpoints, and a replica killed\n");
        let _ = writeln!(
            out,
            "Every endpoint, on a cluster of {A1_REPLICAS} with the {} hashing, in this order:\n",
            first.config.label
        );
        let _ = writeln!(out, "| request | body | status | answer |\n|---|---|---:|---|");
        for e in &a3.endpoints {
            let _ = writeln!(
                out,
                "| `{} {}` | {} | {} | {} |",
                e.method,
                e.path,
                code(&e.body),
                e.status,
                code(&e.response)
            );
        }
        let f = &a3.failover;
        let ms = |t: Option<f64>| t.map_or("not seen".to_string(), |t| format!("{t:.0} ms"));
        let since = |t: Option<f64>| {
            t.map_or(String::new(), |t| format!(" ({:.0} ms after the kill)", t - f.killed_ms))
        };
        let _ = writeln!(
            out,
            "\nThen 8 clients sent `GET /home` for {:.1} s while `{}` was killed (SIGKILL) after about 1 s:\n",
            f.duration_ms / 1000.0,
            f.victim
        );
        let _ = writeln!(out, "| event | time since the stream started |\n|---|---:|");
        let _ = writeln!(out, "| `{}` killed | {:.0} ms |", f.victim, f.killed_ms);
        let _ = writeln!(
            out,
            "| the load balancer took it out of the ring | {}{} |",
            ms(f.out_of_ring_ms),
            since(f.out_of_ring_ms)
        );
        let _ = writeln!(
            out,
            "| its replacement `{}` answered and joined the ring | {}{} |",
            f.replacement,
            ms(f.replaced_ms),
            since(f.replaced_ms)
        );
        let _ = writeln!(out, "| requests sent / failed | {} / {} |", f.requests, f.failed);
        let _ = writeln!(out, "\n![A-3]({A3_SVG})");
    }

    if results.configs.len() > 1 {
        let _ = writeln!(out, "\n## A-4: the exercise's hash functions beside maglev\n");
        let _ = writeln!(out, "At N = {A1_REPLICAS}:\n");
        let header: Vec<&str> = results.configs.iter().map(|c| c.config.label.as_str()).collect();
        let _ = writeln!(out, "| replica | {} |\n|---|{}", header.join(" | "), "---:|".repeat(header.len()));
        let at3: Vec<&Distribution> =
            results.configs.iter().filter_map(|c| at(c, A1_REPLICAS).map(shown)).collect();
        if let Some(names) = at3.first().map(|d| d.replicas.clone()) {
            for (i, name) in names.iter().enumerate() {
                let cells: Vec<String> = at3
                    .iter()
                    .map(|d| format!("{} ({:.1} %)", d.counts[i], pct(d.counts[i], d.total())))
                    .collect();
                let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
            }
        }
        let _ = writeln!(out, "\n![A-4 bars]({A4_BARS_SVG})\n");
        for c in &results.configs {
            let _ = writeln!(out, "N = 2..6, **{}**:\n", c.config.label);
            spread_table(&mut out, c);
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "![A-4 lines]({A4_LINES_SVG})\n");
        let _ = writeln!(out, "### Why the exercise's functions are skewed\n");
        let (reach, used) = results.h_reach;
        let _ = writeln!(
            out,
            "H(i) = i^2 + 2i + 17 = (i + 1)^2 + 16 (mod 512): a request can only start at a square modulo 512, \
             shifted by 16. Over all 900,000 six-digit ids H reaches **{reach} of the 512 slots** ({:.0} %); the ids \
             sent here reached {used}. A request is served by the first virtual node at or after its slot, so a \
             replica's share is the share of those {reach} reachable slots that lead to one of its virtual nodes, not \
             the share of the ring it covers.",
            100.0 * reach as f64 / 512.0
        );
        let per = &results.h_slots_per_replica;
        if let (Some(d), false) = (at3.first(), per.is_empty()) {
            let parts: Vec<String> = d
                .replicas
                .iter()
                .zip(per)
                .zip(&d.counts)
                .map(|((name, slots), count)| {
                    format!(
                        "{name} owns {slots} of them ({:.0} %) and answered {:.0} % of the requests",
                        100.0 * *slots as f64 / reach.max(1) as f64,
                        pct(*count, d.total())
                    )
                })
                .collect();
            let _ =
                writeln!(out, "\nAt N = {A1_REPLICAS} with K = 9 virtual nodes each: {}.", parts.join("; "));
        }
        if let Some(maglev) = results.configs.iter().find(|c| c.config.label == "maglev")
            && let Some(m) = at(maglev, A1_REPLICAS)
        {
            let d = shown(m);
            let _ = writeln!(
                out,
                "\nMaglev first mixes the id with a 64-bit hash, so every one of its 65,537 table entries can be \
                 reached, and each replica owns floor or ceil of 65,537 / N of them: at N = {A1_REPLICAS} the busiest \
                 replica answered {:.2} x the mean (the exercise's ring: {:.2} x), the rest being sampling noise of \
                 {} random ids.",
                d.max_over_mean(),
                at(first, A1_REPLICAS).map(|m| shown(m).max_over_mean()).unwrap_or(0.0),
                results.requests
            );
        }
    }
    out
}
