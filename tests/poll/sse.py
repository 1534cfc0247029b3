"""The chat's Server-Sent Events endpoint, GET /events, at its edges: the
answer's head, what it refuses, a client that talks on its stream, and a
resume with Last-Event-ID that gets exactly what was missed.

    python tests/poll/sse.py HOST:PORT

scripts/poll-test.sh starts the chat and runs this after mixed.py; the
three transports in one room are mixed.py's.
"""
import http.client
import json
import secrets
import sys
import time

from websockets.sync.client import connect

from sse_client import Stream

# The chat this runs against keeps a poller (and an event-stream member
# whose stream ended) for --poll-hold 2 plus --poll-grace 1 of silence.
SILENCE = 3


def seq(msg_id):
    epoch, n = msg_id.split("-")
    return epoch, int(n)


class Watcher:
    """A WebSocket member that keeps everything its room says, to compare
    a stream with."""

    def __init__(self, addr, room, name):
        self.url = f"ws://{addr}/ws?room={room}&name={name}"
        self.name = name
        self.messages = []  # room messages, with ids, in order

    def __enter__(self):
        self.connection = connect(self.url, open_timeout=5)
        self.ws = self.connection.__enter__()
        return self

    def __exit__(self, *exc):
        self.connection.__exit__(*exc)

    def until(self, pred, timeout=5):
        """Reads until a message matches pred; returns it."""
        for msg in self.messages:
            if pred(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            if "id" in msg:
                self.messages.append(msg)
                if pred(msg):
                    return msg

    def say(self, line):
        self.ws.send(line)
        return self.until(lambda m: m.get("text") == f"{self.name}: {line}")

    def after(self, msg_id):
        """What it has after msg_id."""
        epoch, n = seq(msg_id)
        return [m for m in self.messages if seq(m["id"])[0] == epoch and seq(m["id"])[1] > n]


def join(addr, room, name, query="", client=None, **kw):
    """A stream read up to its `here` notice: (stream, room messages before
    it). The member's token is stream.client: a fresh one unless given."""
    client = client or secrets.token_urlsafe(12)
    stream = Stream.open(addr, f"/events?room={room}&name={name}&client={client}{query}", **kw)
    stream.client = client
    assert stream.status == 200, (stream.status, stream.headers)
    first = stream.block()
    assert first.retry == 1000 and first.data is None, first
    before = []
    while True:
        block, msg = stream.next_event()
        if msg["kind"] == "here":
            # Who was here before this member: its own join follows, as on /ws.
            assert block.id is None, f"a notice with an id: {block}"
            assert isinstance(msg["names"], list), msg
            return stream, before
        before.append((block, msg))


def head(addr):
    stream, _ = join(addr, "sse-head", "hed")
    with stream:
        h = stream.headers
        assert stream.version == "HTTP/1.1", stream.version
        assert h["content-type"].startswith("text/event-stream"), h
        assert h["cache-control"] == "no-store", h
        assert h["x-accel-buffering"] == "no", h
        assert h["connection"].lower() == "close", h
        # The body runs until the connection closes: no length, no chunks.
        assert "content-length" not in h and "transfer-encoding" not in h, h
        block, joined = stream.next_event()
        assert joined["kind"] == "join" and joined["name"] == "hed", joined
        assert joined["via"] == "sse" and block.id == joined["id"], (block, joined)
    print("sse test: 200 text/event-stream, no-store, X-Accel-Buffering: no, "
          "Connection: close; retry: 1000, who is here, then its own join via sse")


def no_accept(addr):
    stream, _ = join(addr, "sse-head", "nacc", accept=False)
    with stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
    print("sse test: a request without Accept: text/event-stream is served all the same")


def status_of(addr, target, headers=None, method="GET", body=None):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request(method, target, body=body, headers=headers or {})
    res = conn.getresponse()
    res.read()
    conn.close()
    return res.status, res.getheader("Content-Type")


def refused(addr):
    good = "/events?room=sse-bad&name=bob&client=refused-token"
    bad_ids = ["garbage", "5f3a09c1", "5f3a09c1-", "5f3a09c1-x", "5f3a-1", "-1", "0x1-2",
               "5f3a09c1-99999999999999999999999"]
    for bad in bad_ids:
        status, ctype = status_of(addr, good, {"Last-Event-ID": bad, "Accept": "text/event-stream"})
        assert status == 400, f"Last-Event-ID {bad!r}: {status}"
        assert not (ctype or "").startswith("text/event-stream"), ctype
        status, _ = status_of(addr, f"{good}&after={bad}", {"Accept": "text/event-stream"})
        assert status == 400, f"after={bad!r}: {status}"
    status, _ = status_of(addr, good, method="POST")
    assert status == 405, f"POST /events: {status}"
    # A stream only listens: a body that comes with its request is refused.
    status, _ = status_of(addr, good, body=b"hello")
    assert status == 400, f"GET /events with a body: {status}"
    status, _ = status_of(addr, good, {"Origin": "http://elsewhere.example"})
    assert status == 403, f"a foreign Origin: {status}"
    print("sse test: a malformed Last-Event-ID or after gets 400, so does a body; "
          "POST 405, a foreign Origin 403")


def talks_on_stream(addr):
    """A stream's client must only read: bytes it sends close the stream,
    and the room hears it leave once a poller's silence has passed."""
    with Watcher(addr, "sse-talk", "wat") as watcher:
        sends = {
            "a pipelined request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "stray bytes": b"x",
        }
        for i, (what, data) in enumerate(sends.items()):
            name = f"talker{i}"
            stream, _ = join(addr, "sse-talk", name)
            joined = watcher.until(lambda m: m["kind"] == "join" and m["name"] == name)
            assert joined["via"] == "sse", joined
            began = time.monotonic()
            stream.send_raw(data)
            try:
                blocks = stream.wait_closed(5)
            except TimeoutError:
                raise AssertionError(f"a stream whose client sent {what} stayed open")
            closed_ms = (time.monotonic() - began) * 1000
            stream.close()
            # Nothing was answered on it either: Block would have refused
            # the line "HTTP/1.1 200 OK" of a second answer.
            assert all(b.data is None or json.loads(b.data) for b in blocks), blocks
            left = watcher.until(lambda m: m["kind"] == "leave" and m["name"] == name,
                                 timeout=SILENCE + 5)
            assert left["via"] == "sse", left
            print(f"sse test: {what} on the stream closed it after {closed_ms:.0f} ms, "
                  "and the room heard it leave once its silence passed")


def say(addr, room, name, client, line):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", f"/send?room={room}&name={name}&client={client}", body=line.encode())
    res = conn.getresponse()
    res.read()
    conn.close()
    assert res.status == 204, res.status


def events_until(stream, text, timeout=5):
    """Room messages (with ids) from the stream, up to the one whose text is text."""
    got = []
    while True:
        block, msg = stream.next_event(timeout)
        if block.id is None:
            continue  # a notice
        assert block.id == msg["id"], block
        got.append(msg)
        if msg.get("text") == text:
            return got


def left(watcher, name, since):
    """Waits until the watcher heard name leave after the id since: once a
    poller's silence has passed since its stream ended."""
    watcher.until(lambda m: m["kind"] == "leave" and m["name"] == name
                  and seq(m["id"]) > seq(since), timeout=SILENCE + 5)


def caught_up_to(stream, caught_up, watcher, mark):
    """What a stream got: its catch-up, then the room up to a line the
    watcher says now."""
    watcher.say(mark)
    return [m for _, m in caught_up] + events_until(stream, f"{watcher.name}: {mark}")


def resume(addr):
    """A stream closed and opened again with Last-Event-ID gets exactly
    what its room said meanwhile, its own leave and join among it."""
    room = "sse-resume"
    with Watcher(addr, room, "wit") as wit:
        stream, _ = join(addr, room, "ren")
        say(addr, room, "ren", stream.client, "before")
        wit.say("one")
        got = events_until(stream, "wit: one")
        assert [m["text"] for m in got if m["kind"] == "say"] == ["ren: before", "wit: one"], got
        last = got[-1]["id"]
        stream.close()
        left(wit, "ren", last)
        for line in ["two", "three", "four"]:
            wit.say(line)

        stream, caught_up = join(addr, room, "ren", headers={"Last-Event-ID": last})
        resumed = [msg for _, msg in caught_up]
        assert [m["text"] for m in resumed if m["kind"] == "say"] == \
            ["wit: two", "wit: three", "wit: four"], resumed
        wit.say("five")
        resumed += events_until(stream, "wit: five")
        missed = wit.after(last)
        assert resumed == missed, f"resumed {resumed}\nwatcher {missed}"
        epoch, n = seq(last)
        assert [seq(m["id"]) for m in resumed] == [(epoch, n + 1 + i) for i in range(len(resumed))]
        print(f"sse test: a resume with Last-Event-ID got exactly the {len(missed)} messages "
              f"after {last}, with consecutive ids")
        stream.close()

        # Last-Event-ID wins over after= (EventSource adds it to the URL it was given).
        left(wit, "ren", resumed[-1]["id"])
        last = wit.say("six")["id"]
        wit.say("seven")
        stream, caught_up = join(addr, room, "ren", query=f"&after={resumed[0]['id']}",
                                 headers={"Last-Event-ID": last})
        with stream:
            got = caught_up_to(stream, caught_up, wit, "mark one")
        assert got == wit.after(last), f"resumed {got}\nwatcher {wit.after(last)}"
        assert [m["text"] for m in got if m["kind"] == "say"] == ["wit: seven", "wit: mark one"]
        print("sse test: Last-Event-ID wins over after=")

        # after= alone resumes the same way.
        left(wit, "ren", got[-1]["id"])
        last = wit.say("eight")["id"]
        wit.say("nine")
        stream, caught_up = join(addr, room, "ren", query=f"&after={last}")
        with stream:
            got = caught_up_to(stream, caught_up, wit, "mark two")
        assert got == wit.after(last), f"resumed {got}\nwatcher {wit.after(last)}"
        assert [m["text"] for m in got if m["kind"] == "say"] == ["wit: nine", "wit: mark two"]
        print("sse test: after= resumes as Last-Event-ID does")


def reset(addr):
    """A well-formed cursor from another epoch: the reset notice, then the
    room's recent messages, as on /ws."""
    room = "sse-reset"
    with Watcher(addr, room, "wit") as wit:
        wit.say("kept")
        stream = Stream.open(addr, f"/events?room={room}&name=rex&client=reset-token",
                             headers={"Last-Event-ID": "00000000-1"})
        with stream:
            assert stream.status == 200, stream.status
            assert stream.block().retry == 1000
            block, notice = stream.next_event()
            assert block.id is None and notice["kind"] == "reset", (block, notice)
            assert "latest" in notice, notice
            texts = [m.get("text") for m in events_until(stream, "wit: kept")]
            assert texts[-1] == "wit: kept", texts
        print(f"sse test: a cursor from another epoch got the reset notice {notice} "
              "and the room's recent messages")


def per_address(addr, workers=2):
    """Streams from one address are bounded: by the chat's polling names per
    address (--max-names-per-address, 64), as each stream member is kept
    as a poller is, and by wsloop's max_held_per_ip (64) on each worker,
    with held polls. Past the first bound, 429 at once. From an address
    of its own, so that no other test's stream counts."""
    streams = []
    try:
        while True:
            n = len(streams)
            stream = Stream.open(addr, f"/events?room=sse-many&name=m{n}&client=many-{n:04d}",
                                 source_ip="127.0.0.5")
            if stream.status != 200:
                break
            streams.append(stream)
            assert len(streams) <= 64 * workers, "no bound on streams from one address"
        stream.close()
        assert stream.status == 429, stream.status
        assert len(streams) >= 64, f"429 after {len(streams)} streams"
    finally:
        for s in streams:
            s.close()
    # Another address is not counted with it.
    other, _ = join(addr, "sse-many", "elsewhere", source_ip="127.0.0.6")
    other.close()
    print(f"sse test: {len(streams)} streams from one address, then 429")


def says_as_itself(addr):
    """An SSE member saying a line with POST /send, with its stream's token,
    is the member the room already has: no second join (via poll) before
    its line. It stays while its stream is open, past a poller's silence;
    and a stream that ends and comes back within the silence, as
    EventSource reconnects, is no news to the room. Last, as it is the
    check most likely to be broken by a change to presence."""
    room = "sse-self"
    with Watcher(addr, room, "wit") as wit:
        stream, _ = join(addr, room, "sal")
        wit.until(lambda m: m["kind"] == "join" and m["name"] == "sal")
        say(addr, room, "sal", stream.client, "hello")
        line = wit.until(lambda m: m.get("text") == "sal: hello")
        # The line is the next message after the stream's own join.
        i = wit.messages.index(line)
        before = wit.messages[i - 1]
        assert before["kind"] == "join" and before["via"] == "sse", \
            f"an SSE member's line came after {before}: it joined twice"
        # A poller's silence passes with the stream open (the chat's sweep
        # runs every second), then the stream ends and comes back at once.
        time.sleep(SILENCE + 2)
        stream.close()
        again, _ = join(addr, room, "sal", client=stream.client)
        with again:
            say(addr, room, "sal", again.client, "back")
            back = wit.until(lambda m: m.get("text") == "sal: back")
        since = wit.messages[wit.messages.index(line) + 1:wit.messages.index(back)]
        assert since == [], f"sal's silence or reconnect was news: {since}"
    print("sse test: a line from an SSE member comes from the member the room has, "
          "and neither a poller's silence with the stream open nor a reconnect is news")


def main(addr):
    head(addr)
    no_accept(addr)
    refused(addr)
    talks_on_stream(addr)
    resume(addr)
    reset(addr)
    per_address(addr)
    says_as_itself(addr)


if __name__ == "__main__":
    main(sys.argv[1])
