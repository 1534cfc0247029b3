#!/usr/bin/env bash
# Runs the chat example and drives it from headless Chromium with
# playwright-core: plain, then its long-polling fallback (beside a second
# chat that refuses upgrades), then on Server-Sent Events with streams the
# server cuts, then with --deflate, then as two servers sharing a Redis
# (installs Debian's redis-server when missing). Installs Debian's chromium
# and playwright-core (under target/browser) when they are missing.
#
#   bash scripts/browser-test.sh
#
# Builds and runs from CARGO_TARGET_DIR when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_playwright

# addr_of LOG: the address a chat started by hand printed in LOG.
addr_of() {
    for _ in $(seq 100); do
        local addr
        addr=$(sed -n 's|^chat: open http://\([^/ ]*\).*|\1|p' "$1" | head -n 1)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.1
    done
    cat "$1" >&2
    return 1
}

cargo build --release --example chat
# A short poll hold and grace, so that a poller's leaving shows in seconds.
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --poll-hold 5 --poll-grace 2
node tests/browser/chat.test.cjs "http://$ADDR/"

# Long polling: against the same chat, and against one that answers every
# upgrade with 403, so that pages fall back by themselves.
"$EXAMPLES/chat" --addr 127.0.0.1:0 --workers 2 --refuse-upgrades >target/chat-refusing.log 2>&1 &
chat_refusing=$!
trap 'kill $chat_refusing 2>/dev/null || true; stop_example' EXIT
refusing="http://$(addr_of target/chat-refusing.log)/"
node tests/browser/poll.test.cjs "http://$ADDR/" "$refusing"
stop_example

# Server-Sent Events: against a chat that ends every stream after 2 s, so
# that the page's EventSource reconnects mid-chat, and keeps 10 messages
# a room, so that one reconnect can come back too late; and against the
# chat that refuses upgrades, where pages fall back to SSE.
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --sse-lifetime 2 --history 10
trap 'kill $chat_refusing 2>/dev/null || true; stop_example' EXIT
node tests/browser/sse.test.cjs "http://$ADDR/" "$refusing"
kill -TERM "$chat_refusing"
wait "$chat_refusing"
stop_example

# Again with permessage-deflate, which Chromium offers by itself.
cargo build --release --features deflate --example chat
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --deflate
EXPECT_DEFLATE=1 node tests/browser/chat.test.cjs "http://$ADDR/"
stop_example

# Two pages on two chat servers sharing a Redis of this script's own.
need_apt redis-server redis-server
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >target/redis-browser.log 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
"$EXAMPLES/chat" --addr 127.0.0.1:0 --redis "redis://127.0.0.1:$redis_port/" >target/chat-a.log 2>&1 &
chat_a=$!
"$EXAMPLES/chat" --addr 127.0.0.1:0 --redis "redis://127.0.0.1:$redis_port/" >target/chat-b.log 2>&1 &
chat_b=$!
trap 'kill $redis_pid $chat_a $chat_b 2>/dev/null || true' EXIT
node tests/browser/cluster.test.cjs "http://$(addr_of target/chat-a.log)/" "http://$(addr_of target/chat-b.log)/"
kill -TERM "$chat_a" "$chat_b"
wait "$chat_a" "$chat_b"
kill "$redis_pid"
trap - EXIT
