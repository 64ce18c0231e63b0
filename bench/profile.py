#!/usr/bin/env python3
"""Instructions and system calls per request: ringlb's fast path beside the bare tokio prototype.

    python3 bench/profile.py [--requests N] [--contenders ringlb,proto-tokio,...] [--top K]

Wall-clock figures move with whatever else the machine does; instruction counts do not. Each
contender proxies small keep-alive GETs (h2load --h1, 8 connections) to the same three nginx
backends as `make bench` (bench/run.py), under `valgrind --tool=callgrind` for user-space
instructions and under `strace -c -f` for system calls. callgrind counts 4N requests alone (its
counters are dumped and zeroed after a warm-up, `callgrind_control --dump`, and dumped again after
them); strace runs twice, with N and 5N requests, and the difference is divided by 4N, so that
starting and stopping cancel out. It prints a table and the functions with the most instructions
per request (their own, not what they call).

valgrind, strace and h2load come from Debian's packages (installed when missing, like the bench).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: the backends, ports, manifests and prototypes)

CONNECTIONS = 8


def ensure_profilers():
    missing = [p for p, tool in (("valgrind", "valgrind"), ("strace", "strace"), ("nghttp2-client", "h2load"))
               if not bench.shutil.which(tool)]
    if missing:
        bench.run(["sudo", "-n", "apt-get", "install", "-y", *missing] if os.geteuid() else
                  ["apt-get", "install", "-y", *missing])


def command_of(contender, work, binaries):
    """The command line and environment that serve `contender` on its bench port."""
    if contender.startswith("ringlb"):
        path = f"{work}/{contender}.yaml"
        with open(path, "w") as f:
            f.write(bench.ringlb_manifest(contender, bench.PORTS[contender], bench.RINGLB_SETTINGS[contender]))
        # One thread: the instructions of one request, without work-stealing's own.
        return [binaries["ringlb"], "--threads", "1", "--log-level", "warn", "run", "--manifest", path], None
    env = dict(os.environ, BACKENDS=",".join(f"127.0.0.1:{p}" for p in bench.BACKEND_PORTS),
               LISTEN_PORT=str(bench.PORTS[contender]))
    return [binaries[contender]], env


def load(contender, requests):
    out = subprocess.run(["h2load", "--h1", "-n", str(requests), "-c", str(CONNECTIONS),
                          f"http://127.0.0.1:{bench.PORTS[contender]}/home"], capture_output=True, text=True)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out.stdout)
    if out.returncode != 0 or not done or int(done.group(3)) != 0 or int(done.group(2)) != requests:
        raise RuntimeError(f"h2load against {contender} did not succeed:\n{out.stdout}{out.stderr}")


def measured(procs, contender, work, binaries, wrapper, requests):
    """Runs `contender` under `wrapper` (a function of the output path), sends `requests`
    requests after a warm-up, stops it with SIGTERM, and returns the wrapper's output file."""
    cmd, env = command_of(contender, work, binaries)
    output = f"{work}/{contender}.{requests}.{wrapper.__name__}"
    proc = procs.start(f"{contender}-{wrapper.__name__}", wrapper(output) + cmd, cpu=0, env=env)
    bench.wait_http(bench.PORTS[contender], timeout=120, proc=proc)
    load(contender, 1000)
    load(contender, requests)
    os.killpg(proc.pid, bench.signal.SIGTERM)
    proc.wait(timeout=120)
    return output


def callgrind(output):
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}", "--trace-children=no"]


def instructions_of_requests(procs, contender, work, binaries, requests):
    """Runs `contender` under callgrind once: a warm-up, a dump (which zeroes the counters), then
    `requests` requests and a second dump, which holds their cost alone: what starting costs
    (metrics-exporter-prometheus calibrates its clock for a while, a cost that moves with the
    machine's speed) cannot leak into it. Returns that dump's path."""
    cmd, env = command_of(contender, work, binaries)
    output = f"{work}/{contender}.callgrind"
    proc = procs.start(f"{contender}-callgrind", callgrind(output) + cmd, cpu=0, env=env)
    bench.wait_http(bench.PORTS[contender], timeout=120, proc=proc)
    load(contender, 1000)
    dump = lambda: subprocess.run(["callgrind_control", "--dump", str(proc.pid)], capture_output=True, check=True)
    dump()
    load(contender, requests)
    dump()
    os.killpg(proc.pid, bench.signal.SIGTERM)
    proc.wait(timeout=120)
    dumps = sorted((p for p in os.listdir(work) if p.startswith(f"{contender}.callgrind.")),
                   key=lambda p: int(p.rsplit(".", 1)[1]))
    if len(dumps) < 2:
        raise RuntimeError(f"callgrind_control left no dumps of {contender} in {work}: {os.listdir(work)}")
    return os.path.join(work, dumps[1])


