//! Observability through the real binary: Prometheus metrics that parse and move with requests, the
//! status JSON through a kill and a drain, and the dashboard in a real (headless) Chromium.

mod common;

use common::{Lb, eventually, manifest, until};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser of the text exposition format (version 0.0.4): `# HELP`/`# TYPE` lines, and
/// samples `name{label="value",...} number`; anything else is an error.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(_), Some(_)) => {}
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail("unknown type"));
                    }
                    typed.insert(name.to_string(), kind.to_string());
                }
                _ => return Err(fail("bad comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| fail("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| fail("bad value"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| fail("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").ok_or_else(|| fail("bad label"))?;
                    let end = after.find('"').ok_or_else(|| fail("unterminated label value"))?;
                    labels.insert(key.to_string(), after[..end].to_string());
                    rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
                }
                (name.to_string(), labels)
            }
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if name.is_empty() || !name.chars().all(valid) || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(fail("bad metric name"));
        }
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        if !typed.contains_key(&name) && !typed.contains_key(base) {
            return Err(fail("sample without a TYPE line"));
        }
        samples.push(Sample { name, labels, value });
    }
    Ok(samples)
}

#[tokio::test]
async fn metrics_parse_and_per_replica_counters_sum_to_the_requests_sent() {
    let lb = Lb::start(&manifest("metrics", 3, "")).await;
    for _ in 0..100 {
        assert_eq!(lb.get("/home").await.status, 200);
    }
    let scrape = lb.get("/_ringlb/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let samples = parse_prometheus(&scrape.body).unwrap_or_else(|e| panic!("{e}\n{}", scrape.body));
    let requests: Vec<&Sample> = samples.iter().filter(|s| s.name == "ringlb_requests_total").collect();
    let total: f64 = requests.iter().map(|s| s.value).sum();
    assert_eq!(total, 100.0, "{requests:?}");
    assert_eq!(
        requests.iter().map(|s| &s.labels["replica"]).collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    assert!(requests.iter().all(|s| s.labels["method"] == "GET" && s.labels["status"] == "2xx"));
    // One service, the cluster: every replica series says so, and the replica state gauges too.
    for series in [
        "ringlb_requests_total",
        "ringlb_request_duration_seconds_count",
        "ringlb_inflight_requests",
        "ringlb_replicas",
    ] {
        let all: Vec<&Sample> = samples.iter().filter(|s| s.name == series).collect();
        assert!(
            !all.is_empty()
                && all.iter().all(|s| s.labels.get("service").map(String::as_str) == Some("metrics")),
            "{series}: {all:?}"
        );
    }
    let count: f64 =
        samples.iter().filter(|s| s.name == "ringlb_request_duration_seconds_count").map(|s| s.value).sum();
    assert_eq!(count, 100.0);
    for name in [
        "ringlb_replicas",
        "ringlb_reconcile_passes_total",
        "ringlb_reconcile_actions_total",
        "ringlb_inflight_requests",
    ] {
        assert!(samples.iter().any(|s| s.name == name), "{name} missing");
    }
    let ready = samples.iter().find(|s| s.name == "ringlb_replicas" && s.labels["state"] == "ready").unwrap();
    assert_eq!(ready.value, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_killed_replica_failing_then_replaced_and_a_drain() {
    // Slow heartbeats, so that the hung state is visible for a while.
    let text = manifest("status", 2, "hostnames: [server1, server2]\n")
        .replace("interval: 200ms", "interval: 300ms");
    let lb = std::sync::Arc::new(Lb::start(&text).await);
    let (victim, _) = lb.replica_pids().into_iter().find(|(_, n)| n == "server1").unwrap();
    let state_of = |status: &serde_json::Value, name: &str| -> Vec<String> {
        status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == name)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .collect()
    };
    common::signal(victim, Signal::SIGSTOP);
    let failing = eventually(Duration::from_secs(10), || async {
        state_of(&lb.status().await, "server1").contains(&"failing".to_string())
    })
    .await;
    common::signal(victim, Signal::SIGCONT);
    common::signal(victim, Signal::SIGKILL);
    assert!(failing, "never shown failing: {}", lb.status().await);
    until!(
        Duration::from_secs(10),
        || async {
            let status = lb.status().await;
            state_of(&status, "server1") == ["ready"] && status["ready"] == 2
        },
        "not replaced: {}",
        lb.status().await
    );
    let status = lb.status().await;
    let events: Vec<&str> =
        status["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(events.contains(&"replica_failing"), "{events:?}");
    assert!(events.iter().any(|e| *e == "replica_exited" || *e == "replica_replaced"), "{events:?}");
    assert!(status["last_reconcile"]["actions"].as_array().is_some_and(|a| !a.is_empty()));

    // A drain: a slow request on server2 keeps it draining after /rm.
    let mut id = 100_000;
    while lb.request("GET", "/home", "", &[("x-request-id", &id.to_string())]).await.replica() != "server2" {
        id += 1;
    }
    let slow = {
        let lb = std::sync::Arc::clone(&lb);
        tokio::spawn(async move {
            lb.request("GET", "/work?ms=2000", "", &[("x-request-id", &id.to_string())]).await
        })
    };
    until!(
        Duration::from_secs(5),
        || async {
            lb.status().await["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "server2" && m["inflight"] == 1)
        },
        "the slow request never reached server2: {}",
        lb.status().await
    );
    assert_eq!(lb.request("DELETE", "/rm", r#"{"n": 1, "hostnames": ["server2"]}"#, &[]).await.status, 200);
    until!(
        Duration::from_secs(5),
        || async { state_of(&lb.status().await, "server2") == ["draining"] },
        "not shown draining: {}",
        lb.status().await
    );
    assert_eq!(slow.await.unwrap().status, 200);
}

/// Chromium from Debian (`chromium`, or `chromium-browser`); fails the test without one (a test
/// that is run must not pass without what it tests; CI installs it).
fn chromium() -> &'static str {
    for bin in ["chromium", "chromium-browser"] {
        if Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return bin;
        }
    }
    panic!("no chromium on this machine (`apt-get install chromium`): the browser test needs it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium"]
async fn the_dashboard_renders_in_a_real_browser() {
    let browser = chromium();
    let lb = Lb::start(&manifest("dashboard", 4, "hostnames: [server1, server2, server3, server4]\n")).await;
    for _ in 0..50 {
        lb.get("/home").await;
    }
    let url = format!("http://{}/_ringlb/", lb.addr);
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,860",
            ])
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .args(args)
            .arg(&url)
            .output()
            .expect("run chromium")
    };
    // Virtual time lets the page's timers and fetches run before the DOM is dumped.
    let dump = run(&["--virtual-time-budget=5000", "--dump-dom"]);
    let dom = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(
        dom.contains("data-rendered=\"js\""),
        "the script did not render: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(dom.contains("<span id=\"ready-count\">4</span>"), "replica count not rendered");
    for name in ["server1", "server2", "server3", "server4"] {
        assert!(dom.contains(&format!("<tr data-replica=\"{name}\">")), "{name} missing from the table");
        assert!(
            dom.contains(&format!("data-replica=\"{name}\"><title>{name}</title>")),
            "{name} missing from the ring"
        );
    }
    assert!(dom.contains("class=\"chip\""), "who answered the last requests is empty");
    let screenshot = std::env::var("RINGLB_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("dashboard.png"));
    let shot = run(&["--virtual-time-budget=5000", &format!("--screenshot={}", screenshot.display())]);
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("dashboard screenshot: {} ({} bytes)", screenshot.display(), png.len());

    // Without JavaScript the page still shows the state table.
    let page = lb.get("/_ringlb/").await;
    assert_eq!(page.status, 200);
    for name in ["server1", "server2", "server3", "server4"] {
        assert!(page.body.contains(&format!("<tr data-replica=\"{name}\">")));
    }
}
