#!/usr/bin/env bash
# The side-by-side benchmark and the scaling demonstration, in one command:
#
#   bash bench/run.sh           # the full run, about 30 minutes on 2 cores
#   bash bench/run.sh --quick   # a smoke run, about two minutes
#   bash bench/run.sh --uws DIR # uWebSockets too, from a checkout in DIR
#   bash bench/run.sh --tls     # wss://: wsloop, tokio-rustls, nginx; about 10 minutes
#   bash bench/run.sh --tls --quick  # its smoke run, under two minutes
#
# Builds the servers and the load generators in release mode, then runs
# bench/src/bin/runner/, which prints the tables and writes
# docs/bench.{json,svg} and docs/scaling.{json,svg}. Other flags go to the
# runner (--repeats N, --out DIR).
#
# --uws DIR: a checkout of uNetworking/uWebSockets with uNetworking/uSockets
# in DIR/uSockets (docs/BENCHMARKS.md says how to get it). bench/uws/build.sh
# builds our echo and pub/sub servers on it with g++ into TARGET/uws/.
# Without it the run goes on without uWebSockets.
#
# --tls: the TLS comparison (bench/src/bin/runner/tls.rs) instead, with
# wsloop and its load generator built with the tls feature; it writes
# docs/bench-tls.json. nginx comes from the PATH or /usr/sbin; without it
# that peer is left out. With --uws DIR, bench/uws/build-tls.sh builds the
# uWebSockets echo on OpenSSL (it needs libssl-dev) and it runs too.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

runner_args=()
uws=
tls=
while [ $# -gt 0 ]; do
    case $1 in
        --uws)
            [ $# -ge 2 ] || { echo "run.sh: --uws needs a directory" >&2; exit 2; }
            uws=$2
            shift 2
            ;;
        --tls)
            tls=1
            runner_args+=("$1")
            shift
            ;;
        *)
            runner_args+=("$1")
            shift
            ;;
    esac
done

if [ -n "$tls" ]; then
    cargo build --release --quiet -p wsloop --features tls --example echo --example loadgen
    cargo build --release --quiet -p wsloop-bench --bins
    if [ -n "$uws" ]; then
        bash bench/uws/build-tls.sh "$uws" "$target/uws"
        runner_args+=(--uws "$target/uws")
    fi
else
    cargo build --release --quiet -p wsloop \
        --example echo --example rooms --example loadgen --example thread_per_connection
    cargo build --release --quiet -p wsloop-bench --bins
    if [ -n "$uws" ]; then
        bash bench/uws/build.sh "$uws" "$target/uws"
        runner_args+=(--uws "$target/uws")
    fi
fi

# 10,000 idle and 15,000 scaling connections need that many descriptors in
# both the server and the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -z "$tls" ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 16500 ]; then
    echo "run.sh: the descriptor limit is $(ulimit -n); the scaling run needs 16,500" >&2
fi

exec "$target/release/runner" ${runner_args[@]+"${runner_args[@]}"}