def strace(output):
    return ["strace", "-f", "-c", "-o", output]


def total_instructions(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def functions(path):
    """{function: self instructions} from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$", line)
        if not m:
            continue
        name = re.sub(r"\s+\[[^\]]*\]$", "", m.group(2))
        file = re.match(r"^(\?\?\?|[^ :]+\.(?:rs|c|h|S|cc)):(.*)$", name)
        if file:
            name = file.group(2)
        if "PROGRAM TOTALS" not in name:
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def syscalls(path):
    """{syscall: calls} from strace -c."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
                try:
                    calls[parts[-1]] = int(parts[3])
                except ValueError:
                    pass
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="N: the runs send N and 5N requests")
    parser.add_argument("--contenders", default="ringlb,proto-tokio")
    parser.add_argument("--top", type=int, default=25, help="functions listed per contender")
    parser.add_argument("--binary", default=os.path.join(bench.ROOT, "target", "release", "ringlb"),
                        help="the ringlb binary (another build, to compare)")
    args = parser.parse_args()
    bench.ensure_tools()
    ensure_profilers()
    contenders = args.contenders.split(",")
    binaries = {"ringlb": args.binary}
    if not os.path.exists(binaries["ringlb"]):
        sys.exit(f"profile: no {args.binary}: build ringlb first (cargo build --release)")
    skipped = {}
    binaries.update(bench.build_prototypes([c for c in contenders if c.startswith("proto-")], skipped))
    contenders = [c for c in contenders if c.startswith("ringlb") or c in binaries]
    n, big = args.requests, 5 * args.requests
    procs = bench.Processes()
    rows, tops = [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="ringlb-profile-") as work:
            bench.start_backends(procs, work)
            for contender in contenders:
                bench.say(f"profile: {contender}: callgrind, {big - n} requests after a warm-up")
                counted = instructions_of_requests(procs, contender, work, binaries, big - n)
                ir = total_instructions(counted) / (big - n)
                # A dump taken while frames are on the stack also lists those frames (main and the
                # like) with everything below them: not a function's own cost.
                costs = {k: c for k, c in functions(counted).items() if c < 0.9 * ir * (big - n)}
                tops[contender] = sorted(((cost / (big - n), k) for k, cost in costs.items()), reverse=True)[:args.top]
                bench.say(f"profile: {contender}: strace")
                s_small = syscalls(measured(procs, contender, work, binaries, strace, n))
                s_large = syscalls(measured(procs, contender, work, binaries, strace, big))
                per = {k: (s_large.get(k, 0) - s_small.get(k, 0)) / (big - n) for k in s_large}
                rows.append((contender, ir, sum(per.values()), per))
    finally:
        procs.stop_all()
    base = next((r[1] for r in rows if r[0] == "proto-tokio"), None)
    print(f"\nper request ({big - n} requests after a warm-up; system calls: the difference between {big} and {n} "
          f"requests; {CONNECTIONS} keep-alive connections)\n")
    print("| contender | instructions | vs proto-tokio | system calls | the most frequent |")
    print("|---|---:|---:|---:|---|")
    for contender, ir, calls, per in rows:
        ratio = f"{ir / base:.2f}" if base else ""
        frequent = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:5] if v >= 0.01)
        print(f"| {contender} | {ir:,.0f} | {ratio} | {calls:.2f} | {frequent} |")
    for contender, top in tops.items():
        print(f"\n{contender}: the functions with the most instructions of their own, per request\n")
        for cost, name in top:
            print(f"{cost:10,.0f}  {name}")


if __name__ == "__main__":
    main()
