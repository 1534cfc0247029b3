"""The chat example behind nginx, driven by Python's websockets client.

    python tests/nginx/nginx_test.py PHASE NGINX_ADDR CHAT_LOG

PHASE "drop": the server pings less often than nginx's proxy_read_timeout,
so nginx must close an idle connection (the control). PHASE "keep": the
server pings more often, so the idle connection must survive. PHASE
"http10": nginx forwards the page over HTTP/1.0 (its default); the page, a
HEAD request and a chat round trip must all work. PHASE "cluster": nginx
spreads clients over two chat servers that share a Redis (CHAT_LOG is then
both logs, comma-separated); a room must span both.
"""
import asyncio
import sys
import json
import secrets
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

READ_TIMEOUT = 3.0  # proxy_read_timeout in the generated nginx config


async def expect(ws, want, timeout=5):
    """The next room message's text, skipping the list of who is here."""
    while True:
        got = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if got["kind"] != "here":
            break
    assert got["text"] == want, f"expected {want!r}, got {got!r}"


def poll(addr, query, timeout=10):
    """One long poll; its status and JSON body (None for an error)."""
    try:
        with urllib.request.urlopen(f"http://{addr}/poll?{query}", timeout=timeout) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as err:
        return err.code, None


async def long_poll(addr, phase):
    """A poll held through nginx: answered by the chat at its hold when
    that is under proxy_read_timeout, else cut by nginx with 504."""
    client = secrets.token_urlsafe(16)  # the token a page makes once
    status, joined = poll(addr, f"room=lp&name=pat&client={client}&after=0")
    assert status == 200, status
    query = f"room=lp&name=pat&client={client}&after={joined['latest']}"
    began = time.monotonic()
    status, body = await asyncio.to_thread(poll, addr, query)
    held = time.monotonic() - began
    if phase == "drop":
        assert status == 504, f"a 5 s hold behind a 3 s proxy_read_timeout got {status}"
        print(f"nginx test (control): a poll held past proxy_read_timeout got 504 after {held:.1f} s")
        return
    assert status == 200 and body["messages"] == [], (status, body)
    print(f"nginx test: a held poll was answered empty at its {held:.1f} s hold, under proxy_read_timeout")
    # A message releases a held poll through nginx.
    waiting = asyncio.create_task(asyncio.to_thread(poll, addr, query))
    await asyncio.sleep(0.5)
    async with connect(f"ws://{addr}/ws?room=lp&name=wes", origin=f"http://{addr}", ping_interval=None) as ws:
        await expect(ws, "* wes joined")
        await ws.send("wake")
        status, body = await asyncio.wait_for(waiting, 5)
    assert status == 200, status
    texts = [m["text"] for m in body["messages"]]
    assert texts[-1] in ("* wes joined", "wes: wake"), texts
    print("nginx test: a message released a held poll through nginx")


def page_loads(addr):
    with urllib.request.urlopen(f"http://{addr}/", timeout=5) as res:
        body = res.read().decode()
        assert res.status == 200, res.status
        assert 'id="log"' in body, "chat page not served"


async def chat_round_trip(addr, name):
    url = f"ws://{addr}/ws?room=nginx&name={name}"
    async with connect(url, origin=f"http://{addr}", ping_interval=None) as ws:
        await expect(ws, f"* {name} joined")
        await ws.send("hi")
        await expect(ws, f"{name}: hi")


async def idle(addr, source_ip):
    """Opens a connection from source_ip, stays silent, then talks."""
    url = f"ws://{addr}/ws?room=idle&name=sleeper"
    # ping_interval=None: only the server's pings may keep this alive.
    async with connect(
        url, origin=f"http://{addr}", ping_interval=None, local_addr=(source_ip, 0)
    ) as ws:
        await expect(ws, "* sleeper joined")
        began = time.monotonic()
        try:
            await asyncio.wait_for(ws.recv(), READ_TIMEOUT + 3)
            raise AssertionError("unexpected message while idle")
        except asyncio.TimeoutError:
            pass  # still open after the proxy timeout
        except ConnectionClosed:
            return time.monotonic() - began
        await ws.send("awake")
        await expect(ws, "sleeper: awake")
        return None


def head_has_no_body(addr):
    req = urllib.request.Request(f"http://{addr}/", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as res:
        assert res.status == 200, res.status
        assert int(res.headers["Content-Length"]) > 0
        assert res.read() == b"", "HEAD answered with a body"


async def cluster(addr, logs):
    """Six members through nginx, spread round robin over two servers."""
    origin = f"http://{addr}"
    members = []
    for i in range(6):
        ws = await connect(f"ws://{addr}/ws?room=cluster&name=c{i}", origin=origin, ping_interval=None)
        members.append(ws)
        # Everyone so far hears the newcomer, whichever server they are on.
        for ws in members:
            await expect(ws, f"* c{i} joined")
    await members[0].send("hello all")
    for ws in members:
        await expect(ws, "c0: hello all")
    for ws in members:
        await ws.close()
    joined = [open(log).read().count("joined cluster") for log in logs]
    assert all(n > 0 for n in joined), f"not spread over both servers: {joined}"
    print(f"nginx test: a room across two servers behind nginx, members per server {joined}")


def main():
    phase, addr, chat_log = sys.argv[1:4]
    if phase == "cluster":
        asyncio.run(cluster(addr, chat_log.split(",")))
        return
    page_loads(addr)
    asyncio.run(chat_round_trip(addr, "alice"))
    if phase == "http10":
        head_has_no_body(addr)
        print("nginx test: page, HEAD and chat work with HTTP/1.0 to the upstream")
        return
    asyncio.run(long_poll(addr, phase))
    closed_after = asyncio.run(idle(addr, "127.0.0.2"))
    if phase == "drop":
        assert closed_after is not None, "nginx kept an idle connection: the control failed"
        print(f"nginx test (control): idle connection closed after {closed_after:.1f} s")
    else:
        assert closed_after is None, f"idle connection closed after {closed_after:.1f} s"
        print("nginx test: idle connection outlived proxy_read_timeout thanks to pings")
        # The chat trusts nginx, so it saw the client's own address.
        log = open(chat_log).read()
        assert "sleeper joined idle from 127.0.0.2:" in log, log
        print("nginx test: X-Real-IP from the trusted proxy reached the handler")


if __name__ == "__main__":
    main()
