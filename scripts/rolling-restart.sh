#!/usr/bin/env bash
# The rolling-restart proof: nginx in front of two chat nodes that keep
# their rooms in one Redis, M members chatting through nginx (half on
# WebSockets, half long polling; examples/restart_load), and each node
# restarted in turn with the handover:
#
#   1. a new chat starts on the node's port while the old one runs
#      (SO_REUSEPORT), and the script waits for its banner;
#   2. the old one gets SIGTERM and drains: it closes its listeners at
#      once (net.ipv4.tcp_migrate_req = 1 moves what waits in their accept
#      queues to the new one), answers its held polls, and closes its
#      WebSockets with 1012 evenly over the window;
#   3. it must exit 0, and every member must be back, before the next node.
#
# Then the load stops and checks: nothing lost or twice by id, nothing
# refused or reset, every member back within the window and a few
# seconds, and reconnects spread (see examples/restart_load/main.rs). The
# script checks nginx's error log too: nginx retries a GET on the other
# node, so a refused or reset upstream connect shows only there.
#
# The second scenario kills a node with SIGKILL mid-chat and starts a new
# one on its port: its members come back through nginx and resume with
# nothing lost or twice. nginx's connects to the dead node are refused
# there, as expected; nothing else may fail.
#
#   bash scripts/rolling-restart.sh [--members M] [--window SECS] [--seconds S]
#                                   [--every SECS] [--scenario rolling|kill|both]
#
# --seconds is how long the room chats before the first restart (and
# before the kill). Needs root, to set net.ipv4.tcp_migrate_req (put back
# at exit). Installs nginx and redis-server when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

members=200
window=10
seconds=10
every=2
scenario=both
while [ $# -gt 0 ]; do
    case $1 in
        --members) members=$2 ;;
        --window) window=$2 ;;
        --seconds) seconds=$2 ;;
        --every) every=$2 ;;
        --scenario) scenario=$2 ;;
        *) echo "usage: $0 [--members M] [--window SECS] [--seconds S] [--every SECS] [--scenario rolling|kill|both]" >&2; exit 2 ;;
    esac
    shift 2
done
case $scenario in rolling | kill | both) ;; *) echo "--scenario: rolling, kill or both" >&2; exit 2 ;; esac
# Slack on top of the window for (c), and for the waits below.
slack=3

