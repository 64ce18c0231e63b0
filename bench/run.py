#!/usr/bin/env python3
"""ringlb's benchmark beside nginx and HAProxy, on one machine, over loopback (`make bench`).

Every contender proxies to the very same three backends (one nginx with three server blocks). The
backends and the proxy under test share CPU 0 and wrk runs alone on CPU 1 (`taskset`), so the proxy
is the bottleneck and its cost per request decides the throughput. Scenarios run in interleaved
rounds so drift on a shared machine hits every contender alike; the table gives the median of the
rounds. Results go to bench/results/ as Markdown and CSV, with the machine's details.

The TLS scenarios (`tls-*`) put ringlb's TLS listener beside an nginx with the same self-signed
ECDSA certificate, TLS 1.2 and 1.3 and ALPN; `h2-get` drives ringlb's and nginx's HTTP/2 with prior
knowledge through h2load (64 connections, 10 streams each). Replicas get HTTP/1.1 in every scenario.
During tls-get-new-connection a client beside wrk (bench/new_connection_probe.py) opens a new TLS
connection 40 times a second and times the whole exchange, connect and handshake included, which
wrk's own latency leaves out.

Two bare prototype proxies run beside ringlb as measuring sticks: `proto-tokio` (`b_tokio`, hand-written
HTTP/1.1 framing on httparse, tokio current_thread) and `proto-monoio` (`c_monoio`, the same framing on
io_uring). They have none of ringlb's features (no hashing, metrics, forwarded headers, health checks),
so ringlb's rows also give its requests/s and CPU per request relative to proto-tokio's in the same
scenario. Their source is the team's shared directory, not this repository: `$RINGLB_PERFPROTO`, else
`../shared/bench/perfproto` beside the checkout; they are built from there on demand (niced, into
target/perfproto) when a selected scenario has them. A prototype whose directory is absent, whose build
fails or that does not start (c_monoio where io_uring is blocked) is skipped with one message on stderr.

Then the data path's scenarios (get-keepalive, get-new-connection, get-1000-connections) run again in
a layout where every contender uses two cores (`--cores 1,2`, the default; `--cores 1` skips it): the
proxies, the backends and the load generator share CPUs 0-1, nginx runs 2 workers, HAProxy 2 threads,
proto-tokio 2 workers, ringlb the threads it picks for the CPUs it may use (thread per core) and, as
`ringlb-shared`, tokio's work-stealing scheduler on as many threads; wrk and h2load run 2 threads.

Everything started is stopped on exit (by the pid it was started with); only 127.0.0.1 is used.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_PORTS = [18181, 18182, 18183]
PORTS = {"nginx": 18190, "haproxy": 18191, "ringlb": 18192, "ringlb-ring": 18193, "ringlb-bounded": 18194, "ringlb-hyper": 18196,
         "nginx-h2c": 18197, "nginx-tls": 18198, "ringlb-tls": 18199, "proto-tokio": 18201, "proto-monoio": 18202,
         "ringlb-shared": 18203}
# ringlb-tls serves TLS on its PORTS entry and plain HTTP here (wait_http and the status page).
RINGLB_TLS_PLAIN_PORT = 18200
# The contenders reached over TLS (wrk does not verify the certificate; both serve the same one).
TLS_CONTENDERS = {"nginx-tls", "ringlb-tls"}
# The scenarios a client beside the load times its whole exchange in (bench/new_connection_probe.py),
# at this many new connections a second.
PROBED_SCENARIOS = {"tls-get-new-connection"}
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "new_connection_probe.py")
PROBE_RATE = 40
ONE_MIB = 1024 * 1024


class Layout:
    """Where things run: `cores` 1 puts the proxies and backends on CPU 0 and the load generator on
    CPU 1; more puts everything on CPUs 0..cores-1, each proxy with `cores` workers."""

    def __init__(self, cores):
        self.cores = cores
        self.proxy_cpus = "0" if cores == 1 else f"0-{cores - 1}"
        self.load_cpus = "1" if cores == 1 else f"0-{cores - 1}"


LAYOUT = Layout(1)
# The bare prototypes (see above): contender -> their Cargo package, which is also the binary's name.
PROTOTYPES = {"proto-tokio": "b_tokio", "proto-monoio": "c_monoio"}
# Where they are built: the repository's (ignored) target directory, as the shared one may be read-only.
PROTOTYPE_TARGET = os.path.join(ROOT, "target", "perfproto")

LUA = r"""
local body = os.getenv("BENCH_BODY_BYTES")
if body then
  wrk.method = "POST"
  wrk.body = string.rep("x", tonumber(body))
  wrk.headers["Content-Type"] = "application/octet-stream"
