"""A gRPC replica for the tests: Python's `grpcio` server on 127.0.0.1:--port over h2c, with the
standard health service (`grpcio-health-checking`) and a service `test.Echo` of raw-bytes methods
(no generated code, so no protobuf compiler is needed):

  Say       unary: answers b"<name>:<request>"; initial metadata x-replica, trailing x-trailer
  Fail      unary: aborts with NOT_FOUND and the message "no such thing: <request>"
  Deadline  unary: answers the time left of the call's deadline as the server saw it, in ms
  Slow      unary: sleeps <request> ms, then answers "slept"
  Count     server streaming: answers <request> messages b"0", b"1", ...
  Sum       client streaming: answers the total length of the messages it got
  Chat      bidi streaming: echoes each message as it comes
  SetHealth unary: sets the health of the whole server to <request> (SERVING or NOT_SERVING)
"""

import argparse
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    name = args.name.encode()
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    def say(request, context):
        context.send_initial_metadata((("x-replica", args.name),))
        context.set_trailing_metadata((("x-trailer", "end-of-" + args.name),))
        return name + b":" + request

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())

    def deadline(request, context):
        left = context.time_remaining()
        return str(-1 if left is None else int(left * 1000)).encode()

    def slow(request, context):
        time.sleep(int(request) / 1000)
        return b"slept"

    def count(request, context):
        for i in range(int(request)):
            yield str(i).encode()

    def total(requests, context):
        return str(sum(len(r) for r in requests)).encode()

    def chat(requests, context):
        for message in requests:
            yield name + b":" + message

    def set_health(request, context):
        health_servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(request.decode()))
        return b"ok"

    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Sum": grpc.stream_unary_rpc_method_handler(total),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "SetHealth": grpc.unary_unary_rpc_method_handler(set_health),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    server.wait_for_termination()


main()
