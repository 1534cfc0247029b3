#!/usr/bin/env bash
# Runs the chat example and drives it from headless Chromium with
# playwright-core, plain and then with --deflate. Installs Debian's chromium and playwright-core (under
# target/browser) when they are missing.
#
#   bash scripts/browser-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_apt chromium chromium
if [ ! -d target/browser/node_modules/playwright-core ]; then
    mkdir -p target/browser
    npm install --prefix target/browser --no-audit --no-fund --silent playwright-core@1
fi

cargo build --release --example chat
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2
node tests/browser/chat.test.cjs "http://$ADDR/"
stop_example

# Again with permessage-deflate, which Chromium offers by itself.
cargo build --release --features deflate --example chat
start_example chat "open http://" --addr 127.0.0.1:0 --workers 2 --deflate
EXPECT_DEFLATE=1 node tests/browser/chat.test.cjs "http://$ADDR/"
stop_example