fail() {
    echo "rolling-restart: FAILED: $*" >&2
    # The load's own report tells what the members saw meanwhile.
    if [ -n "${load_pid:-}" ] && kill -TERM "$load_pid" 2>/dev/null; then
        local p=$load_pid
        load_pid=""
        for _ in $(seq 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        sed -n '/^$/,$p' "$load_log" >&2
    fi
    exit 1
}

need_apt nginx nginx-light
need_apt redis-server redis-server
cargo build --release --example chat --example restart_load

dir=$PWD/target/rolling
rm -rf "$dir"
mkdir -p "$dir"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
nginx_args=(-p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log;")

# Without tcp_migrate_req, closing the old node's listeners resets the
# connections waiting in their accept queues (tests/handover.rs shows both).
migrate=/proc/sys/net/ipv4/tcp_migrate_req
[ -w "$migrate" ] || fail "cannot write $migrate: this needs root and Linux 5.14 or later"
migrate_before=$(cat "$migrate")

# Everything this script started, stopped at exit by process id.
declare -A pid=() log=() port=()
redis_pid=""
load_pid=""
cleanup() {
    local p
    for p in "$load_pid" "${pid[@]}" "$redis_pid"; do
        [ -n "$p" ] || continue
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [ -e "$dir/nginx.pid" ] && "$nginx_bin" "${nginx_args[@]}" -s stop 2>/dev/null || true
    echo "$migrate_before" >"$migrate"
}
trap cleanup EXIT
echo 1 >"$migrate"

# wait_for SECS WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds;
# fails naming WHAT after SECS.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within $secs s"
        sleep 0.1
    done
}

# wait_exit PID WHAT SECS: waits for a child to exit; fails unless it exits
# 0 within SECS.
wait_exit() {
    local p=$1 what=$2 secs=$3
    wait_for "$secs" "$what to exit" bash -c "! kill -0 $p 2>/dev/null"
    local status=0
    wait "$p" || status=$?
    [ "$status" -eq 0 ] || fail "$what exited with status $status"
}

# start_chat NODE: a chat on the node's port, with the history in Redis and
# the drain window; waits for its banner. A second chat on the same port
# while the first runs is the handover's first step.
generation=0
start_chat() {
    local node=$1
    generation=$((generation + 1))
    local out="$dir/chat-$node$generation.log"
    ./target/release/examples/chat --addr "127.0.0.1:${port[$node]}" \
        --redis "redis://127.0.0.1:$redis_port/" --drain-secs "$window" \
        --trusted-proxy 127.0.0.1 --history $((members * 30)) \
        --max-names-per-address $((members * 2)) --max-room-members $((members * 2)) \
        >"$out" 2>&1 &
    pid[$node]=$!
    log[$node]=$out
    wait_for 10 "chat $node$generation's banner" grep -qs "^chat: open http://127.0.0.1:${port[$node]}/" "$out"
}

# node_counters WHAT LOG: the counters a chat printed at exit show nothing
# refused, failed or dropped at the node, and nothing refused or malformed
# at its Redis bridge. (The bridge's "dropped" also counts messages a
# worker could not take, which it repairs by loading the room again: the
# members' ids tell whether anything was lost.)
node_counters() {
    local node=$1 out=$2
    grep -q "^chat: shut down" "$out" || fail "chat $node printed no counters ($out)"
    echo "rolling-restart: chat $node: $(grep -m1 '^chat: redis: ' "$out" | sed 's/^chat: //')"
    local bad
    bad=$(sed -n '/^chat: shut down/,$p' "$out" | grep -E \
        -e "^connections .* refused [1-9]" -e "^handshakes failed: " -e "^messages .* dropped [1-9]" \
        -e "publishes refused [1-9]" -e "^chat: redis: .* [1-9][0-9]* (refused|malformed)" || true)
    [ -z "$bad" ] || fail "chat $node refused, failed or dropped something ($out):
$bad"
}

redis_port=$(free_port)
redis_ping() { redis-cli -p "$redis_port" ping >/dev/null 2>&1; }
port[A]=$(free_port)
port[B]=$(free_port)
nginx_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$dir/redis.log" 2>&1 &
redis_pid=$!
wait_for 10 "redis-server to answer" redis_ping
start_chat A
start_chat B

# docs/nginx-cluster.conf with these ports, and room for every member's
# connections (a proxied connection counts twice).
sed -e "s|server 127.0.0.1:8081;|server 127.0.0.1:${port[A]};|" \
    -e "s|server 127.0.0.1:8082;|server 127.0.0.1:${port[B]};|" \
    -e "s|listen 127.0.0.1:8000;|listen 127.0.0.1:$nginx_port;|" \
    -e "s|worker_connections 1024;|worker_connections $((members * 8 + 1024));|" \
    docs/nginx-cluster.conf >"$dir/nginx.conf"
grep -q "worker_connections $((members * 8 + 1024));" "$dir/nginx.conf" ||
    fail "docs/nginx-cluster.conf no longer has the lines this script rewrites"
"$nginx_bin" "${nginx_args[@]}"
touch "$dir/error.log"

# start_load NAME ARGS...: the members, in room NAME; waits until all are in.
start_load() {
    local name=$1
    shift
    load_log="$dir/load-$name.log"
    ./target/release/examples/restart_load --addr "127.0.0.1:$nginx_port" --room "$name" \
        --members "$members" --window "$window" --slack "$slack" --every "$every" \
        --events "$dir/events-$name.txt" "$@" \
        >"$load_log" 2>&1 &
    load_pid=$!
    wait_for 60 "all $members members to join" grep -qs "^restart_load: all $members members in" "$load_log"
    errors_from=$(wc -l <"$dir/error.log")
    echo "rolling-restart: $name: all $members members in; chatting for $seconds s"
}

# load_alive: fails if the load has exited early.
load_alive() {
    kill -0 "$load_pid" 2>/dev/null || { cat "$load_log"; fail "restart_load exited early"; }
}

# stop_load: the members say their last lines, and the load checks.
stop_load() {
    kill -TERM "$load_pid"
    local status=0
    wait "$load_pid" || status=$?
    load_pid=""
    sed -n '/^$/,$p' "$load_log"
    [ "$status" -eq 0 ] || fail "restart_load found a failed check (above; log $load_log)"
}

# The members wait for a restart's old node to be gone and everyone back.
members_back() {
    load_alive
    grep -q "^restart_load: restart $1: all members back" "$load_log"
}

# restart NODE K: the handover of one node, restart K of the load.
restart() {
    local node=$1 k=$2
    local old=${pid[$node]} old_log=${log[$node]}
    start_chat "$node"
    [ "$(cat "$migrate")" = 1 ] || fail "net.ipv4.tcp_migrate_req is $(cat "$migrate") (something else changed it)"
    kill -USR1 "$load_pid"
    kill -TERM "$old"
    wait_for 5 "chat $node's drain to begin" grep -q "^chat: draining" "$old_log"
    local started=$SECONDS
    wait_exit "$old" "the old chat $node" $((window + 15))
    node_counters "old $node" "$old_log"
    # A drain closes WebSockets with 1012 and nothing else (the counters
    # print no closes line when there were none).
    if grep -q "^closes by code:" "$old_log"; then
        grep -Eq "^closes by code:  1012 [0-9]+$" "$old_log" ||
            fail "the old chat $node closed with other codes than 1012: $(grep '^closes by code' "$old_log")"
    fi
    echo "rolling-restart: restart $k: old $node $(grep -m1 '^chat: draining' "$old_log" | sed 's/^chat: //'), exited 0 after $((SECONDS - started)) s"
    kill -USR2 "$load_pid"
    wait_for $((window + slack + 10)) "every member back after restart $k" members_back "$k"
}

# nginx_errors ALLOWED: the error log's lines since the load started; fails
# if any does not match the extended regex ALLOWED (empty: none allowed).
nginx_errors() {
    local allowed=$1 lines
    lines=$(tail -n +$((errors_from + 1)) "$dir/error.log")
    [ -n "$lines" ] || { echo "rolling-restart: nginx error log: nothing"; return 0; }
    echo "rolling-restart: nginx error log: $(wc -l <<<"$lines") lines, the first:"
    head -n 3 <<<"$lines" | cut -c 1-220
    local unexpected
    if [ -n "$allowed" ]; then
        unexpected=$(grep -Ev "$allowed" <<<"$lines" || true)
    else
        unexpected=$lines
    fi
    [ -z "$unexpected" ] || fail "nginx logged upstream errors (no connect may be refused or reset):
$(head -n 20 <<<"$unexpected")"
}

if [ "$scenario" != kill ]; then
    echo "rolling-restart: rolling: $members members, window $window s, nginx 127.0.0.1:$nginx_port, chats A ${port[A]} and B ${port[B]}"
    start_load rolling
    sleep "$seconds" # the room chats: the "before" figures
    load_alive
    restart A 1
    restart B 2
    stop_load
    nginx_errors ""
fi

if [ "$scenario" != rolling ]; then
    echo "rolling-restart: kill: $members members; chat A killed with SIGKILL, a new one started on its port"
    start_load kill --kill
    sleep "$seconds"
    load_alive
    kill -USR1 "$load_pid"
    kill -KILL "${pid[A]}"
    wait "${pid[A]}" 2>/dev/null || true
    start_chat A
    kill -USR2 "$load_pid"
    wait_for $((window + slack + 10)) "every member back after the kill" members_back 1
    stop_load
    # Refused connects to the dead node's port, and the connections it
    # dropped, are expected; nothing else.
    dead="upstream: \"http://127\\.0\\.0\\.1:${port[A]}/"
    nginx_errors "(connect\\(\\) failed \\(111: Connection refused\\)|upstream prematurely closed connection|Connection reset by peer).*$dead"
fi

# Both nodes stop cleanly (no member is left, so the drain ends at once).
for node in A B; do
    kill -TERM "${pid[$node]}"
    wait_exit "${pid[$node]}" "chat $node" $((window + 15))
    node_counters "$node" "${log[$node]}"
    unset "pid[$node]"
done
"$nginx_bin" "${nginx_args[@]}" -s stop 2>/dev/null
echo "rolling-restart: all checks passed"
