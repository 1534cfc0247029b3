"""permessage-deflate against Python's websockets client, a real peer.

    python tests/deflate/interop.py ws://HOST:PORT/ MODE
    python tests/deflate/interop.py wss://localhost:PORT/ MODE CA_FILE

MODE says how the echo example was started and so what it must answer:
  lean      --deflate: no context takeover either way, whatever is offered
  takeover  --deflate-takeover: context kept both ways, as offered
With a wss:// URL (the echo started with --tls-cert/--tls-key), the
client trusts CA_FILE alone and checks the server's name against it, and
every connection must really be TLS.
Each mode also checks that a client offering nothing gets plain frames.
Text and binary from 0 B to 1 MiB go out whole and fragmented, and must
come back identical.
"""

import random
import ssl
import sys

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

SIZES = [0, 1, 63, 64, 65, 1000, 16 * 1024, 65536, 300_000, 1 << 20]


def payloads(rng):
    words = ["alice", "bob", "lobby", "hello", "meeting", "noon", "room", "ok"]
    for size in SIZES:
        text = " ".join(rng.choice(words) for _ in range(size // 3 + 1))[:size]
        # Half compressible, half noise: both kinds of block.
        noise = bytes(rng.getrandbits(8) for _ in range(size // 2))
        binary = text.encode()[: size - len(noise)] + noise
        yield text, binary


def fragments(msg, rng):
    """Cuts a message into 1 to 5 pieces for a fragmented send."""
    cuts = sorted(rng.randrange(len(msg) + 1) for _ in range(rng.randrange(5)))
    bounds = [0, *cuts, len(msg)]
    return [msg[a:b] for a, b in zip(bounds, bounds[1:]) if b > a] or [msg[:0]]


def round_trips(ws, rng):
    count = 0
    for text, binary in payloads(rng):
        for msg in (text, binary):
            ws.send(msg)
            assert ws.recv() == msg, f"whole {type(msg).__name__} of {len(msg)}"
            pieces = fragments(msg, rng)
            ws.send(pieces)
            assert ws.recv() == msg, f"{len(pieces)} fragments of {len(msg)}"
            count += 2
    return count


def tls_context(url, ca):
    """The client's TLS settings for `url`: None for ws://, and for wss://
    a context that trusts `ca` and nothing else."""
    if url.startswith("ws://"):
        assert ca is None, "a CA file is for wss:// URLs"
        return None
    assert url.startswith("wss://"), f"not a WebSocket URL: {url}"
    assert ca is not None, "wss:// needs the CA file to trust"
    return ssl.create_default_context(cafile=ca)


def describe_tls(ws, tls):
    """Checks that a wss:// connection is TLS; returns how, for the log."""
    if tls is None:
        return ""
    sock = ws.socket
    assert isinstance(sock, ssl.SSLSocket), f"wss:// connection over {type(sock).__name__}"
    return f" over {sock.version()} {sock.cipher()[0]}"


def check(url, mode, ca=None):
    rng = random.Random(7)
    tls = tls_context(url, ca)
    common = {"max_size": None} if tls is None else {"max_size": None, "ssl": tls}
    offers = {
        # The client's defaults: context takeover both ways, and it lets the
        # server limit its window.
        "defaults": None,
        # Smaller windows both ways, as some clients ask.
        "window 12": [ClientPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=12)],
    }
    for name, extensions in offers.items():
        kwargs = dict(common)
        if extensions is not None:
            kwargs["extensions"] = extensions
        with connect(url, **kwargs) as ws:
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            params = {p.strip().split("=")[0] for p in agreed.split(";")}
            assert "permessage-deflate" in params, f"{name}: not negotiated: {agreed!r}"
            no_takeover = {"server_no_context_takeover", "client_no_context_takeover"}
            if mode == "lean":
                assert no_takeover <= params, f"{name}: lean mode answered {agreed!r}"
            else:
                assert not (no_takeover & params), f"{name}: takeover mode answered {agreed!r}"
            how = describe_tls(ws, tls)
            n = round_trips(ws, rng)
            print(f"interop {mode}, {name} offer: {agreed!r}, {n} messages round-tripped{how}")
    with connect(url, compression=None, **common) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        how = describe_tls(ws, tls)
        n = round_trips(ws, rng)
        print(f"interop {mode}, no offer: plain frames, {n} messages round-tripped{how}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: interop.py ws://HOST:PORT/ MODE | wss://HOST:PORT/ MODE CA_FILE")
    check(*sys.argv[1:])