end
local close = os.getenv("BENCH_CLOSE")
if close then wrk.headers["Connection"] = "close" end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""

SCENARIOS = {
    # name: (path, connections, extra environment for the Lua script, contenders)
    "get-keepalive": ("/home", 64, {}, ["direct", "nginx", "haproxy", "ringlb", "ringlb-hyper", "ringlb-ring", "ringlb-bounded",
                                        "proto-tokio", "proto-monoio"]),
    # The prototypes answer `Connection: close` with `connection: close` and close after the answer;
    # they open their replica connections anew for every client connection (no pool shared by clients).
    "get-new-connection": ("/home", 64, {"BENCH_CLOSE": "1"}, ["direct", "nginx", "haproxy", "ringlb", "ringlb-hyper",
                                                               "proto-tokio", "proto-monoio"]),
    "get-1mib": ("/big", 16, {}, ["direct", "nginx", "haproxy", "ringlb", "ringlb-hyper"]),
    "post-64kib": ("/upload", 64, {"BENCH_BODY_BYTES": str(64 * 1024)}, ["direct", "nginx", "haproxy", "ringlb", "ringlb-hyper"]),
    # The prototypes keep up to one replica connection per client connection and replica (3,000 here, within
    # the backends' 8192 worker_connections and the raised file limit they inherit).
    "get-1000-connections": ("/home", 1000, {}, ["direct", "nginx", "haproxy", "ringlb", "ringlb-hyper",
                                                 "proto-tokio", "proto-monoio"]),
    # No prototype in the TLS and HTTP/2 scenarios: they speak plain HTTP/1.1 only.
    # TLS termination, one certificate (ECDSA P-256) for both; then a full handshake per request.
    "tls-get-keepalive": ("/home", 64, {}, ["nginx-tls", "ringlb-tls"]),
    "tls-get-new-connection": ("/home", 64, {"BENCH_CLOSE": "1"}, ["nginx-tls", "ringlb-tls"]),
    # HTTP/2 with prior knowledge from h2load (64 connections, 10 streams each); replicas get HTTP/1.1.
    "h2-get": ("/home", 64, {"H2LOAD_STREAMS": "10"}, ["nginx-h2c", "ringlb"]),
}


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    """Installs wrk, nginx and HAProxy from Debian when missing."""
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [p for p, b in [("wrk", "wrk"), ("nginx-light", "nginx"), ("haproxy", "haproxy"),
                              ("nghttp2-client", "h2load"), ("openssl", "openssl")] if not shutil.which(b)]
    if missing:
        say("installing", " ".join(missing))
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(sudo + ["apt-get", "update", "-qq"], env=env)
        if subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, env=env).returncode != 0:
            run(sudo + ["apt-get", "install", "-y", "-qq"] + [m.replace("nginx-light", "nginx") for m in missing], env=env)
    for b in ["wrk", "nginx", "haproxy", "taskset", "h2load", "openssl"]:
        if not shutil.which(b):
            sys.exit(f"bench: {b} not found")


class Processes:
    """Everything started, stopped on exit."""

    def __init__(self):
        self.started = []

    def start(self, name, cmd, cpu, env=None, stdout=None, stderr=None):
        pinned = ["taskset", "-c", str(cpu)] + cmd if cpu is not None else cmd
        proc = subprocess.Popen(pinned, env=env, stdout=stdout or subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL,
                                start_new_session=True)
        self.started.append((name, proc))
        return proc

    def stop_all(self):
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for _, proc in self.started:
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_http(port, path="/home", timeout=30, proc=None):
    """Waits for a 200 on `port`; gives up early when `proc`, the process meant to answer, has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"it exited (status {proc.returncode}) before answering on port {port}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return time.time()
        except Exception:
            time.sleep(0.02)
    raise RuntimeError(f"nothing answered on port {port} within {timeout}s")


def nginx_conf(work, servers):
    return f"""
worker_processes {LAYOUT.cores};
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log crit;
worker_rlimit_nofile 16000;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path {work}/cb; proxy_temp_path {work}/px; fastcgi_temp_path {work}/fc;
  uwsgi_temp_path {work}/uw; scgi_temp_path {work}/sc;
  client_max_body_size 2m;
  client_body_buffer_size 128k;
{servers}
}}
"""


def check_nginx(conf):
    """Fails with nginx's own message when a generated configuration is wrong."""
    out = subprocess.run(["nginx", "-t", "-c", conf], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"nginx rejects {conf}: {out.stderr.strip()}")


