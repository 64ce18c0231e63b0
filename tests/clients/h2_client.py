"""An HTTP/2 client for the tests (Python's `h2`, prior knowledge over TCP), able to send what a
well-behaved client never does. Prints one JSON object per line on stdout.

  h2_client.py HOST PORT streams N          N GET /home streams on one connection, each with its
                                            own X-Request-Id: {"replicas": [...], "statuses": [...]}
  h2_client.py HOST PORT rapid-reset N MS   N streams of GET /work?ms=2000 on one connection, each
                                            reset MS ms after it was opened (0: at once): {"sent":
                                            streams sent before the server cut the connection,
                                            "cut": true|false, "goaway": error code or null}
  h2_client.py HOST PORT continuation-flood a HEADERS frame without END_HEADERS, then CONTINUATION
                                            frames until the server closes: {"frames": n,
                                            "cut": true|false}
  h2_client.py HOST PORT smuggle CASE       one request shaped as RFC 9113 section 8.2 forbids:
                                            {"case": CASE, "outcome": "reset" | "goaway" |
                                            "status NNN"}
"""

import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def connect(host: str, port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection((host, port), timeout=10)
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def base_headers(host: str, port: int, path: str, method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", path)]


def pump(sock, conn, until, deadline: float):
    """Reads events until until(events_so_far) is true or the deadline passes; returns them and
    whether the connection ended (EOF, reset or GOAWAY)."""
    events = []
    ended = False
    while not until(events) and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            ended = True
            break
        if not data:
            ended = True
            break
        try:
            new = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            ended = True
            break
        events.extend(new)
        outgoing = conn.data_to_send()
        if outgoing:
            try:
                sock.sendall(outgoing)
            except (ConnectionResetError, BrokenPipeError):
                ended = True
                break
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in new):
            ended = True
            break
    return events, ended


def streams(host: str, port: int, n: int) -> None:
    sock, conn = connect(host, port)
    ids = []
    for i in range(n):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, base_headers(host, port, "/home") + [("x-request-id", str(100000 + i * 7919))], end_stream=True)
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    done = lambda events: sum(isinstance(e, h2.events.StreamEnded) for e in events) >= n
    events, _ = pump(sock, conn, done, time.monotonic() + 20)
    replicas, statuses = {}, {}
    for event in events:
        if isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            statuses[event.stream_id] = headers.get(":status")
            replicas[event.stream_id] = headers.get("x-ringlb-replica")
    say(replicas=[replicas.get(s) for s in ids], statuses=[statuses.get(s) for s in ids])


def rapid_reset(host: str, port: int, n: int, ms: int) -> None:
    sock, conn = connect(host, port)
    pump(sock, conn, lambda events: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events), time.monotonic() + 5)
    sent, cut, goaway = 0, False, None
    for _ in range(n):
        sid = conn.get_next_available_stream_id()
        try:
            conn.send_headers(sid, base_headers(host, port, "/work?ms=2000"), end_stream=True)
            sock.sendall(conn.data_to_send())
            if ms:
                time.sleep(ms / 1000)
            conn.reset_stream(sid)
            sock.sendall(conn.data_to_send())
        except (ConnectionResetError, BrokenPipeError, h2.exceptions.ProtocolError, OSError):
            cut = True
            break
        sent += 1
        events, ended = pump(sock, conn, lambda events: False, time.monotonic() + 0.0005)
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                goaway = int(event.error_code)
        if ended:
            cut = True
            break
    if not cut:
        _, cut = pump(sock, conn, lambda events: False, time.monotonic() + 3)
    say(sent=sent, cut=cut, goaway=goaway)


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def continuation_flood(host: str, port: int) -> None:
    sock, conn = connect(host, port)
    encoder = hpack.Encoder()
    block = encoder.encode(base_headers(host, port, "/home"))
    # HEADERS (type 1) with END_STREAM (0x1) and without END_HEADERS (0x4).
    sock.sendall(frame(0x1, 0x1, 1, block))
    junk = hpack.Encoder().encode([("x-flood", "y" * 4000)] * 4)
    frames, cut = 0, False
    deadline = time.monotonic() + 10
    sock.settimeout(0.001)
    while time.monotonic() < deadline and frames < 100000:
        try:
            sock.sendall(frame(0x9, 0x0, 1, junk))  # CONTINUATION, no END_HEADERS
            frames += 1
            data = sock.recv(65536)
            if not data:
                cut = True
                break
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            cut = True
            break
        except OSError:
            cut = True
            break
    if not cut:
        sock.settimeout(3)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    cut = True
                    break
        except (socket.timeout, OSError):
            pass
    say(frames=frames, cut=cut)


SMUGGLE = {
    "connection": [("connection", "keep-alive")],
    "keep-alive": [("keep-alive", "timeout=5")],
    "proxy-connection": [("proxy-connection", "keep-alive")],
    "transfer-encoding": [("transfer-encoding", "chunked")],
    "upgrade": [("upgrade", "websocket")],
    "te": [("te", "gzip")],
    "newline-in-value": [("x-split", "a\r\nx-injected: 1")],
}


def smuggle(host: str, port: int, case: str) -> None:
    sock, conn = connect(host, port)
    sid = conn.get_next_available_stream_id()
    headers = base_headers(host, port, "/smuggle", "POST")
    body = b""
    if case == "content-length-short":
        headers.append(("content-length", "10"))
        body = b"abc"
    elif case == "content-length-long":
        headers.append(("content-length", "3"))
        body = b"abcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    else:
        headers += SMUGGLE[case]
    conn.send_headers(sid, headers, end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    finished = lambda events: any(
        isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)) for e in events
    )
    events, ended = pump(sock, conn, finished, time.monotonic() + 10)
    outcome = "goaway" if ended else "none"
    for event in events:
        if isinstance(event, h2.events.ResponseReceived):
            outcome = "status " + dict(event.headers).get(":status", "?")
        elif isinstance(event, h2.events.StreamReset) and not outcome.startswith("status"):
            outcome = "reset"
        elif isinstance(event, h2.events.ConnectionTerminated) and not outcome.startswith("status"):
            outcome = "goaway"
    say(case=case, outcome=outcome)


def main() -> None:
    host, port, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if scenario == "streams":
        streams(host, port, int(sys.argv[4]))
    elif scenario == "rapid-reset":
        rapid_reset(host, port, int(sys.argv[4]), int(sys.argv[5]))
    elif scenario == "continuation-flood":
        continuation_flood(host, port)
    elif scenario == "smuggle":
        smuggle(host, port, sys.argv[4])
    else:
        raise SystemExit(f"unknown scenario {scenario}")


main()
