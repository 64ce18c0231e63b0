//! Chaos soak: 200 keep-alive clients send GETs and small POSTs through the load balancer while a
//! scripted schedule of faults runs against it: replicas SIGKILLed, replicas SIGSTOPped (resumed,
//! or left hung to be replaced), scaling by manifest edits and by `/add` and `/rm`, an invalid
//! manifest saved and then fixed, and a restart of the load balancer itself (SIGTERM, then started
//! again on the same port). It prints a table of what the clients saw and asserts:
//! - no GET failed outside the load balancer's own restart;
//! - no POST failed outside that restart unless it had reached a replica that died under it (a
//!   502 whose cause is not a refused connection): a POST that never reached a replica must have
//!   been sent to the next one;
//! - every fault healed within its deadline, and at the end the running replicas (the OS
//!   processes, or containers) are exactly the manifest's (`/rep`, no duplicates), and none is left
//!   once the load balancer has stopped.
//!
//! Knobs: `RINGLB_SOAK_SECONDS` (default 15; `make soak` runs 60), `RINGLB_SOAK_RUNTIME`
//! (`process`, the default; `docker`; or `all`), `RINGLB_SOAK_PAUSE_MS` (each client's pause
//! between requests, default 50), `RINGLB_TEST_SEED` (replays the schedule's random choices).
//! `RINGLB_SOAK_RUNTIME` decides which of the two tests does its work; the other returns at once
//! (so `make test`, which leaves it unset, runs the process soak, and only `make soak` the Docker
//! one). The Docker variant (`docker kill`, `docker pause`) needs a reachable engine and the
//! `ringlb:latest` image (`make image`); chosen without them, it fails saying so.

mod common;

use bytes::Bytes;
use common::{Lb, TestRng, eventually, scale_of, until};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent client connections.
const CLIENTS: usize = 200;
/// A client gives up on a request after this long (the manifest's proxy.timeout is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a fault may take to heal (the cluster steady again) before the soak reports it.
const HEAL_DEADLINE: Duration = Duration::from_secs(40);
/// Quiet time between two faults.
const QUIET: Duration = Duration::from_millis(1500);
/// A fault's window stays open this long after the cluster is steady again.
const WINDOW_TAIL: Duration = Duration::from_millis(300);
const IMAGE: &str = "ringlb:latest";

// ---------------------------------------------------------------------------------------------
// What the clients record.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Method {
    Get,
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One request as a client saw it.
struct Record {
    method: Method,
    path: &'static str,
    /// Milliseconds since the soak began.
    start_ms: u64,
    end_ms: u64,
    latency_us: u64,
    /// `None`: a 2xx with the right body.
    failure: Option<Failure>,
}

/// Why a request did not get the answer it should have.
struct Failure {
    /// The table's row: "connect refused", "reset / closed", "timeout", "502 <message>", ...
    cause: String,
    /// The full detail (error chain or response body) for the report.
    detail: String,
    /// An HTTP status from the load balancer, if it answered.
    status: Option<u16>,
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Digits out, so that one kind of message is one row however many replicas it names.
fn normalise(message: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out.chars().take(110).collect()
}

fn classify_transport(detail: &str, is_connect: bool) -> String {
    let lower = detail.to_lowercase();
    if is_connect && lower.contains("refused") {
        "connect refused".into()
    } else if is_connect {
        "connect error (other)".into()
    } else if lower.contains("reset") || lower.contains("closed") || lower.contains("broken pipe") {
        "reset / closed by the load balancer".into()
    } else {
        format!("transport error: {}", normalise(detail))
    }
}

// ---------------------------------------------------------------------------------------------
// The load: CLIENTS tasks, each with its own keep-alive connection.

struct LoadShared {
    stop: AtomicBool,
    sent: AtomicUsize,
    t0: Instant,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn one_request(
    http: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &Bytes,
) -> Option<Failure> {
    let request = http::Request::builder()
        .method(method.as_str())
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(body.clone()))
        .expect("request");
    let exchange = async {
        let response = http.request(request).await.map_err(|e| {
            let detail = error_chain(&e);
            Failure { cause: classify_transport(&detail, e.is_connect()), detail, status: None }
        })?;
        let (parts, incoming) = response.into_parts();
        let bytes = incoming.collect().await.map_err(|e| {
            let detail = error_chain(&e);
            Failure {
                cause: format!("{} answer's body cut off", parts.status.as_u16()),
                detail,
                status: Some(parts.status.as_u16()),
            }
        })?;
        Ok::<_, Failure>((parts, bytes.to_bytes()))
    };
    let (parts, bytes) = match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
        Err(_) => {
            return Some(Failure {
                cause: format!("timeout (no answer in {CLIENT_TIMEOUT:?})"),
                detail: String::new(),
                status: None,
            });
        }
        Ok(Err(failure)) => return Some(failure),
        Ok(Ok(answer)) => answer,
    };
    let status = parts.status.as_u16();
    let text = String::from_utf8_lossy(&bytes);
    if !parts.status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Some(Failure {
            cause: format!("{status} {}", normalise(&message)),
            detail: text.into_owned(),
            status: Some(status),
        });
    }
    let replica = parts.headers.get("x-ringlb-replica").and_then(|v| v.to_str().ok()).unwrap_or("");
    let right = match path {
        "/home" => text.contains(&format!("Hello from Server: {replica}\"")) && !replica.is_empty(),
        "/echo" => bytes == *body,
        _ => text.contains("worked"),
    };
    if right {
        None
    } else {
        Some(Failure {
            cause: format!("{status} with a wrong body"),
            detail: format!("replica {replica:?}: {}", text.chars().take(200).collect::<String>()),
            status: Some(status),
        })
    }
}

