"""Bytes per idle connection with permessage-deflate, side by side.

    target/venv/bin/python bench/deflate/idle.py [--connections N] [--runs R]

Servers, each started fresh per run:
  wsloop plain      echo example, no --deflate (the client's offer declined)
  wsloop lean       echo --deflate: no context kept, codec per worker
  wsloop takeover   echo --deflate-takeover: context kept both ways
  wsloop takeover w12  the same with 12-bit windows (4 KiB), as Python's
                       websockets uses by default
  python websockets its own echo server, compression at its defaults

A connection counts as idle once it has sent one compressible 1 KiB text
message and read the echo, so each side's compressor and inflater exist
where the server keeps them per connection. One connection is opened,
used and closed first, so the server's one-off set-up is not charged. The
figure is (RSS after - RSS before) / N, the median over R runs.
Needs the echo example built with --features deflate (release).
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import websockets

ECHO = "target/release/examples/echo"
LINE = ("alice: the meeting moved to room four at noon, bring the slides. " * 16)[:1024]

PY_SERVER = r"""
import asyncio, sys, websockets
async def echo(ws):
    async for msg in ws:
        await ws.send(msg)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}/", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start(name):
    if name.startswith("wsloop"):
        flag = {
            "wsloop plain": [],
            "wsloop lean": ["--deflate"],
            "wsloop takeover": ["--deflate-takeover"],
            "wsloop takeover w12": ["--deflate-takeover", "--deflate-window", "12"],
        }[name]
        cmd = [ECHO, "--addr", "127.0.0.1:0", "--workers", "2", *flag]
    else:
        cmd = [sys.executable, "-c", PY_SERVER]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "ws://" in line:
            url = line[line.index("ws://"):].strip()
            return proc, url
    raise RuntimeError(f"{name} did not start")


async def hold(url, n, ready, done, agreed):
    async def one():
        ws = await websockets.connect(url, max_size=None, open_timeout=60)
        agreed.add(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        await ws.send(LINE)
        assert await ws.recv() == LINE
        return ws

    conns = []
    for start in range(0, n, 500):
        conns += await asyncio.gather(*(one() for _ in range(min(500, n - start))))
    ready.set()
    await done.wait()
    await asyncio.gather(*(ws.close() for ws in conns))


async def measure(name, n):
    proc, url = start(name)
    try:
        warm = await websockets.connect(url)
        await warm.send(LINE)
        await warm.recv()
        await warm.close()
        await asyncio.sleep(0.5)
        before = rss_kib(proc.pid)
        ready, done, agreed = asyncio.Event(), asyncio.Event(), set()
        task = asyncio.create_task(hold(url, n, ready, done, agreed))
        await ready.wait()
        await asyncio.sleep(1.0)
        after = rss_kib(proc.pid)
        done.set()
        await task
        return (after - before) * 1024 / n, agreed
    finally:
        proc.terminate()
        proc.wait()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    names = ["wsloop plain", "wsloop lean", "wsloop takeover", "wsloop takeover w12", "python websockets"]
    results = {name: [] for name in names}
    offers = {}
    for _ in range(args.runs):
        for name in names:  # interleaved, so drift hits every server alike
            per_conn, agreed = await measure(name, args.connections)
            results[name].append(per_conn)
            offers[name] = agreed
    plain = statistics.median(results["wsloop plain"])
    print(f"idle connections with permessage-deflate, {args.connections} connections, median of {args.runs}")
    print(f"{'server':<20} {'B/conn':>10} {'vs plain':>10}  runs; agreed extension")
    for name in names:
        med = statistics.median(results[name])
        runs = ", ".join(f"{v:.0f}" for v in results[name])
        print(f"{name:<20} {med:>10.0f} {med - plain:>+10.0f}  [{runs}]; {sorted(offers[name])}")


if __name__ == "__main__":
    asyncio.run(main())
