#!/usr/bin/env bash
# permessage-deflate against Python's websockets client: the echo example,
# built with the deflate feature, in its lean mode and with context
# takeover. Installs websockets into target/venv when it is missing.
#
#   bash scripts/deflate-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_venv_module websockets websockets
cargo build --release --features deflate --example echo
for mode in lean takeover; do
    flag=--deflate
    [ "$mode" = takeover ] && flag=--deflate-takeover
    start_example echo "listening on ws://" --addr 127.0.0.1:0 --workers 2 "$flag"
    target/venv/bin/python tests/deflate/interop.py "ws://$ADDR/" "$mode"
    stop_example
done
echo "deflate interop: all checks passed"
