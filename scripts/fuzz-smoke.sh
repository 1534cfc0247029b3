#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time; fails on any
# crash. Installs cargo-fuzz when it is missing. Needs the nightly toolchain.
#
#   bash scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# -a keeps debug assertions and overflow checks in the optimized build, so
# that a wrap on a peer's number is a crash, not a silent wrap.
cargo +nightly fuzz build -O -a
for target in $(cargo +nightly fuzz list); do
    extra=()
    [ "$target" = handshake ] && extra=(-dict=handshake.dict)
    # Run on a scratch copy of the seeds so the committed corpus stays as is.
    scratch=$(mktemp -d)
    cp corpus/"$target"/seed-* "$scratch"/
    log=$(mktemp)
    if ! cargo +nightly fuzz run -O -a "$target" "$scratch" -- \
        -max_total_time="$seconds" "${extra[@]}" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "fuzz: $target ok: $(grep -E '^#[0-9]+.*DONE' "$log" | tail -n 1)"
    rm -rf "$scratch" "$log"
done