def start_backends(procs, work):
    os.makedirs(f"{work}/be", exist_ok=True)
    with open(f"{work}/be/big", "wb") as f:
        f.write(b"y" * ONE_MIB)
    os.chmod(f"{work}/be", 0o755)
    os.chmod(f"{work}/be/big", 0o644)
    servers = ""
    for i, port in enumerate(BACKEND_PORTS, 1):
        servers += f"""
  server {{
    listen 127.0.0.1:{port} backlog=8192 reuseport;
    location = /big {{ root {work}/be; }}
    location = /upload {{ default_type application/json; return 200 '{{"message": "stored", "status": "successful"}}'; }}
    location = /heartbeat {{ return 200; }}
    location / {{ default_type application/json; return 200 '{{"message": "Hello from Server: {i}", "status": "successful"}}'; }}
  }}"""
    with open(f"{work}/be/nginx.conf", "w") as f:
        f.write(nginx_conf(f"{work}/be", servers))
    check_nginx(f"{work}/be/nginx.conf")
    procs.start("backends", ["nginx", "-c", f"{work}/be/nginx.conf"], cpu=LAYOUT.proxy_cpus)
    for port in BACKEND_PORTS:
        wait_http(port)


def make_certificate(work):
    """A self-signed ECDSA P-256 certificate for localhost, served by every TLS contender."""
    os.makedirs(f"{work}/tls", exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{work}/tls/server.key", "-out", f"{work}/tls/server.pem", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"], capture_output=True)
    os.chmod(f"{work}/tls", 0o755)
    for name in ["server.key", "server.pem"]:
        os.chmod(f"{work}/tls/{name}", 0o644)
    return f"{work}/tls/server.pem", f"{work}/tls/server.key"


def nginx_proxy_server(listen, extra=""):
    """One nginx server block proxying to the backends, configured as ringlb forwards."""
    return f"""
  server {{
    listen {listen};
{extra}
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
    }}
  }}"""


def nginx_upstream():
    upstream = "\n".join(f"    server 127.0.0.1:{p};" for p in BACKEND_PORTS)
    return f"""
  upstream replicas {{
{upstream}
    keepalive 1024;
    keepalive_requests 1000000;
  }}"""


def start_nginx(procs, work):
    os.makedirs(f"{work}/nx", exist_ok=True)
    servers = nginx_upstream() + nginx_proxy_server(f"127.0.0.1:{PORTS['nginx']} backlog=8192")
    with open(f"{work}/nx/nginx.conf", "w") as f:
        f.write(nginx_conf(f"{work}/nx", servers))
    check_nginx(f"{work}/nx/nginx.conf")
    return procs.start("nginx", ["nginx", "-c", f"{work}/nx/nginx.conf"], cpu=LAYOUT.proxy_cpus)


def start_nginx_protocols(procs, work, cert, key):
    """nginx for the TLS and HTTP/2 scenarios: TLS 1.2 and 1.3 with ALPN as ringlb, and h2c."""
    os.makedirs(f"{work}/nx2", exist_ok=True)
    tls = (f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
           "    ssl_protocols TLSv1.2 TLSv1.3;\n    http2_max_concurrent_streams 128;")
    servers = (nginx_upstream()
               + nginx_proxy_server(f"127.0.0.1:{PORTS['nginx-tls']} ssl http2 backlog=8192", tls)
               + nginx_proxy_server(f"127.0.0.1:{PORTS['nginx-h2c']} http2 backlog=8192",
                                    "    http2_max_concurrent_streams 128;"))
    with open(f"{work}/nx2/nginx.conf", "w") as f:
        f.write(nginx_conf(f"{work}/nx2", servers))
    check_nginx(f"{work}/nx2/nginx.conf")
    return procs.start("nginx-protocols", ["nginx", "-c", f"{work}/nx2/nginx.conf"], cpu=LAYOUT.proxy_cpus)


def start_haproxy(procs, work):
    os.makedirs(f"{work}/hp", exist_ok=True)
    servers = "\n".join(f"  server s{i} 127.0.0.1:{p}" for i, p in enumerate(BACKEND_PORTS, 1))
    conf = f"""
global
  nbthread {LAYOUT.cores}
  maxconn 8000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend front
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend replicas
backend replicas
  balance roundrobin
{servers}
"""
    with open(f"{work}/hp/haproxy.cfg", "w") as f:
        f.write(conf)
    return procs.start("haproxy", ["haproxy", "-f", f"{work}/hp/haproxy.cfg"], cpu=LAYOUT.proxy_cpus)


