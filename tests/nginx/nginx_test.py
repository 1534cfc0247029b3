"""The chat example behind nginx, driven by Python's websockets client.

    python tests/nginx/nginx_test.py PHASE NGINX_ADDR CHAT_LOG

PHASE "drop": the server pings less often than nginx's proxy_read_timeout,
so nginx must close an idle connection (the control). PHASE "keep": the
server pings more often, so the idle connection must survive. PHASE
"http10": nginx forwards the page over HTTP/1.0 (its default); the page, a
HEAD request and a chat round trip must all work. PHASE "cluster": nginx
spreads clients over two chat servers that share a Redis (CHAT_LOG is then
both logs, comma-separated); a room must span both.

Server-Sent Events (GET /events) in every phase. "drop": the chat's
heartbeat is longer than proxy_read_timeout, so nginx must cut an idle
stream. "keep": heartbeats every second keep an idle stream open past it,
and each event passes unbuffered, a few milliseconds after its line was
said. "http10": a stream through a location that speaks HTTP/1.0 to the
chat. "cluster": a stream on one server hears the other.
"""
import asyncio
import http.client
import os
import statistics
import sys
import json
import secrets
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "poll"))
from sse_client import Closed, Stream  # noqa: E402

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

READ_TIMEOUT = 3.0  # proxy_read_timeout in the generated nginx config
# Longest an event may take, from the answer to the POST /send that said
# it to its arrival on a stream. Generous: unbuffered it is a few
# milliseconds; buffered, it would wait for a buffer to fill, or the end.
EVENT_BOUND = 0.2


async def expect(ws, want, timeout=5):
    """The next room message's text, skipping the list of who is here."""
    while True:
        got = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if got["kind"] != "here":
            break
    assert got["text"] == want, f"expected {want!r}, got {got!r}"


async def expect_line(ws, want, timeout=5):
    """The next line said, skipping who is here, joins and leaves."""
    while True:
        got = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if got["kind"] == "say":
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


class Member:
    """An SSE member through nginx: a stream it listens on, and a kept-alive
    connection for POST /send."""

    def __init__(self, addr, room, name, source_ip=None):
        self.addr, self.room, self.name = addr, room, name
        self.query = f"room={room}&name={name}&client={secrets.token_urlsafe(12)}"
        self.stream = Stream.open(addr, f"/events?{self.query}",
                                  source_ip=source_ip)
        assert self.stream.status == 200, (self.stream.status, self.stream.headers)
        assert self.stream.headers["content-type"].startswith("text/event-stream")
        assert self.stream.block().retry == 1000
        # Who is here, then its own join: the member is in.
        while self.stream.next_event()[1]["kind"] != "here":
            pass
        self.hear(f"* {name} joined")
        host, port = addr.rsplit(":", 1)
        self.sends = http.client.HTTPConnection(host, int(port), timeout=5)

    def say(self, line):
        """Says line; returns when its POST /send was sent and when its
        answer arrived."""
        sent = time.monotonic()
        self.sends.request("POST", f"/send?{self.query}", body=line.encode())
        res = self.sends.getresponse()
        res.read()
        answered = time.monotonic()
        assert res.status == 204, res.status
        return sent, answered

    def hear(self, text, timeout=5):
        """Reads the stream up to the room message whose text is text."""
        while True:
            block, msg = self.stream.next_event(timeout)
            if msg.get("text") == text:
                return block

    def close(self):
        self.stream.close()
        self.sends.close()


def sse_idle(addr, phase):
    """An idle stream: cut by nginx when heartbeats are rarer than its
    read timeout, kept open through them otherwise."""
    member = Member(addr, "sse-idle", "dozer", source_ip="127.0.0.3")
    try:
        began = time.monotonic()
        if phase == "drop":
            try:
                member.stream.wait_closed(READ_TIMEOUT + 3)
            except TimeoutError:
                raise AssertionError("nginx kept an idle stream: the control failed")
            cut = time.monotonic() - began
            assert cut > READ_TIMEOUT - 0.5, f"the stream ended after {cut:.1f} s, before the timeout"
            print(f"nginx test (control): nginx cut an idle SSE stream after {cut:.1f} s, "
                  "heartbeats every 10 s")
            return
        # Idle well past proxy_read_timeout: only heartbeats may come.
        beats = 0
        while time.monotonic() - began < READ_TIMEOUT + 2:
            try:
                block = member.stream.block(timeout=0.5)
            except TimeoutError:
                continue
            except Closed:
                raise AssertionError(f"idle stream closed after {time.monotonic() - began:.1f} s")
            assert block.is_heartbeat(), f"unexpected while idle: {block}"
            beats += 1
        assert beats >= READ_TIMEOUT, f"only {beats} heartbeats"
        member.say("awake")
        member.hear("dozer: awake")
        print(f"nginx test: an SSE stream idle for {time.monotonic() - began:.1f} s "
              f"({beats} heartbeats) still carried a line")
    finally:
        member.close()


