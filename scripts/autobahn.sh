#!/usr/bin/env bash
# Runs the Autobahn TestSuite cases 1.* to 10.* (through the PyPI package
# kosoku) against the echo example and fails on any case that is not OK or
# INFORMATIONAL. The report lands in target/autobahn/.
#
#   bash scripts/autobahn.sh            # 1.* to 10.*, plain frames
#   bash scripts/autobahn.sh --deflate  # 1.* to 13.*, echo built with the
#                                       # deflate feature, in its lean mode
#   bash scripts/autobahn.sh --tls      # 1.* to 10.* over TLS: echo built
#                                       # with the tls feature, reached
#                                       # through tests/tls/tls_proxy.py
#                                       # (kosoku cannot speak TLS itself)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=target/venv
out=target/autobahn
sections=(1 2 3 4 5 6 7 9 10)
expected=301
features=()
flags=()
marker="listening on ws://"
tls=
case "${1:-}" in
    "") ;;
    --tls)
        out=target/autobahn-tls
        features=(--features tls)
        flags=(--tls-cert tests/tls/server.pem --tls-key tests/tls/server.key)
        marker="listening on wss://"
        tls=1
        ;;
    --deflate)
        out=target/autobahn-deflate
        # 12.* and 13.*: 5 data sets and 7 offer/accept pairs, 18 sizes each.
        sections+=(12 13)
        expected=$((301 + 90 + 126))
        features=(--features deflate)
        # Every message compressed: kosoku's 12.* and 13.* checkers fail
        # on an uncompressed message on a compressed connection, which RFC
        # 7692 §6 allows and wsloop sends below min_size by default.
        flags=(--deflate --deflate-min-size 0)
        ;;
    *) echo "usage: $0 [--deflate | --tls]" >&2; exit 2 ;;
esac
need_venv_module kosoku kosoku

cargo build --release "${features[@]}" --example echo
rm -rf "$out" && mkdir -p "$out"
start_example echo "$marker" --addr 127.0.0.1:0 "${flags[@]}"
addr=$ADDR
if [ -n "$tls" ]; then
    # kosoku speaks plain TCP to the proxy, which speaks TLS to the echo
    # with Python's ssl module (OpenSSL), trusting the test CA alone.
    "$venv/bin/python" tests/tls/tls_proxy.py "$addr" tests/tls/ca.pem >"$out/proxy.log" 2>&1 &
    proxy=$!
    trap 'kill $proxy 2>/dev/null; stop_example' EXIT
    for _ in $(seq 100); do
        addr=$(sed -n 's|^tls_proxy: listening on \([^/ ]*\).*|\1|p' "$out/proxy.log")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$out/proxy.log"; echo "the TLS proxy did not start" >&2; exit 1; }
fi

cases=()
for section in "${sections[@]}"; do cases+=(-i "$section.*"); done
timeout 900 "$venv/bin/kosoku" "$addr" "${cases[@]}" -p 4 -o "$out/report" >"$out/kosoku.log" 2>&1 ||
    { cat "$out/kosoku.log"; echo "kosoku failed" >&2; exit 1; }

"$venv/bin/python" - "$out/report/index.json" "$expected" <<'PY'
import collections, json, sys
index = json.load(open(sys.argv[1]))
counts = collections.Counter()
bad = []
for agent, cases in index.items():
    for case, result in sorted(cases.items()):
        for key in ("behavior", "behaviorClose"):
            verdict = result[key]
            counts[f"{key}={verdict}"] += 1
            if verdict not in ("OK", "INFORMATIONAL"):
                bad.append(f"{case} {key}={verdict}")
total = sum(len(c) for c in index.values())
print(f"autobahn: {total} cases; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
expected = int(sys.argv[2])
if total < expected:
    bad.append(f"only {total} cases ran, expected {expected}")
for line in bad:
    print("autobahn: not passing:", line)
sys.exit(1 if bad else 0)
PY

# Graceful shutdown on SIGTERM must exit 0.
[ -n "$tls" ] && kill "$proxy" 2>/dev/null
stop_example
echo "autobahn: report in $out/report, echo server exited cleanly"