def build_prototypes(names, skipped):
    """Builds the prototypes `names` (cargo, niced) and returns {contender: binary}. One that cannot be
    had is left out, its reason in `skipped` and in one message."""
    source = os.environ.get("RINGLB_PERFPROTO") or os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "perfproto"))
    def skip(names, why, how):
        skipped.update((name, why) for name in names)
        say(f"bench: skipping {', '.join(names)}: {why}; {how}")
    if not os.path.isfile(os.path.join(source, "Cargo.toml")):
        skip(names, f"no prototypes at {source}", "to include them, set RINGLB_PERFPROTO to their Cargo workspace "
             "(b_tokio, c_monoio) or put it at ../shared/bench/perfproto beside the checkout")
        return {}
    if not shutil.which("cargo"):
        skip(names, "cargo not found to build them", "install a Rust toolchain (rustup) to include them")
        return {}
    binaries = {}
    for name in names:
        package = PROTOTYPES[name]
        cmd = ["nice", "cargo", "build", "--release", "-p", package, "--target-dir", PROTOTYPE_TARGET]
        if os.path.isfile(os.path.join(source, "Cargo.lock")):
            cmd.insert(4, "--locked")
        say(f"building {package} in {source}")
        out = subprocess.run(cmd, cwd=source, capture_output=True, text=True)
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines() or ["no output"]
            first_error = next((l for l in lines if l.startswith("error")), lines[-1])
            skip([name], f"`{' '.join(cmd[1:])}` failed in {source}: {first_error.strip()}",
                 "fix that build, or set RINGLB_PERFPROTO to a copy of the prototypes that builds")
            continue
        binaries[name] = os.path.join(PROTOTYPE_TARGET, "release", package)
    return binaries


def start_prototype(procs, work, name, binary, skipped):
    """Starts a prototype on CPU 0; None, its reason in `skipped` and in one message, when it does not
    answer (c_monoio exits at once where io_uring is blocked)."""
    env = dict(os.environ, BACKENDS=",".join(f"127.0.0.1:{p}" for p in BACKEND_PORTS), LISTEN_PORT=str(PORTS[name]),
               WORKERS=str(LAYOUT.cores))
    log = f"{work}/{name}.log"
    with open(log, "wb") as f:
        proc = procs.start(name, [binary], cpu=LAYOUT.proxy_cpus, env=env, stderr=f)
    try:
        wait_http(PORTS[name], proc=proc)
        return proc
    except RuntimeError as e:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with open(log, errors="replace") as f:
            said = [l.strip() for l in f if l.strip() and not l.startswith("note:")]
        why = f"{e}" + (f": {said[-1]}" if said else "")
        how = ("io_uring is probably blocked here (a container's seccomp profile, or kernel.io_uring_disabled); "
               "run where io_uring_setup is allowed to include it" if name == "proto-monoio"
               else f"run `{binary}` by hand with BACKENDS and LISTEN_PORT to see why")
        skipped[name] = why
        say(f"bench: skipping {name}: {why}; {how}")
        return None


def ringlb_manifest(name, port, settings):
    endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in BACKEND_PORTS)
    return (f"name: {name}\nreplicas: 3\nhostnames: [s1, s2, s3]\nlisten: 127.0.0.1:{port}\n"
            f"replica:\n  runtime: static\n  endpoints: [{endpoints}]\n{settings}")


RINGLB_SETTINGS = {
    "ringlb": "",
    "ringlb-ring": "hashing:\n  algorithm: ring\n  function: assignment\n",
    "ringlb-bounded": "hashing:\n  balance_factor: 1.25\n",
    # The reference data path (hyper on both sides), to show what the fast path buys.
    "ringlb-hyper": "proxy:\n  engine: hyper\n",
    # TLS on its own port (the certificate's paths are filled in by start_ringlb).
    # With --cores above 1: tokio's work-stealing scheduler instead of thread per core.
    "ringlb-shared": "",
    "ringlb-tls": f"tls:\n  listen: 127.0.0.1:{PORTS['ringlb-tls']}\n  certificates:\n    - {{cert: CERT, key: KEY}}\n",
}


def start_ringlb(procs, work, binary, name, cert, key):
    path = f"{work}/{name}.yaml"
    plain = RINGLB_TLS_PLAIN_PORT if name in TLS_CONTENDERS else PORTS[name]
    settings = RINGLB_SETTINGS[name].replace("CERT", cert).replace("KEY", key)
    with open(path, "w") as f:
        f.write(ringlb_manifest(name, plain, settings))
    started = time.time()
    scheduler = ["--scheduler", "shared"] if name == "ringlb-shared" else []
    proc = procs.start(name, [binary, "--log-level", "warn", "run", "--manifest", path] + scheduler, cpu=LAYOUT.proxy_cpus)
    ready = wait_http(plain)
    return proc, ready - started


