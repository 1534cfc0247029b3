#!/usr/bin/env bash
# The Redis bridge against a real redis-server: installs Debian's
# redis-server when it is missing, builds the chat example, and runs the
# wsloop-redis tests, each of which starts its own redis-server on a free
# port and its own chat processes.
#
#   bash scripts/redis-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_apt redis-server redis-server
cargo build --example chat
cargo test -p wsloop-redis
