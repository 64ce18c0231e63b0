//! `ringlb analyze`: reproducible with a fixed seed, live counts equal to the ring's prediction,
//! and charts that are well-formed SVG with the expected bars and lines.

mod common;

use std::path::Path;
use std::process::Command;

fn analyze(out: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(common::bin())
        .args(["--log-level", "error", "analyze", "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("run ringlb analyze");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    println!("{}", String::from_utf8_lossy(&output.stdout));
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

fn counts(results: &serde_json::Value, config: usize, n: u64, kind: &str) -> Vec<u64> {
    let m =
        results["configs"][config]["measurements"].as_array().unwrap().iter().find(|m| m["n"] == n).unwrap();
    m[kind]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect()
}

/// The <rect> elements of an SVG filled with `colour` (plotters writes fill="#RRGGBB").
fn rects_of(svg: &roxmltree::Document<'_>, colour: &str) -> usize {
    svg.descendants()
        .filter(|n| {
            n.has_tag_name("rect") && n.attribute("fill").is_some_and(|f| f.eq_ignore_ascii_case(colour))
        })
        .count()
}

#[test]
fn the_exercise_counts_are_reproducible_and_equal_to_the_rings_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = analyze(&a, &["--requests", "3000", "--seed", "7", "--experiments", "a1"]);
    let second = analyze(&b, &["--requests", "3000", "--seed", "7", "--experiments", "a1"]);
    let live = counts(&first, 0, 3, "live");
    assert_eq!(live, counts(&second, 0, 3, "live"), "same seed, same counts");
    assert_eq!(live.iter().sum::<u64>(), 3000);
    assert_eq!(live, counts(&first, 0, 3, "offline"), "the live cluster does what the ring predicts");
    let other = analyze(
        &dir.path().join("c"),
        &["--requests", "3000", "--seed", "8", "--experiments", "a1", "--offline"],
    );
    assert_ne!(counts(&other, 0, 3, "offline"), live, "another seed, other ids");
}

#[test]
fn the_charts_are_well_formed_svg_with_their_bars_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let results = analyze(dir.path(), &["--offline", "--requests", "2000"]);
    assert_eq!(results["h_reach"][0], 87);
    let read =
        |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));

    let a1 = read("a1-requests-per-replica.svg");
    let a1 = roxmltree::Document::parse(&a1).expect("A-1 is well-formed XML");
    assert_eq!(rects_of(&a1, "#1F77B4"), 3, "one bar per replica");
    let texts: Vec<&str> =
        a1.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::trim).collect();
    for count in counts(&results, 0, 3, "offline") {
        assert!(texts.contains(&count.to_string().as_str()), "value {count} written on its bar: {texts:?}");
    }

    let a4 = read("a4-requests-per-replica-side-by-side.svg");
    let a4 = roxmltree::Document::parse(&a4).expect("A-4 bars are well-formed XML");
    // Three bars per algorithm, plus one legend swatch each.
    assert_eq!(rects_of(&a4, "#1F77B4"), 3 + 1);
    assert_eq!(rects_of(&a4, "#FF7F0E"), 3 + 1);

    for name in ["a2-load-per-replica-by-n.svg", "a4-imbalance-by-n.svg"] {
        let text = read(name);
        let svg = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lines = svg.descendants().filter(|n| n.has_tag_name("polyline")).count();
        assert!(lines >= 2, "{name} has its lines: {lines}");
    }
    let report = read("README.md");
    for heading in ["## A-1", "## A-2", "## A-4", "87 of the 512 slots"] {
        assert!(report.contains(heading), "{heading} missing from the report");
    }
}

#[test]
fn the_failure_experiment_records_its_timeline_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let results = analyze(dir.path(), &["--requests", "500", "--experiments", "a3"]);
    let failover = &results["a3"]["failover"];
    let killed = failover["killed_ms"].as_f64().unwrap();
    let out = failover["out_of_ring_ms"].as_f64().expect("seen out of the ring");
    let back = failover["replaced_ms"].as_f64().expect("replacement seen");
    assert!(killed <= out && out <= back, "{failover}");
    assert_eq!(failover["failed"], 0, "{failover}");
    assert!(failover["requests"].as_u64().unwrap() > 100);
    assert_ne!(failover["replacement"], failover["victim"], "the exercise's mode renames the replacement");
    let endpoints = results["a3"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 9);
    let svg = std::fs::read_to_string(dir.path().join("a3-failover-timeline.svg")).unwrap();
    roxmltree::Document::parse(&svg).expect("A-3 is well-formed XML");
}
