#!/usr/bin/env bash
# Interleaved A/B of two builds of the echo example: each round runs A,
# then B, with the server on CPU 0 and the load generator on CPU 1, and
# prints msgs/s and the server's CPU per message (user + system, from
# /proc, connection set-up included). Take medians over the rounds.
#
#   cp target/release/examples/echo /tmp/echo-A     # before the change
#   cargo build --release --example echo --example loadgen  # after it
#   A=/tmp/echo-A B=target/release/examples/echo bash bench/ab.sh
#
# ROUNDS (7), SECS (4), CONNS (100), SIZE (20), INFLIGHT (16) shape it.
set -euo pipefail
A=${A:?the echo binary before the change}
B=${B:-target/release/examples/echo}
LOADGEN=${LOADGEN:-target/release/examples/loadgen}
rounds=${ROUNDS:-7} secs=${SECS:-4} conns=${CONNS:-100} size=${SIZE:-20} inflight=${INFLIGHT:-16}
hz=$(getconf CLK_TCK)
for _ in $(seq "$rounds"); do
    for v in A B; do
        bin=${!v}
        port=$((19000 + RANDOM % 1000))
        taskset -c 0 "$bin" --addr "127.0.0.1:$port" --workers 1 >/dev/null 2>&1 &
        pid=$!
        sleep 0.3
        t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        out=$(taskset -c 1 "$LOADGEN" --url "ws://127.0.0.1:$port/" --connections "$conns" \
            --size "$size" --in-flight "$inflight" --duration "$secs" --json 2>/dev/null | tail -1)
        t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        python3 -c '
import json, sys
v, out, ticks, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(v, "msgs/s %.0f" % out["per_s"], "cpu_us/msg %.3f" % (ticks / hz / out["count"] * 1e6))
' "$v" "$out" "$((t1 - t0))" "$hz"
    done
done
