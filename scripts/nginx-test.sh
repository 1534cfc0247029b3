#!/usr/bin/env bash
# The chat example behind Debian's nginx, configured from docs/nginx.conf
# with a 3 s proxy_read_timeout. First a control (server pings and SSE
# heartbeats every 10 s: nginx must drop an idle connection and cut an idle
# stream; polls held 5 s: nginx must cut them with 504), then the real run
# (pings and heartbeats every 1 s: both must survive, and each SSE event
# must pass unbuffered; polls held 2 s: answered by the chat). Then
# docs/nginx-two-locations.conf, whose page and SSE locations speak
# HTTP/1.0 to the chat, as nginx does by default. Last,
# docs/nginx-cluster.conf over two chat servers sharing a Redis. Installs
# nginx, redis-server and Python's websockets when missing.
#
#   bash scripts/nginx-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_apt nginx nginx-light
venv=target/venv
need_venv_module websockets websockets

cargo build --release --example chat
dir=$PWD/target/nginx
mkdir -p "$dir"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# A free port for nginx: bind port 0 and read it back.
nginx_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# run_phase PHASE PING CONF HOLD: PING is both the WebSocket ping interval
# and the SSE heartbeat, in seconds.
run_phase() {
    local phase=$1 ping=$2 conf=$3 hold=$4
    start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 \
        --ping-interval "$ping" --sse-heartbeat "$ping" --trusted-proxy 127.0.0.1 \
        --poll-hold "$hold"
    sed -e "s|server 127.0.0.1:8080;|server $ADDR;|" \
        -e "s|listen 127.0.0.1:8000;|listen 127.0.0.1:$nginx_port;|" \
        -e "s|proxy_read_timeout 60s;|proxy_read_timeout 3s;|" \
        -e "s|proxy_buffering off;|proxy_buffering off; proxy_ignore_headers X-Accel-Buffering;|" \
        "$conf" >"$dir/nginx.conf"
    # Every location's timeout, the WebSocket's and the stream's, is 3 s.
    grep -q "proxy_read_timeout 3s;" "$dir/nginx.conf"
    # nginx would also stop buffering for the chat's "X-Accel-Buffering: no";
    # ignoring it, the SSE checks prove that the config's own line does it.
    grep -q "proxy_ignore_headers X-Accel-Buffering;" "$dir/nginx.conf"
    if grep -q "proxy_read_timeout [^3]" "$dir/nginx.conf"; then
        echo "$conf: a proxy_read_timeout the test did not set to 3 s" >&2
        exit 1
    fi
    "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" \
        -g "pid $dir/nginx.pid; error_log $dir/error.log;"
    local status=0
    "$venv/bin/python" tests/nginx/nginx_test.py "$phase" "127.0.0.1:$nginx_port" target/chat.log ||
        status=$?
    "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log;" -s stop
    for _ in $(seq 50); do [ -e "$dir/nginx.pid" ] || break; sleep 0.1; done
    stop_example
    if [ "$status" -ne 0 ]; then
        cat target/chat.log "$dir/error.log" >&2 || true
        exit "$status"
    fi
}

run_phase drop 10 docs/nginx.conf 5
run_phase keep 1 docs/nginx.conf 2
run_phase http10 1 docs/nginx-two-locations.conf 2

# Two chat servers behind docs/nginx-cluster.conf, sharing a Redis.
need_apt redis-server redis-server
free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$dir/redis.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
addrs=()
for node in a b; do
    log="$dir/chat-$node.log"
    ./target/release/examples/chat --addr 127.0.0.1:0 --redis "redis://127.0.0.1:$redis_port/" >"$log" 2>&1 &
    pids+=($!)
    addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's|^chat: open http://\([^/ ]*\).*|\1|p' "$log" | head -n 1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$log"; exit 1; }
    addrs+=("$addr")
done
sed -e "s|server 127.0.0.1:8081;|server ${addrs[0]};|" -e "s|server 127.0.0.1:8082;|server ${addrs[1]};|" \
    -e "s|listen 127.0.0.1:8000;|listen 127.0.0.1:$nginx_port;|" \
    docs/nginx-cluster.conf >"$dir/nginx.conf"
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log;"
status=0
"$venv/bin/python" tests/nginx/nginx_test.py cluster "127.0.0.1:$nginx_port" "$dir/chat-a.log,$dir/chat-b.log" ||
    status=$?
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log;" -s stop
# Both chats must exit cleanly on SIGTERM.
kill -TERM "${pids[1]}" "${pids[2]}"
wait "${pids[1]}" || status=$?
wait "${pids[2]}" || status=$?
kill "${pids[0]}"
trap - EXIT
if [ "$status" -ne 0 ]; then
    cat "$dir/chat-a.log" "$dir/chat-b.log" "$dir/error.log" >&2 || true
    exit "$status"
fi