async fn client(
    id: usize,
    addr: SocketAddr,
    shared: Arc<LoadShared>,
    pause: Duration,
    seed: u64,
) -> Vec<Record> {
    let http: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(HttpConnector::new());
    let mut rng = TestRng(seed);
    let mut records = Vec::new();
    let pause_ms = pause.as_millis() as u64;
    // Spread the clients' first requests over one pause.
    tokio::time::sleep(Duration::from_millis(rng.below(pause_ms + 1))).await;
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let roll = rng.below(100);
        let (method, path, body) = if roll < 55 {
            (Method::Get, "/home", Bytes::new())
        } else if roll < 70 {
            (Method::Get, "/work?ms=20", Bytes::new())
        } else {
            let pad = "x".repeat(rng.below(200) as usize);
            (Method::Post, "/echo", Bytes::from(format!("client {id} request {seq} {pad}")))
        };
        let started = Instant::now();
        let start_ms = shared.t0.elapsed().as_millis() as u64;
        let failure = one_request(&http, addr, method, path, &body).await;
        records.push(Record {
            method,
            path: if path == "/home" {
                "/home"
            } else if path == "/echo" {
                "/echo"
            } else {
                "/work"
            },
            start_ms,
            end_ms: shared.t0.elapsed().as_millis() as u64,
            latency_us: started.elapsed().as_micros() as u64,
            failure,
        });
        shared.sent.fetch_add(1, Ordering::Relaxed);
        // Jittered pause: 50 % to 150 % of the mean.
        let jitter = pause_ms / 2 + rng.below(pause_ms + 1);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
    }
    records
}

// ---------------------------------------------------------------------------------------------
// The runtimes: how the soak finds, kills and hangs a replica.

enum Runtime {
    Process,
    Docker { cluster: String },
}

/// A running replica: its handle (pid or container id) and name.
#[derive(Clone, Debug)]
struct Unit {
    handle: String,
    name: String,
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Runtime {
    fn label(&self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Docker { .. } => "docker",
        }
    }

