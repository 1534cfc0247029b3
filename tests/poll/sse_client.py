"""A small Server-Sent Events client on a raw socket, standard library only,
for the tests: tests/poll/mixed.py and tests/poll/sse.py use it against the
chat, tests/nginx/nginx_test.py through nginx.

    stream = Stream.open("127.0.0.1:8080", "/events?room=r&name=ann&client=ann-token")
    stream.status, stream.headers          # the answer's head
    block = stream.block(timeout=5)        # the next block, up to a blank line

A block is what came between two blank lines: its `id:`, `data:` (lines
joined with a newline, as EventSource joins them), `retry:` and comment
lines, and when its last byte arrived. The body is read either way it may
come: until the connection closes (the chat's own answer) or chunked (what
nginx makes of it for an HTTP/1.1 client).
"""
import json
import select
import socket
import time


class Closed(Exception):
    """The server closed the stream."""


class Block:
    def __init__(self):
        self.id = None
        self.data = None
        self.retry = None
        self.event = None
        self.comments = []
        self.arrived = None

    def json(self):
        return json.loads(self.data)

    def is_heartbeat(self):
        return self.data is None and self.id is None and self.retry is None and self.comments

    def __repr__(self):
        fields = {k: v for k, v in vars(self).items() if v not in (None, []) and k != "arrived"}
        return f"Block({fields})"


class Stream:
    def __init__(self, sock):
        self.sock = sock
        self.raw = b""  # bytes received and not yet taken apart
        self.body = b""  # the body, de-chunked, not yet parsed into lines
        self.chunked = False
        self.chunk_left = 0  # data bytes left in the current chunk
        self.crlf_left = 0
        self.ended = False
        self.last_arrival = None
        self.status = None
        self.headers = {}

    @classmethod
    def open(cls, addr, target, headers=None, accept=True, method="GET", timeout=5,
             source_ip=None):
        """Sends the request and reads the answer's head. headers: extra
        ones, a dict; accept=False leaves out `Accept: text/event-stream`."""
        host, port = addr.rsplit(":", 1)
        source = (source_ip, 0) if source_ip else None
        sock = socket.create_connection((host, int(port)), timeout=timeout,
                                        source_address=source)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {addr}"]
        if accept:
            lines.append("Accept: text/event-stream")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        stream = cls(sock)
        stream._read_head(timeout)
        return stream

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, deadline):
        """More bytes into self.raw; Closed at the end of the stream,
        TimeoutError past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            raise TimeoutError("nothing from the server in time")
        try:
            got = self.sock.recv(65536)
        except ConnectionResetError:
            got = b""
        if not got:
            self.ended = True
            raise Closed()
        self.last_arrival = time.monotonic()
        self.raw += got

    def _read_head(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            self._recv(deadline)
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.version, status, *_ = status_line.split(" ", 2)
        self.status = int(status)
        for line in lines:
            name, value = line.split(":", 1)
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._dechunk()

    def _dechunk(self):
        """Moves what self.raw holds of the body into self.body."""
        if not self.chunked:
            self.body += self.raw
            self.raw = b""
            return
        while self.raw:
            if self.chunk_left:
                take = self.raw[: self.chunk_left]
                self.body += take
                self.raw = self.raw[len(take):]
                self.chunk_left -= len(take)
                if self.chunk_left:
                    return
                self.crlf_left = 2  # the CRLF after a chunk's data
            if self.crlf_left:
                n = min(self.crlf_left, len(self.raw))
                self.raw = self.raw[n:]
                self.crlf_left -= n
                if self.crlf_left:
                    return
            if b"\r\n" not in self.raw:
                return
            size, self.raw = self.raw.split(b"\r\n", 1)
            self.chunk_left = int(size.split(b";")[0], 16)
            if self.chunk_left == 0:
                # The last chunk: nginx ended the response on purpose.
                self.raw = b""
                self.ended = True
                return

    def line(self, deadline):
        """The next line of the body, without its end (LF, CRLF or CR)."""
        while True:
            ends = [i for i in (self.body.find(b"\n"), self.body.find(b"\r")) if i >= 0]
            i = min(ends, default=-1)
            # A CR last in the buffer may be the start of a CRLF: wait.
            if i >= 0 and (self.body[i:] != b"\r" or self.ended):
                end = i + 2 if self.body[i:i + 2] == b"\r\n" else i + 1
                line, self.body = self.body[:i], self.body[end:]
                return line.decode("utf-8")
            if self.ended:
                raise Closed()
            self._recv(deadline)
            self._dechunk()

    def block(self, timeout=5):
        """The next block (up to a blank line), as the SSE format splits
        lines into fields."""
        deadline = time.monotonic() + timeout
        block = Block()
        seen = False
        while True:
            line = self.line(deadline)
            if line == "":
                if seen:
                    block.arrived = self.last_arrival
                    return block
                continue
            seen = True
            if line.startswith(":"):
                block.comments.append(line[1:].lstrip(" "))
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                block.data = value if block.data is None else f"{block.data}\n{value}"
            elif field == "id":
                block.id = value
            elif field == "retry":
                block.retry = int(value)
            elif field == "event":
                block.event = value
            else:
                raise AssertionError(f"unknown field in {line!r}")

    def next_event(self, timeout=5):
        """The next block with data (skipping heartbeats), and its JSON."""
        deadline = time.monotonic() + timeout
        while True:
            block = self.block(max(0.0, deadline - time.monotonic()))
            if block.data is not None:
                return block, block.json()

    def wait_closed(self, timeout):
        """Reads until the server closes; raises TimeoutError if it does
        not within timeout. Returns the blocks read meanwhile."""
        deadline = time.monotonic() + timeout
        blocks = []
        try:
            while True:
                blocks.append(self.block(max(0.0, deadline - time.monotonic())))
        except Closed:
            return blocks

    def send_raw(self, data):
        self.sock.sendall(data)