def sse_latency(addr, lines=20):
    """Each event must pass nginx as it comes. A thread reads the stream
    and stamps each event on arrival; the time that counts is from the
    answer to the POST /send that said the line (the chat publishes before
    it answers, so an event may even come first)."""
    member = Member(addr, "sse-fast", "quick")
    arrived = {}

    def read():
        try:
            while len(arrived) < lines:
                block, msg = member.stream.next_event(10)
                if msg["kind"] == "say":
                    arrived[msg["text"]] = block.arrived
        except (Closed, TimeoutError):
            pass

    reader = threading.Thread(target=read)
    reader.start()
    said = {}
    try:
        for i in range(lines):
            said[f"quick: line {i}"] = member.say(f"line {i}")
            time.sleep(0.05)  # one event at a time, nothing else in flight
        reader.join(10)
    finally:
        member.close()
    assert set(arrived) == set(said), f"arrived: {sorted(arrived)}"
    # Negative when the event came before the answer: counted as 0.
    delays = [max(0.0, arrived[t] - answered) for t, (_, answered) in said.items()]
    slow = [f"{d * 1000:.0f} ms" for d in delays if d > EVENT_BOUND]
    assert not slow, f"events held by nginx: {slow}"
    # From sending the POST: the whole trip, through nginx twice.
    trips = [arrived[t] - sent for t, (sent, _) in said.items()]
    ms = lambda xs: f"median {statistics.median(xs) * 1000:.2f} ms, max {max(xs) * 1000:.2f} ms"  # noqa: E731
    print(f"nginx test: {lines} SSE events passed unbuffered; from the POST's answer to the "
          f"event: {ms(delays)}; from sending the POST: {ms(trips)}")


def sse_round_trip(addr):
    member = Member(addr, "sse-trip", "tripper")
    try:
        member.say("over http/1.0")
        member.hear("tripper: over http/1.0")
    finally:
        member.close()


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
    # An SSE member, on whichever server nginx picked, hears the others and
    # is heard by them.
    sse = await asyncio.to_thread(Member, addr, "cluster", "streamer")
    for ws in members:
        await expect(ws, "* streamer joined")
    last = f"c{len(members) - 1}"
    await members[-1].send("to the stream")
    await asyncio.to_thread(sse.hear, f"{last}: to the stream")
    for ws in members:
        await expect_line(ws, f"{last}: to the stream")
    await asyncio.to_thread(sse.say, "from the stream")
    for ws in members:
        await expect_line(ws, "streamer: from the stream")
    sse.close()
    for ws in members:
        await ws.close()
    joined = [open(log).read().count("joined cluster") for log in logs]
    assert all(n > 0 for n in joined), f"not spread over both servers: {joined}"
    print(f"nginx test: a room across two servers behind nginx, an SSE stream among its "
          f"members, members per server {joined}")


def main():
    phase, addr, chat_log = sys.argv[1:4]
    if phase == "cluster":
        asyncio.run(cluster(addr, chat_log.split(",")))
        return
    page_loads(addr)
    asyncio.run(chat_round_trip(addr, "alice"))
    if phase == "http10":
        head_has_no_body(addr)
        sse_round_trip(addr)
        print("nginx test: page, HEAD, chat and SSE work with HTTP/1.0 to the upstream")
        return
    asyncio.run(long_poll(addr, phase))
    sse_idle(addr, phase)
    if phase == "keep":
        sse_latency(addr)
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
        assert "dozer streams sse-idle from 127.0.0.3:" in log, log
        print("nginx test: X-Real-IP from the trusted proxy reached the handler, "
              "for a WebSocket and a stream")


if __name__ == "__main__":
    main()
