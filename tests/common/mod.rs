//! Test harness: runs the real `ringlb` binary on a port the kernel picks, with its manifest in a
//! temporary directory, and talks HTTP to it. Everything it starts is killed on drop (replicas die
//! with the load balancer by design, which a test checks).

#![allow(dead_code)]

pub mod certs;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A manifest for tests: process runtime, port 0, fast heartbeats.
pub fn manifest(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "# test manifest\nname: {name}   # cluster\nreplicas: {replicas}   # N\nlisten: 127.0.0.1:0\n\
         replica:\n  runtime: process\n  drain_timeout: 5s\n  stop_timeout: 2s\n\
         health:\n  interval: 200ms\n  timeout: 150ms\n{extra}"
    )
}

/// A running `ringlb run`.
pub struct Lb {
    child: Child,
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    envs: Vec<(String, String)>,
}

/// An HTTP client of a load balancer this harness did not start (`make run`'s container).
pub struct HttpClient {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> HttpClient {
        HttpClient { addr, client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()) }
    }

    pub async fn get(&self, path: &str) -> Answer {
        let request = http::Request::builder()
            .uri(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: timed out"))
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn replica(&self) -> String {
        self.headers.get("x-ringlb-replica").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringlb")
}

impl Lb {
    /// Starts `ringlb run` on `manifest_text` and waits until it serves with every replica ready.
    pub async fn start(manifest_text: &str) -> Lb {
        Self::start_with_env(manifest_text, &[]).await
    }

    pub async fn start_with_env(manifest_text: &str, envs: &[(&str, &str)]) -> Lb {
        let lb = Self::launch(manifest_text, envs).await;
        lb.wait_ready(Duration::from_secs(20)).await;
        lb
    }

    /// Starts `ringlb run` on `manifest_text` and waits only until it answers, ready or not (for
    /// clusters whose replicas are meant to fail their heartbeat).
    #[allow(dead_code)]
    pub async fn start_unready(manifest_text: &str) -> Lb {
        let lb = Self::launch(manifest_text, &[]).await;
        lb.wait_answering(Duration::from_secs(20)).await;
        lb
    }

    /// Writes the manifest into a new temporary directory and starts `ringlb run` on it.
    async fn launch(manifest_text: &str, envs: &[(&str, &str)]) -> Lb {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifest = dir.path().join("cluster.yaml");
        std::fs::write(&manifest, manifest_text).expect("write manifest");
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, addr) = spawn(dir.path(), &manifest, &envs).await;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Lb { child, dir, manifest, addr, client, envs }
    }

    /// Waits until the status page answers.
    async fn wait_answering(&self, within: Duration) {
        until!(
            within,
            || async { self.try_request("GET", "/_ringlb/status", "", &[]).await.is_ok() },
            "the load balancer at {} does not answer",
            self.addr
        );
    }

    /// A load balancer started some other way (`docker run` in the foreground, say), serving on
    /// `addr` with its manifest at `manifest` inside `dir`. Waits only until it answers.
    pub async fn adopt(child: Child, dir: tempfile::TempDir, manifest: PathBuf, addr: SocketAddr) -> Lb {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let lb = Lb { child, dir, manifest, addr, client, envs: Vec::new() };
        lb.wait_answering(Duration::from_secs(60)).await;
        lb
    }

    /// The load balancer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the load balancer with SIGKILL and starts it again on the same manifest.
    pub async fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(self.dir.path(), &self.manifest, &self.envs).await;
        self.child = child;
        self.addr = addr;
        self.wait_ready(Duration::from_secs(20)).await;
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit code.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ringlb did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn request(&self, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        self.try_request(method, path, body, headers).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let mut builder = http::Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(Bytes::from(body.to_owned()))).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, "", &[]).await
    }

    pub async fn status(&self) -> Value {
        self.get("/_ringlb/status").await.json()
    }

    /// Names of the replicas in the ring.
    pub async fn ring(&self) -> Vec<String> {
        let status = self.status().await;
        let mut names: Vec<String> =
            status["ring"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        names.sort();
        names
    }

    /// Waits until every desired replica is in the ring and nothing else is tracked.
    pub async fn wait_ready(&self, within: Duration) {
        until!(
            within,
            || async {
                let Ok(answer) = self.try_request("GET", "/_ringlb/status", "", &[]).await else {
                    return false;
                };
                let status = answer.json();
                let desired = status["desired"].as_u64();
                desired == status["ready"].as_u64()
                    && desired == status["replicas"].as_array().map(|a| a.len() as u64)
            },
            "ringlb did not become ready: {:?}",
            self.try_request("GET", "/_ringlb/status", "", &[]).await
        );
    }

    pub fn read_manifest(&self) -> String {
        std::fs::read_to_string(&self.manifest).expect("read manifest")
    }

    pub fn write_manifest(&self, text: &str) {
        // Write to a temporary file and rename, like many editors do.
        let temp = self.dir.path().join(".cluster.yaml.swp");
        std::fs::write(&temp, text).expect("write");
        std::fs::rename(&temp, &self.manifest).expect("rename");
    }

    /// Process ids of the replica processes this load balancer started.
    pub fn replica_pids(&self) -> Vec<(u32, String)> {
        children_of(self.child.id())
    }

    /// Every live child process of this load balancer, with its command line (replicas that
    /// run `replica.command`).
    #[allow(dead_code)] // not every test binary runs replicas that are not ringlb
    pub fn child_commands(&self) -> Vec<(u32, String)> {
        commands_of(self.child.id())
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let replicas = children_of(self.child.id());
        self.kill();
        // Replicas follow their parent by design; make sure even if that broke.
        for (pid, _) in replicas {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

async fn spawn(dir: &Path, manifest: &Path, envs: &[(String, String)]) -> (Child, SocketAddr) {
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(bin())
        .args(["run", "--manifest"])
        .arg(manifest)
        .arg("--ready-file")
        .arg(&ready)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", std::env::var("RINGLB_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ringlb");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(addr) = text.trim().parse()
        {
            return (child, addr);
        }
        if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let status = child.wait();
            panic!("ringlb did not write its ready file (exit: {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `condition` every 25 ms until it holds (`true`) or `within` passes (`false`).
///
/// For a caller that branches on the answer (a figure measured only when the condition held, a
/// problem collected for a report); a caller that would only assert it uses [`until!`].
#[must_use = "a condition that did not hold in time must fail the test: assert it, or use `until!`"]
pub async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until a condition holds, polling it every 25 ms ([`eventually`]); panics when `within`
/// passes first, with the message of an `assert!`: a format string and its arguments, evaluated
/// only then (so they may `.await` the load balancer's status at the moment of the timeout).
///
/// `until!(Duration::from_secs(5), || async { lb.ring().await.len() == 2 }, "ring: {}", lb.status().await)`
macro_rules! until {
    ($within:expr, $condition:expr, $($message:tt)+) => {{
        let within: ::std::time::Duration = $within;
        if !$crate::common::eventually(within, $condition).await {
            panic!("not within {within:?}: {}", format!($($message)+));
        }
    }};
}
#[allow(unused_imports)] // not every test binary waits on a condition
pub(crate) use until;

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Every process id on the machine.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
}

/// A process's command line, split into arguments.
fn args_of(pid: u32) -> Vec<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Live (not zombie) children of `parent` that run `ringlb server`, with their `--id`.
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    pids()
        .filter(|pid| stat(*pid).is_some_and(|(ppid, state)| ppid == parent && state != 'Z'))
        .filter_map(|pid| replica_id_of(pid).map(|id| (pid, id)))
        .collect()
}

/// Live (not zombie) children of `parent`, whatever they run, with their command line.
#[allow(dead_code)] // not every test binary runs replicas that are not ringlb
pub fn commands_of(parent: u32) -> Vec<(u32, String)> {
    pids()
        .filter(|pid| stat(*pid).is_some_and(|(ppid, state)| ppid == parent && state != 'Z'))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_owned()))
        })
        .collect()
}

