#!/usr/bin/env bash
# A chat room shared by Python's websockets client, Server-Sent Events
# streams and raw HTTP long pollers (tests/poll/mixed.py), then /events at
# its edges: bad input, a client that talks on its stream, a resume
# (tests/poll/sse.py). Installs websockets into target/venv when it is
# missing.
#
#   bash scripts/poll-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_venv_module websockets websockets
cargo build --release --example chat
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --history 500
target/venv/bin/python tests/poll/mixed.py "$ADDR"
stop_example
# sse.py waits for members to go silent: a poll's hold and the grace, short.
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --history 500 \
    --poll-hold 2 --poll-grace 1
target/venv/bin/python tests/poll/sse.py "$ADDR"
stop_example
