#!/usr/bin/env bash
# The memory figure: one WebSocket client floods the chat (2 workers) with
# 1,990-byte lines and never reads, reconnecting whenever it is closed,
# while a prober times its own lines and the page. The chat runs with its
# rate limit off (--rate 0), so what holds memory down is the library's
# own bounds: read budgets, the write buffer cap and bounded inboxes. RSS
# must stay within the ceiling above its baseline and come back to within
# a fifth of it plus what the allocator keeps of each worker's arena (one
# write buffer cap and read buffer a worker); the chat must then exit
# cleanly.
#
# Then N pipelined posts with distinct names from one address: the chat's
# presence must stay bounded (429 past the per-address bound).
#
#   bash scripts/flood.sh [--seconds S] [--posts N] [--rate N] [--ceiling-mib M]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=30
posts=1000000
rate=0
ceiling=64
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --posts) posts=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --ceiling-mib) ceiling=$2; shift 2 ;;
        *) echo "usage: $0 [--seconds S] [--posts N] [--rate N] [--ceiling-mib M]" >&2; exit 2 ;;
    esac
done

cargo build --release --example chat --example soak
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --rate "$rate"
./target/release/examples/soak --addr "$ADDR" --pid "$EXAMPLE_PID" \
    --flood-seconds "$seconds" --rss-ceiling-mib "$ceiling"
./target/release/examples/soak --addr "$ADDR" --pid "$EXAMPLE_PID" \
    --posts "$posts" --rss-ceiling-mib "$ceiling"
stop_example
grep -a -A8 "^chat: shut down" target/chat.log