    /// Replicas alive now (hung ones included): processes of the load balancer, or the cluster's
    /// running and paused containers.
    fn units(&self, lb: &Lb) -> Vec<Unit> {
        match self {
            Runtime::Process => lb
                .replica_pids()
                .into_iter()
                .map(|(pid, name)| Unit { handle: pid.to_string(), name })
                .collect(),
            Runtime::Docker { cluster } => docker(&[
                "ps",
                "--filter",
                &format!("label=ringlb.cluster={cluster}"),
                "--format",
                "{{.ID}} {{.Label \"ringlb.hostname\"}}",
            ])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some(Unit { handle: parts.next()?.to_string(), name: parts.next()?.to_string() })
            })
            .collect(),
        }
    }

    fn kill(&self, unit: &Unit) {
        match self {
            Runtime::Process => common::signal(unit.handle.parse().unwrap(), Signal::SIGKILL),
            Runtime::Docker { .. } => {
                let _ = docker(&["kill", &unit.handle]);
            }
        }
    }

    fn hang(&self, unit: &Unit) {
        match self {
            Runtime::Process => common::signal(unit.handle.parse().unwrap(), Signal::SIGSTOP),
            Runtime::Docker { .. } => {
                let _ = docker(&["pause", &unit.handle]);
            }
        }
    }

    fn resume(&self, unit: &Unit) {
        match self {
            Runtime::Process => common::signal(unit.handle.parse().unwrap(), Signal::SIGCONT),
            Runtime::Docker { .. } => {
                let _ = docker(&["unpause", &unit.handle]);
            }
        }
    }

    /// True once the replica no longer runs.
    fn gone(&self, unit: &Unit) -> bool {
        match self {
            Runtime::Process => !common::alive(unit.handle.parse().unwrap()),
            Runtime::Docker { .. } => docker(&["inspect", "--format", "{{.State.Status}}", &unit.handle])
                .map_or(true, |state| !matches!(state.as_str(), "running" | "paused" | "restarting")),
        }
    }

    fn manifest(&self, port: u16) -> String {
        let common = format!(
            "# soak manifest\nname: NAME\nreplicas: 3   # N\nhostnames: [s1, s2, s3]\nlisten: 127.0.0.1:{port}\n\
             health:\n  interval: 250ms\n  timeout: 200ms\n  replace_after: 3\nproxy:\n  timeout: 15s\n"
        );
        match self {
            Runtime::Process => {
                common.replace("NAME", "soak")
                    + "replica:\n  runtime: process\n  drain_timeout: 3s\n  stop_timeout: 1s\n"
            }
            Runtime::Docker { cluster } => {
                common
                    .replace("NAME", cluster)
                    .replace("[s1, s2, s3]", &format!("[{cluster}-s1, {cluster}-s2, {cluster}-s3]"))
                    + &format!(
                        "replica:\n  runtime: docker\n  image: {IMAGE}\n  network: {cluster}-net\n  port: 5000\n  \
                         drain_timeout: 3s\n  stop_timeout: 1s\n  start_timeout: 60s\n"
                    )
            }
        }
    }
}

