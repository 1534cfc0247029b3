#!/usr/bin/env bash
# The side-by-side benchmark and the scaling demonstration, in one command:
#
#   bash bench/run.sh           # the full run, about 10 minutes on 2 cores
#   bash bench/run.sh --quick   # a smoke run, about a minute
#
# Builds the servers and the load generator in release mode, then runs
# bench/src/bin/runner.rs, which prints the tables and writes
# docs/bench.{json,svg} and docs/scaling.{json,svg}.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p wsloop \
    --example echo --example loadgen --example thread_per_connection
cargo build --release --quiet -p wsloop-bench --bins

# 10,000 idle and 15,000 scaling connections need that many descriptors in
# both the server and the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 16500 ]; then
    echo "run.sh: the descriptor limit is $(ulimit -n); the scaling run needs 16,500" >&2
fi

exec target/release/runner "$@"