/// True if process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z')
}

fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// The `--id` of a `ringlb server` process.
pub fn replica_id_of(pid: u32) -> Option<String> {
    let args = args_of(pid);
    if !args.iter().any(|a| a == "server") {
        return None;
    }
    let i = args.iter().position(|a| a == "--id")?;
    args.get(i + 1).cloned()
}

/// Every live `ringlb server` process whose `--exit-with-parent` is `parent`, whoever its parent
/// is now.
pub fn replicas_started_by(parent: u32) -> Vec<u32> {
    let marker = parent.to_string();
    pids()
        .filter(|pid| args_of(*pid).windows(2).any(|w| w[0] == "--exit-with-parent" && w[1] == marker))
        .filter(|pid| alive(*pid))
        .collect()
}

/// Clients that send the same request in a loop until [`Load::finish`], counting what failed.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: tokio::task::JoinSet<Vec<String>>,
}

impl Load {
    /// Starts `clients` clients each sending `GET path` to `lb` one request after the other.
    pub fn start(lb: &std::sync::Arc<Lb>, clients: usize, path: &str) -> Load {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (lb, stop, sent, path) =
                (Arc::clone(lb), Arc::clone(&stop), Arc::clone(&sent), path.to_owned());
            tasks.spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match lb.try_request("GET", &path, "", &[]).await {
                        Ok(answer) if answer.status == 200 => {}
                        other => failures.push(format!("{other:?}")),
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                failures
            });
        }
        Load { stop, sent, tasks }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests were sent (at most 20 s).
    pub async fn after_more(&self, n: usize) {
        let from = self.sent();
        until!(Duration::from_secs(20), || async { self.sent() >= from + n }, "the load stalled");
    }

    /// Stops the clients; returns how many requests were sent and what failed.
    pub async fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut failures = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            failures.extend(done.expect("client task"));
        }
        (self.sent(), failures)
    }
}

