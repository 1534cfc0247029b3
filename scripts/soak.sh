#!/usr/bin/env bash
# The chaos soak: builds the chat and the soak client (release), starts the
# chat, throws the hostile mix at it for the given time, then stops it with
# SIGTERM and requires a clean exit, so no worker died.
#
#   bash scripts/soak.sh [--minutes M] [--clients N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

minutes=1
clients=50
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        *) echo "usage: $0 [--minutes M] [--clients N]" >&2; exit 2 ;;
    esac
done

cargo build --release --example chat --example soak
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2
./target/release/examples/soak --addr "$ADDR" --pid "$EXAMPLE_PID" --minutes "$minutes" --clients "$clients"
stop_example
grep -a -A8 "^chat: shut down" target/chat.log