def check_scenario(contender, scenario):
    """One request of the scenario must answer 200, or the numbers would measure an error page."""
    path, _, env_extra, _ = SCENARIOS[scenario]
    if "H2LOAD_STREAMS" in env_extra:
        return  # h2load counts the answers that were not 2xx itself (see h2load())
    data = b"x" * int(env_extra.get("BENCH_BODY_BYTES", "0")) or None
    request = urllib.request.Request(f"{url_of(contender)}{path}", data=data)
    context = ssl._create_unverified_context() if contender in TLS_CONTENDERS else None
    with urllib.request.urlopen(request, timeout=5, context=context) as r:
        if r.status != 200:
            raise RuntimeError(f"{contender} answered {r.status} for {scenario}")


def port_of(contender):
    return BACKEND_PORTS[0] if contender == "direct" else PORTS[contender]


def url_of(contender):
    scheme = "https" if contender in TLS_CONTENDERS else "http"
    return f"{scheme}://127.0.0.1:{port_of(contender)}"


def watch(cmd, pid=None, env=None):
    """Runs the load generator `cmd` to its end while sampling the proxy `pid`: its output, the
    proxy's peak resident memory (KiB) and the CPU seconds its process group spent meanwhile."""
    cpu_before = group_cpu_seconds(pid) if pid else 0.0
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        if pid:
            peak = max(peak, rss_kib(pid))
        time.sleep(0.2)
    cpu = group_cpu_seconds(pid) - cpu_before if pid else None
    out, err = proc.communicate()
    return out, err, peak, cpu


