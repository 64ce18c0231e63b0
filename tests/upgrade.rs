//! In-place upgrades (`kill -USR2`, `--pid-file`) and the graceful stop, under load: three upgrades
//! in a row fail no request of eight keep-alive clients and a client that opens a new connection
//! per request; a new process that cannot start leaves the old one serving.
//!
//! The clients here are strict on purpose: a keep-alive connection may only end after an answer
//! that says `connection: close`, so a connection closed under a request (which a pooling client
//! would quietly retry) counts as a failure.

mod common;

use common::until;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `ringlb server` run by the test, on any port; killed on drop.
struct Backend {
    child: Child,
    addr: String,
}

impl Backend {
    fn start(id: &str) -> Backend {
        let mut child = Command::new(common::bin())
            .args([
                "--log-level",
                "warn",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--announce",
                "--id",
                id,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a backend");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("announce");
        let addr =
            line.trim().strip_prefix(ringlb::replica::ANNOUNCE_PREFIX).expect("announce line").to_string();
        Backend { child, addr }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ringlb run --pid-file` on a manifest in a temporary directory. Whatever process the pid file
/// names at the end (the last upgrade's) is killed on drop, with the first one.
struct Upgradable {
    first: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Upgradable {
    /// Starts `ringlb run` on `manifest` with `threads` (`--threads`, through the environment the
    /// new processes inherit; `None`: the default).
    async fn start(manifest: &str, threads: Option<&str>) -> Upgradable {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, manifest).expect("write manifest");
        let ready = dir.path().join("ready");
        let mut command = Command::new(common::bin());
        if let Some(threads) = threads {
            command.env("RINGLB_THREADS", threads);
        }
        let first = command
            .args(["run", "--manifest"])
            .arg(&path)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--pid-file")
            .arg(dir.path().join("ringlb.pid"))
            .env("RUST_LOG", std::env::var("RINGLB_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ringlb");
        let mut lb = Upgradable { first, dir, addr: "127.0.0.1:0".parse().expect("address") };
        until!(Duration::from_secs(20), || async { lb.pid().is_some() }, "ringlb wrote no pid file");
        lb.addr = std::fs::read_to_string(&ready).expect("ready file").trim().parse().expect("address");
        lb
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("ringlb.pid")
    }

    /// The process id the pid file holds.
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    /// Sends SIGUSR2 and waits until a new process wrote the pid file and the old one exited.
    async fn upgrade(&mut self) -> u32 {
        let old = self.pid().expect("a pid");
        common::signal(old, nix::sys::signal::Signal::SIGUSR2);
        until!(
            Duration::from_secs(30),
            || async { self.pid().is_some_and(|p| p != old) },
            "no new process took over"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.reap_first();
            if !common::alive(old) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the old process {old} did not exit");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.pid().expect("a pid")
    }

    /// Reaps the first process if it exited (it is this test's child; the others are not).
    fn reap_first(&mut self) {
        let _ = self.first.try_wait();
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            common::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.first.kill();
        let _ = self.first.wait();
    }
}

/// One answer read off a connection: its status and whether it closes the connection.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, bool), String> {
    buf.clear();
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed with {} bytes of an answer", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad head: {head}"))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).ok_or("no content-length")?;
    let close = header("connection").is_some_and(|v| v.contains("close"));
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("connection closed inside a body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, close))
}

/// Strict clients sending `GET /home` until stopped, counting answers and failures.
#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failures.lock().expect("failures").push(why);
    }
    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

/// A keep-alive client: reconnects only after an answer that closes the connection.
async fn keepalive_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut buf = Vec::new();
    'connections: while !stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(error) => {
                tally.fail(format!("keep-alive connect: {error}"));
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let sent = stream.write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n").await;
            match sent.map_err(|e| format!("write: {e}")) {
                Ok(()) => {}
                Err(why) => {
                    tally.fail(format!("keep-alive: {why}"));
                    continue 'connections;
                }
            }
            match read_answer(&mut stream, &mut buf).await {
                Ok((200, close)) => {
                    tally.answered.fetch_add(1, Ordering::Relaxed);
                    if close {
                        continue 'connections;
                    }
                }
                Ok((status, _)) => {
                    tally.fail(format!("keep-alive: status {status}"));
                    continue 'connections;
                }
                Err(why) => {
                    tally.fail(format!("keep-alive: {why}"));
                    continue 'connections;
                }
            }
        }
    }
}

/// A client that opens a new connection for each request.
async fn new_connection_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let answer = async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            stream
                .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
                .await
                .map_err(|e| format!("write: {e}"))?;
            read_answer(&mut stream, &mut buf).await
        };
        match answer.await {
            Ok((200, _)) => {
                tally.answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, _)) => tally.fail(format!("new connection: status {status}")),
            Err(why) => tally.fail(format!("new connection: {why}")),
        }
    }
}

/// Eight keep-alive clients and one new-connection client against `addr`, until `stop`.
fn load(addr: SocketAddr, stop: &Arc<AtomicBool>, tally: &Arc<Tally>) -> tokio::task::JoinSet<()> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        clients.spawn(keepalive_client(addr, Arc::clone(stop), Arc::clone(tally)));
    }
    clients.spawn(new_connection_client(addr, Arc::clone(stop), Arc::clone(tally)));
    clients
}

/// Stops the clients and asserts that none of their requests failed.
async fn stop_and_assert_none_failed(
    stop: Arc<AtomicBool>,
    mut clients: tokio::task::JoinSet<()>,
    tally: &Tally,
) {
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let failures = tally.failures.lock().expect("failures").clone();
    let (failed, answered) = (failures.len(), tally.answered());
    assert!(
        failures.is_empty(),
        "{failed} of {} requests failed: {:?}",
        failed + answered,
        &failures[..failed.min(10)]
    );
}

/// Waits until the clients got `more` answers beyond what they had.
async fn answers_go_on(tally: &Tally, more: usize) {
    let from = tally.answered();
    until!(Duration::from_secs(20), || async { tally.answered() >= from + more }, "the load stalled");
}

fn static_manifest(endpoints: &[&Backend]) -> String {
    let list: Vec<String> = endpoints.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "name: up\nreplicas: {}\nlisten: 127.0.0.1:0\nreplica:\n  runtime: static\n  endpoints: [{}]\n\
         health:\n  interval: 200ms\n  timeout: 150ms\n",
        endpoints.len(),
        list.join(", ")
    )
}

/// Three upgrades under load on `manifest`: no request fails, each upgrade is a new process, and
/// the last one serves the exercise's `/rep` with `replicas` replicas.
async fn three_upgrades_fail_no_request(manifest: &str, replicas: u64, threads: Option<&str>) {
    let mut lb = Upgradable::start(manifest, threads).await;
    {
        // Dropped before the upgrades: an idle keep-alive connection keeps the old process until
        // the end of its drain time (closing it earlier could lose a request sent meanwhile).
        let client = common::HttpClient::new(lb.addr);
        until!(
            Duration::from_secs(20),
            || async {
                let status = client.get("/_ringlb/status").await.json();
                status["members"].as_array().map(Vec::len) == Some(replicas as usize)
            },
            "the ring never held {replicas} replicas"
        );
    }
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(lb.addr, &stop, &tally);
    answers_go_on(&tally, 500).await;
    let mut pids = vec![lb.pid().expect("a pid")];
    for _ in 0..3 {
        pids.push(lb.upgrade().await);
        answers_go_on(&tally, 500).await;
    }
    stop_and_assert_none_failed(stop, clients, &tally).await;
    let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), 4, "every upgrade is a new process: {pids:?}");
    let rep = common::HttpClient::new(lb.addr).get("/rep").await.json();
    assert_eq!(rep["message"]["N"], replicas, "{rep}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_in_a_row_under_load_fail_no_request() {
    let backends = [Backend::start("a"), Backend::start("b"), Backend::start("c")];
    // Three proxy threads (thread per core), whatever the machine has.
    three_upgrades_fail_no_request(&static_manifest(&backends.iter().collect::<Vec<_>>()), 3, Some("3"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_on_the_hyper_engine_fail_no_request() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let manifest = static_manifest(&backends.iter().collect::<Vec<_>>()) + "proxy:\n  engine: hyper\n";
    // Everything on one thread.
    three_upgrades_fail_no_request(&manifest, 2, Some("1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_with_replicas_of_the_process_runtime_fail_no_request() {
    // The new process starts replicas of its own (the old ones die with their parent, after its
    // drain) and serves once its ring is as full as the old one's.
    three_upgrades_fail_no_request(&common::manifest("up", 2, ""), 2, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_new_process_cannot_start_leaves_the_old_one_serving() {
    let backends = [Backend::start("a")];
    let mut lb = Upgradable::start(&static_manifest(&backends.iter().collect::<Vec<_>>()), None).await;
    let old = lb.pid().expect("a pid");
    // The new process reads the same manifest: broken now, so it exits before it serves.
    let manifest = lb.dir.path().join("cluster.yaml");
    let good = std::fs::read_to_string(&manifest).expect("manifest");
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(lb.addr, &stop, &tally);
    answers_go_on(&tally, 200).await;
    std::fs::write(&manifest, "name: up\nreplicas: many\n").expect("break the manifest");
    common::signal(old, nix::sys::signal::Signal::SIGUSR2);
    // The old process keeps serving; the pid file keeps naming it.
    answers_go_on(&tally, 500).await;
    assert_eq!(lb.pid(), Some(old));
    lb.reap_first();
    assert!(common::alive(old), "the old process exited");
    // Once the manifest is good again, an upgrade goes through.
    std::fs::write(&manifest, good).expect("restore the manifest");
    let new = lb.upgrade().await;
    assert_ne!(new, old);
    answers_go_on(&tally, 200).await;
    stop_and_assert_none_failed(stop, clients, &tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_removes_the_pid_file() {
    let backends = [Backend::start("a")];
    let mut lb = Upgradable::start(&static_manifest(&backends.iter().collect::<Vec<_>>()), None).await;
    let pid = lb.pid().expect("a pid");
    // A request that takes 1.5 s is in flight when SIGTERM comes: it is answered.
    let addr = lb.addr;
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /work?ms=1500 HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        read_answer(&mut stream, &mut Vec::new()).await
    });
    let client = common::HttpClient::new(lb.addr);
    until!(
        Duration::from_secs(5),
        || async {
            let status = client.get("/_ringlb/status").await.json();
            status["members"].as_array().is_some_and(|m| m.iter().any(|m| m["inflight"] == 1))
        },
        "the slow request never reached the replica"
    );
    common::signal(pid, nix::sys::signal::Signal::SIGTERM);
    let answer = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("answered in time");
    let (status, close) = answer.expect("task").expect("the request in flight is answered");
    assert_eq!((status, close), (200, true), "answered, and told the connection closes");
    let exited = common::eventually(Duration::from_secs(15), || {
        let done = lb.first.try_wait().ok().flatten().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "ringlb did not exit after SIGTERM");
    assert!(!Path::new(&lb.pid_file()).exists(), "the pid file was left behind");
}
