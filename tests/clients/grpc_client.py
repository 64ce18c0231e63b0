"""A gRPC client for the tests: Python's `grpcio`, calling the methods of `grpc_echo.py` through
ringlb. Prints one JSON object per line on stdout.

  grpc_client.py TARGET calls [--tls CA]   one call of each kind, one line with what came back
  grpc_client.py TARGET load N [--tls CA]  N `Say` calls from 4 threads: {"ok": n, "failed": [...],
                                           "replicas": {name: calls}}
  grpc_client.py TARGET say                one `Say` call: {"code": ..., "answer" or "details": ...}
  grpc_client.py TARGET slow MS            one `Slow` call of MS ms with a 10 s deadline:
                                           {"code": ..., "answer" or "details": ...}
  grpc_client.py TARGET set-health STATUS  `SetHealth` STATUS (SERVING | NOT_SERVING): {"set": STATUS}
  grpc_client.py TARGET http1              a `Say` call sent as HTTP/1.1 (http.client), with
                                           `te: trailers`: {"status": n, "body": text, "grpc-status": s,
                                           "trailer": x-trailer}

TARGET is host:port; --tls CA calls over TLS (ALPN h2) and trusts CA, for the name `localhost`.
"""

import argparse
import json
import queue
import socket
import struct
import threading

import grpc


def method(channel, kind, name):
    make = {"uu": channel.unary_unary, "us": channel.unary_stream,
            "su": channel.stream_unary, "ss": channel.stream_stream}[kind]
    return make(f"/test.Echo/{name}")


def failure(error):
    return {"code": error.code().name, "details": error.details()}


def calls(channel):
    out = {}
    answer, call = method(channel, "uu", "Say").with_call(b"hello", timeout=10)
    out["say"] = {"answer": answer.decode(),
                  "initial": dict(call.initial_metadata()).get("x-replica"),
                  "trailing": dict(call.trailing_metadata()).get("x-trailer"),
                  "code": call.code().name}
    try:
        method(channel, "uu", "Fail")(b"cake", timeout=10)
        out["fail"] = {"code": "OK"}
    except grpc.RpcError as e:
        out["fail"] = failure(e)
    out["deadline_ms"] = int(method(channel, "uu", "Deadline")(b"", timeout=5))
    try:
        method(channel, "uu", "Slow")(b"3000", timeout=0.5)
        out["slow"] = {"code": "OK"}
    except grpc.RpcError as e:
        out["slow"] = failure(e)
    out["count"] = [m.decode() for m in method(channel, "us", "Count")(b"50", timeout=10)]
    out["sum"] = int(method(channel, "su", "Sum")(iter([b"x" * i for i in range(1, 21)]), timeout=10))
    # Bidi, in lockstep: each message is sent only once the answer to the one before came back,
    # so the call only ends if both directions stream at once.
    outgoing = queue.Queue()
    outgoing.put(b"m0")

    def requests():
        for _ in range(20):
            message = outgoing.get(timeout=10)
            if message is None:
                return
            yield message

    echoed = []
    for i, reply in enumerate(method(channel, "ss", "Chat")(requests(), timeout=20), start=1):
        echoed.append(reply.decode())
        outgoing.put(f"m{i}".encode() if i < 20 else None)
    out["chat"] = echoed
    return out


def load(channel, n):
    say = method(channel, "uu", "Say")
    lock = threading.Lock()
    result = {"ok": 0, "failed": [], "replicas": {}}
    todo = iter(range(n))

    def worker():
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            try:
                _, call = say.with_call(b"x", timeout=10)
                replica = dict(call.initial_metadata()).get("x-replica")
                with lock:
                    result["ok"] += 1
                    result["replicas"][replica] = result["replicas"].get(replica, 0) + 1
            except grpc.RpcError as e:
                with lock:
                    result["failed"].append(failure(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


def http1(target):
    """A raw HTTP/1.1 exchange (http.client cannot read trailers): the status, the gRPC message
    and `grpc-status`, from the headers or from the chunked body's trailers."""
    host, port = target.rsplit(":", 1)
    message = b"over http/1.1"
    body = struct.pack(">BI", 0, len(message)) + message
    head = (f"POST /test.Echo/Say HTTP/1.1\r\nHost: {target}\r\ncontent-type: application/grpc\r\n"
            f"te: trailers\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + body)
        reader = connection.makefile("rb")
        status = int(reader.readline().split()[1])
        fields = {}
        for line in iter(reader.readline, b"\r\n"):
            name, _, value = line.decode().partition(":")
            fields[name.strip().lower()] = value.strip()
        data = b""
        if fields.get("transfer-encoding") == "chunked":
            while (size := int(reader.readline().split(b";")[0], 16)) > 0:
                data += reader.read(size)
                reader.readline()
            for line in iter(reader.readline, b"\r\n"):
                name, _, value = line.decode().partition(":")
                fields[name.strip().lower()] = value.strip()
        else:
            data = reader.read(int(fields.get("content-length", "0")))
    text = data[5:].decode(errors="replace") if len(data) >= 5 else data.decode(errors="replace")
    return {"status": status, "body": text, "grpc-status": fields.get("grpc-status"),
            "trailer": fields.get("x-trailer")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("scenario")
    parser.add_argument("argument", nargs="?")
    parser.add_argument("--tls")
    args = parser.parse_args()
    if args.scenario == "http1":
        print(json.dumps(http1(args.target)), flush=True)
        return
    if args.tls:
        with open(args.tls, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.target, credentials,
                                      options=(("grpc.ssl_target_name_override", "localhost"),))
    else:
        channel = grpc.insecure_channel(args.target)
    with channel:
        if args.scenario == "calls":
            print(json.dumps(calls(channel)), flush=True)
        elif args.scenario == "load":
            print(json.dumps(load(channel, int(args.argument))), flush=True)
        elif args.scenario == "say":
            try:
                answer = method(channel, "uu", "Say")(b"hi", timeout=5)
                print(json.dumps({"code": "OK", "answer": answer.decode()}), flush=True)
            except grpc.RpcError as e:
                print(json.dumps(failure(e)), flush=True)
        elif args.scenario == "slow":
            try:
                answer = method(channel, "uu", "Slow")(args.argument.encode(), timeout=10)
                print(json.dumps({"code": "OK", "answer": answer.decode()}), flush=True)
            except grpc.RpcError as e:
                print(json.dumps(failure(e)), flush=True)
        elif args.scenario == "set-health":
            method(channel, "uu", "SetHealth")(args.argument.encode(), timeout=5)
            print(json.dumps({"set": args.argument}), flush=True)
        else:
            raise SystemExit(f"unknown scenario {args.scenario}")


main()
