#!/usr/bin/env python3
"""A client that opens a new TLS connection per request at a steady rate, beside a load generator,
and reports what the whole exchange cost it (`make bench` runs it during tls-get-new-connection).

    bench/new_connection_probe.py PORT SECONDS RATE [DELAY]

wrk's latency starts when it writes a request, so the time a new connection waits to be accepted
and handshaken is not in it: a proxy that keeps clients waiting in its accept queue looks faster
there. This probe times connect, TLS handshake and request together, as a browser opening a page
would, at RATE connections a second for SECONDS (after DELAY seconds, default 0, to let the load
build up), and prints one JSON line: n, failed, and the
p50 and p99 of the whole exchange and of the connect and handshake alone, in milliseconds. It
talks only to 127.0.0.1.
"""
import json
import socket
import ssl
import sys
import time

REQUEST = b"GET /home HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


# The longest one exchange may take; a slower one counts as failed.
EXCHANGE_LIMIT = 2.0


def exchange(port, context):
    """One request over a new TLS connection: (seconds to the end of the handshake, seconds to
    the end of the answer). Raises OSError when it fails or takes over EXCHANGE_LIMIT."""
    begun = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_LIMIT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            handshaken = time.perf_counter()
            tls.sendall(REQUEST)
            while tls.recv(65536):
                if time.perf_counter() - begun > EXCHANGE_LIMIT:
                    raise TimeoutError("the answer took too long")
    return handshaken - begun, time.perf_counter() - begun


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else None


def main():
    port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    context = ssl._create_unverified_context()  # the bench's self-signed certificate
    context.set_alpn_protocols(["http/1.1"])
    handshakes, totals, failed = [], [], 0
    due = time.perf_counter()
    end = due + seconds
    while time.perf_counter() < end:
        try:
            handshake, total = exchange(port, context)
            handshakes.append(handshake)
            totals.append(total)
        except OSError:
            failed += 1
        # A slow exchange skips the slots it overran instead of catching up after the load.
        due = max(due + 1 / rate, time.perf_counter())
        time.sleep(max(0.0, min(due, end) - time.perf_counter()))
    if not totals:
        sys.exit(f"new_connection_probe: none of {failed} exchanges with 127.0.0.1:{port} succeeded")
    print(json.dumps({"n": len(totals), "failed": failed,
                      "p50_ms": percentile(totals, 0.5), "p99_ms": percentile(totals, 0.99),
                      "handshake_p50_ms": percentile(handshakes, 0.5), "handshake_p99_ms": percentile(handshakes, 0.99)}))


if __name__ == "__main__":
    main()