def wrk(contender, scenario, duration, lua, pid=None, probe=False):
    """The scenario through wrk; with `probe`, bench/new_connection_probe.py runs beside it (on the
    load generator's CPUs, for the whole measurement but its first and last half second) and its
    figures come back as `probe`."""
    path, conns, env_extra, _ = SCENARIOS[scenario]
    if "H2LOAD_STREAMS" in env_extra:
        return h2load(contender, scenario, duration, pid)
    env = dict(os.environ, **env_extra)
    cmd = ["taskset", "-c", LAYOUT.load_cpus, "wrk", f"-t{LAYOUT.cores}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "-s", lua,
           f"{url_of(contender)}{path}"]
    prober = None
    if probe:
        prober = subprocess.Popen(["taskset", "-c", LAYOUT.load_cpus, sys.executable, PROBE, str(port_of(contender)),
                                   str(max(1.0, duration - 1.0)), str(PROBE_RATE), "0.5"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probed = None
    try:
        out, err, peak, cpu = watch(cmd, pid, env)
        if prober is not None:
            # It stops by itself within its duration and one exchange's limit (2 s) of it.
            probe_out, probe_err = prober.communicate(timeout=10)
            if prober.returncode != 0 or not probe_out.strip():
                raise RuntimeError(f"the new-connection probe failed for {contender}: {probe_err}")
            probed = json.loads(probe_out)
    finally:
        if prober is not None and prober.poll() is None:
            prober.kill()
            prober.wait()
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result for {contender}/{scenario}: {out} {err}")
    requests, micros, p50, p99, p999, errors, status = (int(x) for x in line.split()[1:])
    return {"rps": requests / (micros / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "p999_ms": p999 / 1000,
            "errors": errors + status, "peak_rss_kib": peak,
            "cpu_us": cpu * 1e6 / requests if cpu is not None and requests else None, "probe": probed}


def h2load(contender, scenario, duration, pid=None):
    """The scenario through h2load (HTTP/2 prior knowledge): the same figures as wrk(), the latency
    percentiles from its per-request log."""
    path, conns, env_extra, _ = SCENARIOS[scenario]
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        cmd = ["taskset", "-c", LAYOUT.load_cpus, "h2load", f"-t{LAYOUT.cores}", f"-c{conns}", f"-m{env_extra['H2LOAD_STREAMS']}",
               f"-D{duration}", f"--log-file={log.name}", f"{url_of(contender)}{path}"]
        out, err, peak, cpu = watch(cmd, pid)
        durations = []
        not_2xx = 0
        with open(log.name) as f:
            for line in f:
                fields = line.split()
                if len(fields) == 3:
                    durations.append(int(fields[2]))
                    not_2xx += not fields[1].startswith("2")
    done = next((l for l in out.splitlines() if l.startswith("requests:")), None)
    if done is None or not durations:
        raise RuntimeError(f"h2load gave no result for {contender}/{scenario}: {out} {err}")
    # "requests: T total, S started, D done, OK succeeded, F failed, E errored, X timeout"
    counts = {kind.strip().split(" ", 1)[1]: int(kind.strip().split(" ", 1)[0])
              for kind in done.split(":", 1)[1].split(",")}
    durations.sort()
    pct = lambda q: durations[min(len(durations) - 1, int(q / 100 * len(durations)))]
    return {"rps": len(durations) / duration, "p50_ms": pct(50) / 1000, "p99_ms": pct(99) / 1000,
            "p999_ms": pct(99.9) / 1000, "errors": counts.get("failed", 0) + counts.get("errored", 0) + not_2xx,
            "peak_rss_kib": peak, "cpu_us": cpu * 1e6 / len(durations) if cpu is not None and durations else None}


def group_cpu_seconds(pgid):
    """User + system CPU time of every process in the process group `pgid` (nginx's master and worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid pgrp ... utime (12th) stime (13th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure_process_runtime(binary, work):
    """Start-up time to the first proxied 200, and manifest edit to the new replica serving."""
    path = f"{work}/process.yaml"
    port = 18195
    with open(path, "w") as f:
        f.write(f"name: startup\nreplicas: 3\nlisten: 127.0.0.1:{port}\nreplica:\n  runtime: process\n")
    procs = Processes()
    try:
        started = time.time()
        procs.start("startup", [binary, "--log-level", "warn", "run", "--manifest", path], cpu=None)
        first = wait_http(port) - started
        with open(path) as f:
            text = f.read()
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text.replace("replicas: 3", "replicas: 4"))
        edited = time.time()
        os.rename(tmp, path)
        deadline = edited + 30
        serving = None
        while time.time() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ringlb/status", timeout=2) as r:
                status = json.load(r)
            if "startup-4" in status["ring"]:
                serving = time.time() - edited
                break
            time.sleep(0.005)
        return first, serving
    finally:
        procs.stop_all()


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    def version(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{model} ({os.cpu_count()} CPUs)",
        "kernel": platform.release(),
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "ringlb": rev or "?",
    }


# The scenarios run again on two cores (`--cores 1,2`, the default): the data path's.
MULTICORE_SCENARIOS = ["get-keepalive", "get-new-connection", "get-1000-connections"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=4, help="seconds per measurement (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per scenario (default 2)")
    parser.add_argument("--scenarios", default="all", help="comma-separated scenario names, or all")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="where the results go")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ringlb"))
    parser.add_argument("--cores", default="1,2",
                        help="the layouts, comma-separated (default 1,2): 1 puts the proxies on CPU 0 and the load "
                             "generator on CPU 1 and runs every scenario; N above 1 shares CPUs 0..N-1 between "
                             "everything, each proxy with N workers, and runs "
                             + ", ".join(MULTICORE_SCENARIOS) + " (or the --scenarios asked for)")
    args = parser.parse_args()
    scenarios = list(SCENARIOS) if args.scenarios == "all" else args.scenarios.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"bench: unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    if os.cpu_count() < 2:
        sys.exit("bench: needs 2 CPUs (proxy and backends on one, wrk on the other)")
    try:
        layouts = [int(c) for c in args.cores.split(",")]
    except ValueError:
        sys.exit(f"bench: --cores takes numbers of cores, comma-separated, not {args.cores!r}")
    if any(not 1 <= c <= os.cpu_count() for c in layouts):
        sys.exit(f"bench: each --cores must be between 1 and the {os.cpu_count()} CPUs here")
    ensure_tools()
    # Built before anything is started, so the build does not run during a measurement.
    skipped = {}
    needed = [c for c in PROTOTYPES if any(c in SCENARIOS[s][3] for s in scenarios)]
    prototypes = build_prototypes(needed, skipped) if needed else {}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    begun = time.time()
    results, extra = [], {}
    for cores in layouts:
        global LAYOUT
        LAYOUT = Layout(cores)
        selected = scenarios if cores == 1 or args.scenarios != "all" else MULTICORE_SCENARIOS
        say(f"bench: {cores} core(s): {', '.join(selected)}")
        layout_results, layout_extra = run_layout(args, selected, prototypes, skipped, measure_startup=not extra)
        results += layout_results
        extra = extra or layout_extra
    first_200, edit_to_serving = measure_process_runtime(args.binary, tempfile.mkdtemp(prefix="ringlb-bench-"))

    # Each scenario's nginx contender (nginx, nginx-tls or nginx-h2c) in the same layout is its reference.
    nginx_rps = {(r["scenario"], r["cores"]): r["rps"] for r in results if r["contender"].startswith("nginx")}
    for r in results:
        reference = nginx_rps.get((r["scenario"], r["cores"]))
        r["vs_nginx"] = r["rps"] / reference if reference else None
    # ringlb's rows against the bare tokio prototype of the same scenario and layout, when it ran:
    # what ringlb's features cost over the bare framing.
    proto = {(r["scenario"], r["cores"]): r for r in results if r["contender"] == "proto-tokio"}
    for r in results:
        p = proto.get((r["scenario"], r["cores"])) if r["contender"].startswith("ringlb") else None
        r["vs_proto_tokio"] = r["rps"] / p["rps"] if p and p["rps"] else None
        r["cpu_vs_proto_tokio"] = (r["cpu_us"] / p["cpu_us"]
                                   if p and p["cpu_us"] and r["cpu_us"] is not None else None)
    loaded_rss = next((r["peak_rss_kib"] for r in results
                       if r["contender"] == "ringlb" and r["scenario"] == "get-1000-connections" and r["cores"] == layouts[0]),
                      None)
    info = machine()
    extra.update({
        "ringlb_rss_1000_connections_mib": loaded_rss / 1024 if loaded_rss is not None else None,
        "ringlb_start_to_first_200_process_s": first_200,
        "manifest_edit_to_new_replica_serving_s": edit_to_serving,
        "bench_seconds": time.time() - begun,
        "prototypes_skipped": skipped,
        "layouts": layouts,
    })
    write(args.out, info, results, extra, args)


def run_layout(args, scenarios, prototypes, skipped, measure_startup):
    """Starts every contender in the current LAYOUT, runs `scenarios`, stops everything; returns the
    rows (each with its `cores`) and, with `measure_startup`, ringlb's idle memory and start-up time."""
    work = tempfile.mkdtemp(prefix="ringlb-bench-")
    # nginx's workers run as an unprivileged user and must read the 1 MiB file.
    os.chmod(work, 0o755)
    lua = os.path.join(work, "report.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    procs = Processes()
    results = []
    try:
        start_backends(procs, work)
        cert, key = make_certificate(work)
        protocols = start_nginx_protocols(procs, work, cert, key).pid
        pids = {"nginx": start_nginx(procs, work).pid, "haproxy": start_haproxy(procs, work).pid,
                "nginx-tls": protocols, "nginx-h2c": protocols}
        wait_http(PORTS["nginx"])
        wait_http(PORTS["haproxy"])
        for name, binary in prototypes.items():
            if name in skipped:
                continue
            proc = start_prototype(procs, work, name, binary, skipped)
            if proc is not None:
                pids[name] = proc.pid
        startup = {}
        for name in RINGLB_SETTINGS:
            if name == "ringlb-shared" and LAYOUT.cores == 1:
                continue
            proc, took = start_ringlb(procs, work, args.binary, name, cert, key)
            pids[name] = proc.pid
            startup[name] = took
        time.sleep(1)
        idle_rss = rss_kib(pids["ringlb"])
        for scenario in scenarios:
            contenders = [c for c in SCENARIOS[scenario][3] if c not in skipped]
            if LAYOUT.cores > 1 and "ringlb" in contenders:
                contenders.insert(contenders.index("ringlb") + 1, "ringlb-shared")
            rows = {c: [] for c in contenders}
            for r in range(args.rounds):
                for contender in contenders:
                    check_scenario(contender, scenario)
                    # A short warm-up, then the measurement.
                    wrk(contender, scenario, 1, lua)
                    rows[contender].append(wrk(contender, scenario, args.duration, lua, pids.get(contender),
                                               probe=scenario in PROBED_SCENARIOS))
                    say(f"{scenario} ({LAYOUT.cores} core(s)) round {r + 1} {contender}: "
                        f"{rows[contender][-1]['rps']:.0f} req/s")
            for contender, runs in rows.items():
                med = lambda k: statistics.median(x[k] for x in runs)
                results.append({
                    "scenario": scenario, "cores": LAYOUT.cores, "contender": contender, "rps": med("rps"),
                    "rps_min": min(x["rps"] for x in runs), "rps_max": max(x["rps"] for x in runs),
                    "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "p999_ms": med("p999_ms"),
                    "errors": sum(x["errors"] for x in runs), "peak_rss_kib": max(x["peak_rss_kib"] for x in runs),
                    "cpu_us": med("cpu_us") if runs[0]["cpu_us"] is not None else None,
                    "probe": {k: statistics.median(x["probe"][k] for x in runs) for k in ("p50_ms", "p99_ms", "handshake_p99_ms")}
                    | {"n": sum(x["probe"]["n"] for x in runs), "failed": sum(x["probe"]["failed"] for x in runs)}
                    if runs[0].get("probe") else None,
                })
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    extra = {"ringlb_rss_idle_mib": idle_rss / 1024, "ringlb_start_to_first_200_static_s": startup["ringlb"]} \
        if measure_startup else {}
    return results, extra


def write(out, info, results, extra, args):
    os.makedirs(out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    fields = ["scenario", "cores", "contender", "rps", "rps_min", "rps_max", "vs_nginx", "p50_ms", "p99_ms", "p999_ms", "errors",
              "cpu_us", "vs_proto_tokio", "cpu_vs_proto_tokio"]
    with open(os.path.join(out, f"{stamp}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["# " + "; ".join(f"{k}: {v}" for k, v in info.items())])
        w.writerow(fields)
        for r in results:
            w.writerow(["" if r[k] is None else f"{r[k]:.3f}" if isinstance(r[k], float) else r[k] for k in fields])
    lines = [
        f"# ringlb benchmark, {info['date']}", "",
        f"`make bench` (`bench/run.py --duration {args.duration} --rounds {args.rounds} --cores {args.cores}`): "
        "on 1 core, the proxy under test and three nginx backends pinned to CPU 0 and `wrk -t1` alone on CPU 1; "
        "on N cores, every proxy with N workers (processes or threads), the backends and `wrk -tN` sharing "
        "CPUs 0..N-1 (ringlb-shared: ringlb on tokio's work-stealing scheduler instead of thread per core); "
        "loopback; the median of the rounds "
        "(interleaved); ratio = requests/s divided by nginx's in the same run; CPU = the proxy's user + system "
        "time per request (all its processes), which moves less than throughput on a busy machine; for ringlb's "
        "rows, vs proto-tokio = requests/s and CPU per request divided by the bare tokio prototype's in the same "
        "scenario (empty when it did not run).", "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if k != "date"), "",
        "| scenario | cores | contender | requests/s | (min-max) | vs nginx | vs proto-tokio | p50 ms | p99 ms | p99.9 ms "
        "| errors | CPU µs/req | CPU vs proto-tokio |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r['vs_nginx']:.2f}" if r["vs_nginx"] else "-"
        proto_ratio = f"{r['vs_proto_tokio']:.2f}" if r["vs_proto_tokio"] else ""
        proto_cpu = f"{r['cpu_vs_proto_tokio']:.2f}" if r["cpu_vs_proto_tokio"] else ""
        lines.append(f"| {r['scenario']} | {r['cores']} | {r['contender']} | {r['rps']:.0f} | {r['rps_min']:.0f}-{r['rps_max']:.0f} | "
                     f"{ratio} | {proto_ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['errors']} | "
                     + (f"{r['cpu_us']:.1f} |" if r["cpu_us"] is not None else "- |") + f" {proto_cpu} |")
    loaded = extra["ringlb_rss_1000_connections_mib"]
    lines += ["",
              f"- ringlb resident memory: {extra['ringlb_rss_idle_mib']:.1f} MiB idle (3 static replicas), "
              + (f"{loaded:.1f} MiB at peak under 1,000 connections ({extra['layouts'][0]} core(s), after the "
                 "scenarios before it)." if loaded is not None
                 else "not measured under 1,000 connections (get-1000-connections did not run)."),
              f"- Start-up to the first proxied 200: {extra['ringlb_start_to_first_200_static_s'] * 1000:.0f} ms "
              f"(static replicas), {extra['ringlb_start_to_first_200_process_s'] * 1000:.0f} ms (3 process replicas).",
              "- Manifest edit (3 to 4 process replicas) to the new replica in the ring: "
              + (f"{extra['manifest_edit_to_new_replica_serving_s'] * 1000:.0f} ms."
                 if extra["manifest_edit_to_new_replica_serving_s"] else "not seen within 30 s."),
              f"- The whole run took {extra['bench_seconds']:.0f} s."]
    lines += [f"- {name} did not run: {why}." for name, why in extra["prototypes_skipped"].items()]
    probed = [r for r in results if r.get("probe")]
    if probed:
        lines += ["", f"A client beside wrk opening a new TLS connection {PROBE_RATE} times a second "
                  "(bench/new_connection_probe.py) times the whole exchange, connect, handshake and request, which "
                  "wrk's latency leaves out (it starts when wrk writes the request, after the handshake); medians of "
                  "the rounds:", "",
                  "| scenario | cores | contender | exchanges | failed | p50 ms | p99 ms | handshake p99 ms |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['scenario']} | {r['cores']} | {r['contender']} | {r['probe']['n']:.0f} | {r['probe']['failed']:.0f} | "
                  f"{r['probe']['p50_ms']:.2f} | {r['probe']['p99_ms']:.2f} | {r['probe']['handshake_p99_ms']:.2f} |"
                  for r in probed]
    lines += [""]
    text = "\n".join(lines)
    for name in [f"{stamp}.md", "latest.md"]:
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
