"""A chat room shared by Python websockets clients and raw HTTP long
pollers: 200 lines, every member gets every one exactly once, in one
order, with ids that follow one another.

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

EACH = 50
SOCKETS = ["py1", "py2"]
POLLERS = ["raw1", "raw2"]
TOTAL = EACH * (len(SOCKETS) + len(POLLERS))


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
        self.sends.request("POST", f"/send?{self.query}", body=line.encode(),
                           headers={"Content-Type": "text/plain"})
        res = self.sends.getresponse()
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
    ready = threading.Barrier(len(SOCKETS) + len(POLLERS))
    results = {}
    pollers = [threading.Thread(target=run_poller, args=(addr, n, ready, results)) for n in POLLERS]
    for t in pollers:
        t.start()
    await asyncio.gather(*(run_socket(addr, n, ready, results) for n in SOCKETS))
    for t in pollers:
        t.join(30)
    assert set(results) == set(SOCKETS + POLLERS), f"members that finished: {sorted(results)}"
    reference = said(results[SOCKETS[0]])
    assert len(reference) == TOTAL
    for name, got in results.items():
        check_consecutive(name, got)
        assert said(got) == reference, f"{name} saw another order"
    for name in SOCKETS + POLLERS:
        mine = [m["text"] for m in reference if m["name"] == name]
        assert mine == [f"{name}: {name} line {i}" for i in range(EACH)], name
    print(f"poll test: {len(SOCKETS)} websockets clients and {len(POLLERS)} raw HTTP pollers "
          f"got all {TOTAL} lines once, in one order")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
