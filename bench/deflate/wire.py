"""Bytes on the wire and server CPU per message, with and without
permessage-deflate, for chat-like text.

    target/venv/bin/python bench/deflate/wire.py [--messages N] [--runs R]

Starts the echo example (release, built with --features deflate) twice per
run, plain and with --deflate, and sends it chat-like JSON text of 100 B,
1 KiB and 16 KiB from one raw-socket client with 16 messages in flight.
The client compresses as a browser would (no context kept, as wsloop's
lean mode asks) and checks every echo. It reports, as medians over R
interleaved runs:
  - bytes per message the server wrote (frame header included),
  - the server's CPU time per echoed message (from /proc/PID/stat),
so the price of compression and what it saves are read off side by side.
"""

import argparse
import base64
import os
import random
import socket
import statistics
import subprocess
import zlib

ECHO = "target/release/examples/echo"
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
WORDS = ("the meeting moved to room four at noon bring slides and coffee "
         "who is joining lunch today i will be late ok see you there thanks").split()


def chat_text(rng, size):
    lines = []
    total = 0
    while total < size:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 14)))
        line = f'{{"room":"lobby","from":"{rng.choice(NAMES)}","id":{rng.randrange(10**6)},"text":"{text}"}}'
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size].encode()


def frame(payload, compressed, opcode=1):
    mask = os.urandom(4)
    b0 = 0x80 | (0x40 if compressed else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def inflate(data):
    d = zlib.decompressobj(-15)
    return d.decompress(data + b"\x00\x00\xff\xff")


class Client:
    def __init__(self, addr, offer):
        host, port = addr.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if offer else ""
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.compressed = b"permessage-deflate" in head
        assert self.compressed == offer, head
        self.received = 0

    def read_frame(self):
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                at = 2
                if n == 126:
                    n, at = int.from_bytes(self.buf[2:4], "big"), 4
                elif n == 127:
                    n, at = int.from_bytes(self.buf[2:10], "big"), 10
                if len(self.buf) >= at + n:
                    rsv1 = bool(self.buf[0] & 0x40)
                    payload = self.buf[at:at + n]
                    self.received += at + n
                    self.buf = self.buf[at + n:]
                    return rsv1, payload
            chunk = self.sock.recv(1 << 20)
            assert chunk, "server closed"
            self.buf += chunk


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(size, messages, deflate_on, corpus):
    cmd = [ECHO, "--addr", "127.0.0.1:0", "--workers", "1"] + (["--deflate"] if deflate_on else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        addr = line[line.index("ws://") + 5:].strip().rstrip("/")
        client = Client(addr, deflate_on)
        wires = [frame(deflate(m) if deflate_on else m, deflate_on) for m in corpus]
        start = cpu_ticks(proc.pid)
        in_flight, sent, got = 16, 0, 0
        while got < messages:
            while sent < messages and sent - got < in_flight:
                client.sock.sendall(wires[sent % len(wires)])
                sent += 1
            rsv1, payload = client.read_frame()
            want = corpus[got % len(corpus)]
            assert (inflate(payload) if rsv1 else payload) == want
            got += 1
        ticks = cpu_ticks(proc.pid) - start
        return client.received / messages, ticks / 100 / messages
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(42)
    print(f"echo of chat-like JSON text, 16 in flight, {args.messages} messages, median of {args.runs} runs")
    print(f"| size | wire B/msg plain | wire B/msg deflate | saved | server CPU/msg plain | deflate | CPU ratio |")
    print(f"|---|---|---|---|---|---|---|")
    for size in [100, 1024, 16 * 1024]:
        corpus = [chat_text(rng, size) for _ in range(64)]
        plain, compressed = [], []
        messages = args.messages if size < 16 * 1024 else args.messages // 4
        for _ in range(args.runs):
            plain.append(measure(size, messages, False, corpus))
            compressed.append(measure(size, messages, True, corpus))
        pb = statistics.median(p[0] for p in plain)
        db = statistics.median(d[0] for d in compressed)
        pc = statistics.median(p[1] for p in plain)
        dc = statistics.median(d[1] for d in compressed)
        print(f"| {size} B | {pb:.0f} | {db:.0f} | {1 - db / pb:.0%} | {pc * 1e6:.2f} us | {dc * 1e6:.2f} us | {dc / pc:.2f}x |")


if __name__ == "__main__":
    main()