impl Lb {
    /// The exit status if the load balancer has exited (reaps it), without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits, without blocking the runtime, until the load balancer has exited (at most `within`).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts `ringlb run` again on the same manifest once the previous process has exited (by
    /// [`Lb::terminate`], a signal, or [`Lb::wait_exit`]), and waits until it is ready.
    pub async fn start_again(&mut self, ready_within: Duration) {
        let (child, addr) = spawn(self.dir.path(), &self.manifest, &self.envs).await;
        self.child = child;
        self.addr = addr;
        self.wait_ready(ready_within).await;
    }
}

/// A small deterministic random number generator (SplitMix64) for tests that print their seed.
pub struct TestRng(pub u64);

impl TestRng {
    /// Seeded from `RINGLB_TEST_SEED` when set (decimal or 0x-hex), otherwise from the clock.
    pub fn from_env_or_clock() -> TestRng {
        let seed = std::env::var("RINGLB_TEST_SEED").ok().and_then(|s| {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        });
        TestRng(seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `replicas:` and `hostnames:` of a manifest written by the harness or by `/add` and `/rm`
/// (a flow list on one line); `None` if either line is missing or unreadable.
pub fn scale_of(manifest_text: &str) -> Option<(u32, Vec<String>)> {
    let value = |key: &str| {
        manifest_text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            Some(rest.split('#').next().unwrap_or("").trim().to_string())
        })
    };
    let replicas = value("replicas")?.parse().ok()?;
    let hostnames = match value("hostnames") {
        None => Vec::new(),
        Some(list) => {
            let inner = list.strip_prefix('[')?.strip_suffix(']')?;
            inner
                .split(',')
                .map(|n| n.trim().trim_matches('"').to_string())
                .filter(|n| !n.is_empty())
                .collect()
        }
    };
    Some((replicas, hostnames))
}

/// Runs `ringlb check --manifest path`: `Ok(stdout)` on exit 0, `Err(stderr)` otherwise.
pub fn check_manifest(path: &Path) -> Result<String, String> {
    let out = Command::new(bin()).args(["check", "--manifest"]).arg(path).output().expect("run ringlb check");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: good enough for a test's fixed listen port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Builds the image `tag` `FROM scratch` around Debian's static busybox and a page
/// (`/www/index.html`: "hello from busybox"), with no command of its own: a server that is not
/// ringlb, for the foreign-image tests (`make your-app-image` builds the same). The caller
/// removes it.
#[allow(dead_code)] // only the Docker and Swarm test binaries build images
pub fn build_busybox_image(tag: &str) {
    assert!(
        Path::new("/bin/busybox").exists(),
        "the foreign-image tests need Debian's static busybox: apt install busybox-static"
    );
    let context = tempfile::tempdir().expect("temp dir");
    std::fs::copy("/bin/busybox", context.path().join("busybox")).expect("copy busybox");
    std::fs::create_dir(context.path().join("www")).expect("www");
    std::fs::write(context.path().join("www/index.html"), "hello from busybox\n").expect("page");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n",
    )
    .expect("Dockerfile");
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(context.path())
        .output()
        .expect("run docker build");
    assert!(out.status.success(), "docker build {tag}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The Python that has the third-party test clients (`tests/clients/requirements.txt`):
/// `$RINGLB_TEST_PYTHON`, else `target/pyenv/bin/python` (`make test` creates it).
#[allow(dead_code)] // only the tests with Python clients use it
pub fn test_python() -> PathBuf {
    let python = std::env::var_os("RINGLB_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: `make test-clients` installs the test clients (tests/clients/requirements.txt)",
        python.display()
    );
    python
}

/// The path of a script in `tests/clients/`.
#[allow(dead_code)]
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name)
}

/// A third-party client run by the tests that prints one JSON object per line; its lines are
/// collected as they come. Killed on drop.
#[allow(dead_code)]
pub struct JsonLines {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Every line so far, for failure messages.
    pub seen: Vec<Value>,
}

#[allow(dead_code)]
impl JsonLines {
    /// Starts `program` with `args`; stderr is passed through for the test's log.
    pub fn spawn(program: &Path, args: &[&str]) -> JsonLines {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        JsonLines { child, lines, seen: Vec::new() }
    }

    /// The next line, within `within`; panics after it, or when the client ended first.
    pub async fn next(&mut self, within: Duration) -> Value {
        match tokio::time::timeout(within, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.seen.push(line.clone());
                line
            }
            Ok(None) => panic!("the client ended; its lines: {:?}", self.seen),
            Err(_) => panic!("no line from the client within {within:?}; its lines: {:?}", self.seen),
        }
    }

    /// The next line that has `key`, within `within`.
    pub async fn next_with(&mut self, key: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next(left).await;
            assert!(line.get("error").is_none(), "the client failed: {line}; its lines: {:?}", self.seen);
            if line.get(key).is_some() {
                return line;
            }
        }
    }

    /// Waits for the client to exit, within `within`: its exit status.
    pub async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for the client: {e}"),
            Err(_) => panic!("the client did not exit within {within:?}; its lines: {:?}", self.seen),
        }
    }
}