/// Undoes what the soak did to replicas, and (Docker) removes the cluster's containers and
/// network by its unique label, also when the test fails.
struct Cleanup {
    docker_cluster: Option<String>,
    /// Processes the soak SIGSTOPped: resumed and killed if still there (only if they are still
    /// the `ringlb server` we stopped).
    stopped: Arc<Mutex<Vec<(u32, String)>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pid, name) in self.stopped.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if common::alive(*pid) && common::replica_id_of(*pid).as_deref() == Some(name.as_str()) {
                common::signal(*pid, Signal::SIGKILL);
                common::signal(*pid, Signal::SIGCONT);
            }
        }
        if let Some(cluster) = &self.docker_cluster {
            let label = format!("label=ringlb.cluster={cluster}");
            let list = |args: &[&str]| -> Vec<String> {
                docker(args).unwrap_or_default().split_whitespace().map(String::from).collect()
            };
            // Let removals the load balancer started finish first.
            let deadline = Instant::now() + Duration::from_secs(15);
            while !list(&["ps", "-aq", "--filter", &label, "--filter", "status=removing"]).is_empty()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let ids = list(&["ps", "-aq", "--filter", &label]);
            for id in &ids {
                let _ = docker(&["unpause", id]);
            }
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
            for network in list(&["network", "ls", "-q", "--filter", &label]) {
                let _ = docker(&["network", "rm", &network]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The schedule.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WindowKind {
    Fault,
    LbRestart,
}

#[derive(Clone, Debug)]
struct Window {
    kind: WindowKind,
    name: String,
    start_ms: u64,
    end_ms: u64,
}

/// Every fault the schedule knows, in the order one cycle runs them.
const FAULTS: &[&str] = &[
    "kill",
    "scale-up (manifest edit)",
    "hang, resumed",
    "add (POST /add)",
    "invalid manifest, then fixed",
    "hang, left to be replaced",
    "scale-down (manifest edit)",
    "kill 2 at once",
    "rm (DELETE /rm)",
    "lb restart (SIGTERM, start)",
];

struct Soak {
    runtime: Runtime,
    lb: Lb,
    rng: TestRng,
    t0: Instant,
    windows: Vec<Window>,
    /// Faults that did not heal in time, and other problems; the test fails on any.
    problems: Vec<String>,
    /// Every load balancer process id used (each restart adds one).
    lb_pids: Vec<u32>,
    stopped: Arc<Mutex<Vec<(u32, String)>>>,
    /// (fault, time to heal) for the report.
    healed: Vec<(String, Duration)>,
    /// When the fault in progress began.
    fault_began: Instant,
}

/// What the cluster looks like when nothing is in progress.
struct Steady {
    desired: usize,
    names: Vec<String>,
}

impl Soak {
    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    async fn status(&self) -> Option<Value> {
        let answer = self.lb.try_request("GET", "/_ringlb/status", "", &[]).await.ok()?;
        serde_json::from_str(&answer.body).ok()
    }

    /// The cluster is steady: every desired replica is ready and in the ring, nothing else is
    /// tracked, `/rep` says the same, and exactly those replicas run (one each).
    async fn steady(&self) -> Result<Steady, String> {
        let status = self.status().await.ok_or("no status")?;
        let strings = |v: &Value| -> Vec<String> {
            let mut list: Vec<String> =
                v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
            list.sort();
            list
        };
        let desired = status["desired"].as_u64().ok_or("no desired")? as usize;
        let names = strings(&status["names"]);
        let ring = strings(&status["ring"]);
        let tracked = status["replicas"].as_array().map_or(0, Vec::len);
        if status["ready"].as_u64() != Some(desired as u64) || tracked != desired || names.len() != desired {
            return Err(format!("desired {desired}, ready {}, tracked {tracked}", status["ready"]));
        }
        if ring != names {
            return Err(format!("ring {ring:?} != names {names:?}"));
        }
        let rep = self.lb.try_request("GET", "/rep", "", &[]).await?;
        let rep: Value = serde_json::from_str(&rep.body).map_err(|e| e.to_string())?;
        let rep_names = strings(&rep["message"]["replicas"]);
        if rep_names != names || rep["message"]["N"].as_u64() != Some(desired as u64) {
            return Err(format!("/rep {rep} != names {names:?}"));
        }
        let mut running: Vec<String> = self.runtime.units(&self.lb).into_iter().map(|u| u.name).collect();
        running.sort();
        if running != names {
            return Err(format!("running {running:?} != names {names:?}"));
        }
        Ok(Steady { desired, names })
    }

    /// Waits until the cluster is steady with `expect` replicas (if given) and `extra` holds.
    async fn heal<F: FnMut(&Self) -> bool>(
        &mut self,
        fault: &str,
        expect: Option<usize>,
        mut extra: F,
    ) -> bool {
        let began = Instant::now();
        let mut last = String::new();
        let ok = loop {
            match self.steady().await {
                Ok(s) if expect.is_none_or(|n| n == s.desired) && extra(self) => break true,
                Ok(s) => last = format!("steady at {} ({:?}), waiting for {expect:?}", s.desired, s.names),
                Err(why) => last = why,
            }
            if began.elapsed() > HEAL_DEADLINE {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if ok {
            self.healed.push((fault.to_string(), self.fault_began.elapsed()));
        } else {
            let status = self.status().await.map(|s| s.to_string()).unwrap_or_default();
            self.problems.push(format!(
                "{fault}: not healed within {HEAL_DEADLINE:?} (at {} ms): {last}\nstatus: {status}",
                self.now_ms()
            ));
        }
        ok
    }

    fn open(&self, kind: WindowKind, name: &str) -> Window {
        Window { kind, name: name.to_string(), start_ms: self.now_ms(), end_ms: u64::MAX }
    }

    fn close(&mut self, mut window: Window) {
        window.end_ms = self.now_ms() + WINDOW_TAIL.as_millis() as u64;
        self.windows.push(window);
    }

    /// A random replica that is in the ring now.
    async fn victim(&mut self) -> Option<Unit> {
        let ring: BTreeSet<String> = self
            .status()
            .await?
            .get("ring")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let units: Vec<Unit> =
            self.runtime.units(&self.lb).into_iter().filter(|u| ring.contains(&u.name)).collect();
        if units.is_empty() {
            return None;
        }
        Some(units[self.rng.below(units.len() as u64) as usize].clone())
    }

    fn count_in_file(&self) -> usize {
        scale_of(&self.lb.read_manifest()).map_or(0, |(n, _)| n as usize)
    }

    fn set_replicas_in_file(&self, n: usize) {
        let text = self.lb.read_manifest();
        let edited: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("replicas:") {
                    format!("replicas: {n}   # N (soak edit)")
                } else {
                    l.to_string()
                }
            })
            .collect();
        self.lb.write_manifest(&(edited.join("\n") + "\n"));
    }

    async fn run_fault(&mut self, fault: &str) {
        let before = self.count_in_file();
        self.fault_began = Instant::now();
        let window = self.open(
            if fault.starts_with("lb restart") { WindowKind::LbRestart } else { WindowKind::Fault },
            fault,
        );
        match fault {
            "kill" | "kill 2 at once" => {
                let want = if fault == "kill" { 1 } else { 2 };
                let mut victims: Vec<Unit> = Vec::new();
                for _ in 0..10 {
                    if victims.len() == want {
                        break;
                    }
                    if let Some(v) = self.victim().await
                        && !victims.iter().any(|x| x.name == v.name)
                    {
                        victims.push(v);
                    }
                }
                for v in &victims {
                    self.runtime.kill(v);
                }
                let replaced = |s: &Self| {
                    let now = s.runtime.units(&s.lb);
                    victims.iter().all(|v| {
                        s.runtime.gone(v) && now.iter().any(|u| u.name == v.name && u.handle != v.handle)
                    })
                };
                self.heal(fault, Some(before), replaced).await;
            }
            "hang, resumed" | "hang, left to be replaced" => {
                let Some(v) = self.victim().await else {
                    self.problems.push(format!("{fault}: no replica to hang"));
                    return self.close(window);
                };
                if let (Runtime::Process, Ok(pid)) = (&self.runtime, v.handle.parse::<u32>()) {
                    self.stopped.lock().unwrap().push((pid, v.name.clone()));
                }
                self.runtime.hang(&v);
                let out = eventually(Duration::from_secs(5), || async {
                    self.status().await.is_some_and(|s| {
                        !s["ring"].as_array().is_some_and(|r| r.iter().any(|n| n.as_str() == Some(&v.name)))
                    })
                })
                .await;
                if !out {
                    self.problems.push(format!("{fault}: hung {} stayed in the ring for 5 s", v.name));
                }
                if fault == "hang, resumed" {
                    self.runtime.resume(&v);
                    self.heal(fault, Some(before), |_| true).await;
                } else {
                    let replaced = |s: &Self| {
                        s.runtime.gone(&v)
                            && s.runtime.units(&s.lb).iter().any(|u| u.name == v.name && u.handle != v.handle)
                    };
                    self.heal(fault, Some(before), replaced).await;
                    self.runtime.resume(&v);
                }
            }
            "scale-up (manifest edit)" => {
                self.set_replicas_in_file(before + 2);
                self.heal(fault, Some(before + 2), |_| true).await;
            }
            "scale-down (manifest edit)" => {
                let to = before.saturating_sub(2).max(2);
                self.set_replicas_in_file(to);
                self.heal(fault, Some(to), |_| true).await;
            }
            "add (POST /add)" => {
                let answer = self.lb.try_request("POST", "/add", r#"{"n": 2}"#, &[]).await;
                match answer {
                    Ok(a) if a.status == 200 => {
                        self.heal(fault, Some(before + 2), |_| true).await;
                    }
                    other => self.problems.push(format!("{fault}: {other:?}")),
                }
            }
            "rm (DELETE /rm)" => {
                let n = if before >= 4 { 2 } else { 1 };
                let named = self.victim().await.map(|v| v.name).unwrap_or_default();
                let body = format!(r#"{{"n": {n}, "hostnames": ["{named}"]}}"#);
                match self.lb.try_request("DELETE", "/rm", &body, &[]).await {
                    Ok(a) if a.status == 200 => {
                        self.heal(fault, Some(before - n), |_| true).await;
                    }
                    other => self.problems.push(format!("{fault} {body}: {other:?}")),
                }
            }
            "invalid manifest, then fixed" => {
                let good = self.lb.read_manifest();
                let bad = good.replace("health:", "healht:");
                self.lb.write_manifest(&bad);
                let refused = eventually(Duration::from_secs(10), || async {
                    self.status().await.is_some_and(|s| s["last_manifest_error"].is_string())
                })
                .await;
                if !refused {
                    self.problems.push(format!("{fault}: the invalid manifest was not reported"));
                }
                // Nothing changes while the file is invalid; then the fix applies.
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(why) = self.steady().await {
                    self.problems.push(format!("{fault}: not steady while the file was invalid: {why}"));
                }
                self.lb.write_manifest(&good);
                let fixed = eventually(Duration::from_secs(10), || async {
                    self.status().await.is_some_and(|s| s["last_manifest_error"].is_null())
                })
                .await;
                if !fixed {
                    self.problems.push(format!("{fault}: the fixed manifest still reported as invalid"));
                }
                self.heal(fault, Some(before), |_| true).await;
            }
            "lb restart (SIGTERM, start)" => {
                let old = self.lb.pid();
                common::signal(old, Signal::SIGTERM);
                match self.lb.wait_exit(Duration::from_secs(30)).await {
                    Some(status) if status.success() => {}
                    other => self.problems.push(format!("{fault}: exit after SIGTERM: {other:?}")),
                }
                if let Runtime::Process = self.runtime {
                    let gone = eventually(Duration::from_secs(10), || async {
                        common::replicas_started_by(old).is_empty()
                    })
                    .await;
                    if !gone {
                        self.problems.push(format!(
                            "{fault}: replicas outlived the stopped load balancer: {:?}",
                            common::replicas_started_by(old)
                        ));
                    }
                }
                self.lb.start_again(Duration::from_secs(60)).await;
                self.lb_pids.push(self.lb.pid());
                self.heal(fault, Some(before), |_| true).await;
            }
            other => panic!("unknown fault {other}"),
        }
        self.close(window);
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    format!("{:.1} ms", sorted[i] as f64 / 1000.0)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Outside,
    Fault,
    LbRestart,
}

fn phase_of(record: &Record, windows: &[Window]) -> (Phase, Vec<String>) {
    let overlapping: Vec<&Window> =
        windows.iter().filter(|w| record.start_ms <= w.end_ms && record.end_ms >= w.start_ms).collect();
    let names = overlapping.iter().map(|w| format!("{} [{}..{} ms]", w.name, w.start_ms, w.end_ms)).collect();
    let phase = if overlapping.iter().any(|w| w.kind == WindowKind::LbRestart) {
        Phase::LbRestart
    } else if overlapping.is_empty() {
        Phase::Outside
    } else {
        Phase::Fault
    };
    (phase, names)
}

/// A POST failure that is allowed: it reached a replica that died under it (a 502 whose cause is
/// a failure after connecting, not a refused or timed-out connection).
fn post_failure_allowed(failure: &Failure) -> bool {
    let detail = failure.detail.to_lowercase();
    failure.status == Some(502)
        && !detail.contains("(connect)")
        && !detail.contains("connect error")
        && !detail.contains("refused")
}

/// Prints the table; returns the failures the soak asserts on.
fn report(runtime: &str, seconds: u64, seed: u64, records: &[Record], soak: &Soak) -> Vec<String> {
    let phases: Vec<(Phase, Vec<String>)> = records.iter().map(|r| phase_of(r, &soak.windows)).collect();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut causes: BTreeMap<(String, &'static str, &'static str), usize> = BTreeMap::new();
    let mut latencies: BTreeMap<Phase, Vec<u64>> = BTreeMap::new();
    let mut counts: BTreeMap<(Phase, Method), (usize, usize)> = BTreeMap::new();
    let mut asserted = Vec::new();
    for (record, (phase, windows)) in records.iter().zip(&phases) {
        let entry = counts.entry((*phase, record.method)).or_default();
        entry.0 += 1;
        match &record.failure {
            None => {
                *by_status.entry("2xx, right body".into()).or_default() += 1;
                latencies.entry(*phase).or_default().push(record.latency_us);
            }
            Some(f) => {
                entry.1 += 1;
                let key = match f.status {
                    Some(s) => format!("{s}"),
                    None => "no answer".into(),
                };
                *by_status.entry(key).or_default() += 1;
                let phase_name = match phase {
                    Phase::Outside => "outside faults",
                    Phase::Fault => "during faults",
                    Phase::LbRestart => "during LB restart",
                };
                *causes.entry((f.cause.clone(), record.method.as_str(), phase_name)).or_default() += 1;
                if f.status.is_some() {
                    latencies.entry(*phase).or_default().push(record.latency_us);
                }
                let counts_against =
                    *phase != Phase::LbRestart && (record.method == Method::Get || !post_failure_allowed(f));
                if counts_against {
                    asserted.push(format!(
                        "{} {} at {}..{} ms ({:.1} ms): {} [{}] during: {}",
                        record.method.as_str(),
                        record.path,
                        record.start_ms,
                        record.end_ms,
                        record.latency_us as f64 / 1000.0,
                        f.cause,
                        f.detail.chars().take(300).collect::<String>(),
                        if windows.is_empty() { "no fault".into() } else { windows.join(", ") }
                    ));
                }
            }
        }
    }
    for l in latencies.values_mut() {
        l.sort_unstable();
    }
    let total = records.len();
    let gets = records.iter().filter(|r| r.method == Method::Get).count();
    println!();
    println!(
        "==== ringlb soak: {runtime} runtime, {seconds} s of faults, {CLIENTS} keep-alive clients, seed {seed:#x} ===="
    );
    println!("requests sent: {total} (GET {gets}, POST {})", total - gets);
    println!("answered / failed, by status:");
    for (status, n) in &by_status {
        println!("  {status:<28} {n:>9}");
    }
    let cell = |p: Phase, m: Method| {
        let (n, f) = counts.get(&(p, m)).copied().unwrap_or_default();
        format!("{n} sent, {f} failed")
    };
    println!("{:<22} {:>26} {:>26} {:>26}", "", "outside faults", "during faults", "during LB restart");
    for m in [Method::Get, Method::Post] {
        println!(
            "{:<22} {:>26} {:>26} {:>26}",
            m.as_str(),
            cell(Phase::Outside, m),
            cell(Phase::Fault, m),
            cell(Phase::LbRestart, m)
        );
    }
    for (label, p) in
        [("p50 latency", 0.50), ("p99 latency", 0.99), ("p99.9 latency", 0.999), ("max latency", 1.0)]
    {
        let get = |phase| percentile(latencies.get(&phase).map_or(&[][..], Vec::as_slice), p);
        println!(
            "{:<22} {:>26} {:>26} {:>26}",
            label,
            get(Phase::Outside),
            get(Phase::Fault),
            get(Phase::LbRestart)
        );
    }
    println!("failures by cause (method, when):");
    if causes.is_empty() {
        println!("  none");
    }
    for ((cause, method, phase), n) in &causes {
        println!("  {n:>7}  {method:<4} {phase:<18} {cause}");
    }
    let mut per_fault: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for (fault, took) in &soak.healed {
        let e = per_fault.entry(fault.as_str()).or_default();
        e.0 += 1;
        e.1 = e.1.max(*took);
    }
    println!("faults run (times, slowest to heal):");
    for (fault, (n, slowest)) in &per_fault {
        println!("  {n:>3} x {fault:<32} healed within {slowest:.2?}");
    }
    let fault_ms: u64 = soak.windows.iter().map(|w| w.end_ms.saturating_sub(w.start_ms)).sum();
    println!(
        "time inside fault windows: {:.1} s; load balancer processes: {:?}",
        fault_ms as f64 / 1000.0,
        soak.lb_pids
    );
    asserted
}

// ---------------------------------------------------------------------------------------------
// The test.

fn selected(runtime: &str) -> bool {
    let chosen = std::env::var("RINGLB_SOAK_RUNTIME").unwrap_or_else(|_| "process".into());
    chosen.split(',').any(|c| c.trim() == runtime || c.trim() == "all")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

async fn soak(runtime: Runtime) {
    let seconds = env_u64("RINGLB_SOAK_SECONDS", 15);
    let pause = Duration::from_millis(env_u64("RINGLB_SOAK_PAUSE_MS", 50).max(1));
    let mut rng = TestRng::from_env_or_clock();
    let seed = rng.0;
    println!(
        "soak ({}): {seconds} s, {CLIENTS} clients pausing ~{pause:?} between requests, seed {seed:#x} \
         (RINGLB_TEST_SEED replays the schedule)",
        runtime.label()
    );
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let _cleanup = Cleanup {
        docker_cluster: match &runtime {
            Runtime::Docker { cluster } => Some(cluster.clone()),
            Runtime::Process => None,
        },
        stopped: Arc::clone(&stopped),
    };
    let port = common::free_port();
    let lb = Lb::start(&runtime.manifest(port)).await;
    let addr = lb.addr;
    assert_eq!(addr.port(), port);
    let t0 = Instant::now();
    let mut soak = Soak {
        runtime,
        lb_pids: vec![lb.pid()],
        lb,
        rng: TestRng(rng.next_u64()),
        t0,
        windows: Vec::new(),
        problems: Vec::new(),
        stopped,
        healed: Vec::new(),
        fault_began: Instant::now(),
    };
    assert!(soak.heal("start", Some(3), |_| true).await, "{:?}", soak.problems);

    let shared = Arc::new(LoadShared { stop: AtomicBool::new(false), sent: AtomicUsize::new(0), t0 });
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..CLIENTS {
        clients.spawn(client(id, addr, Arc::clone(&shared), pause, rng.next_u64()));
    }
    // Every client has answered at least once before the first fault.
    until!(
        Duration::from_secs(30),
        || async { shared.sent.load(Ordering::Relaxed) >= 2 * CLIENTS },
        "the load did not start"
    );
    tokio::time::sleep(QUIET).await;

    // Whole cycles of faults until the time is up (at least one cycle).
    let budget = Duration::from_secs(seconds);
    let faults_began = Instant::now();
    'cycles: for cycle in 0.. {
        for fault in FAULTS {
            if faults_began.elapsed() >= budget && cycle > 0 {
                break 'cycles;
            }
            let at = soak.now_ms();
            soak.run_fault(fault).await;
            println!("  {at:>7} ms  {fault} (healed at {} ms)", soak.now_ms());
            tokio::time::sleep(QUIET).await;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    while let Some(done) = clients.join_next().await {
        records.extend(done.expect("client task"));
    }

    // Afterwards: the running replicas are the manifest's, one each.
    let final_state = soak.steady().await;
    let text = soak.lb.read_manifest();
    let (replicas, hostnames) = scale_of(&text).expect("replicas in the manifest");
    match &final_state {
        Ok(steady) => {
            if steady.desired != replicas as usize {
                soak.problems
                    .push(format!("running {} replicas, the manifest says {replicas}", steady.desired));
            }
            let named: BTreeSet<&String> = hostnames.iter().take(replicas as usize).collect();
            if !named.iter().all(|n| steady.names.contains(n)) {
                soak.problems.push(format!("running {:?}, the manifest names {named:?}", steady.names));
            }
            let units = soak.runtime.units(&soak.lb);
            let handles: BTreeSet<&String> = units.iter().map(|u| &u.handle).collect();
            if handles.len() != units.len() || units.len() != steady.names.len() {
                soak.problems.push(format!("duplicate replicas: {units:?}"));
            }
        }
        Err(why) => soak.problems.push(format!("not steady at the end: {why}")),
    }
    if let Err(e) = common::check_manifest(&soak.lb.manifest) {
        soak.problems.push(format!("the manifest is invalid at the end: {e}"));
    }

    // Stop the load balancer: nothing of it is left.
    let last = soak.lb.pid();
    common::signal(last, Signal::SIGTERM);
    let exit = soak.lb.wait_exit(Duration::from_secs(30)).await;
    if !exit.is_some_and(|s| s.success()) {
        soak.problems.push(format!("the load balancer's exit after SIGTERM: {exit:?}"));
    }
    if let Runtime::Process = soak.runtime {
        let pids = soak.lb_pids.clone();
        let clean = eventually(Duration::from_secs(10), || async {
            pids.iter().all(|p| common::replicas_started_by(*p).is_empty())
        })
        .await;
        if !clean {
            let left: Vec<u32> = pids.iter().flat_map(|p| common::replicas_started_by(*p)).collect();
            soak.problems.push(format!("replica processes left after the load balancer stopped: {left:?}"));
        }
    }
    if let (Runtime::Docker { cluster }, Ok(steady)) = (&soak.runtime, &final_state) {
        // A stopped load balancer leaves its replicas for the next one to adopt: exactly the
        // manifest's, each once, and nothing else (no exited or half-created container).
        let all = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=ringlb.cluster={cluster}"),
            "--format",
            "{{.Label \"ringlb.hostname\"}} {{.State}}",
        ])
        .unwrap_or_default();
        let mut left: Vec<String> = all.lines().map(String::from).collect();
        left.sort();
        let expected: Vec<String> = steady.names.iter().map(|n| format!("{n} running")).collect();
        if left != expected {
            soak.problems
                .push(format!("containers after the load balancer stopped: {left:?}, expected {expected:?}"));
        }
    }

    let mut failures = report(soak.runtime.label(), seconds, seed, &records, &soak);
    if !soak.problems.is_empty() || !failures.is_empty() {
        failures.truncate(40);
        panic!(
            "soak ({}) failed, seed {seed:#x}\nproblems:\n  {}\nrequests that must not fail ({} shown):\n  {}",
            soak.runtime.label(),
            soak.problems.join("\n  "),
            failures.len(),
            failures.join("\n  ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_process_runtime() {
    if !selected("process") {
        println!("not chosen: the process soak runs when RINGLB_SOAK_RUNTIME includes process (or all)");
        return;
    }
    soak(Runtime::Process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_docker_runtime() {
    // Not an `#[ignore]`d test: `make soak` runs this file with `cargo test` and no
    // `--include-ignored`; the environment variable is its switch.
    if !selected("docker") {
        println!("not chosen: the Docker soak runs with RINGLB_SOAK_RUNTIME=docker or all (make soak)");
        return;
    }
    let engine = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    assert!(
        engine,
        "RINGLB_SOAK_RUNTIME chose the Docker soak, and no Docker engine answers (`docker info` fails); \
         RINGLB_SOAK_RUNTIME=process (make soak SOAK_RUNTIME=process) runs the process soak alone"
    );
    assert!(
        docker(&["image", "inspect", IMAGE]).is_ok(),
        "RINGLB_SOAK_RUNTIME chose the Docker soak, and the image {IMAGE} is missing (`make image` builds it)"
    );
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let cluster = format!("soak{:05x}", (nanos ^ std::process::id()) & 0xfffff);
    soak(Runtime::Docker { cluster }).await;
}
