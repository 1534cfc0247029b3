"""Peers that do not speak TLS, against a TLS port.

    python tests/tls/bad_peers.py 127.0.0.1:PORT CA_FILE

PORT is the chat example's, started with --tls-cert/--tls-key. Each peer
sends its bytes and then waits, without closing its side: the server must
answer with a TLS alert or close cleanly (FIN, not a reset) within
DEADLINE seconds, and never wait for more. After each peer,
wsloop_tls_failures_total, read from GET /metrics over https (the chat
answers it to loopback only), must have gone up by exactly one, and the
metrics fetch itself shows the server still serves TLS.
"""

import http.client
import random
import socket
import ssl
import sys
import time

# Longer than a failed handshake needs, far shorter than the server's
# 10 s handshake timeout, which would close a waiting connection anyway.
DEADLINE = 3.0

# TLS record content types (RFC 8446 §5.1).
ALERT = 0x15

# RFC 8446 §6 alert descriptions, for the log.
ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
    22: "record_overflow", 40: "handshake_failure", 47: "illegal_parameter",
    50: "decode_error", 70: "protocol_version", 80: "internal_error",
    109: "missing_extension",
}

PEERS = {
    "plain HTTP GET": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "plain WebSocket upgrade": (
        b"GET /ws?room=lobby&name=mallory HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ),
    # Content type 0 is no TLS record at all.
    "zero bytes": bytes(64),
    # Noise from a fixed seed, after a 0 so that it never starts with a
    # record header by chance.
    "seeded noise": bytes([0x00]) + random.Random(6455).randbytes(1023),
    # A handshake record whose header announces 65535 bytes, more than any
    # record may hold (2^14 + 256): refused on the header.
    "record too long": bytes([0x16, 0x03, 0x03, 0xFF, 0xFF]) + bytes(100),
    # A whole handshake record of junk where the ClientHello belongs: its
    # first bytes announce a message of 15 MiB.
    "junk handshake record": bytes([0x16, 0x03, 0x01, 0x00, 0x20]) + b"\xee" * 32,
    # A record holding the start of a ClientHello that announces 64 KiB, one
    # byte more than a handshake message may have here.
    "ClientHello over 64 KiB": bytes([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00]),
    # Application data before any handshake.
    "early application data": bytes([0x17, 0x03, 0x03, 0x00, 0x10]) + bytes(16),
}


def bad_peer(addr, name, payload):
    """Sends `payload` and reads until the server closes; returns how."""
    host, port = addr
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        got = b""
        start = time.monotonic()
        while True:
            left = DEADLINE - (time.monotonic() - start)
            assert left > 0, f"{name}: no close within {DEADLINE} s (got {got[:16].hex()})"
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                raise AssertionError(f"{name}: no close within {DEADLINE} s (got {got[:16].hex()})")
            except ConnectionResetError:
                raise AssertionError(f"{name}: reset instead of an alert or a clean close")
            if not chunk:
                break
            got += chunk
    if not got:
        return "closed without an alert"
    # One alert record: type, version, length 2, level, description.
    assert got[0] == ALERT and len(got) == 7 and got[3:5] == b"\x00\x02", (
        f"{name}: answered {got[:32].hex()}, not one alert record"
    )
    level = {1: "warning", 2: "fatal"}.get(got[5], got[5])
    return f"{level} alert {ALERTS.get(got[6], got[6])}, then closed"


def tls_failures(addr, ca):
    """wsloop_tls_failures_total from GET /metrics, over https."""
    host, port = addr
    conn = http.client.HTTPSConnection(host, port, timeout=10, context=ssl.create_default_context(cafile=ca))
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, f"GET /metrics: {resp.status} {body[:200]}"
    finally:
        conn.close()
    for line in body.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "wsloop_tls_failures_total":
            return int(fields[1])
    raise AssertionError("GET /metrics has no wsloop_tls_failures_total")


def main(addr_text, ca):
    host, port = addr_text.rsplit(":", 1)
    addr = (host, int(port))
    first = before = tls_failures(addr, ca)
    for name, payload in PEERS.items():
        how = bad_peer(addr, name, payload)
        # The counter goes up before the server answers, so it shows now.
        after = tls_failures(addr, ca)
        assert after == before + 1, f"{name}: {how}, and wsloop_tls_failures_total went from {before} to {after}"
        print(f"bad peer, {name}: {how}, counted")
        before = after
    print(f"bad peers: {len(PEERS)} refused, wsloop_tls_failures_total {first} -> {after}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: bad_peers.py 127.0.0.1:PORT CA_FILE")
    main(*sys.argv[1:])
