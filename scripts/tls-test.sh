#!/usr/bin/env bash
# wss:// and https:// against real peers, with the test certificate of
# tests/tls/: Python's websockets client (trusting only the test CA) with
# permessage-deflate in both modes against the echo example; the chat in
# headless Chromium, two pages talking over wss://; and peers that send
# plain HTTP or garbage to the TLS port, which must get an alert or a
# clean close, each counted in the chat's wsloop_tls_failures_total.
# Installs websockets into target/venv, and Debian's chromium and
# playwright-core (under target/browser), when they are missing.
#
#   bash scripts/tls-test.sh
#
# Builds and runs from CARGO_TARGET_DIR when it is set. Autobahn over TLS
# is `bash scripts/autobahn.sh --tls`: kosoku 0.1.0 refuses wss:// URLs, so
# it goes through tests/tls/tls_proxy.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ca=tests/tls/ca.pem
tls=(--tls-cert tests/tls/server.pem --tls-key tests/tls/server.key)

need_venv_module websockets websockets
need_playwright
cargo build --release --features tls,deflate --example echo --example chat

# permessage-deflate over wss://, to "localhost", the name the
# certificate was made for, at the port the echo bound.
for mode in lean takeover; do
    flag=--deflate
    [ "$mode" = takeover ] && flag=--deflate-takeover
    start_example echo "listening on wss://" --addr 127.0.0.1:0 --workers 2 "$flag" "${tls[@]}"
    target/venv/bin/python tests/deflate/interop.py "wss://localhost:${ADDR##*:}/" "$mode" "$ca"
    stop_example
done

# The chat on https:// in Chromium, then the peers that speak no TLS,
# against the same chat.
start_example chat "open https://" --addr 127.0.0.1:0 --workers 2 "${tls[@]}"
node tests/browser/tls.test.cjs "https://localhost:${ADDR##*:}/" tests/tls/server.pem
# A worker that panics shows only as a closed connection: say why.
target/venv/bin/python tests/tls/bad_peers.py "$ADDR" "$ca" ||
    { grep -A 1 panicked target/chat.log || true; exit 1; }
stop_example

echo "tls: all checks passed in ${SECONDS} s"
