"""A WebSocket replica for the tests: Python's `websockets` server on 127.0.0.1:--port.

Echoes every message, but answers "who" with its name (--name). No keepalive pings, so that a
test can keep a tunnel silent.
"""

import argparse
import asyncio

from websockets.asyncio.server import serve


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()

    async def echo(connection) -> None:
        async for message in connection:
            await connection.send(args.name if message == "who" else message)

    async with serve(echo, "127.0.0.1", args.port, ping_interval=None) as server:
        await server.serve_forever()


asyncio.run(main())
