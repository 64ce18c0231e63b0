"""A WebSocket client for the tests (Python's `websockets`), run against ringlb.

Prints one JSON object per line on stdout, flushed, so a test can follow it while it runs:

  ws_client.py URL echo N        N messages echoed, then {"replica": ..., "echoed": N}
  ws_client.py URL silence S     "who", S seconds of silence, one more message, then waits for the
                                 close: {"replica": ...}, {"after_silence": "ok"},
                                 {"closed_after": seconds since the last message}
  ws_client.py URL chatter MS    "who", then a message every MS milliseconds until the connection
                                 closes: {"replica": ...}, {"echoed": n} every 10 messages, then
                                 {"closed": true, "echoed": n}
No keepalive pings: silence means no byte either way.
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def main() -> None:
    url, scenario, amount = sys.argv[1], sys.argv[2], sys.argv[3]
    async with connect(url, ping_interval=None, close_timeout=2, open_timeout=10) as ws:
        await ws.send("who")
        say(replica=await ws.recv())
        if scenario == "echo":
            for i in range(int(amount)):
                text = f"message {i} " + "x" * (i * 97 % 5000)
                await ws.send(text)
                if await ws.recv() != text:
                    say(error=f"message {i} came back changed")
                    return
            say(echoed=int(amount))
        elif scenario == "silence":
            await asyncio.sleep(float(amount))
            await ws.send("after")
            reply = await ws.recv()
            say(after_silence="ok" if reply == "after" else reply)
            last = time.monotonic()
            try:
                await ws.recv()
                say(error="a message came while silent")
            except ConnectionClosed:
                say(closed_after=time.monotonic() - last)
        elif scenario == "chatter":
            echoed = 0
            try:
                while True:
                    await ws.send(f"n{echoed}")
                    if await ws.recv() != f"n{echoed}":
                        say(error=f"message {echoed} came back changed")
                        return
                    echoed += 1
                    if echoed % 10 == 0:
                        say(echoed=echoed)
                    await asyncio.sleep(int(amount) / 1000)
            except ConnectionClosed:
                say(closed=True, echoed=echoed)
        else:
            raise SystemExit(f"unknown scenario {scenario}")


asyncio.run(main())
