#!/usr/bin/env python3
"""What a restart of a running ringlb costs its clients.

    python3 bench/restart_gap.py HOST PORT 'RESTART COMMAND'

A client opens a new connection for every GET /home (one every 2 ms or so) against HOST:PORT; after
a second it runs the restart command in a shell (`docker-compose restart lb`, `kill -USR2 PID`, a
script that stops and starts ringlb), and goes on until the load balancer answers again and a
second more. It prints how many requests failed, how, and the time from the first failure to the
last one (the gap). Only HOST:PORT is contacted.
"""

import socket
import subprocess
import sys
import threading
import time


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    host, port, restart = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    events = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            started = time.time()
            try:
                with socket.create_connection((host, port), timeout=2) as s:
                    s.sendall(b"GET /home HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := s.recv(4096):
                        answer += chunk
                events.append((started, "ok" if answer.startswith(b"HTTP/1.1 200") else "closed without a 200"))
            except OSError as error:
                events.append((started, type(error).__name__))
            time.sleep(0.002)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(1.0)
    began = time.time()
    subprocess.run(restart, shell=True, check=True)
    ended = time.time()
    deadline = time.time() + 30
    while time.time() < deadline and not (events and events[-1][1] == "ok" and events[-1][0] > ended):
        time.sleep(0.05)
    time.sleep(1.0)
    stop.set()
    thread.join()
    failed = [(t, kind) for t, kind in events if kind != "ok"]
    print(f"the restart command took {ended - began:.2f} s; {len(events)} requests, {len(failed)} failed")
    if failed:
        print(f"the first failed {failed[0][0] - began:+.3f} s and the last {failed[-1][0] - began:+.3f} s after the "
              f"restart began (a gap of {failed[-1][0] - failed[0][0]:.3f} s): {', '.join(sorted({k for _, k in failed}))}")


if __name__ == "__main__":
    main()
