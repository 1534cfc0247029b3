"""A chat room shared by Python websockets clients, Server-Sent Events
streams and raw HTTP long pollers: 300 lines, every member gets every one
exactly once, in one order, with ids that follow one another.

    python tests/poll/mixed.py HOST:PORT

scripts/poll-test.sh starts the chat and runs this.
"""
import asyncio
import http.client
import json
import secrets
import sys
import threading

from websockets.asyncio.client import connect

from sse_client import Stream

EACH = 50
SOCKETS = ["py1", "py2"]
STREAMS = ["sse1", "sse2"]
POLLERS = ["raw1", "raw2"]
MEMBERS = SOCKETS + STREAMS + POLLERS
TOTAL = EACH * len(MEMBERS)


def seq(msg):
    epoch, n = msg["id"].split("-")
    return epoch, int(n)


def check_consecutive(name, msgs):
    for a, b in zip(msgs, msgs[1:]):
        (ea, sa), (eb, sb) = seq(a), seq(b)
        assert (ea, sa + 1) == (eb, sb), f"{name}: {a['id']} then {b['id']}"


def said(msgs):
    return [m for m in msgs if m["kind"] == "say"]


class Poller:
    """Raw HTTP/1.1 on kept-alive connections: one for polls, one for sends,
    both with the client token a page makes once (8 to 64 of A-Z a-z 0-9 _ -)."""

    def __init__(self, addr, name):
        host, port = addr.rsplit(":", 1)
        self.polls = http.client.HTTPConnection(host, int(port), timeout=30)
        self.sends = http.client.HTTPConnection(host, int(port), timeout=30)
        self.query = f"room=mixed&name={name}&client={secrets.token_urlsafe(16)}"
        self.cursor = "0"

    def poll(self):
        self.polls.request("GET", f"/poll?{self.query}&after={self.cursor}")
        res = self.polls.getresponse()
        body = json.loads(res.read())
        assert res.status == 200, (res.status, body)
        assert res.getheader("Cache-Control") == "no-store"
        assert not body["reset"], body
        if body["latest"]:
            self.cursor = body["latest"]
        return body

    def say(self, line):
        say(self.sends, self.query, line)


def say(conn, query, line):
    """POST /send on a kept-alive connection: how pollers and SSE members talk."""
    conn.request("POST", f"/send?{query}", body=line.encode(),
                 headers={"Content-Type": "text/plain"})
    res = conn.getresponse()
    res.read()
    assert res.status == 204, res.status


def run_poller(addr, name, ready, results):
    poller = Poller(addr, name)
    joined = poller.poll()
    assert isinstance(joined["here"], list), joined
    ready.wait()
    for i in range(EACH):
        poller.say(f"{name} line {i}")
    got = []
    while len(said(got)) < TOTAL:
        got.extend(poller.poll()["messages"])
    results[name] = got


def run_stream(addr, name, ready, results):
    """An SSE member: it listens on GET /events and talks with POST /send."""
    host, port = addr.rsplit(":", 1)
    sends = http.client.HTTPConnection(host, int(port), timeout=30)
    query = f"room=mixed&name={name}&client={secrets.token_urlsafe(16)}"
    with Stream.open(addr, f"/events?{query}", timeout=30) as stream:
        assert stream.status == 200, stream.status
        assert stream.block().retry == 1000
        while True:
            _, notice = stream.next_event(10)
            if notice["kind"] == "here":
                break
        ready.wait()
        for i in range(EACH):
            say(sends, query, f"{name} line {i}")
        got = []
        while len(said(got)) < TOTAL:
            block, msg = stream.next_event(10)
            # Room messages carry their id twice: the SSE field and the JSON.
            assert block.id == msg["id"], block
            got.append(msg)
        results[name] = got


async def run_socket(addr, name, ready, results):
    async with connect(f"ws://{addr}/ws?room=mixed&name={name}", ping_interval=None) as ws:
        here = json.loads(await ws.recv())
        assert here["kind"] == "here", here
        await asyncio.to_thread(ready.wait)
        for i in range(EACH):
            await ws.send(f"{name} line {i}")
        got = []
        while len(said(got)) < TOTAL:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        results[name] = got


async def main(addr):
    ready = threading.Barrier(len(MEMBERS), timeout=30)
    results = {}
    threads = [threading.Thread(target=run_poller, args=(addr, n, ready, results)) for n in POLLERS]
    threads += [threading.Thread(target=run_stream, args=(addr, n, ready, results)) for n in STREAMS]
    for t in threads:
        t.start()
    await asyncio.gather(*(run_socket(addr, n, ready, results) for n in SOCKETS))
    for t in threads:
        t.join(30)
    assert set(results) == set(MEMBERS), f"members that finished: {sorted(results)}"
    reference = said(results[SOCKETS[0]])
    assert len(reference) == TOTAL
    for name, got in results.items():
        check_consecutive(name, got)
        assert said(got) == reference, f"{name} saw another order"
    for name in MEMBERS:
        mine = [m["text"] for m in reference if m["name"] == name]
        assert mine == [f"{name}: {name} line {i}" for i in range(EACH)], name
    print(f"poll test: {len(SOCKETS)} websockets clients, {len(STREAMS)} SSE streams and "
          f"{len(POLLERS)} raw HTTP pollers got all {TOTAL} lines once, in one order")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
